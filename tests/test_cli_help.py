"""--help says what the tool does and lists every option; typos exit 2 naming close matches."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest
from helpers import compose_cfg, run_cli
from hydra.utils import instantiate
from omegaconf import OmegaConf

from ddrm_exp import cli_help
from ddrm_exp.cli_check import check_overrides, group_options
from ddrm_exp.cli_help import default_options, option_help, render_options
from ddrm_exp.paths import CONF_DIR

ROOT = Path(__file__).resolve().parents[1]


def _cli(*args: str) -> subprocess.CompletedProcess:
    return run_cli(list(args), ROOT, timeout=120)


GROUPS = sorted(p.name for p in CONF_DIR.iterdir() if p.is_dir() and p.name != "hydra")
OPTION_FILES = sorted(CONF_DIR.glob("*/*.yaml"))


def row_labels(text: str) -> set[str]:
    """The option names the help lists: a row names its options (comma-separated) in columns
    6-25 and describes them from column 26, or names them alone on a line above the text."""
    lines = text.splitlines()
    out: set[str] = set()
    for line, after in zip(lines, [*lines[1:], ""], strict=True):
        if line.startswith(" " * 6) and not line.startswith(" " * 7):
            label = line if after.startswith(" " * 26) else line[:26]
            out.update(name.strip() for name in label.split(", "))
    return out


@pytest.mark.parametrize(
    "path",
    [p for p in OPTION_FILES if p.parent.name != "hydra" and p.parent.parent == CONF_DIR],
    ids=lambda p: f"{p.parent.name}={p.stem}",
)
def test_every_option_file_says_what_it_is(path: Path) -> None:
    """The help lists an option with its file's `# help:` line: every option file has one."""
    text = option_help(path)
    assert text, f"{path}: no '# help: ...' line in its opening comment"
    assert len(text) <= 80 and "\n" not in text, path


def test_help_opens_with_what_the_tool_does_and_lists_every_option() -> None:
    out = _cli("--help")
    assert out.returncode == 0, out.stderr
    text = out.stdout
    assert text.startswith("ddrm_exp: restore images with DDRM")
    assert "powered by Hydra" not in text and "${ddrm_options" not in text
    labels = row_labels(text)
    for group in GROUPS:
        assert f"\n    {group} " not in text and f"\n  {group} " in text, group
        for option in group_options(group):
            assert option in labels, f"{group}={option}"
            assert option_help(CONF_DIR / group / f"{option}.yaml") in text, f"{group}={option}"
    assert "threads=N" in text and "sampler:" in text  # the config follows


def test_the_help_template_lists_every_group_from_its_files() -> None:
    """In-process, what --help prints: the template resolved, one option list per group."""
    cli_help.register()
    template = str(compose_cfg([], hydra=True).hydra.help.template)
    for group in GROUPS:
        assert render_options(CONF_DIR, group).replace("$", "$$") in template, group
    defaults = default_options(CONF_DIR)
    assert defaults["sampler"] == "ddrm" and defaults["dataset"] == "samples"
    assert "\n      ddrm                DDRM: " in template  # the default first, marked
    assert template.index("      ddrm  ") < template.index("      ddnm  ")


def test_options_render_default_first_in_natural_order_and_share_rows(tmp_path: Path) -> None:
    (tmp_path / "config.yaml").write_text("defaults:\n  - _self_\n  - g: c\n")
    group = tmp_path / "g"
    group.mkdir()
    files = {
        "a": "# help: same text\nx: 1\n",
        "b10": "# First line.\n# help: same text\n",
        "b2": "# help: costs $5\n",
        "c": "# help: the default\n",
        "no_help": "x: 1\n# help: not in the opening comment\n",
        "a_very_long_option_name": "# help: long\n",
    }
    for name, body in files.items():
        (group / f"{name}.yaml").write_text(body)
    assert render_options(tmp_path, "g").splitlines() == [
        "      c                   the default (default)",
        "      a, b10              same text",
        "      a_very_long_option_name",
        "                          long",
        "      b2                  costs $5",
        "      no_help",
    ]
    cli_help.register()
    sources = [{"path": str(tmp_path), "schema": "file", "provider": "main"}]
    cfg = OmegaConf.create(
        {"hydra": {"runtime": {"config_sources": sources}}, "t": "x\n${ddrm_options:g}"}
    )
    assert "costs $$5" in cfg.t  # Hydra's string.Template reads $$ as a literal $


@pytest.mark.parametrize(
    ("args", "needles"),
    [
        (["sampler.timestep=5"], ["sampler.timestep is not a key", "sampler.timesteps"]),
        (["noise.sigma=0.1"], ["did you mean noise.sigma_y"]),
        (["seeds=1"], ["did you mean seed?"]),
        (["degradation=sr5"], ["degradation=sr5 is not an option", "sr4"]),
        (["-m", "degradation=sr4,colorise"], ["degradation=colorise", "did you mean colorize?"]),
        (
            ["experiment=table1", "sampler.grad_scal=1"],
            ["did you mean sampler.grad_scale?"],
        ),
    ],
)
def test_typos_are_one_paragraph_with_close_matches(args: list[str], needles: list[str]) -> None:
    problem = check_overrides(args)
    assert problem is not None and problem.startswith("Invalid command line: ")
    assert "\n" not in problem
    for needle in needles:
        assert needle in problem


@pytest.mark.parametrize(
    "args",
    [
        ["sampler=mcg", "sampler.grad_scale=1"],
        ["+foo.bar=1", "hydra.run.dir=/tmp/x", "noise.sigma_y=0,0.05", "-m"],
        ["experiment=figure8", "kernel_estimator.kernel_size=9"],
        ["--cfg", "job", "model=gaussian", "model.image_size=32"],
        ["--help", "nonsense.key=1"],  # left to Hydra
    ],
)
def test_valid_command_lines_pass(args: list[str]) -> None:
    assert check_overrides(args) is None


@pytest.mark.parametrize("estimator", ["classical", "classical_local", "in_loop"])
def test_one_kernel_size_override_for_every_estimator(estimator: str) -> None:
    cfg = compose_cfg([f"kernel_estimator={estimator}", "kernel_estimator.kernel_size=9"])
    if estimator == "in_loop":
        assert cfg.sampler.kernel_size == 9  # the in-loop sampler (selected by it) takes it
        return
    built = instantiate(cfg.kernel_estimator)
    inner = getattr(built, "inner", built)
    assert inner.kernel_size == 9


def test_a_key_of_another_option_names_that_option() -> None:
    problem = check_overrides(["sampler.grad_scale=1"])
    assert problem is not None and "sampler=mcg" in problem
