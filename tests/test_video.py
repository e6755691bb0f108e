"""task=video on miniature BSD trees: outputs, temporal settings, resume, and bad input."""

from __future__ import annotations

import json
import logging
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from helpers import GAUSSIAN_32, cli_env, compose_cfg, one_thread, run_job, run_sweep

from ddrm_exp.datasets.bsd_mini import write_mini_bsd
from ddrm_exp.degradations.base import HFunctions
from ddrm_exp.errors import ConfigError
from ddrm_exp.models.base import DiffusionPrior
from ddrm_exp.models.gaussian import build_gaussian_prior
from ddrm_exp.runner import RunContext, format_summary, run
from ddrm_exp.samplers import DDRM, SampleResult, WarmStart
from ddrm_exp.tracking.video import read_video
from ddrm_exp.video.state import state_path

ROOT = Path(__file__).resolve().parents[1]
SIZE = 32
FRAMES = 4
FAST = [
    *GAUSSIAN_32,
    "sampler.timesteps=5",  # t = 800, 600, 400, 200, 0
    "batch_size=2",
    "degradation=blur_given",
    "noise.sigma_y=0.02",
]
SYNTHETIC = ["dataset=bsd_synthetic", "dataset.kernel.size=5"]


@pytest.fixture(scope="module")
def bsd_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("bsd")
    write_mini_bsd(root, sequences=2, frames=FRAMES, size=(40, 40))
    return root


@pytest.fixture(scope="module")
def static_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One sequence whose frames are all the same picture."""
    root = tmp_path_factory.mktemp("static")
    write_mini_bsd(root, sequences=1, frames=3, size=(40, 40))
    for kind in ("Sharp", "Blur"):
        folder = root / "BSD_1ms8ms" / "test" / "000" / kind / "RGB"
        first, *rest = sorted(folder.glob("*.png"))
        for path in rest:
            shutil.copyfile(first, path)
    return root


def run_video(out: Path, root: Path | None, *extra: str, data: list[str] = SYNTHETIC) -> dict:
    where = [f"dataset.root={root}"] if root is not None else []
    overrides = [*FAST, *data, "task=video", *where, *extra]
    cfg = compose_cfg(overrides)
    # What Hydra's runtime choices would say: the config groups picked on the command line.
    groups = (o.split("=", 1) for o in overrides if "=" in o and not o.startswith("+"))
    choices = {k: v for k, v in groups if "." not in k and k != "task"}
    return run(cfg, RunContext(output_dir=out, choices=choices))


def records(run_dir: Path) -> list[dict]:
    lines = (run_dir / "results.jsonl").read_text().splitlines()
    return sorted((json.loads(line) for line in lines), key=lambda r: r["index"])


def test_writes_videos_frames_and_per_frame_results(bsd_root: Path, tmp_path: Path) -> None:
    summary = run_video(tmp_path, bsd_root, "logger=wandb", "logger.mode=offline")
    recs = records(tmp_path)
    assert len(recs) == 2 * FRAMES
    for seq in ("000", "001"):
        video = read_video(tmp_path / "videos" / f"{seq}.mp4")
        assert video.shape[0] == FRAMES
        assert video.shape[2] > 3 * SIZE  # blurry | restored | sharp
        mine = [r for r in recs if r["sequence"] == seq]
        assert [r["position"] for r in mine] == list(range(FRAMES))
        assert mine[0]["temporal"]["flicker"] is None  # no previous frame
        assert all(r["temporal"]["flicker"] > 0 for r in mine[1:])
        assert all(r["temporal"]["warping_error"] is not None for r in mine[1:])
    assert summary["task"] == "video"
    assert summary["temporal"]["flicker"]["n"] == 2 * (FRAMES - 1)
    assert [s["sequence"] for s in summary["sequences"]] == ["000", "001"]
    assert summary["sequences"][0]["video"] == "videos/000.mp4"
    seqs = json.loads((tmp_path / "sequences.json").read_text())
    assert seqs == json.loads(json.dumps(summary["sequences"]))
    assert len(list((tmp_path / "images").rglob("*_restored.png"))) == 2 * FRAMES
    # wandb (offline) got each sequence's video
    assert len(list((tmp_path / "wandb").rglob("media/videos/**/*.mp4"))) == 2


def test_independent_frames_equal_the_image_runner(bsd_root: Path, tmp_path: Path) -> None:
    run_video(tmp_path / "video", bsd_root)
    cfg = compose_cfg([*FAST, *SYNTHETIC, f"dataset.root={bsd_root}"])
    run(cfg, RunContext(output_dir=tmp_path / "image", choices={}))
    video, image = records(tmp_path / "video"), records(tmp_path / "image")
    assert [r["index"] for r in video] == [r["index"] for r in image]
    for v, i in zip(video, image, strict=True):
        assert v["restored"]["psnr"] == pytest.approx(i["restored"]["psnr"], abs=1e-9)


def test_warm_start_uses_fewer_nfe(bsd_root: Path, tmp_path: Path) -> None:
    summary = run_video(tmp_path, bsd_root, "temporal=warm_start", "temporal.t_star=300")
    recs = records(tmp_path)
    first = [r for r in recs if r["position"] == 0]
    later = [r for r in recs if r["position"] > 0]
    assert {r["nfe"] for r in first} == {5}
    assert {r["nfe"] for r in later} == {2}  # t = 200, 0
    assert all(r["temporal"]["warm_started"] for r in later)
    assert summary["temporal"]["nfe_per_frame"] == pytest.approx((5 + 2 * (FRAMES - 1)) / FRAMES)
    # The headline NFE is the true mean per frame (5, 2, 2, 2 -> 2.75), not the first frame's.
    assert summary["nfe"] == pytest.approx(2.75)
    # NFE/s counts each batched call once: 2 frames per batch here.
    batch_nfe = sum(r["nfe"] / r["batch_size"] for r in recs)
    assert summary["nfe_per_s"] == pytest.approx(batch_nfe / sum(r["seconds"] for r in recs))
    text = format_summary(summary)
    assert "2.75 NFE per frame (mean)" in text
    assert "flicker" in text and "warping error" in text and "95 % confidence interval" in text


def test_static_sequence_with_shared_noise_does_not_flicker(
    static_root: Path, tmp_path: Path
) -> None:
    real = ["dataset=bsd"]
    common = ["degradation.assumed_kernel=gauss", "noise.sigma_y=0", "noise.assumed_sigma_y=0.02"]
    run_video(tmp_path / "shared", static_root, *common, "temporal=shared_noise", data=real)
    run_video(tmp_path / "own", static_root, *common, data=real)
    shared = [r["temporal"]["flicker"] for r in records(tmp_path / "shared")[1:]]
    own = [r["temporal"]["flicker"] for r in records(tmp_path / "own")[1:]]
    assert shared == [0.0, 0.0]
    assert all(f > 1e-3 for f in own)


def test_resume_recomputes_only_the_unfinished_frame_exactly(
    bsd_root: Path, tmp_path: Path
) -> None:
    run_video(tmp_path, bsd_root, "temporal=warm_start")
    full = records(tmp_path)
    last = full[-1]
    # A run killed while restoring the last frame: its line is missing, nothing is summarised.
    lines = (tmp_path / "results.jsonl").read_text().splitlines()
    kept = [line for line in lines if json.loads(line)["index"] != last["index"]]
    (tmp_path / "results.jsonl").write_text("\n".join(kept) + "\n")
    (tmp_path / "summary.json").unlink()
    (tmp_path / "videos" / f"{last['sequence']}.mp4").unlink()
    assert state_path(tmp_path, last["sequence"], last["position"] - 1).is_file()
    run_video(tmp_path, bsd_root, "temporal=warm_start")
    again = records(tmp_path)
    assert len(again) == len(full)
    assert again[-1]["restored"]["psnr"] == pytest.approx(last["restored"]["psnr"], abs=1e-9)
    assert again[-1]["nfe"] == last["nfe"] < 5  # warm-started from the stored state
    assert again[:-1] == full[:-1]  # untouched
    assert read_video(tmp_path / "videos" / f"{last['sequence']}.mp4").shape[0] == FRAMES


@pytest.mark.parametrize(
    ("extra", "needle"),
    [
        (["dataset=samples"], "needs a dataset of video sequences"),
        (["temporal=kernel_propagation"], "estimates no kernel"),
        (["temporal.t_star=-3"], "temporal.t_star must be a timestep"),
        (["+temporal.speed=2"], "unknown key"),
        (["video.fps=0"], "video.fps must be"),
    ],
)
def test_bad_input_is_refused_before_the_model(
    bsd_root: Path, tmp_path: Path, extra: list[str], needle: str
) -> None:
    samples = "dataset=samples" in extra
    with pytest.raises(ConfigError, match=needle):
        run_video(
            tmp_path, None if samples else bsd_root, *extra, data=[] if samples else SYNTHETIC
        )
    assert not (tmp_path / "results.jsonl").exists()


def cold_and_warm(
    sampler: DDRM,
    prior: DiffusionPrior,
    op: HFunctions,
    y: torch.Tensor,
    sigma_y: float,
    warm_start: WarmStart,
) -> tuple[SampleResult, SampleResult]:
    """The same sampler with the same generator seed, without and with ``warm_start``."""
    cold = sampler.sample(prior, op, y, sigma_y, generator=torch.Generator().manual_seed(1))
    warm = sampler.sample(
        prior, op, y, sigma_y, generator=torch.Generator().manual_seed(1), warm_start=warm_start
    )
    return cold, warm


def test_warm_start_from_the_truth_beats_a_cold_start() -> None:
    """The sampler's warm start: from the right image, a few steps restore it far better."""
    from ddrm_exp.datasets import SampleImages
    from ddrm_exp.degradations.inpainting import RandomInpainting

    prior = build_gaussian_prior(image_size=16)
    data = SampleImages(16, "heldout")
    x = torch.stack([data[i]["image"] for i in range(2)])
    op = RandomInpainting((3, 16, 16), fraction=0.7)
    y = op.H(x.reshape(2, -1))
    cold, warm = cold_and_warm(DDRM(10, 0.85, 1.0), prior, op, y, 0.0, WarmStart(x, t_star=200))
    assert warm.nfe == 3 and cold.nfe == 10

    def err(a: torch.Tensor) -> float:
        return float((a - x).pow(2).mean())

    assert err(warm.x0) < 0.5 * err(cold.x0)


def test_warm_start_at_the_top_from_zero_is_a_cold_start() -> None:
    from ddrm_exp.degradations.denoising import Denoising

    prior = build_gaussian_prior(image_size=8)
    op = Denoising((3, 8, 8))
    y = torch.randn(2, 3 * 64, generator=torch.Generator().manual_seed(0))
    sampler = DDRM(5, 0.85, 1.0)
    top = WarmStart(torch.zeros(2, 3, 8, 8), t_star=999)
    cold, warm = cold_and_warm(sampler, prior, op, y, 0.1, top)
    torch.testing.assert_close(warm.x0, cold.x0, atol=0, rtol=0)
    with pytest.raises(ValueError, match="t_star"):
        sampler.sample(prior, op, y, 0.1, warm_start=WarmStart(torch.zeros(2, 3, 8, 8), -1))
    with pytest.raises(ValueError, match="warm_start.x0"):
        sampler.sample(prior, op, y, 0.1, warm_start=WarmStart(torch.zeros(1, 3, 8, 8), 10))


@pytest.mark.slow
def test_video_bsd_multirun_writes_the_comparison_table(bsd_root: Path, tmp_path: Path) -> None:
    sweep = tmp_path / "sweep"
    args = [
        "experiment=video_bsd",
        "model=gaussian",
        f"model.image_size={SIZE}",
        "sampler.timesteps=5",
        "metrics.lpips=false",
        "logger=none",
        f"dataset.root={bsd_root}",
        "kernel_estimator.kernel_size=5",
    ]
    jobs = run_sweep(args, sweep, tmp_path, timeout=600)
    table = (sweep / "tables" / "video.md").read_text()
    for mode in ("independent", "warm_start (t*=150)", "shared_noise", "kernel_propagation"):
        assert f"| {mode} |" in table, table
    for job in jobs:
        assert (job / "videos" / "000.mp4").is_file()


@pytest.mark.parametrize("estimator", ["classical", "in_loop"])
def test_all_temporal_help_with_estimated_kernels(
    bsd_root: Path, tmp_path: Path, estimator: str
) -> None:
    run_video(
        tmp_path,
        bsd_root,
        "degradation=blur_estimated",
        f"kernel_estimator={estimator}",
        "kernel_estimator.kernel_size=5",
        "temporal=all",
        "temporal.t_star=500",
    )
    recs = records(tmp_path)
    later = [r for r in recs if r["position"] > 0]
    assert all(r["temporal"]["kernel_propagated"] and r["temporal"]["warm_started"] for r in later)
    assert {r["nfe"] for r in later} == {3}  # t = 400, 200, 0
    assert all(r["kernel"]["estimator"] == estimator for r in recs)
    assert not any(r["temporal"]["kernel_propagated"] for r in recs if r["position"] == 0)


def test_sigkill_mid_sequence_then_rerun_finishes_exactly(
    bsd_root: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A run killed between frames resumes at the first unfinished one, warm-started from the
    stored state: the results equal an uninterrupted run's. The killed run is a CLI process;
    the reference and the rerun run in process."""
    args = [
        *FAST,
        *SYNTHETIC,
        "batch_size=1",
        "sampler.timesteps=100",  # slow enough that the kill lands mid-run
        "task=video",
        "temporal=all",
        "degradation=blur_estimated",
        "kernel_estimator=classical",
        "kernel_estimator.kernel_size=5",
        f"dataset.root={bsd_root}",
    ]
    reference = tmp_path / "reference"
    with one_thread():
        run_job(args, reference)

    run_dir = tmp_path / "run"
    results = run_dir / "results.jsonl"
    proc = subprocess.Popen(
        [sys.executable, "-m", "ddrm_exp", *args, f"hydra.run.dir={run_dir}"],
        cwd=tmp_path,
        env=cli_env(),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 240
    while not (results.exists() and results.read_text().count("\n") >= 2):
        if proc.poll() is not None or time.monotonic() > deadline:
            proc.kill()
            pytest.fail("no second result line before the run ended")
        time.sleep(0.005)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    done_at_kill = results.read_text().count("\n")
    assert 2 <= done_at_kill < 2 * FRAMES, "the kill did not land mid-run"

    with one_thread(), caplog.at_level(logging.INFO):
        run_job(args, run_dir)
    assert f"{2 * FRAMES - done_at_kill} of {2 * FRAMES} frames to compute" in caplog.text

    def outcome(run: Path) -> list[tuple]:
        return [
            (r["index"], r["nfe"], r["restored"]["psnr"], r["kernel"]["ncc"]) for r in records(run)
        ]

    assert outcome(run_dir) == outcome(reference)
    for seq in ("000", "001"):
        assert read_video(run_dir / "videos" / f"{seq}.mp4").shape[0] == FRAMES
