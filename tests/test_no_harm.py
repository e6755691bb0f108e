"""The no-harm rule of blind deblurring (issue 14): which frames are returned as they are.

A frame is restored only when its kernel estimate is found again on the frame's corner crops
(a uniform blur is the same everywhere) and is large enough for the prior to gain; the others
are returned blurry, with the reason in the record. ``delta_mix`` makes the estimate milder.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from helpers import blind_bsd, run_job
from omegaconf import OmegaConf
from torch import Tensor

from ddrm_exp.datasets.bsd_mini import write_mini_bsd
from ddrm_exp.errors import ConfigError
from ddrm_exp.kernel_estimation import ClassicalEstimator, KernelEstimate
from ddrm_exp.kernel_estimation.reliability import (
    NoHarmRule,
    corner_crops,
    crop_agreement,
    noise_sigma,
)


def delta(size: int) -> Tensor:
    k = torch.zeros(size, size, dtype=torch.float64)
    k[size // 2, size // 2] = 1
    return k


def line(size: int = 5, length: int = 3, vertical: bool = False) -> Tensor:
    k = torch.zeros(size, size, dtype=torch.float64)
    c, lo = size // 2, size // 2 - length // 2
    if vertical:
        k[lo : lo + length, c] = 1 / length
    else:
        k[c, lo : lo + length] = 1 / length
    return k


class ByWidth:
    """A stand-in estimator whose kernel depends only on the image width, so the crops of a
    frame can be given kernels of their own."""

    def __init__(self, by_width: dict[int, Tensor]) -> None:
        self.by_width = by_width
        self.widths: list[int] = []

    def estimate(self, blurry: Tensor) -> KernelEstimate:
        b, w = blurry.shape[0], blurry.shape[-1]
        self.widths.append(w)
        k = self.by_width[w].expand(b, 1, -1, -1)
        masks = torch.ones(b, 1, *blurry.shape[-2:])
        return KernelEstimate(k, masks, (0.0,) * b, "stub")


def test_corner_crops_are_the_four_corners() -> None:
    x = torch.arange(2 * 1 * 8 * 8, dtype=torch.float32).reshape(2, 1, 8, 8)
    crops = corner_crops(x, 0.75)
    assert [tuple(c.shape) for c in crops] == [(2, 1, 6, 6)] * 4
    assert torch.equal(crops[0], x[..., :6, :6])
    assert torch.equal(crops[3], x[..., 2:, 2:])
    assert crops[1][0, 0, 0, 0] == x[0, 0, 0, 2]


def test_crop_agreement_is_one_for_the_same_kernel_and_lower_for_another() -> None:
    images = torch.zeros(1, 3, 64, 64)
    k = line(5, 3)
    assert crop_agreement(ByWidth({48: k}), images, k[None], 0.75) == [pytest.approx(1.0)]
    other = crop_agreement(ByWidth({48: line(5, 3, vertical=True)}), images, k[None], 0.75)
    assert other[0] < 0.5
    est = ByWidth({38: k})
    crop_agreement(est, images, k[None], 0.6)
    assert est.widths == [38] * 4  # one estimate per corner crop, each 0.6 of the side


def test_rule_decisions() -> None:
    rule = NoHarmRule(min_agreement=0.9, min_spread=0.8)
    assert rule.decide(line(5, 3), 0.95) is None
    assert rule.decide(line(5, 3), 0.85) == "unreliable_kernel"
    assert rule.decide(line(5, 2), 0.99) == "mild_blur"  # spread 0.5 px
    assert rule.decide(delta(5), 0.99) == "mild_blur"
    assert rule.decide(line(5, 2), 0.85) == "unreliable_kernel"  # before its spread
    assert NoHarmRule(min_spread=0.8).decide(line(5, 5), None) is None  # no crops needed
    assert not NoHarmRule(min_spread=0.8).needs_agreement
    with pytest.raises(ValueError, match="agreement"):
        rule.decide(line(5, 3), None)


def test_only_mild_blur_returns_the_fallback() -> None:
    """An unreliable kernel is not used at all: its frame is returned as it is."""
    rule = NoHarmRule(min_agreement=0.9, fallback="richardson_lucy")
    assert rule.returns("mild_blur") == "richardson_lucy"
    assert rule.returns("unreliable_kernel") == "blurry"
    assert rule.returns("delta_kernel") == "blurry"


def test_noisy_frames_take_the_noisy_fallback() -> None:
    """A mild-blur frame whose noise estimate reaches noisy_sigma gets the noisy fallback and
    its mix; an unreliable kernel is still not used, noisy or not."""
    rule = NoHarmRule(
        min_agreement=0.9,
        fallback="richardson_lucy",
        fallback_mix=0.5,
        noisy_sigma=0.01,
        noisy_fallback="wiener",
        noisy_fallback_mix=0.0,
    )
    assert rule.needs_noise
    assert rule.returns("mild_blur", 0.005) == "richardson_lucy"
    assert rule.returns("mild_blur", 0.01) == "wiener"
    assert rule.returns("unreliable_kernel", 0.05) == "blurry"
    k = line(5, 3)
    assert torch.allclose(rule.fallback_kernel(k, 0.005), 0.5 * k + 0.5 * delta(5))
    assert torch.equal(rule.fallback_kernel(k, 0.02), k)
    with pytest.raises(ValueError, match="noise level"):
        rule.returns("mild_blur")
    off = NoHarmRule(fallback="richardson_lucy")
    assert not off.needs_noise and off.returns("mild_blur") == "richardson_lucy"
    assert not rule.samples(0.5)  # sample_sigma 0: off
    sampling = NoHarmRule(noisy_sigma=0.005, noisy_fallback="blurry", sample_sigma=0.04)
    assert [sampling.samples(n) for n in (0.0, 0.039, 0.04)] == [False, False, True]
    assert sampling.returns("mild_blur", 0.02) == "blurry"
    assert NoHarmRule(sample_sigma=0.04).needs_noise


@pytest.mark.parametrize("sigma", [0.005, 0.01, 0.02, 0.05])
def test_noise_sigma_reads_added_white_noise(sigma: float) -> None:
    """On a smooth (blurred) image the estimate is the added noise's std in [0, 1] units (the
    unit of noise.sigma_y), within 10 %; without noise it reads next to nothing."""
    g = torch.Generator().manual_seed(0)
    yy, xx = torch.meshgrid(torch.linspace(-1, 1, 64), torch.linspace(-1, 1, 64), indexing="ij")
    smooth = torch.stack([0.5 * torch.sin(2 * xx + c) * torch.cos(3 * yy) for c in range(3)])
    images = smooth[None].repeat(2, 1, 1, 1)
    noisy = images + 2 * sigma * torch.randn(images.shape, generator=g)
    assert noise_sigma(noisy) == pytest.approx([sigma, sigma], rel=0.1)
    assert max(noise_sigma(images)) < 0.001


def test_fallback_kernel_is_milder() -> None:
    rule = NoHarmRule(fallback="wiener", fallback_mix=0.25)
    k = line(5, 3)
    assert torch.allclose(rule.fallback_kernel(k), 0.75 * k + 0.25 * delta(5))
    assert torch.equal(NoHarmRule(fallback_mix=0.0).fallback_kernel(k), k)


def test_rule_config_errors() -> None:
    assert NoHarmRule.from_config(None) is None
    assert NoHarmRule.from_config(OmegaConf.create({})) is None
    rule = NoHarmRule.from_config(OmegaConf.create({"min_agreement": 0.9, "crop": 0.6}))
    assert rule == NoHarmRule(min_agreement=0.9, min_spread=0.0, crop=0.6)
    with pytest.raises(ConfigError, match="unknown keys"):
        NoHarmRule.from_config({"min_agree": 0.9})
    with pytest.raises(ConfigError, match="crop"):
        NoHarmRule(crop=1.0)
    with pytest.raises(ConfigError, match="min_spread"):
        NoHarmRule(min_spread=-1.0)
    with pytest.raises(ConfigError, match="fallback must be one of"):
        NoHarmRule.from_config({"fallback": "rl"})
    with pytest.raises(ConfigError, match="fallback_mix"):
        NoHarmRule(fallback_mix=1.5)
    with pytest.raises(ConfigError, match="noisy_fallback must be one of"):
        NoHarmRule.from_config({"noisy_fallback": "bm3d"})
    with pytest.raises(ConfigError, match="noisy_fallback_mix"):
        NoHarmRule(noisy_fallback_mix=-0.1)
    with pytest.raises(ConfigError, match="noisy_sigma"):
        NoHarmRule(noisy_sigma=-0.01)
    with pytest.raises(ConfigError, match="sample_sigma"):
        NoHarmRule.from_config({"sample_sigma": "high"})
    noisy = NoHarmRule.from_config({"noisy_sigma": 0.01, "noisy_fallback": "wiener"})
    assert noisy == NoHarmRule(noisy_sigma=0.01, noisy_fallback="wiener")


def test_delta_mix_blends_the_estimate_with_a_delta() -> None:
    torch.manual_seed(0)
    y = torch.rand(1, 3, 48, 48) * 2 - 1
    settings = dict(kernel_size=5, fit_region="valid", kernel_reg=0.003, num_threads=1)
    k0 = ClassicalEstimator(**settings).estimate(y).kernels[0, 0]
    k1 = ClassicalEstimator(**settings, delta_mix=0.4).estimate(y).kernels[0, 0]
    assert torch.allclose(k1, 0.6 * k0 + 0.4 * delta(5))
    with pytest.raises(ConfigError, match="delta_mix"):
        ClassicalEstimator(kernel_size=5, delta_mix=1.0)


@pytest.mark.slow
def test_pipeline_returns_the_frames_the_rule_keeps(tmp_path: Path) -> None:
    """dataset=bsd (blurred bsd_mini frames, 64 px): a rule no estimate can pass returns every
    frame as measured (an unreliable kernel, whatever the fallback) or by its fallback (mild
    blur), and records why; without the rule they are restored."""
    write_mini_bsd(tmp_path / "bsd", sequences=1, frames=2, size=(64, 64))
    # border=taper: the FFT operator, no dense SVD in a test
    common = blind_bsd(tmp_path / "bsd", "degradation.border=taper")
    unreliable = [
        "kernel_estimator.no_harm.min_agreement=1.01",  # above any NCC: no estimate passes
        "kernel_estimator.no_harm.min_spread=0",
    ]
    mild = [  # every estimate is milder than 100 px
        "kernel_estimator.no_harm.min_agreement=0",
        "kernel_estimator.no_harm.min_spread=100",
    ]
    runs = {
        "unreliable": [*unreliable, "kernel_estimator.no_harm.fallback=richardson_lucy"],
        "blurry": [*mild, "kernel_estimator.no_harm.fallback=blurry"],
        # mix 0: the fallback is Wiener / RL with the very kernel the records' baselines use
        "wiener": [
            *mild,
            "kernel_estimator.no_harm.fallback=wiener",
            "kernel_estimator.no_harm.fallback_mix=0",
        ],
        "richardson_lucy": [
            *mild,
            "kernel_estimator.no_harm.fallback=richardson_lucy",
            "kernel_estimator.no_harm.fallback_mix=0",
        ],
        "off": ["kernel_estimator.no_harm=null"],
    }
    records = {}
    for name, extra in runs.items():
        run_job(common + extra, tmp_path / name)
        lines = (tmp_path / name / "results.jsonl").read_text().splitlines()
        records[name] = [json.loads(line) for line in lines]
        assert len(records[name]) == 2
    for name, kept in (("unreliable", "unreliable_kernel"), ("blurry", "mild_blur")):
        for r in records[name]:
            assert r["kernel"]["kept"] == kept
            assert r["nfe"] == 0  # decided before sampling: the sampler never ran
            assert r["kernel"]["returned"] == "blurry"
            assert r["restored"]["psnr"] == r["measurement"]["psnr"]
    for r in records["unreliable"]:
        assert 0 < r["kernel"]["agreement"] <= 1 + 1e-9
    for method in ("wiener", "richardson_lucy"):
        for r in records[method]:
            assert r["kernel"]["kept"] == "mild_blur"
            assert r["kernel"]["returned"] == method
            assert r["restored"]["psnr"] == pytest.approx(r[method]["psnr"], abs=1e-3)
            assert r["restored"]["psnr"] != r["measurement"]["psnr"]
    for r in records["off"]:
        assert r["kernel"]["kept"] is None and r["kernel"]["agreement"] is None
        assert r["nfe"] > 0
        assert r["kernel"]["returned"] == "restored"
        assert r["restored"]["psnr"] != r["measurement"]["psnr"]


@pytest.mark.slow
def test_default_rule_on_three_to_four_pixel_motion(tmp_path: Path) -> None:
    """The default classical_valid pipeline on bsd_mini frames of continuous 3-4 px motion at
    64 px (one frame per VELOCITIES entry): none is restored by DDRM (no 5-tap estimate reaches
    min_spread), each gets the Richardson-Lucy fallback or, with an unreliable or a delta
    kernel, is kept as it is; on average they gain, and no frame loses more than 0.2 dB."""
    write_mini_bsd(tmp_path / "bsd", sequences=6, frames=1, size=(64, 64), blur="subpixel")
    # border=taper: kept frames do not depend on DDRM's operator
    run_job(blind_bsd(tmp_path / "bsd", "degradation.border=taper"), tmp_path / "run")
    lines = (tmp_path / "run" / "results.jsonl").read_text().splitlines()
    records = [json.loads(line) for line in lines]
    assert len(records) == 6
    gains = []
    for r in records:
        kept, returned = r["kernel"]["kept"], r["kernel"]["returned"]
        assert (kept, returned) in (
            ("mild_blur", "richardson_lucy"),
            ("unreliable_kernel", "blurry"),
            ("delta_kernel", "blurry"),
        )
        assert r["nfe"] == 0 and r["seconds"] == 0.0
        gains.append(r["restored"]["psnr"] - r["measurement"]["psnr"])
    print("gains", [round(g, 2) for g in gains])
    assert min(gains) > -0.2
    assert sum(gains) / len(gains) > 0


@pytest.mark.slow
def test_pipeline_gives_noisy_frames_the_noisy_fallback(tmp_path: Path) -> None:
    """With noise added to the frames, the records carry each frame's noise estimate (near the
    added sigma_y) and the mild-blur frames return the noisy fallback instead of the other."""
    write_mini_bsd(tmp_path / "bsd", sequences=2, frames=1, size=(64, 64), blur="subpixel")
    rule = [
        "kernel_estimator.no_harm.min_agreement=0",
        "kernel_estimator.no_harm.min_spread=100",  # every frame is mild blur
        "kernel_estimator.no_harm.fallback=richardson_lucy",
        "kernel_estimator.no_harm.noisy_fallback=wiener",
        "kernel_estimator.no_harm.noisy_fallback_mix=0",
    ]
    common = blind_bsd(tmp_path / "bsd", "degradation.border=taper", *rule)
    for name, sigma, threshold, method in (
        ("noisy", 0.02, 0.01, "wiener"),
        ("clean", 0.0, 0.01, "richardson_lucy"),
    ):
        extra = [
            f"noise.sigma_y={sigma}",
            f"kernel_estimator.no_harm.noisy_sigma={threshold}",
        ]
        run_job(common + extra, tmp_path / name)
        lines = (tmp_path / name / "results.jsonl").read_text().splitlines()
        for r in map(json.loads, lines):
            assert r["kernel"]["kept"] == "mild_blur"
            assert r["kernel"]["returned"] == method
            assert r["kernel"]["noise_sigma"] == pytest.approx(max(sigma, 0.003), abs=0.004)
            if method == "wiener":  # mix 0: the very Wiener restoration of the records
                assert r["restored"]["psnr"] == pytest.approx(r["wiener"]["psnr"], abs=1e-3)


@pytest.mark.slow
def test_pipeline_samples_very_noisy_frames(tmp_path: Path) -> None:
    """Frames whose noise level reaches sample_sigma go to the sampler whatever their blur (a
    delta estimate too: denoised); the level is bounded by the assumed sigma_y, so a run that
    assumes no noise keeps the noise-free rule."""
    write_mini_bsd(tmp_path / "bsd", sequences=2, frames=1, size=(64, 64), blur="subpixel")
    common = blind_bsd(
        tmp_path / "bsd",
        "degradation.border=taper",
        "kernel_estimator.no_harm.min_agreement=0",
        "kernel_estimator.no_harm.sample_sigma=0.04",
        "noise.sigma_y=0.05",
        "sampler.timesteps=20",  # 3 steps denoise too coarsely to gain
    )
    run_job([*common, "noise.assumed_sigma_y=0.05"], tmp_path / "noisy")
    run_job([*common, "noise.assumed_sigma_y=0"], tmp_path / "assumes_none")
    for name in ("noisy", "assumes_none"):
        lines = (tmp_path / name / "results.jsonl").read_text().splitlines()
        for r in map(json.loads, lines):
            k = r["kernel"]
            if name == "noisy":
                assert k["noise_sigma"] == pytest.approx(0.05, abs=0.005)
                assert k["kept"] is None and r["nfe"] > 0
                assert k["returned"] in ("restored", "denoised")
                # the prior's denoising gains at this noise
                assert r["restored"]["psnr"] > r["measurement"]["psnr"]
            else:
                assert k["noise_sigma"] == 0.0
                assert k["kept"] is not None and r["nfe"] == 0
