"""The package's shape: no import cycle, every sampler config meets the sampler contract, and a
new sampler needs only a module, a config and an export (nothing in the run layer)."""

from __future__ import annotations

import ast
import json
import shutil
import sys
import textwrap
from pathlib import Path

import pytest
from hydra.utils import instantiate
from omegaconf import OmegaConf

from ddrm_exp import cli_check, cli_help
from ddrm_exp.cli_check import check_overrides
from ddrm_exp.errors import ConfigError
from ddrm_exp.paths import CONF_DIR
from ddrm_exp.samplers.base import Sampler
from tests.helpers import GAUSSIAN_32, ROOT, compose_cfg, run_job

PACKAGE = ROOT / "ddrm_exp"


def _module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def import_graph() -> dict[str, set[str]]:
    """Module -> the ddrm_exp modules it imports (anywhere in it, lazy imports included)."""
    modules = {_module_name(p): p for p in PACKAGE.rglob("*.py")}
    graph: dict[str, set[str]] = {}
    for name, path in modules.items():
        targets: set[str] = set()
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                targets.update(a.name for a in node.names)
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                # `from ddrm_exp import faults` imports the module ddrm_exp.faults.
                subs = {f"{node.module}.{a.name}" for a in node.names}
                found = subs & modules.keys()
                targets.update(found or {node.module})
        graph[name] = {t for t in targets if t in modules and t != name}
    return graph


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    state: dict[str, int] = {}  # 1: on the DFS stack, 2: done
    stack: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        stack.append(node)
        for nxt in sorted(graph[node]):
            if state.get(nxt) == 1:
                return [*stack[stack.index(nxt) :], nxt]
            if nxt not in state and (cycle := visit(nxt)):
                return cycle
        stack.pop()
        state[node] = 2
        return None

    for node in sorted(graph):
        if node not in state and (cycle := visit(node)):
            return cycle
    return None


def test_find_cycle_sees_a_cycle() -> None:
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": set()}) is None


def test_no_import_cycle_in_the_package() -> None:
    graph = import_graph()
    assert "ddrm_exp.run.batch" in graph and "ddrm_exp.video.runner" in graph
    assert "ddrm_exp.runner" not in graph["ddrm_exp.video.runner"]
    assert find_cycle(graph) is None, " -> ".join(find_cycle(graph) or [])


@pytest.mark.parametrize("path", sorted((ROOT / "conf" / "sampler").glob("*.yaml")), ids=str)
def test_every_sampler_config_meets_the_contract(path: Path) -> None:
    sampler = instantiate(OmegaConf.load(path))
    assert isinstance(sampler, Sampler), path.name
    params = sampler.params()
    # What every result records: plain JSON, the config's settings (no _target_, no name).
    assert json.loads(json.dumps(params)) == params
    config = {k: v for k, v in OmegaConf.load(path).items() if not str(k).startswith("_")}
    assert {k: params[k] for k in config if k != "name"} == {
        k: v for k, v in config.items() if k != "name"
    }
    assert sampler.nfe >= 1 and isinstance(sampler.supports_warm_start, bool)


NEW_SAMPLER = '''
    from ddrm_exp.samplers.base import SampleResult


    class PinvSampler:
        """Returns H⁺y: the smallest sampler there is."""

        name = "pinv"
        supports_warm_start = False
        progress = None
        nfe = 0

        def params(self):
            return {"kind": "pinv"}

        def check_prior(self, prior):
            pass

        def sample(self, prior, operator, y, sigma_y, *, generator=None, warm_start=None,
                   return_trajectory=False):
            return SampleResult(operator.H_pinv(y).reshape(y.shape[0], *prior.shape), nfe=0)
'''


@pytest.fixture
def pinv_sampler(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    """A sampler module written from scratch; its config is only its ``_target_``."""
    (tmp_path / "my_sampler.py").write_text(textwrap.dedent(NEW_SAMPLER))
    monkeypatch.syspath_prepend(str(tmp_path))
    yield "my_sampler.PinvSampler"
    sys.modules.pop("my_sampler", None)


@pytest.fixture
def conf_with_pinv(pinv_sampler: str, tmp_path: Path) -> Path:
    """A copy of conf/ plus one new file, ``sampler/pinv.yaml``: nothing else is edited."""
    conf = tmp_path / "conf"
    shutil.copytree(CONF_DIR, conf)
    (conf / "sampler" / "pinv.yaml").write_text(
        f"# help: H⁺y, the smallest sampler there is\n_target_: {pinv_sampler}\n"
    )
    return conf


def test_a_new_sampler_needs_only_a_module_a_config_and_an_export(
    conf_with_pinv: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The module (here in a temporary directory, so importable without the export line a
    sampler in ``ddrm_exp/samplers/`` adds to ``samplers/__init__.py``) and its config file are
    all it takes: the command line's check, --help, composition and the run see it."""
    monkeypatch.setattr(cli_check, "CONF_DIR", conf_with_pinv)
    assert check_overrides(["sampler=pinv", "degradation=sr4"]) is None
    assert check_overrides(["sampler=pinv", "sampler.timesteps=3"]) is not None  # none to set
    cli_help.register()
    cfg = compose_cfg(["sampler=pinv"], hydra=True, conf_dir=conf_with_pinv)
    help_text = str(cfg.hydra.help.template)
    assert "\n      pinv                H⁺y, the smallest sampler there is\n" in help_text
    assert cfg.hydra.runtime.choices.sampler == "pinv"
    overrides = [*GAUSSIAN_32, "dataset.limit=2", "degradation=sr4", "batch_size=2", "sampler=pinv"]
    summary = run_job(overrides, tmp_path / "run", conf_dir=conf_with_pinv)
    assert summary["sampler"] == "pinv" and summary["sampler_params"] == {"kind": "pinv"}
    assert summary["count"] == 2 and summary["nfe"] == 0
    # It returned H⁺y, so the restoration scores exactly as the baseline.
    assert summary["restored"]["psnr"]["mean"] == summary["baseline"]["psnr"]["mean"]


def test_warm_start_needs_a_sampler_that_supports_it(conf_with_pinv: Path, tmp_path: Path) -> None:
    from ddrm_exp.datasets.bsd_mini import write_mini_bsd

    write_mini_bsd(tmp_path / "bsd", sequences=1, frames=2, size=(40, 40))
    overrides = [
        *GAUSSIAN_32,
        "task=video",
        "dataset=bsd_synthetic",
        f"dataset.root={tmp_path / 'bsd'}",
        "degradation=blur_given",
        "temporal=warm_start",
        "sampler=pinv",
    ]
    with pytest.raises(ConfigError, match="temporal.warm_start needs a sampler that can start"):
        run_job(overrides, tmp_path / "run", conf_dir=conf_with_pinv)
