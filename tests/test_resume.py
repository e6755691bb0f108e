"""Resume and durability: killed runs, complete jobs, changed settings, overwrite, atomic files."""

from __future__ import annotations

import json
import logging
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
import torch
from helpers import GAUSSIAN_32, compose_cfg, one_thread, reap, run_job, spawn
from omegaconf import DictConfig
from PIL import Image

from ddrm_exp.runner import RunContext, run
from ddrm_exp.tracking.files import atomic_write, save_png
from ddrm_exp.tracking.resume import config_hash

FAST = [*GAUSSIAN_32, "sampler.timesteps=4", "save_images=false", "batch_size=2", "dataset.limit=4"]


def compose_fast(overrides: list[str]) -> DictConfig:
    return compose_cfg([*FAST, *overrides])


def run_in(out_dir: Path, overrides: list[str] | None = None) -> dict[str, Any]:
    cfg = compose_fast(overrides or [])
    return run(cfg, RunContext(output_dir=out_dir, choices={"model": "gaussian"}))


def read_lines(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def metrics_by_index(records: list[dict[str, Any]]) -> dict[int, tuple[Any, Any]]:
    return {r["index"]: (r["restored"], r["baseline"]) for r in records}


def test_complete_job_is_skipped(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    first = run_in(tmp_path)
    assert first["count"] == 4 and first["config_hash"] == config_hash(compose_fast([]))
    stamp = (tmp_path / "results.jsonl").stat().st_mtime_ns
    with caplog.at_level(logging.INFO):
        again = run_in(tmp_path, ["batch_size=1", "device=cpu"])  # neutral settings
    assert "skipping job: summary.json complete" in caplog.text
    assert again == json.loads((tmp_path / "summary.json").read_text())
    assert (tmp_path / "results.jsonl").stat().st_mtime_ns == stamp


def test_complete_summary_with_damaged_results_is_not_skipped(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    run_in(tmp_path)
    results = tmp_path / "results.jsonl"
    ref = read_lines(results)
    lines = results.read_text().splitlines()
    results.write_text("\n".join(lines[:2]) + "\n" + lines[3][:30])  # one lost, one torn
    with caplog.at_level(logging.INFO):
        run_in(tmp_path)
    assert "skipping job" not in caplog.text
    assert "resuming: 2 of 4 images already done, 2 to compute" in caplog.text
    assert metrics_by_index(read_lines(results)) == metrics_by_index(ref)


def test_changed_settings_recompute_every_image(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    run_in(tmp_path)
    with caplog.at_level(logging.INFO):
        summary = run_in(tmp_path, ["sampler.timesteps=5"])
    assert "skipping job" not in caplog.text
    assert "4 image(s)" in caplog.text and "other settings" in caplog.text
    records = read_lines(tmp_path / "results.jsonl")
    assert [r["index"] for r in records] == [0, 1, 2, 3]
    assert {r["nfe"] for r in records} == {5} and summary["nfe"] == 5
    assert {r["config_hash"] for r in records} == {summary["config_hash"]}


def test_larger_limit_computes_only_new_images(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """dataset.limit only truncates the dataset: images already done stay valid."""
    run_in(tmp_path, ["dataset.limit=2"])
    before = read_lines(tmp_path / "results.jsonl")
    with caplog.at_level(logging.INFO):
        summary = run_in(tmp_path, ["dataset.limit=4"])
    assert "resuming: 2 of 4 images already done, 2 to compute" in caplog.text
    after = read_lines(tmp_path / "results.jsonl")
    assert after[:2] == before and [r["index"] for r in after] == [0, 1, 2, 3]
    assert summary["count"] == 4


def test_single_process_finishes_a_killed_distributed_run(tmp_path: Path) -> None:
    """Per-rank files of a killed 2-rank run (one torn line) are reused, merged and removed."""
    reference = tmp_path / "reference"
    run_in(reference)
    ref = read_lines(reference / "results.jsonl")
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    marked = [dict(r, marker=True) for r in ref]
    (run_dir / "results.rank0.jsonl").write_text(json.dumps(marked[0]) + "\n")
    (run_dir / "results.rank1.jsonl").write_text(
        json.dumps(marked[1]) + "\n" + json.dumps(marked[3])[:40]
    )
    summary = run_in(run_dir)
    records = read_lines(run_dir / "results.jsonl")
    assert [r["index"] for r in records] == [0, 1, 2, 3]
    assert [bool(r.get("marker")) for r in records] == [True, True, False, False]
    assert metrics_by_index(records) == metrics_by_index(ref)
    assert sorted(p.name for p in run_dir.glob("results*.jsonl")) == ["results.jsonl"]
    assert summary["count"] == 4


def test_overwrite_starts_fresh_and_removes_rank_files(tmp_path: Path) -> None:
    run_in(tmp_path)
    bogus = dict(read_lines(tmp_path / "results.jsonl")[0], restored={"psnr": 999.0})
    (tmp_path / "results.rank1.jsonl").write_text(json.dumps(bogus) + "\n")
    (tmp_path / ".summary.json.abc.tmp").write_text("{")  # left by a killed writer
    run_in(tmp_path, ["overwrite=true"])
    records = read_lines(tmp_path / "results.jsonl")
    assert [r["index"] for r in records] == [0, 1, 2, 3]
    assert all(r["restored"]["psnr"] < 100 for r in records)
    assert not (tmp_path / "results.rank1.jsonl").exists()
    assert not list(tmp_path.glob(".*.tmp"))


def test_atomic_write_keeps_the_old_file_on_failure(tmp_path: Path) -> None:
    target = tmp_path / "summary.json"
    target.write_text("old")
    with pytest.raises(RuntimeError), atomic_write(target) as f:
        f.write("half of the new")
        raise RuntimeError("killed")
    assert target.read_text() == "old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["summary.json"]
    save_png(torch.zeros(3, 8, 8), tmp_path / "img.png")
    assert Image.open(tmp_path / "img.png").size == (8, 8)
    assert oct((tmp_path / "img.png").stat().st_mode & 0o777) != oct(0o600)  # not mkstemp's


# ---- the CLI, killed with SIGKILL -------------------------------------------------------------

KILL_ARGS = [
    "logger=none",
    "metrics.lpips=false",
    "dataset.split=all",
    "dataset.limit=6",
    "batch_size=1",
    # Enough steps that an image takes a noticeable time, so the kill lands mid-run.
    "sampler.timesteps=100",
    "model=gaussian",
    "model.image_size=32",
]


def cli(args: list[str], cwd: Path) -> subprocess.Popen[str]:
    return spawn([sys.executable, "-m", "ddrm_exp", *args], cwd)


def finish(proc: subprocess.Popen[str], timeout: float = 240) -> str:
    rc, out = reap(proc, timeout)
    assert rc == 0, out[-3000:]
    return out


def test_sigkill_mid_run_then_rerun_computes_only_the_rest(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """The killed run is a CLI process; the reference and the rerun run in process."""
    reference = tmp_path / "reference"
    with one_thread():
        run_job(KILL_ARGS, reference)
    ref = read_lines(reference / "results.jsonl")
    assert len(ref) == 6

    run_dir = tmp_path / "run"
    results = run_dir / "results.jsonl"
    proc = cli([*KILL_ARGS, f"hydra.run.dir={run_dir}"], tmp_path)
    deadline = time.monotonic() + 240
    while not (results.exists() and results.read_text().count("\n") >= 1):
        if proc.poll() is not None or time.monotonic() > deadline:
            proc.kill()
            pytest.fail(f"no result line before the run ended:\n{proc.communicate()[0][-3000:]}")
        time.sleep(0.005)
    os.kill(proc.pid, signal.SIGKILL)
    proc.communicate()
    assert proc.returncode == -signal.SIGKILL
    done_at_kill = results.read_text().count("\n")
    assert 1 <= done_at_kill < 6, "the kill did not land mid-run"
    assert not (run_dir / "summary.json").exists()

    with one_thread(), caplog.at_level(logging.INFO):
        run_job(KILL_ARGS, run_dir)
    assert f"resuming: {done_at_kill} of 6 images already done" in caplog.text
    lines = results.read_text().splitlines()
    records = [json.loads(line) for line in lines]  # no torn line: every line parses
    assert [r["index"] for r in records] == list(range(6))  # each index once, in order
    assert metrics_by_index(records) == metrics_by_index(ref)
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["count"] == 6
    assert (
        summary["restored"]["psnr"]
        == json.loads((reference / "summary.json").read_text())["restored"]["psnr"]
    )
    assert len(list((run_dir / "images").glob("*.png"))) == 6 * 4  # original, H⁺y, restored, y
    assert not list(run_dir.rglob(".*.tmp"))


@pytest.mark.slow  # two CLI sweeps, ~15 s: the skip is test_complete_job_is_skipped's, in
# process; one directory per job is test_cli's multirun
def test_multirun_rerun_skips_complete_jobs(tmp_path: Path) -> None:
    sweep = tmp_path / "sweep"
    args = [
        "-m",
        "noise.sigma_y=0,0.1",
        "logger=none",
        "save_images=false",
        "sampler.timesteps=4",
        "metrics.lpips=false",
        "dataset.limit=2",
        "model=gaussian",
        "model.image_size=32",
        f"hydra.sweep.dir={sweep}",
    ]
    finish(cli(args, tmp_path))
    stamps = {j: (sweep / j / "summary.json").stat().st_mtime_ns for j in ("0", "1")}
    log = finish(cli(args, tmp_path))
    assert log.count("skipping job: summary.json complete") == 2
    assert {j: (sweep / j / "summary.json").stat().st_mtime_ns for j in ("0", "1")} == stamps
