"""``python -m ddrm_exp`` end to end: single runs, a multirun, wandb offline files, bad input."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from helpers import FAST_RUN as FAST
from helpers import compose_cfg, config_error, run_cli, run_cli_ok, run_job, run_sweep

from ddrm_exp.runner import RunContext, run

ROOT = Path(__file__).resolve().parents[1]


def read_results(run_dir: Path) -> list[dict]:
    return [json.loads(line) for line in (run_dir / "results.jsonl").read_text().splitlines()]


def test_default_run_beats_pinv_and_writes_outputs(tmp_path: Path) -> None:
    """The README's main command, as is, except where it writes."""
    run_dir = tmp_path / "run"
    proc = run_cli_ok([f"hydra.run.dir={run_dir}"], cwd=tmp_path)
    assert f"Outputs: {run_dir}" in proc.stdout
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["count"] == 4 and summary["nfe"] == 20
    assert summary["degradation"] == "inpaint_random" and summary["model"] == "tiny"
    assert summary["restored"]["psnr"]["mean"] > summary["baseline"]["psnr"]["mean"]
    assert summary["restored"]["psnr"]["ci95"] is not None
    assert summary["seconds_per_image"] > 0 and summary["nfe_per_s"] > 0
    records = read_results(run_dir)
    assert sorted(r["index"] for r in records) == [0, 1, 2, 3]
    for r in records:
        assert set(r["restored"]) >= {"psnr", "ssim", "lpips", "residual_rel", "residual_rms"}
        stem = f"{r['index']:05d}_{r['name']}"
        for kind in ("original", "pinv", "restored"):
            assert (run_dir / "images" / f"{stem}_{kind}.png").is_file()
    assert (run_dir / "grid.png").is_file()
    assert (run_dir / ".hydra" / "config.yaml").is_file()
    assert (run_dir / "config_resolved.yaml").is_file()
    # default logger: wandb offline, inside the run directory
    assert list((run_dir / "wandb").glob("offline-run-*")), "no offline wandb run written"


def test_issue_example_overrides(tmp_path: Path) -> None:
    """The issue's example overrides reach the run (in-process: the CLI's overrides path is
    the other tests')."""
    run_dir = tmp_path / "run"
    overrides = [
        "degradation=sr4",
        "noise.sigma_y=0.05",
        "sampler.timesteps=20",
        "sampler.eta=0.85",
        "sampler.eta_b=1.0",
        "device=cpu",
        "logger=none",
        "metrics.lpips=false",
        "dataset.limit=1",
    ]
    run(compose_cfg(overrides), RunContext(output_dir=run_dir))
    cfg = (run_dir / "config_resolved.yaml").read_text()
    assert "eta_b: 1.0" in cfg and "sigma_y: 0.05" in cfg


def test_multirun_one_dir_per_job_one_wandb_group(tmp_path: Path) -> None:
    sweep = tmp_path / "sweep"
    args = ["degradation=sr4,colorize", "noise.sigma_y=0.0", "logger=wandb", "save_images=false"]
    jobs = run_sweep([*args, *FAST], sweep, tmp_path)
    assert [p.name for p in jobs] == ["0", "1"]
    degs = sorted(json.loads((j / "summary.json").read_text())["degradation"] for j in jobs)
    assert degs == ["colorize", "sr4"]
    groups = set()
    for j in jobs:
        runs = list((j / "wandb").glob("offline-run-*"))
        assert len(runs) == 1
        groups.add(json.loads((j / "wandb_run.json").read_text())["group"])
    assert len(groups) == 1 and sweep.name in groups.pop()


def test_rerun_in_same_dir_resumes(tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    cfg = compose_cfg(["logger=none", "save_images=false", *FAST])
    run(cfg, RunContext(output_dir=run_dir))
    first = read_results(run_dir)
    lines = (run_dir / "results.jsonl").read_text().splitlines()
    (run_dir / "results.jsonl").write_text(lines[0] + "\n" + lines[1][:15])  # a torn last line
    run(cfg, RunContext(output_dir=run_dir))
    second = read_results(run_dir)
    assert [r["index"] for r in second] == [0, 1]
    assert second[0] == first[0]
    # image 1 is recomputed alone (batch 1, not 2): equal up to the float round-off of the
    # network's batched convolutions
    assert second[1]["restored"]["psnr"] == pytest.approx(first[1]["restored"]["psnr"], abs=1e-4)


@pytest.mark.parametrize(
    ("args", "needles"),
    [
        (["degradation=sr5"], ["degradation=sr5 is not an option", "sr4"]),
        (["sampler.timestep=20"], ["timestep"]),
        (["noise.sigma_y=-0.1"], ["noise.sigma_y", "-0.1"]),
        (["sampler.timesteps=0"], ["sampler.timesteps", "1..1000"]),
        (["sampler.timesteps=5000"], ["sampler.timesteps", "5000"]),
        (["precision=fp8"], ["precision='fp8'"]),
        (["device=cpu", "precision=fp16"], ["fp16 needs a CUDA device"]),
        (["model=gaussian", "degradation=sr4", "model.image_size=30"], ["30", "4"]),
        (["dataset=folder", "dataset.root=/nonexistent/images"], ["/nonexistent/images"]),
        (
            ["device=cuda"] if not __import__("torch").cuda.is_available() else ["device=bogus"],
            ["device"],
        ),
    ],
)
def test_bad_input_short_error_no_traceback(
    tmp_path: Path, args: list[str], needles: list[str]
) -> None:
    message = config_error([*args, "logger=none"], tmp_path / "run")
    for needle in needles:
        assert needle in message, message
    assert not (tmp_path / "run" / "results.jsonl").exists()


@pytest.mark.parametrize(
    "args",
    # a misspelt key, caught before Hydra (close matches: test_cli_help); a bad value, by the run
    [["sampler.timestep=5"], ["noise.sigma_y=-0.1"]],
    ids=["command line", "run"],
)
def test_cli_prints_bad_input_as_one_line_and_exits_2(tmp_path: Path, args: list[str]) -> None:
    proc = run_cli([*args, "logger=none", f"hydra.run.dir={tmp_path / 'run'}"], cwd=tmp_path)
    assert proc.returncode == 2
    assert "Traceback" not in proc.stderr and "Traceback" not in proc.stdout
    assert proc.stderr.startswith("ddrm_exp: error: ") and len(proc.stderr.splitlines()) <= 3
    assert config_error(args, tmp_path / "in_process") in proc.stderr
    assert not (tmp_path / "run" / "results.jsonl").exists()


def test_bundled_tiny_model_runs(tmp_path: Path) -> None:
    """The trained bundled prior loads strictly from the package and restores, no network
    (in process: the CLI runs it in test_default_run_beats_pinv_and_writes_outputs)."""
    summary = run_job(["model=tiny", "degradation=sr4", "logger=none", *FAST], tmp_path / "run")
    assert summary["model"] == "tiny" and summary["count"] == 2
    assert summary["restored"]["psnr"]["mean"] > 15


def test_speed_options_keep_results_close(tmp_path: Path) -> None:
    """bf16 autocast and channels_last on the bundled model: a normal run, close to fp32.
    In-process: the CLI's path for the same model is test_bundled_tiny_model_runs."""
    psnrs = {}
    for name, extra in (("fp32", []), ("bf16", ["precision=bf16", "channels_last=true"])):
        cfg = compose_cfg(
            ["model=tiny", "degradation=sr4", "logger=none", "device=cpu", *FAST, *extra]
        )
        run(cfg, RunContext(output_dir=tmp_path / name, choices={"model": "tiny"}))
        psnrs[name] = [r["restored"]["psnr"] for r in read_results(tmp_path / name)]
    for a, b in zip(psnrs["fp32"], psnrs["bf16"], strict=True):
        assert abs(a - b) < 0.2, psnrs
