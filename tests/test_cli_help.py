"""--help says what the tool does and lists every option; typos exit 2 naming close matches."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest
from helpers import compose_cfg, run_cli
from hydra.utils import instantiate

from ddrm_exp.cli_check import check_overrides, group_options
from ddrm_exp.paths import CONF_DIR

ROOT = Path(__file__).resolve().parents[1]


def _cli(*args: str) -> subprocess.CompletedProcess:
    return run_cli(list(args), ROOT, timeout=120)


def test_help_opens_with_what_the_tool_does_and_lists_every_option() -> None:
    out = _cli("--help")
    assert out.returncode == 0, out.stderr
    text = out.stdout
    assert text.startswith("ddrm_exp: restore images with DDRM")
    assert "powered by Hydra" not in text
    groups = [p.name for p in CONF_DIR.iterdir() if p.is_dir() and p.name != "hydra"]
    for group in groups:
        assert f"\n  {group} " in text, group
        for option in group_options(group):
            assert option in text, f"{group}={option}"
    assert "threads=N" in text and "sampler:" in text  # the config follows


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


def test_misspelt_key_exits_2_with_the_message() -> None:
    out = _cli("sampler.timestep=5")
    assert out.returncode == 2
    assert out.stderr.startswith("ddrm_exp: error: Invalid command line: ")
    assert "sampler.timesteps" in out.stderr and "Traceback" not in out.stderr


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
