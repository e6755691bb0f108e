"""Wiener and Richardson-Lucy with a given kernel (ddrm_exp.restoration.classical)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from helpers import table_row

from ddrm_exp.degradations.fft_blur import blur_circular
from ddrm_exp.errors import ConfigError
from ddrm_exp.metrics.image import psnr
from ddrm_exp.report import Record
from ddrm_exp.restoration import richardson_lucy_deconvolve, wiener_deconvolve


def smooth_images(batch: int = 2, size: int = 32, seed: int = 0) -> torch.Tensor:
    """Photo-like test images in [-1, 1]: low-passed noise with some edges."""
    g = torch.Generator().manual_seed(seed)
    x = torch.rand(batch, 3, size // 4, size // 4, generator=g)
    x = F.interpolate(x, size=(size, size), mode="bilinear", align_corners=False)
    x[..., size // 3 : size // 2, :] += 0.4  # a bar: sharp edges to blur
    return (x / x.amax() * 1.8 - 0.9).clamp(-1, 1)


def one_sided_kernel() -> torch.Tensor:
    """A horizontal streak entirely right of the origin: its mirror image blurs differently."""
    k = torch.zeros(7, 7, dtype=torch.float64)
    k[3, 3:] = torch.tensor([0.4, 0.3, 0.2, 0.1])
    return k


@pytest.mark.parametrize("border", ["circular", "reflect"])
def test_wiener_with_a_delta_and_no_regularisation_returns_the_input(border: str) -> None:
    y = smooth_images()
    delta = torch.zeros(5, 5)
    delta[2, 2] = 1.0
    out = wiener_deconvolve(y, delta, balance=0.0, border=border)
    assert out.shape == y.shape and out.dtype == y.dtype
    assert torch.allclose(out, y, atol=1e-5)


def test_wiener_inverts_a_circular_blur_in_the_projects_kernel_convention() -> None:
    x = smooth_images()
    k = one_sided_kernel()
    y = blur_circular(x, k).to(x.dtype)
    right = wiener_deconvolve(y, k, balance=1e-6, border="circular")
    mirrored = wiener_deconvolve(y, k.flip(-1), balance=1e-6, border="circular")
    assert min(psnr(right, x)) > 40.0
    # The mirrored kernel is a different blur: a convention mix-up would score like this.
    assert max(psnr(mirrored, x)) < min(psnr(right, x)) - 10.0


def test_an_even_kernel_keeps_the_projects_origin() -> None:
    x = smooth_images(batch=1)
    k = torch.tensor([[0.1, 0.2], [0.3, 0.4]], dtype=torch.float64)
    y = blur_circular(x, k).to(x.dtype)
    out = wiener_deconvolve(y, k, balance=1e-6, border="circular")
    assert psnr(out, x)[0] > 40.0


def test_richardson_lucy_improves_a_noiseless_circular_blur() -> None:
    x = smooth_images()
    k = one_sided_kernel()
    y = blur_circular(x, k).to(x.dtype)
    out = richardson_lucy_deconvolve(y, k, iterations=30, border="circular")
    mirrored = richardson_lucy_deconvolve(y, k.flip(-1), iterations=30, border="circular")
    gain = [a - b for a, b in zip(psnr(out, x), psnr(y, x), strict=True)]
    assert min(gain) > 2.0
    assert all(a > b for a, b in zip(psnr(out, x), psnr(mirrored, x), strict=True))
    assert float(out.min()) >= -1.0 and float(out.max()) <= 1.0


def test_per_image_kernels_are_used_per_image() -> None:
    x = smooth_images()
    kernels = torch.stack([one_sided_kernel(), one_sided_kernel().transpose(0, 1)])
    y = torch.cat([blur_circular(x[i : i + 1], kernels[i]) for i in range(2)]).to(x.dtype)
    batch = wiener_deconvolve(y, kernels, balance=1e-6, border="circular")
    for i in range(2):
        alone = wiener_deconvolve(y[i : i + 1], kernels[i], balance=1e-6, border="circular")
        assert torch.allclose(batch[i : i + 1], alone, atol=1e-6)
        assert psnr(batch[i : i + 1], x[i : i + 1])[0] > 40.0


def test_reflect_border_beats_circular_on_a_valid_blur() -> None:
    # A valid (non-circular) blur: blur a larger scene, keep the centre.
    scene = smooth_images(size=48)
    k = one_sided_kernel()
    x = scene[..., 8:40, 8:40]
    y = blur_circular(scene, k).to(scene.dtype)[..., 8:40, 8:40]
    reflect = wiener_deconvolve(y, k, balance=0.01, border="reflect")
    circular = wiener_deconvolve(y, k, balance=0.01, border="circular")
    assert sum(psnr(reflect, x)) > sum(psnr(circular, x))


@pytest.mark.parametrize(
    ("kernel", "match"),
    [
        (torch.ones(5), "must be"),
        (torch.ones(3, 5, 5), "must be"),
        (torch.ones(40, 3), "larger than"),
        (torch.zeros(3, 3), "positive sum"),
        (torch.full((3, 3), float("nan")), "non-finite"),
    ],
)
def test_bad_kernels_are_refused_with_a_clear_error(kernel: torch.Tensor, match: str) -> None:
    y = smooth_images()
    for restore in (wiener_deconvolve, richardson_lucy_deconvolve):
        with pytest.raises(ConfigError, match=match):
            restore(y, kernel)


def test_bad_settings_are_refused() -> None:
    y = smooth_images()
    k = one_sided_kernel()
    with pytest.raises(ConfigError, match="border"):
        wiener_deconvolve(y, k, border="zero")
    with pytest.raises(ConfigError, match="balance"):
        wiener_deconvolve(y, k, balance=-1.0)
    with pytest.raises(ConfigError, match="iterations"):
        richardson_lucy_deconvolve(y, k, iterations=0)
    with pytest.raises(ConfigError, match="B, C, H, W"):
        wiener_deconvolve(y[0], k)


# ---- the tables show them beside DDRM --------------------------------------------------------
def _line(index: int, assumed: str, psnr_ddrm: float, **extra: object) -> dict[str, object]:
    return {
        "index": index,
        "name": f"{index:03d}/00000000",
        "degradation": "blur_estimated",
        "sampler": "ddrm",
        "sampler_params": {"timesteps": 20},
        "sigma_y": 0.02,
        "assumed_sigma_y": 0.02,
        "seed": 0,
        "nfe": 20,
        "seconds": 1.0,
        "restored": {"psnr": psnr_ddrm, "ssim": 0.5},
        "baseline": {"psnr": 10.0, "ssim": 0.1},
        "measurement": {"psnr": 20.0 + index, "ssim": 0.4},
        "kernel": {"assumed": assumed, "ncc": 0.9, "estimation_seconds": 0.1},
        "wiener": {"psnr": 30.0 + index, "ssim": 0.8},
        "richardson_lucy": {"psnr": 40.0 + index, "ssim": 0.9},
        **extra,
    }


def _records(tmp_path: Path, lines: list[dict[str, object]]) -> list[Record]:
    import json

    from ddrm_exp.report import load_records

    (tmp_path / "results.jsonl").write_text("\n".join(json.dumps(r) for r in lines) + "\n")
    return load_records([tmp_path])


def test_table2_has_wiener_and_rl_columns(tmp_path: Path) -> None:
    from ddrm_exp.report import build_table, get_spec

    records = _records(tmp_path, [_line(0, "estimated", 25.0), _line(1, "estimated", 26.0)])
    text = build_table(get_spec("table2"), records).markdown
    row = table_row(text, "| Degradation", "| Kernel estimation")
    assert row["Wiener PSNR"].startswith("30.50")
    assert row["RL PSNR"].startswith("40.50")


def test_video_table_has_blurry_wiener_and_rl_columns(tmp_path: Path) -> None:
    from ddrm_exp.report import build_table, get_spec

    temporal = {"name": "independent", "flicker": 0.01, "warping_error": 0.001}
    lines = [
        _line(i, "estimated", 25.0, task="video", sequence="000", frame=i, temporal=temporal)
        for i in range(2)
    ]
    text = build_table(get_spec("video"), _records(tmp_path, lines)).markdown
    row = table_row(text, "| temporal", "| independent")
    assert row["blurry PSNR"].startswith("20.50")
    assert row["Wiener PSNR"].startswith("30.50")
    assert row["RL PSNR"].startswith("40.50")


def test_figure8_lists_the_classical_baselines_per_kernel(tmp_path: Path) -> None:
    from ddrm_exp.report import build_table, get_spec

    lines = [_line(0, "gauss", 25.0), _line(1, "gauss", 26.0, wiener={"psnr": 35.0})]
    text = build_table(get_spec("figure8"), _records(tmp_path, lines)).markdown
    assert "Classical deconvolution with the same kernel" in text
    wiener = next(line for line in text.splitlines() if line.startswith("| Wiener"))
    assert "32.50" in wiener  # (30 + 35) / 2 over the two frames
