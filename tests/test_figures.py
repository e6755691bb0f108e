"""Labelled grids: what columns they show, tile size, and a resumed run's grid of all images."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from PIL import Image

from ddrm_exp.degradations.colorization import Colorization
from ddrm_exp.degradations.inpainting import RandomInpainting
from ddrm_exp.degradations.separable import Deblurring, SuperResolution
from ddrm_exp.paths import CONF_DIR
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


def _compose(overrides: list[str]):  # noqa: ANN202 - a DictConfig
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        return compose(config_name="config", overrides=overrides)


def test_resumed_run_grid_shows_every_image(tmp_path: Path) -> None:
    cfg = _compose(
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
