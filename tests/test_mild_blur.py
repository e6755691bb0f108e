"""Sharp and barely blurred frames (issue 14 part 4): the estimator must not invent blur.

Frames are 64-px crops of training-split sample photos, blurred *validly* (a larger crop
blurred by ``blur_valid``, as a camera does) and rounded to 8 bits. The estimator runs with the
settings chosen on validation data for 64-px BSD frames (5 taps, valid-pixel kernel fit,
kernel_reg 0.003) and the near-delta decision ``delta_spread`` (0.65 px).
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from helpers import blind_bsd, run_job
from torch import Tensor

from ddrm_exp.datasets import load_sample_photos
from ddrm_exp.datasets.bsd_mini import write_mini_bsd
from ddrm_exp.degradations.kernels2d import motion_kernel, normalized_cross_correlation
from ddrm_exp.degradations.valid_blur import blur_valid
from ddrm_exp.errors import ConfigError
from ddrm_exp.kernel_estimation import ClassicalEstimator
from ddrm_exp.kernel_estimation.classical import kernel_spread, snap_to_delta

SETTINGS = dict(kernel_size=5, fit_region="valid", kernel_reg=0.003, num_threads=1)
DELTA_SPREAD = 0.65


def crop(index: int, size: int) -> Tensor:
    """Train-split photo ``index``, short side resized to ``size``, centre crop, [0, 1]."""
    _, arr = load_sample_photos("train")[index]
    x = torch.from_numpy(arr.copy()).permute(2, 0, 1).double() / 255
    h, w = x.shape[-2:]
    s = size / min(h, w)
    x = F.interpolate(x[None], size=(round(h * s), round(w * s)), mode="bilinear", antialias=True)
    h, w = x.shape[-2:]
    top, left = (h - size) // 2, (w - size) // 2
    return x[0, :, top : top + size, left : left + size]


def to_frame(x: Tensor) -> Tensor:
    """8-bit rounding, then the model range [-1, 1]."""
    return (torch.round(x.clamp(0, 1) * 255) / 255 * 2 - 1).float()


def delta(size: int) -> Tensor:
    k = torch.zeros(size, size, dtype=torch.float64)
    k[size // 2, size // 2] = 1
    return k


def test_kernel_spread_and_the_delta_decision() -> None:
    assert kernel_spread(delta(5)) == 0.0
    line = torch.zeros(5, 5, dtype=torch.float64)
    line[2, 1:4] = 1 / 3
    assert kernel_spread(line) == pytest.approx(math.sqrt(2 / 3))
    assert torch.equal(snap_to_delta(line, 0.9), delta(5))
    assert torch.equal(snap_to_delta(line, 0.8), line)
    assert torch.equal(snap_to_delta(line, 0.0), line)  # 0: never snaps
    with pytest.raises(ConfigError, match="delta_spread"):
        ClassicalEstimator(kernel_size=5, delta_spread=-1)
    with pytest.raises(ConfigError, match="fit_region"):
        ClassicalEstimator(kernel_size=5, fit_region="inside")


@pytest.mark.parametrize("index", [1, 2, 3])
def test_sharp_frame_gives_exactly_a_delta(index: int) -> None:
    est = ClassicalEstimator(**SETTINGS, delta_spread=DELTA_SPREAD)
    k = est.estimate(to_frame(crop(index, 64))).kernels[0, 0]
    assert torch.equal(k, delta(5))


@pytest.mark.parametrize("index", [1, 2, 3])
def test_two_pixel_motion_is_kept_and_near_the_truth(index: int) -> None:
    """Tolerance: NCC (max over shifts) >= 0.9 with the true 2-px line, and not snapped."""
    k_true = motion_kernel(3, 0.0, length=2.0, generator=index)
    y = blur_valid(crop(index, 66)[None], k_true)[0]
    est = ClassicalEstimator(**SETTINGS, delta_spread=DELTA_SPREAD)
    k = est.estimate(to_frame(y)).kernels[0, 0]
    assert not torch.equal(k, delta(5))
    assert normalized_cross_correlation(k, k_true) >= 0.9


def test_valid_fit_recovers_a_valid_blur() -> None:
    k_true = motion_kernel(5, 0.0, length=4.0, generator=0)
    y = to_frame(blur_valid(crop(2, 68)[None], k_true)[0])
    k = ClassicalEstimator(**SETTINGS).estimate(y).kernels[0, 0]
    assert normalized_cross_correlation(k, k_true) > 0.93


@pytest.mark.slow
def test_default_pipeline_leaves_sharp_frames_as_they_are(tmp_path: Path) -> None:
    """bsd_mini --no-motion at the tiny model's size, the blind pipeline with the estimator
    for small frames: every frame's kernel snaps to a delta and the frame is returned as it is
    (restored PSNR >= the input's - 0.2 dB, here equal)."""
    write_mini_bsd(tmp_path / "bsd", sequences=2, frames=2, size=(64, 64), motion=False)
    out = tmp_path / "run"
    run_job(blind_bsd(tmp_path / "bsd"), out)
    records = [json.loads(line) for line in (out / "results.jsonl").read_text().splitlines()]
    assert len(records) == 4
    for r in records:
        assert r["kernel"]["operator"] == "valid"
        assert r["kernel"]["kept"] == "delta_kernel" and r["nfe"] == 0  # no sampler call
        restored, blurry = r["restored"]["psnr"], r["measurement"]["psnr"]
        # None: infinite PSNR (the frame is exactly the sharp one)
        assert restored == blurry or (restored is not None and restored >= blurry - 0.2)


def test_video_of_sharp_frames_is_returned_as_it_is_and_never_warm_started(tmp_path: Path) -> None:
    """task=video with warm start on sharp frames: every frame is kept (delta kernel), so none
    is sampled and no record may claim a warm start, although the sequence's later frames
    had a previous restoration to start from."""
    write_mini_bsd(tmp_path / "bsd", sequences=1, frames=3, size=(64, 64), motion=False)
    out = tmp_path / "run"
    run_job(
        blind_bsd(
            tmp_path / "bsd", "task=video", "temporal=warm_start", "degradation.border=taper"
        ),
        out,
    )
    records = [json.loads(line) for line in (out / "results.jsonl").read_text().splitlines()]
    assert [r["position"] for r in records] == [0, 1, 2]
    for r in records:
        assert r["kernel"]["kept"] == "delta_kernel" and r["nfe"] == 0
        assert r["temporal"]["warm_start"] is True  # the setting asked for it ...
        assert r["temporal"]["warm_started"] is False  # ... but no frame was sampled
