"""Labelled pictures a reader understands without a legend: the run's grid and video panels.

Every picture names its columns (the measurement y as an image where it is one, ``H⁺y`` where
it differs from y, the restoration, the original), gives each image's PSNR under it, and shows
small images enlarged with nearest-neighbour upscaling (no smoothing that would hide what the
method did) to at least :data:`MIN_TILE` pixels.

The grid of a run is built at its end from the per-image PNGs on disk and the PSNRs in its
records, so a resumed run's grid shows every image, not only those its last process computed.

``measurement_style=official`` shows (and saves as ``images/*_measurement.png``) the official
DDRM code's ``y0_<i>.png`` picture instead of y as an image: see :func:`official_y0`.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image, ImageDraw, ImageFont
from torch import Tensor

from ddrm_exp.config import MEASUREMENT_STYLES
from ddrm_exp.metrics.image import to_unit

log = logging.getLogger(__name__)

MIN_TILE = 128  # px: the shorter side of a tile as shown (a 64-px result shows at 2×)
TITLE_H, CAPTION_H, GAP = 20, 16, 4
FONT_SIZE = 12

# Column titles, in the order columns appear; "measurement" and "pinv" merge into one column
# where y as an image and H⁺y look the same (denoising, colorization, inpainting's masked image).
TITLES = {
    "measurement": "measurement y",
    "pinv": "H⁺y",
    "merged": "y = H⁺y",
    "restored": "restored",
    "original": "original",
}
# measurement_style=official: the measurement column is the official code's y0 picture, which is
# H⁺y for some operators, so it is not called "y".
OFFICIAL_TITLES = {"measurement": "y0 (official)", "merged": "y0 = H⁺y"}


@dataclass
class GridRow:
    """One image of a grid: its tiles (C, h, w) in [-1, 1] by kind, and PSNRs by kind."""

    name: str
    tiles: dict[str, Tensor]
    psnr: dict[str, float | None] = field(default_factory=dict)
    # Column titles other than TITLES' (the first row's are used), e.g. OFFICIAL_TITLES.
    titles: dict[str, str] = field(default_factory=dict)


def style_of(cfg: Any) -> str:
    """The run's ``measurement_style`` (``labelled`` where a config predates the option)."""
    style = str(cfg.get("measurement_style", "labelled"))
    if style not in MEASUREMENT_STYLES:  # validate() refuses it first; a direct caller here
        raise ValueError(f"measurement_style must be one of {MEASUREMENT_STYLES}, got {style!r}")
    return style


def titles_of(style: str) -> dict[str, str]:
    return dict(OFFICIAL_TITLES) if style == "official" else {}


def official_y0(operator: Any, y: Tensor, shape: Sequence[int]) -> Tensor:
    """The picture the official DDRM code saves as ``y0_<i>.png`` for one image's ``y``.

    As in its ``runners/diffusion.py``: ``H⁺y``, except for ``deblur_uni`` and
    ``deblur_gauss``, where it is the measurement itself; for ``color``, the grey measurement
    repeated in three channels; for ``inp*``, ``H⁺y`` with the missing pixels set to −1
    (black). So the official shows ``H⁺y`` for super-resolution, compressed sensing and also
    ``deblur_aniso`` (its ``Deblurring2D``, a blur with two different kernels), and this does
    too. Blurs the official code does not have (``blur2d``, the FFT blur) show y, as its two
    one-kernel blurs do. The missing pixels are set with a mask rather than the official
    ``+ H⁺(H 1) − 1``, whose float round-off would move the kept ones by up to 6e-8.
    """
    from ddrm_exp.degradations.colorization import Colorization
    from ddrm_exp.degradations.inpainting import Masking
    from ddrm_exp.degradations.separable import Deblurring

    c, h, w = (int(s) for s in shape)
    y = y.detach().reshape(-1)
    pinv = operator.H_pinv(y.unsqueeze(0)).reshape(c, h, w)
    if isinstance(operator, Masking):
        kept = operator.mask.to(pinv.device).reshape(1, h, w).expand(c, h, w)
        return torch.where(kept, pinv, torch.full_like(pinv, -1.0)).cpu()
    if isinstance(operator, Colorization):
        return y.reshape(1, h, w).repeat(3, 1, 1).cpu()
    if isinstance(operator, Deblurring) and not _one_kernel(operator):
        return pinv.cpu()  # the official Deblurring2D (--deg deblur_aniso)
    if y.numel() == c * h * w:
        return y.reshape(c, h, w).cpu()
    return pinv.cpu()


def _one_kernel(operator: Any) -> bool:
    """Whether a separable blur uses one kernel on both axes (the official ``Deblurring``)."""
    rows, cols = operator.kernel_rows, operator.kernel_cols
    return rows.shape == cols.shape and bool(torch.equal(rows, cols))


def measurement_image(
    operator: Any, y: Tensor, shape: Sequence[int], style: str = "labelled"
) -> Tensor | None:
    """The measurement ``y`` (one image's, flat) as a picture, or None when it is not one.

    A blur or noise keeps the image's layout; colorization gives one grey value per pixel; a
    separable downsampling gives a smaller image on its ``out_hw`` grid; a mask keeps some
    pixels, shown as ``H⁺y`` (the kept pixels in place, grey elsewhere). Compressed sensing
    coefficients are not a picture. ``style="official"``: the official code's picture instead
    (:func:`official_y0`), which every operator has.
    """
    from ddrm_exp.degradations.inpainting import Masking

    if style == "official":
        return official_y0(operator, y, shape)
    c, h, w = (int(s) for s in shape)
    y = y.detach().reshape(-1)
    if isinstance(operator, Masking):
        return operator.H_pinv(y.unsqueeze(0)).reshape(c, h, w).cpu()
    if y.numel() == c * h * w:
        return y.reshape(c, h, w).cpu()
    if y.numel() == h * w:
        return y.reshape(1, h, w).cpu()
    out_hw = getattr(operator, "out_hw", None)
    if out_hw is not None and y.numel() == c * int(out_hw[0]) * int(out_hw[1]):
        return y.reshape(c, int(out_hw[0]), int(out_hw[1])).cpu()
    return None


@lru_cache(maxsize=4)
def _font(size: int = FONT_SIZE) -> ImageFont.ImageFont | ImageFont.FreeTypeFont:
    """DejaVu Sans from matplotlib's data (it has ⁺, σ and ↓, Pillow's default font does not)."""
    try:
        import matplotlib

        path = Path(matplotlib.__file__).parent / "mpl-data" / "fonts" / "ttf" / "DejaVuSans.ttf"
        return ImageFont.truetype(str(path), size)
    except (ImportError, OSError):
        pass
    try:
        return ImageFont.load_default(size=size)
    except (TypeError, OSError):  # Pillow < 10.1, or built without FreeType
        return ImageFont.load_default()


def _to_pil(image: Tensor, size: tuple[int, int]) -> Image.Image:
    """A (C, h, w) tensor in [-1, 1] as an RGB image of ``size`` (w, h), nearest upscaled."""
    x = to_unit(image.detach().to("cpu", torch.float32)).expand(3, -1, -1)
    arr = (x * 255.0).round().to(torch.uint8).permute(1, 2, 0).numpy()
    return Image.fromarray(np.ascontiguousarray(arr), mode="RGB").resize(size, Image.NEAREST)


def display_size(h: int, w: int) -> tuple[int, int]:
    """(w, h) of a tile as shown: an integer multiple of the image, at least MIN_TILE high."""
    scale = max(1, math.ceil(MIN_TILE / max(min(h, w), 1)))
    return w * scale, h * scale


def _fit(text: str, width: int, font: Any) -> str:
    """``text`` cut with an ellipsis to fit ``width`` pixels."""
    if font.getlength(text) <= width:
        return text
    while text and font.getlength(text + "…") > width:
        text = text[:-1]
    return text + "…"


def columns_of(rows: Sequence[GridRow]) -> list[str]:
    """The kinds shown, in order: y and H⁺y merged where they look the same in the first row."""
    kinds = [k for k in ("measurement", "pinv", "restored", "original") if k in rows[0].tiles]
    first = rows[0].tiles
    if "measurement" in first and "pinv" in first:
        y, pinv = first["measurement"], first["pinv"]
        if _same_picture(y, pinv):
            kinds.remove("measurement")
            return ["merged" if k == "pinv" else k for k in kinds]
    return kinds


def _same_picture(a: Tensor, b: Tensor) -> bool:
    """Within one 8-bit level once shown: a grey y against its 3-channel H⁺y, or a small y
    against an H⁺y that repeats its pixels (box downsampling), count as the same."""
    ua = to_unit(a.float()).expand(3, -1, -1)
    ub = to_unit(b.float()).expand(3, -1, -1)
    if ua.shape != ub.shape:
        (h, w), (bh, bw) = ua.shape[1:], ub.shape[1:]
        if bh % h or bw % w:
            return False
        ua = ua.repeat_interleave(bh // h, dim=1).repeat_interleave(bw // w, dim=2)
    return bool((ua - ub).abs().max() <= 1.5 / 255)


def _caption(row: GridRow, kind: str) -> str:
    source = "pinv" if kind == "merged" else kind
    value = row.psnr.get(source)
    if value is not None and math.isfinite(value):
        return f"PSNR {value:.2f} dB"
    return row.name if kind == "original" else ""


def render_rows(rows: Sequence[GridRow], titles: bool = True) -> Image.Image:
    """Rows of labelled tiles: column titles on top, each tile's PSNR (or name) under it."""
    if not rows:
        raise ValueError("render_rows needs at least one row")
    kinds = columns_of(rows)
    ref = rows[0].tiles["original" if "original" in rows[0].tiles else kinds[0]]
    tw, th = display_size(int(ref.shape[-2]), int(ref.shape[-1]))
    top = TITLE_H if titles else 0
    row_h = th + CAPTION_H + GAP
    canvas = Image.new("RGB", (len(kinds) * (tw + GAP) + GAP, top + len(rows) * row_h), "white")
    draw = ImageDraw.Draw(canvas)
    font = _font()
    names = {**TITLES, **rows[0].titles}
    for c, kind in enumerate(kinds):
        x0 = GAP + c * (tw + GAP)
        if titles:
            draw.text((x0 + 2, 3), _fit(names[kind], tw - 4, font), fill="black", font=font)
        for r, row in enumerate(rows):
            y0 = top + r * row_h
            tile = row.tiles.get("pinv" if kind == "merged" else kind)
            if tile is not None:
                canvas.paste(_to_pil(tile, (tw, th)), (x0, y0))
            caption = _fit(_caption(row, kind), tw - 4, font)
            draw.text((x0 + 2, y0 + th + 1), caption, fill="black", font=font)
    return canvas


def save_labelled_grid(rows: Sequence[GridRow], path: Path) -> bool:
    """Write ``rows`` as one labelled PNG (atomically); False when there is nothing to draw."""
    from ddrm_exp.tracking.files import atomic_write

    if not rows:
        return False
    image = render_rows(rows)
    with atomic_write(path, "wb", fsync=False) as f:
        image.save(f, format="PNG")
    return True


def panel(row: GridRow) -> np.ndarray:
    """One labelled row (e.g. a video frame's blurry | restored | sharp) as H x W x 3 uint8."""
    return np.asarray(render_rows([row]), dtype=np.uint8)


def load_png(path: Path) -> Tensor:
    """A PNG as a (C, h, w) tensor in [-1, 1] (1 channel for grey, else RGB)."""
    with Image.open(path) as img:
        grey = img.mode in ("L", "I", "I;16", "1")
        arr = np.asarray(img.convert("L" if grey else "RGB"), dtype=np.float32) / 255.0
    t = torch.from_numpy(arr)
    t = t.unsqueeze(0) if t.ndim == 2 else t.permute(2, 0, 1)
    return t * 2.0 - 1.0


def rows_from_disk(
    paths_of: Mapping[int, Mapping[str, Path]], records: Mapping[int, Mapping[str, Any]]
) -> list[GridRow]:
    """Grid rows from saved PNGs (kind -> path per index) and the PSNRs in the records.

    An image whose restored or original PNG is missing is left out.
    """
    rows = []
    for index in sorted(paths_of):
        record = records.get(index) or {}
        tiles = {k: load_png(p) for k, p in paths_of[index].items() if p.is_file()}
        if "restored" not in tiles or "original" not in tiles:
            continue
        rows.append(
            GridRow(
                name=str(record.get("name", index)),
                tiles=tiles,
                psnr={
                    "pinv": (record.get("baseline") or {}).get("psnr"),
                    "restored": (record.get("restored") or {}).get("psnr"),
                    "measurement": (record.get("measurement") or {}).get("psnr"),
                },
            )
        )
    return rows


# ---- the runner's side ---------------------------------------------------------------------------
def grid_row(
    name: str,
    operator: Any,
    y: Tensor,
    original: Tensor,
    pinv: Tensor,
    restored: Tensor,
    psnr: Mapping[str, float | None],
    style: str = "labelled",
) -> GridRow:
    """A grid row held in memory (used where the per-image PNGs are not saved)."""
    tiles = {"pinv": pinv, "restored": restored, "original": original}
    tiles = {k: v.detach().float().cpu() for k, v in tiles.items()}
    y_image = measurement_image(operator, y, original.shape, style)
    if y_image is not None:
        tiles["measurement"] = y_image.float()
    return GridRow(name, tiles, dict(psnr), titles_of(style))


def save_measurement(
    operator: Any, y: Tensor, shape: Sequence[int], path: Path, style: str = "labelled"
) -> None:
    """Save one image's measurement as a PNG (at its own size) where it is a picture; with
    ``style="official"`` the official code's y0 picture (:func:`official_y0`)."""
    from ddrm_exp.tracking.files import save_png

    y_image = measurement_image(operator, y, shape, style)
    if y_image is not None:
        save_png(y_image, path)


def write_run_grid(
    out_dir: Path,
    records: Mapping[int, Mapping[str, Any]],
    memory_rows: Mapping[int, GridRow],
    max_images: int,
    path: Path,
    measurement_style: str = "labelled",
) -> bool:
    """The run's grid: its first ``max_images`` images by dataset index, whoever computed them.

    Each image comes from its saved PNGs (so the images a resumed run found done are shown
    too), else from the rows this process kept in memory; one with neither is left out.
    ``measurement_style`` titles the measurement column (the PNG on disk is in that style).
    Returns whether a grid was written.
    """
    from ddrm_exp.run.outputs import image_paths, measurement_png_path

    rows: list[GridRow] = []
    missing = 0
    for index in sorted(records)[:max_images]:
        record = records[index]
        name = str(record.get("name", index))
        paths = {**image_paths(out_dir, index, name)}
        paths["measurement"] = measurement_png_path(out_dir, index, name)
        from_disk = rows_from_disk({index: paths}, {index: record})
        for row in from_disk:
            row.titles = titles_of(measurement_style)
        if from_disk:
            rows += from_disk
        elif index in memory_rows:
            rows.append(memory_rows[index])
        else:
            missing += 1
    if missing:
        log.info(
            "%s leaves out %d image(s) computed by an earlier process: with save_images=false "
            "their PNGs were not kept",
            path.name,
            missing,
        )
    return save_labelled_grid(rows, path)
