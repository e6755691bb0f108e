"""Labelled grids: what columns they show, tile size, and a resumed run's grid of all images."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch
from helpers import compose_cfg
from PIL import Image

from ddrm_exp.degradations.colorization import Colorization
from ddrm_exp.degradations.inpainting import RandomInpainting
from ddrm_exp.degradations.separable import Deblurring, SuperResolution
from ddrm_exp.runner import RunContext, run
from ddrm_exp.tracking.figures import (
    CAPTION_H,
    GAP,
    MIN_TILE,
    TITLE_H,
    GridRow,
    columns_of,
    grid_row,
    measurement_image,
    render_rows,
)

SHAPE = (3, 32, 32)
BLUR = {"type": "gaussian", "size": 5, "sigma": 3.0}


def _row(operator: object, x: torch.Tensor) -> GridRow:
    y = operator.H(x.reshape(1, -1))[0]  # type: ignore[attr-defined]
    pinv = operator.H_pinv(y.unsqueeze(0)).reshape(SHAPE)  # type: ignore[attr-defined]
    return grid_row("img", operator, y, x, pinv, x, {"pinv": 10.0, "restored": 20.0})


def test_measurement_shown_as_the_picture_it_is() -> None:
    x = torch.rand(SHAPE) * 2 - 1
    grey = measurement_image(Colorization(SHAPE), Colorization(SHAPE).H(x.reshape(1, -1))[0], SHAPE)
    assert grey is not None and grey.shape == (1, 32, 32)
    sr = SuperResolution(SHAPE, factor=4)
    small = measurement_image(sr, sr.H(x.reshape(1, -1))[0], SHAPE)
    assert small is not None and small.shape == (3, 8, 8)
    # box downsampling: the small y and its H⁺y (pixels repeated) are one column
    assert columns_of([_row(sr, x)]) == ["merged", "restored", "original"]
    assert columns_of([_row(Colorization(SHAPE), x)]) == ["merged", "restored", "original"]
    masked = RandomInpainting(SHAPE, fraction=0.5, seed=0)
    assert columns_of([_row(masked, x)]) == ["merged", "restored", "original"]
    blur = Deblurring(SHAPE, kernel_rows=BLUR)
    assert columns_of([_row(blur, x)]) == ["measurement", "pinv", "restored", "original"]


def test_tiles_are_upscaled_and_titled() -> None:
    x = torch.rand(SHAPE) * 2 - 1
    image = render_rows([_row(Deblurring(SHAPE, kernel_rows=BLUR), x)] * 2)
    tile = MIN_TILE  # 32 px shown at 4x
    assert image.size == (4 * (tile + GAP) + GAP, TITLE_H + 2 * (tile + CAPTION_H + GAP))
    arr = np.asarray(image)
    assert (arr[:TITLE_H] < 128).any()  # the column titles are drawn


def test_resumed_run_grid_shows_every_image(tmp_path: Path) -> None:
    cfg = compose_cfg(
        [
            "model=gaussian",
            "model.image_size=32",
            "dataset.limit=3",
            "sampler.timesteps=2",
            "batch_size=3",
            "degradation=deblur_gauss",
            "logger=none",
            "metrics.lpips=false",
            "metrics.ssim=false",
        ]
    )
    ctx = RunContext(output_dir=tmp_path, choices={"degradation": "deblur_gauss"})
    run(cfg, ctx)
    full = np.asarray(Image.open(tmp_path / "grid.png"))
    # Drop the last image's result and the summary: the rerun computes that image only.
    lines = (tmp_path / "results.jsonl").read_text().splitlines()
    (tmp_path / "results.jsonl").write_text("\n".join(lines[:2]) + "\n")
    (tmp_path / "summary.json").unlink()
    (tmp_path / "grid.png").unlink()
    run(cfg, ctx)
    records = [json.loads(line) for line in (tmp_path / "results.jsonl").read_text().splitlines()]
    assert len(records) == 3
    again = np.asarray(Image.open(tmp_path / "grid.png"))
    assert again.shape == full.shape  # three rows, not the one this process computed
    assert again.shape[0] == TITLE_H + 3 * (MIN_TILE + CAPTION_H + GAP)
    assert np.array_equal(again, full)


# ---- measurement_style=official: the official code's y0 picture ----------------------------
def test_official_y0_per_operator() -> None:
    from ddrm_exp.tracking.figures import official_y0

    x = torch.rand(SHAPE) * 2 - 1
    flat = x.reshape(1, -1)
    masked = RandomInpainting(SHAPE, fraction=0.5, seed=0)
    y = masked.H(flat)[0]
    y0 = official_y0(masked, y, SHAPE)
    pinv = masked.H_pinv(y.unsqueeze(0)).reshape(SHAPE)
    kept = masked.mask.expand(SHAPE)
    assert torch.equal(y0[~kept], torch.full_like(y0[~kept], -1.0))  # black
    assert torch.equal(y0[kept], pinv[kept])  # H⁺y, exactly
    grey = Colorization(SHAPE)
    y = grey.H(flat)[0]
    assert torch.equal(official_y0(grey, y, SHAPE), y.reshape(1, 32, 32).repeat(3, 1, 1))
    # deblur_uni / deblur_gauss (one kernel): y itself; deblur_aniso (two kernels): H⁺y
    for blur, shows_y in (
        (Deblurring(SHAPE, kernel_rows=BLUR), True),
        (Deblurring(SHAPE, kernel_rows=BLUR, kernel_cols={"type": "uniform", "size": 3}), False),
    ):
        y = blur.H(flat)[0]
        expected = y if shows_y else blur.H_pinv(y.unsqueeze(0))[0]
        assert torch.equal(official_y0(blur, y, SHAPE), expected.reshape(SHAPE))
    sr = SuperResolution(SHAPE, factor=4)
    y = sr.H(flat)[0]
    assert torch.equal(official_y0(sr, y, SHAPE), sr.H_pinv(y.unsqueeze(0)).reshape(SHAPE))


def test_official_measurement_png_of_inpainting(tmp_path: Path) -> None:
    """Missing pixels exactly black, the others H⁺y's; nothing else of the run changes."""
    from ddrm_exp.tracking.resume import config_hash

    base = [
        "model=gaussian",
        "model.image_size=32",
        "dataset.limit=2",
        "sampler.timesteps=2",
        "degradation=inpaint_random",
        "logger=none",
        "metrics.lpips=false",
    ]
    out: dict[str, Path] = {}
    for style in ("labelled", "official"):
        cfg = compose_cfg([*base, f"measurement_style={style}"])
        out[style] = tmp_path / style
        run(cfg, RunContext(output_dir=out[style], choices={"degradation": "inpaint_random"}))
    assert config_hash(compose_cfg([*base, "measurement_style=official"])) == config_hash(
        compose_cfg(base)
    )
    kept = RandomInpainting(SHAPE, fraction=0.5, seed=0).mask.numpy()
    pngs = sorted(p.name for p in (out["official"] / "images").iterdir())
    assert pngs == sorted(p.name for p in (out["labelled"] / "images").iterdir())
    for name in pngs:
        official = np.asarray(Image.open(out["official"] / "images" / name))
        labelled = np.asarray(Image.open(out["labelled"] / "images" / name))
        if not name.endswith("_measurement.png"):
            assert np.array_equal(official, labelled)  # the results are untouched
            continue
        pinv = np.asarray(
            Image.open(out["official"] / "images" / name.replace("measurement", "pinv"))
        )
        assert official.shape == (32, 32, 3)
        assert (official[~kept] == 0).all()  # every missing pixel black, in every channel
        assert np.array_equal(official[kept], pinv[kept])
        assert (labelled[~kept] == 128).all()  # the labelled style: grey holes
    lines = {
        style: [json.loads(x) for x in (out[style] / "results.jsonl").read_text().splitlines()]
        for style in out
    }
    strip = ("seconds",)
    assert [{k: v for k, v in r.items() if k not in strip} for r in lines["official"]] == [
        {k: v for k, v in r.items() if k not in strip} for r in lines["labelled"]
    ]
    # The grid shows the official y0 beside H⁺y (they differ: black against grey holes).
    tile = MIN_TILE + GAP
    assert Image.open(out["official"] / "grid.png").size[0] == 4 * tile + GAP
    assert Image.open(out["labelled"] / "grid.png").size[0] == 3 * tile + GAP


def test_measurement_style_is_checked() -> None:
    import pytest

    from ddrm_exp.config import validate
    from ddrm_exp.errors import ConfigError

    with pytest.raises(ConfigError, match="measurement_style must be one of labelled, official"):
        validate(compose_cfg(["measurement_style=offical"]))
