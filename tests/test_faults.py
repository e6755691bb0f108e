"""Fault injection (issue 13): each way of losing, mixing or misreporting results, reproduced.

The data-loss cases run the CLI in real subprocesses and kill them with real signals; the rest
run in-process with the fault injected (a full disk, a read-only directory) where a real one
cannot be made on a test box (tests run as root, which writes through read-only modes).
"""

from __future__ import annotations

import errno
import json
import logging
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from helpers import GAUSSIAN_32, compose_cfg, reap, run_job, spawn
from omegaconf import DictConfig
from PIL import Image

from ddrm_exp.cli_check import check_output_dir
from ddrm_exp.datasets import ImageFolderDataset
from ddrm_exp.errors import ConfigError, RunError
from ddrm_exp.models.checkpoints import load_state_dict
from ddrm_exp.runner import RunContext, Setup, format_summary, run
from ddrm_exp.tracking.identity import INPUT_KEY, DatasetChanged
from ddrm_exp.tracking.lock import LOCK_NAME, RunDirLocked
from ddrm_exp.tracking.resume import config_hash

FAST = [*GAUSSIAN_32, "sampler.timesteps=2"]
# One image per batch, each batch held for PACE_S seconds (see start()), so that a run can be
# killed, or a second one started, between two images however fast the box is.
SLOW = ["batch_size=1"]
PACE_S = 1.0
PACED_MAIN = (
    "import runpy, time, ddrm_exp.samplers.ddrm as d; sample = d.DDRM.sample\n"
    "def paced(*a, **k):\n    time.sleep({pace}); return sample(*a, **k)\n"
    "d.DDRM.sample = paced; runpy.run_module('ddrm_exp', run_name='__main__')"
)


# ---------------------------------------------------------------------------------- helpers


def write_png(path: Path, seed: int, size: int = 40) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    Image.fromarray(rng.integers(0, 256, (size, size, 3), dtype=np.uint8)).save(path)


def folder(root: Path, names: list[str]) -> Path:
    for i, name in enumerate(names):
        write_png(root / f"{name}.png", seed=i + 100 * len(name))
    return root


def compose_fast(overrides: list[str]) -> DictConfig:
    return compose_cfg([*FAST, *overrides])


def run_in(out_dir: Path, overrides: list[str]) -> dict[str, Any]:
    cfg = compose_fast(overrides)
    return run(cfg, RunContext(output_dir=out_dir, choices={"model": "gaussian"}))


def records(run_dir: Path) -> list[dict[str, Any]]:
    path = run_dir / "results.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


@pytest.fixture
def no_model(monkeypatch: pytest.MonkeyPatch) -> None:
    """Fail the test if the run gets as far as building its model."""

    def refuse(self: Setup) -> Any:
        raise AssertionError("the model was built before the error was found")

    monkeypatch.setattr(Setup, "load_prior", refuse)


def start(args: list[str], cwd: Path, pace: float = PACE_S) -> subprocess.Popen[str]:
    """``python -m ddrm_exp`` with FAST and ``args``; with SLOW in ``args``, paced per batch.

    Pacing wraps the sampler in a sleep of ``pace`` seconds; the numbers it computes are
    untouched.
    """
    paced = all(a in args for a in SLOW)
    entry = ["-c", PACED_MAIN.format(pace=pace)] if paced else ["-m", "ddrm_exp"]
    return spawn([sys.executable, *entry, *FAST, *args], cwd)


def finish(proc: subprocess.Popen[str], timeout: float = 180) -> tuple[int, str]:
    return reap(proc, timeout)


def cli(args: list[str], cwd: Path) -> tuple[int, str]:
    return finish(start(args, cwd))


def wait_until(what: str, ready: Any, proc: subprocess.Popen[str], timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while not ready():
        if proc.poll() is not None:
            pytest.fail(f"the run ended before {what}:\n{proc.communicate()[0][-3000:]}")
        if time.monotonic() > deadline:
            os.killpg(proc.pid, signal.SIGKILL)
            pytest.fail(f"timed out waiting for {what}")
        time.sleep(0.05)


def has_records(run_dir: Path, count: int, sigma_y: float | None = None) -> Any:
    def ready() -> bool:
        try:
            lines = (run_dir / "results.jsonl").read_text().splitlines()
        except FileNotFoundError:
            return False
        done = [json.loads(x) for x in lines if x.endswith("}")]
        return len([r for r in done if sigma_y is None or r["sigma_y"] == sigma_y]) >= count

    return ready


# ------------------------------------------------------------------- 1. changed dataset


def test_file_added_to_the_dataset_is_refused_not_merged(tmp_path: Path) -> None:
    """Case 1: results are tied to their input; a changed dataset is refused, never merged.
    The refusal through the CLI (exit 2, one paragraph); the runs around it in process."""
    root = folder(tmp_path / "images", ["b", "c"])
    run_dir = tmp_path / "run"
    args = ["dataset=folder", f"dataset.root={root}"]
    run_job([*FAST, *args], run_dir)
    before = (run_dir / "results.jsonl").read_text()
    assert [(r["index"], r["name"]) for r in records(run_dir)] == [(0, "b"), (1, "c")]
    assert all(len(r[INPUT_KEY]) == 16 for r in records(run_dir))

    write_png(root / "a.png", seed=7)
    rc, out = cli([*args, f"hydra.run.dir={run_dir}"], tmp_path)
    assert rc == 2, out
    assert "The dataset changed under the run directory" in out and "'b' then, 'a' now" in out
    assert "Traceback" not in out
    assert (run_dir / "results.jsonl").read_text() == before  # nothing merged or dropped

    run_job([*FAST, *args, "overwrite=true"], run_dir)
    assert [(r["index"], r["name"]) for r in records(run_dir)] == [(0, "a"), (1, "b"), (2, "c")]


def test_same_name_other_contents_is_refused(tmp_path: Path) -> None:
    root = folder(tmp_path / "images", ["b", "c"])
    overrides = ["dataset=folder", f"dataset.root={root}"]
    run_in(tmp_path / "run", overrides)
    write_png(root / "c.png", seed=99)
    with pytest.raises(DatasetChanged, match="same name but other contents"):
        run_in(tmp_path / "run", overrides)


def test_skip_unreadable_keeps_the_config_hash(tmp_path: Path) -> None:
    """Adding the option left the hashes of existing folder runs as they were."""
    base = ["dataset=folder", f"dataset.root={tmp_path}"]
    plain = config_hash(compose_fast(base))
    assert config_hash(compose_fast([*base, "dataset.skip_unreadable=true"])) == plain


def test_folder_names_in_natural_order(tmp_path: Path) -> None:
    """Issue 17 part 12: numbers in file names sort by value."""
    root = folder(tmp_path / "images", ["orig_10", "orig_2", "orig_1", "b/x_3", "b/x_20"])
    ds = ImageFolderDataset(image_size=32, root=root)
    assert ds.names == ["b/x_3", "b/x_20", "orig_1", "orig_2", "orig_10"]


# ------------------------------------------------------------------------- 2. the lock


def test_second_run_is_refused_while_the_first_writes_and_sigkill_leaves_no_stale_lock(
    tmp_path: Path,
) -> None:
    """Case 2: one writer per directory; a SIGKILLed writer does not block the next run. The
    writer is a CLI process; the second run is in process (the CLI prints a ConfigError as
    one paragraph with exit 2: test_cli, and this refusal on every torchrun rank below)."""
    run_dir = tmp_path / "run"
    base = ["dataset.split=all", "dataset.limit=9"]
    # Paced (9 images x 2 s) so that it is still writing while the second run starts, in process
    # (about a second, several on a loaded box); it is killed below, so the pace costs one step.
    first = start([*base, *SLOW, f"hydra.run.dir={run_dir}"], tmp_path, pace=2.0)
    wait_until("the first image", has_records(run_dir, 1), first)
    assert (run_dir / LOCK_NAME).read_text().startswith(f"pid {first.pid} ")

    with pytest.raises(RunDirLocked, match=f"Another run is writing .*pid {first.pid}"):
        run_job([*FAST, *base, "noise.sigma_y=0.3"], run_dir)
    assert first.poll() is None, "the first run ended too soon to test the lock"
    assert not (run_dir / "summary.json").exists()

    os.killpg(first.pid, signal.SIGKILL)  # the kernel drops its flock with it
    first.communicate()
    assert len(records(run_dir)) >= 1
    summary = run_job([*FAST, *base, "noise.sigma_y=0.3"], run_dir)
    assert json.loads((run_dir / "summary.json").read_text()) == summary
    assert summary["count"] == 9 and summary["sigma_y"] == 0.3
    assert {r["config_hash"] for r in records(run_dir)} == {summary["config_hash"]}


# ----------------------------------------------------- 3. files of another configuration


@pytest.mark.slow  # three CLI runs, about 20 s on a loaded two-core box
def test_killed_run_of_other_settings_leaves_nothing_that_looks_complete(tmp_path: Path) -> None:
    """Case 3: A complete; B (σ_y=0.3) killed after one image; rerunning A recomputes."""
    run_dir = tmp_path / "run"
    base = ["dataset.limit=2", f"hydra.run.dir={run_dir}"]
    rc, out = cli(base, tmp_path)
    assert rc == 0, out
    png = run_dir / "images" / "00000_astronaut_restored.png"
    a_png, a_records = png.read_bytes(), records(run_dir)
    a_summary = json.loads((run_dir / "summary.json").read_text())

    other = start([*base, *SLOW, "noise.sigma_y=0.3"], tmp_path)
    wait_until("B's first image", has_records(run_dir, 1, sigma_y=0.3), other)
    os.killpg(other.pid, signal.SIGKILL)
    other.communicate()
    assert png.read_bytes() != a_png  # B's image is on disk now
    assert not (run_dir / "summary.json").exists()  # A's summary went when B started

    rc, out = cli(base, tmp_path)
    assert rc == 0, out
    assert "skipping job" not in out
    assert png.read_bytes() == a_png
    summary = json.loads((run_dir / "summary.json").read_text())
    for key in ("count", "config_hash", "restored", "baseline", "sigma_y"):
        assert summary[key] == a_summary[key], key
    assert [(r["index"], r["restored"]) for r in records(run_dir)] == [
        (r["index"], r["restored"]) for r in a_records
    ]


# ------------------------------------------------------------------------------ 4. NaN


def test_nan_restoration_stops_with_the_step_and_no_summary(tmp_path: Path) -> None:
    with pytest.raises(RunError) as err:
        run_in(
            tmp_path,
            ["dataset.limit=2", "sampler=mcg", "sampler.grad_scale=1e30", "sampler.timesteps=5"],
        )
    text = str(err.value)
    assert "not finite: x̂₀ first became NaN or inf at step" in text
    assert "lower sampler.grad_scale" in text and "checkpoint" in text
    assert not (tmp_path / "summary.json").exists() and records(tmp_path) == []


def test_nan_weights_stop_before_sampling(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    load = Setup.load_prior

    def poisoned(self: Setup) -> Any:
        prior = load(self)
        prior.network.spectrum.fill_(float("nan"))
        return prior

    monkeypatch.setattr(Setup, "load_prior", poisoned)
    with pytest.raises(RunError, match="weights of model=gaussian hold NaN"):
        run_in(tmp_path, ["dataset.limit=1"])
    assert not (tmp_path / "summary.json").exists()


# ------------------------------------------------------------------ 5, 7: folder scans


def test_symlink_loop_counts_each_file_once(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    root = folder(tmp_path / "images", ["a", "sub/b"])
    (root / "sub" / "loop").symlink_to(root, target_is_directory=True)
    (root / "same.png").symlink_to(root / "a.png")
    with caplog.at_level(logging.WARNING):
        ds = ImageFolderDataset(image_size=32, root=root)
    assert ds.names == ["a", "sub/b"]
    assert "more than once" in caplog.text


def test_unreadable_images_fail_before_the_model(tmp_path: Path, no_model: None) -> None:
    root = folder(tmp_path / "images", ["a", "d"])
    good = (root / "a.png").read_bytes()
    (root / "b.png").write_bytes(good[: len(good) // 2])  # truncated
    (root / "c.png").write_text("not an image\n")
    jpeg = root / "e.jpg"
    Image.open(root / "a.png").save(jpeg, quality=90)
    jpeg.write_bytes(jpeg.read_bytes()[:-200])  # cut short: the header still parses
    with pytest.raises(ConfigError) as err:
        run_in(tmp_path / "run", ["dataset=folder", f"dataset.root={root}"])
    text = str(err.value)
    assert "3 image file(s) cannot be read" in text
    assert all(name in text for name in ("b.png", "c.png", "e.jpg"))
    assert "dataset.skip_unreadable=true" in text


def test_skip_unreadable_leaves_them_out(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    root = folder(tmp_path / "images", ["a", "d"])
    (root / "c.png").write_text("not an image\n")
    with caplog.at_level(logging.WARNING):
        summary = run_in(
            tmp_path / "run",
            ["dataset=folder", f"dataset.root={root}", "dataset.skip_unreadable=true"],
        )
    assert summary["count"] == 2 and "leaving out" in caplog.text
    assert [r["name"] for r in records(tmp_path / "run")] == ["a", "d"]


# ------------------------------------------------------------------- 8. validation


@pytest.mark.parametrize(
    ("override", "message"),
    [("seed=-1", "seed must be an integer in 0..2**63-1"), ("grid_max_images=abc", "grid_max")],
)
def test_bad_values_fail_before_the_model(
    tmp_path: Path, no_model: None, override: str, message: str
) -> None:
    with pytest.raises(ConfigError, match=message.replace("*", r"\*")):
        run_in(tmp_path, [override])


# ------------------------------------------------------------- 10. interruptions and I/O


def test_ctrl_c_says_what_is_kept(tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    proc = start(
        ["dataset.split=all", "dataset.limit=3", *SLOW, f"hydra.run.dir={run_dir}"], tmp_path
    )
    wait_until("the first image", has_records(run_dir, 1), proc)
    os.killpg(proc.pid, signal.SIGINT)
    rc, out = finish(proc)
    assert rc == 130, out
    assert "Interrupted:" in out and f"hydra.run.dir={run_dir}" in out
    assert "Traceback" not in out
    assert not (run_dir / "summary.json").exists() and len(records(run_dir)) >= 1


def test_disk_full_says_what_is_kept(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from ddrm_exp.tracking import files

    append = files.ResultsFile.append
    calls = []

    def fill_up(self: files.ResultsFile, record: dict[str, Any]) -> None:
        calls.append(record["index"])
        if len(calls) > 1:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(self.path))
        append(self, record)

    monkeypatch.setattr(files.ResultsFile, "append", fill_up)
    with pytest.raises(RunError, match="No space left") as err:
        run_in(tmp_path, ["dataset.limit=3", "batch_size=1"])
    assert "Every image already in" in str(err.value)
    assert len(records(tmp_path)) == 1 and not (tmp_path / "summary.json").exists()


def read_only(monkeypatch: pytest.MonkeyPatch) -> None:
    """Every file creation fails as on a read-only mount (root ignores permission bits)."""
    import ddrm_exp.tracking.files as files
    import ddrm_exp.tracking.lock as lock

    def refuse(*args: Any, **kwargs: Any) -> Any:
        raise OSError(errno.EROFS, os.strerror(errno.EROFS), str(args[0]) if args else None)

    monkeypatch.setattr(lock.os, "open", refuse)
    monkeypatch.setattr(files.tempfile, "mkstemp", refuse)


def test_read_only_directory_skips_a_complete_job_and_explains_otherwise(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    first = run_in(tmp_path, ["dataset.limit=2"])
    before = {p: p.stat().st_mtime_ns for p in tmp_path.rglob("*")}
    with monkeypatch.context() as mp:
        read_only(mp)
        assert run_in(tmp_path, ["dataset.limit=2"]) == first
        with pytest.raises(RunError, match="cannot be written"):
            run_in(tmp_path, ["dataset.limit=2", "noise.sigma_y=0.1"])
    assert {p: p.stat().st_mtime_ns for p in tmp_path.rglob("*")} == before


def test_run_dir_that_is_a_file(tmp_path: Path) -> None:
    target = tmp_path / "taken"
    target.write_text("x")
    with pytest.raises(RunError, match="a file stands where a directory is needed"):
        run_in(target, ["dataset.limit=1"])


@pytest.mark.parametrize(
    ("args", "key"),
    [
        (["hydra.run.dir={file}"], "hydra.run.dir"),
        (["hydra.run.dir={file}/run"], "hydra.run.dir"),
        (["paths.output_root={file}"], "hydra.run.dir"),
        (["-m", "noise.sigma_y=0,0.1", "hydra.sweep.dir={file}"], "hydra.sweep.dir"),
        (["--multirun", "hydra.sweep.dir={file}/sweep"], "hydra.sweep.dir"),
    ],
)
def test_output_dir_that_is_a_file_is_refused_before_hydra(
    tmp_path: Path, args: list[str], key: str
) -> None:
    """Hydra creates the directory before any of our code runs: checked before it starts."""
    file = tmp_path / "taken"
    file.write_text("x")
    problem = check_output_dir([a.format(file=file) for a in ["dataset.limit=1", *args]])
    assert problem is not None and problem.startswith("The output directory of")
    assert f"{file} is a file" in problem and f"{key}=..." in problem
    assert file.read_text() == "x" and sorted(tmp_path.iterdir()) == [file]


def test_cli_refuses_an_output_dir_that_is_a_file_in_one_paragraph(tmp_path: Path) -> None:
    file = tmp_path / "taken"
    file.write_text("x")
    code, out = cli(["dataset.limit=1", f"hydra.run.dir={file}/run"], tmp_path)
    assert code == 2, out
    assert out.startswith("ddrm_exp: error: The output directory of") and "Traceback" not in out
    assert f"{file} is a file" in out
    assert len(out.strip().splitlines()) == 1  # one paragraph
    assert file.read_text() == "x" and sorted(tmp_path.iterdir()) == [file]


def test_random_bytes_checkpoint_is_a_config_error(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    for i in range(20):
        path = tmp_path / f"w{i}.pt"
        path.write_bytes(rng.integers(0, 256, 4096, dtype=np.uint8).tobytes())
        with pytest.raises(ConfigError, match="could not be read|refused for safety"):
            load_state_dict(path)


# ------------------------------------------------------------------- 11. σ_y = 0 denoise


def test_denoise_without_noise_explains_the_infinite_psnr(tmp_path: Path) -> None:
    summary = run_in(tmp_path, ["dataset.limit=2", "degradation=denoise", "noise.sigma_y=0"])
    assert summary["baseline"]["psnr"]["n"] == 0
    assert "H⁺y equals the original exactly for 2 of 2" in summary["psnr_note"]
    assert "σ_y=0" in format_summary(summary)


# ----------------------------------------------------------------------------- 9. wandb


@pytest.fixture
def no_wandb_key(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("WANDB_API_KEY", raising=False)
    monkeypatch.setenv("NETRC", str(tmp_path / "no.netrc"))


def test_wandb_online_without_a_key_fails_before_the_model(
    tmp_path: Path, no_model: None, no_wandb_key: None
) -> None:
    with pytest.raises(ConfigError, match="no wandb API key.*wandb login.*logger.fallback=offline"):
        run_in(tmp_path / "run", ["logger=wandb", "logger.mode=online"])


def test_wandb_online_without_network_fails_fast(
    tmp_path: Path, no_model: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    import socket

    monkeypatch.setenv("WANDB_API_KEY", "x" * 40)

    def no_route(address: Any, timeout: float | None = None) -> Any:
        raise OSError(errno.ENETUNREACH, os.strerror(errno.ENETUNREACH))

    monkeypatch.setattr(socket, "create_connection", no_route)
    with pytest.raises(ConfigError, match="cannot be reached within 5 s"):
        run_in(tmp_path / "run", ["logger=wandb", "logger.mode=online"])


def test_wandb_fallback_offline(
    tmp_path: Path, no_wandb_key: None, caplog: pytest.LogCaptureFixture
) -> None:
    run_dir = tmp_path / "run"
    overrides = ["logger=wandb", "logger.mode=online", "logger.fallback=offline", "dataset.limit=1"]
    with caplog.at_level(logging.WARNING):
        run_in(run_dir, overrides)
    assert "logging offline instead" in caplog.text
    assert json.loads((run_dir / "wandb_run.json").read_text())["mode"] == "offline"
    assert list((run_dir / "wandb").glob("offline-run-*"))


def test_wandb_directory_not_writable_fails_before_the_model(
    tmp_path: Path, no_model: None
) -> None:
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    (run_dir / "wandb").write_text("a file where wandb wants its directory")
    with pytest.raises(ConfigError, match="wandb cannot write its files"):
        run_in(run_dir, ["logger=wandb"])


def test_torchrun_into_a_locked_directory_is_refused_on_every_rank(tmp_path: Path) -> None:
    """Rank 0 asks for the lock and tells the others: no rank hangs, none writes."""
    from ddrm_exp.tracking.lock import RunLock

    run_dir = tmp_path / "run"
    with RunLock.acquire(run_dir):
        proc = spawn(
            [
                sys.executable,
                "-m",
                "torch.distributed.run",
                "--standalone",
                "--nproc_per_node=2",
                "-m",
                "ddrm_exp",
                *FAST,
                "dataset.limit=2",
                f"hydra.run.dir={run_dir}",
            ],
            tmp_path,
        )
        rc, out = finish(proc, timeout=240)
    assert rc != 0
    assert out.count("Another run is writing") == 2, out[-3000:]  # one message per rank
    assert not (run_dir / "results.jsonl").exists() and not list(run_dir.glob("results.rank*"))


def test_io_errors_outside_the_run_directory_are_not_blamed_on_it(tmp_path: Path) -> None:
    from ddrm_exp import faults

    elsewhere = OSError(errno.EACCES, os.strerror(errno.EACCES), "/data/photo.png")
    assert faults.os_error(elsewhere, tmp_path) is None
    inside = OSError(errno.EROFS, os.strerror(errno.EROFS), str(tmp_path / "results.jsonl"))
    assert "read-only" in str(faults.os_error(inside, tmp_path))
    full = OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), "/tmp/cache/x")
    assert "No space left" in str(faults.os_error(full, tmp_path))


def test_video_run_refuses_a_changed_dataset_too(tmp_path: Path, no_model: None) -> None:
    """setup() makes the check, so task=video (its own runner) gets it as well."""
    from ddrm_exp.datasets.bsd_mini import write_mini_bsd

    root = tmp_path / "bsd"
    write_mini_bsd(root, sequences=1, frames=2, size=(40, 40))
    overrides = [
        "task=video",
        "dataset=bsd_synthetic",
        f"dataset.root={root}",
        "dataset.kernel.size=5",
        "degradation=blur_given",
    ]
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    record = {"index": 0, "name": "999/00000", "config_hash": config_hash(compose_fast(overrides))}
    (run_dir / "results.jsonl").write_text(json.dumps(record) + "\n")
    with pytest.raises(DatasetChanged, match="'999/00000' then"):
        run(compose_fast(overrides), RunContext(output_dir=run_dir, choices={"model": "gaussian"}))


# ------------------------------------------- real faults on a small tmpfs, where one can be made

QUIET_HYDRA = ["hydra.output_subdir=null", "hydra/job_logging=disabled"]  # Hydra's own writes


@pytest.fixture
def small_fs(tmp_path: Path) -> Any:
    """A mounted 400 kB tmpfs (root with mount rights only); unmounted afterwards."""
    mount_point = tmp_path / "fs"
    mount_point.mkdir()
    made = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=400k", "tmpfs", str(mount_point)],
        capture_output=True,
        check=False,
    )
    if made.returncode != 0:
        pytest.skip("cannot mount a tmpfs here (needs root with mount rights)")
    try:
        yield mount_point
    finally:
        subprocess.run(["umount", "-l", str(mount_point)], check=False)


@pytest.mark.slow  # four CLI runs, about 20 s
def test_real_disk_full_then_read_only(tmp_path: Path, small_fs: Path) -> None:
    run_dir = small_fs / "run"
    big = ["dataset.split=all", "batch_size=1", "model.image_size=128", *QUIET_HYDRA]
    rc, out = cli([*big, "dataset.limit=9", f"hydra.run.dir={run_dir}"], tmp_path)
    assert rc == 2, out
    assert "No space left" in out and "Every image already in" in out and "Traceback" not in out
    assert not (run_dir / "summary.json").exists()
    kept = records(run_dir)
    assert kept and not list(run_dir.rglob(".*.tmp"))

    # The same directory, made read-only: the complete job of one image is skipped without
    # writing; an unfinished one is explained.
    subprocess.run(["rm", "-rf", str(run_dir)], check=True)
    small = [*big, "dataset.limit=1", "save_images=false", f"hydra.run.dir={run_dir}"]
    rc, out = cli(small, tmp_path)
    assert rc == 0, out
    subprocess.run(["mount", "-o", "remount,ro", str(small_fs)], check=True)
    rc, out = cli(small, tmp_path)
    assert rc == 0 and "1 image," in out, out  # (job logging is off: no 'skipping' line)
    rc, out = cli([*small, "noise.sigma_y=0.2"], tmp_path)
    assert rc == 2 and "cannot be written" in out and "Traceback" not in out, out
