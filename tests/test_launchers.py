"""Sweeps through Hydra's launcher plugins: the same outputs as the default local launcher."""

from __future__ import annotations

import json
import os
import stat
import sys
from pathlib import Path

import pytest
from helpers import cli_env, reap, spawn
from omegaconf import OmegaConf

from ddrm_exp.errors import ConfigError

pytest.importorskip("hydra_plugins.hydra_submitit_launcher", reason="pip install -e '.[cluster]'")
pytest.importorskip("hydra_plugins.hydra_joblib_launcher", reason="pip install -e '.[cluster]'")

SWEEP = [
    "-m",
    "noise.sigma_y=0,0.1",
    "logger=none",
    "save_images=false",
    "metrics.lpips=false",
    "sampler.timesteps=4",
    "dataset.limit=2",
    "model=gaussian",
    "model.image_size=32",
]


def run_cli(args: list[str], cwd: Path, extra_env: dict[str, str] | None = None) -> str:
    # One OpenMP thread per process: the jobs run side by side on a 2-core box.
    proc = spawn([sys.executable, "-m", "ddrm_exp", *args], cwd, env=cli_env(**(extra_env or {})))
    rc, out = reap(proc)
    return f"rc={rc}\n{out}"


def assert_two_jobs(sweep: Path) -> None:
    jobs = sorted(p.name for p in sweep.iterdir() if p.is_dir() and p.name.isdigit())
    assert jobs == ["0", "1"]
    sigmas = []
    for job in jobs:
        summary = json.loads((sweep / job / "summary.json").read_text())
        assert summary["count"] == 2
        sigmas.append(summary["sigma_y"])
        assert (sweep / job / ".hydra" / "overrides.yaml").is_file()
        assert len((sweep / job / "results.jsonl").read_text().splitlines()) == 2
    assert sorted(sigmas) == [0.0, 0.1]
    assert (sweep / "multirun.yaml").is_file()


@pytest.mark.parametrize(
    "launcher",
    [
        ["hydra/launcher=submitit_local"],
        # ~20 s, the same outputs through a second plugin: with the slow tests
        pytest.param(["hydra/launcher=joblib", "hydra.launcher.n_jobs=2"], marks=pytest.mark.slow),
    ],
    ids=["submitit_local", "joblib"],
)
def test_sweep_through_launcher_plugin(tmp_path: Path, launcher: list[str]) -> None:
    sweep = tmp_path / "sweep"
    out = run_cli([*SWEEP, *launcher, f"hydra.sweep.dir={sweep}"], tmp_path)
    assert out.startswith("rc=0"), out[-3000:]
    assert_two_jobs(sweep)


def test_slurm_gpu_preset_writes_a_one_gpu_job_array(tmp_path: Path) -> None:
    """No cluster here: stand-ins for srun and sbatch keep the sbatch script submitit writes."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    script = tmp_path / "submitted.sh"
    (bin_dir / "srun").write_text("#!/bin/sh\nexit 0\n")
    (bin_dir / "sbatch").write_text(
        f'#!/bin/sh\ncp "$1" "{script}"\necho "sbatch: test double, not submitted" >&2\nexit 1\n'
    )
    for tool in bin_dir.iterdir():
        tool.chmod(tool.stat().st_mode | stat.S_IXUSR)
    sweep = tmp_path / "sweep"
    out = run_cli(
        [
            *SWEEP,
            "hydra/launcher=slurm_gpu",
            "hydra.launcher.partition=gpu",
            f"hydra.sweep.dir={sweep}",
        ],
        tmp_path,
        {"PATH": f"{bin_dir}{os.pathsep}{os.environ['PATH']}"},
    )
    assert "test double, not submitted" in out
    text = script.read_text()
    for line in (
        "#SBATCH --array=0-1%",
        "#SBATCH --gpus-per-node=1",
        "#SBATCH --ntasks-per-node=1",
        "#SBATCH --cpus-per-task=8",
        "#SBATCH --mem=32GB",
        "#SBATCH --time=240",
        "#SBATCH --partition=gpu",
        "#SBATCH --job-name=ddrm_exp",
        f"{sweep}/.submitit/",
        "-m submitit.core._submit",
    ):
        assert line in text, (line, text)


@pytest.mark.parametrize("key", ["tasks_per_node", "nodes"])
def test_several_tasks_per_job_are_refused(key: str) -> None:
    """Each submitit task would run the whole job; several GPUs per job is torchrun's work."""
    from ddrm_exp.__main__ import _check_launcher

    _check_launcher(OmegaConf.create({"launcher": {key: 1}}))
    with pytest.raises(ConfigError, match=f"{key}=2"):
        _check_launcher(OmegaConf.create({"launcher": {key: 2}}))
