"""Inpainting masks as pure functions returning a bool ``(H, W)`` tensor (True = pixel kept).

Masks are per pixel: a missing pixel is missing in every channel. Keeping them apart from the
operator lets the runner save, show or reuse a mask without building an operator. All of them
are deterministic given their parameters (the lorem mask given the Pillow version, whose
bundled font renders it).
"""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image, ImageDraw, ImageFont, UnidentifiedImageError
from torch import Tensor

from ddrm_exp.degradations._checks import as_float, as_int
from ddrm_exp.errors import ConfigError

_RENDER_HEIGHT = 256
_MAX_RENDER_WIDTH = 8192

__all__ = ["LOREM_IPSUM", "box_mask", "fit_mask", "lorem_mask", "random_mask", "read_mask_file"]

# Aspect ratios farther apart than this are refused rather than stretched.
_ASPECT_TOL = 0.01

LOREM_IPSUM = (
    "Lorem ipsum dolor sit amet, consectetur adipiscing elit, sed do eiusmod tempor "
    "incididunt ut labore et dolore magna aliqua. Ut enim ad minim veniam, quis nostrud "
    "exercitation ullamco laboris nisi ut aliquip ex ea commodo consequat."
)


def _size(height: int, width: int) -> tuple[int, int]:
    return as_int(height, "Mask height", minimum=1), as_int(width, "Mask width", minimum=1)


def random_mask(height: int, width: int, fraction: float = 0.5, seed: int = 0) -> Tensor:
    """``floor(fraction * H * W)`` pixels missing, drawn uniformly with a seeded generator.

    The official ``inp`` degradation drops half of the pixels (``fraction=0.5``). At least one
    pixel is always kept.
    """
    height, width = _size(height, width)
    fraction = as_float(fraction, "Inpainting fraction", low=0.0, high=1.0, high_open=True)
    seed = as_int(seed, "Inpainting seed", minimum=0)
    total = height * width
    missing = min(math.floor(fraction * total + 1e-9), total - 1)
    generator = torch.Generator().manual_seed(seed)
    order = torch.randperm(total, generator=generator)
    mask = torch.ones(total, dtype=torch.bool)
    mask[order[:missing]] = False
    return mask.view(height, width)


def box_mask(
    height: int,
    width: int,
    height_frac: float = 0.5,
    width_frac: float = 0.5,
    center: Sequence[float] = (0.5, 0.5),
) -> Tensor:
    """A rectangular hole of ``height_frac*H x width_frac*W`` pixels centred at ``center``.

    ``center`` is ``(row, col)`` as fractions of ``(H, W)``; the box is clipped at the border.
    Sizes are rounded to whole pixels.
    """
    height, width = _size(height, width)
    hf = as_float(height_frac, "Box height_frac", low=0.0, high=1.0, low_open=True)
    wf = as_float(width_frac, "Box width_frac", low=0.0, high=1.0, low_open=True)
    if isinstance(center, str | bytes) or not isinstance(center, Sequence) or len(center) != 2:
        raise ConfigError(f"Box center must be a pair (row, col) of fractions, got {center!r}.")
    cy = as_float(center[0], "Box center row", low=0.0, high=1.0)
    cx = as_float(center[1], "Box center column", low=0.0, high=1.0)
    bh, bw = round(hf * height), round(wf * width)
    top, left = round(cy * height - bh / 2), round(cx * width - bw / 2)
    rows = torch.arange(height).unsqueeze(1)
    cols = torch.arange(width).unsqueeze(0)
    hole = (rows >= top) & (rows < top + bh) & (cols >= left) & (cols < left + bw)
    return ~hole


def lorem_mask(
    height: int,
    width: int,
    text: str = LOREM_IPSUM,
    font_size_frac: float = 0.08,
    line_spacing_frac: float = 0.16,
    stroke_frac: float = 0.05,
) -> Tensor:
    """Lines of text over the whole image; text pixels are missing.

    A stand-in for the official ``inp_lorem`` mask (``lorem3.npy``, which
    :mod:`~ddrm_exp.degradations.official_masks` downloads) that needs no file or network; it
    is not that mask (22 % of the pixels missing at 256x256 against 14 %). Pillow's
    bundled font is drawn at ``font_size_frac * H`` pixels, about one line every
    ``line_spacing_frac * H`` pixels (evenly spread over the height), thickened by a stroke of
    ``stroke_frac`` of the font size to look bold; each line is shifted so words do not align
    in columns. Images shorter than 256 pixels are rendered at a multiple of their size and
    area-downsampled (a pixel is missing when over half of it is ink), so the mask looks alike
    at every resolution. The defaults cover about 20-23 % of the pixels.
    """
    height, width = _size(height, width)
    if not isinstance(text, str) or not text.strip():
        raise ConfigError(f"Lorem mask text must be a non-empty string, got {text!r}.")
    fs = as_float(font_size_frac, "Lorem font_size_frac", low=0.0, high=1.0, low_open=True)
    ls = as_float(line_spacing_frac, "Lorem line_spacing_frac", low=0.0, high=1.0, low_open=True)
    sf = as_float(stroke_frac, "Lorem stroke_frac", low=0.0, high=1.0)
    # Small images are rendered larger and area-downsampled, so the mask looks the same at
    # every resolution instead of degenerating into 1-pixel glyphs (capped for very wide ones).
    scale = max(1, min(math.ceil(_RENDER_HEIGHT / height), _MAX_RENDER_WIDTH // width))
    big_h, big_w = height * scale, width * scale
    font_px = max(1, round(fs * big_h))
    spacing = max(1, round(ls * big_h))
    stroke = round(sf * font_px)
    font = ImageFont.load_default(size=font_px)
    line = " ".join(text.split()) + " "
    line_len = max(1.0, float(font.getlength(line)))
    repeats = math.ceil((big_w + line_len) / line_len) + 1
    long_line = line * repeats

    canvas = Image.new("L", (big_w, big_h), 0)
    draw = ImageDraw.Draw(canvas)
    # Evenly spaced line centres; each line shifted by a golden-ratio fraction of its length.
    lines = max(1, round(big_h / spacing))
    for k in range(lines):
        offset = -((k * 0.618034) % 1.0) * line_len
        draw.text(
            (offset, (k + 0.5) * big_h / lines),
            long_line,
            fill=255,
            font=font,
            anchor="lm",
            stroke_width=stroke,
            stroke_fill=255,
        )
    ink = torch.from_numpy(np.asarray(canvas, dtype=np.float32) / 255.0)
    text_px = ink.view(height, scale, width, scale).mean(dim=(1, 3)) > 0.5
    return ~text_px


# ---- masks from files ------------------------------------------------------------------------
def _read_array(path: Path, what: str) -> np.ndarray:
    """The raw array of a ``.npy`` file or an image, 2-D (an image's channels must agree)."""
    if path.suffix.lower() == ".npy":
        try:
            # allow_pickle=False: a mask file must never be able to run code.
            arr = np.load(path, allow_pickle=False)
        except (ValueError, OSError, EOFError) as exc:
            raise ConfigError(
                f"{what}={path} could not be read as a .npy array ({exc}). Save the mask with "
                "numpy.save as a 2-D array of 0 (missing) and 1 (kept)."
            ) from exc
    else:
        try:
            with Image.open(path) as img:
                # A palette image's array holds palette indices, not grey levels.
                arr = np.asarray(img.convert("L") if img.mode in ("P", "PA") else img)
        except (UnidentifiedImageError, OSError) as exc:
            raise ConfigError(
                f"{what}={path} is neither a .npy array nor an image Pillow can read ({exc}). "
                "Give a .npy file or a PNG of black (missing) and white (kept) pixels."
            ) from exc
    if arr.ndim == 3 and arr.shape[-1] in (1, 2, 3, 4) and arr.shape[0] > 4:
        arr = np.moveaxis(arr, -1, 0)  # an image: (H, W, C) -> (C, H, W)
    if arr.ndim == 3:
        # The alpha channel of an LA / RGBA image is not the mask.
        colour = arr[:1] if arr.shape[0] <= 2 else arr[:3]
        if not (colour == colour[:1]).all():
            raise ConfigError(
                f"{what}={path} has {arr.shape[0]} channels that differ; a mask is one value "
                "per pixel (shared by all channels). Save it as a greyscale image or a 2-D "
                "array."
            )
        arr = colour[0]
    if arr.ndim != 2 or min(arr.shape) < 1:
        raise ConfigError(
            f"{what}={path} holds an array of shape {arr.shape}; a mask must be 2-D (H, W), "
            "0 = missing, nonzero = kept."
        )
    return arr


def read_mask_file(path: str | os.PathLike[str], what: str = "degradation.mask_path") -> Tensor:
    """A bool ``(h, w)`` mask (True = kept) from a ``.npy`` array or an image; 0 = missing.

    The values must be binary: 0 and one other value (1, 255, True, ...), as the official
    ``inp_masks/*.npy`` files are. Grey levels, NaN or negative values are refused with a
    message rather than thresholded, since where a soft mask's edge falls is the user's call.
    """
    path = Path(os.path.expanduser(str(path)))
    if not path.is_file():
        where = "is a directory" if path.is_dir() else "does not exist"
        raise ConfigError(
            f"{what}={path} {where} (looked at {path.resolve()}; relative paths are taken from "
            "the directory you run in). Point it at a .npy or image mask, 0 = missing."
        )
    arr = _read_array(path, what)
    if arr.dtype == np.bool_:
        return torch.from_numpy(arr.copy())
    if not np.issubdtype(arr.dtype, np.number):
        raise ConfigError(f"{what}={path} holds {arr.dtype} values, not numbers.")
    values = np.unique(arr)
    binary = (
        np.isfinite(values).all()
        and (values >= 0).all()
        and values.size <= 2
        and (values.size == 1 or values[0] == 0)
    )
    if not binary:
        shown = ", ".join(f"{v:g}" for v in values[:6]) + (" ..." if values.size > 6 else "")
        raise ConfigError(
            f"{what}={path} is not a binary mask: it holds {values.size} distinct values "
            f"({shown}). A mask is 0 where a pixel is missing and one other positive value "
            "(1 or 255) where it is kept; threshold a soft mask first, e.g. "
            "numpy.save(p, (m > 0.5).astype(numpy.uint8))."
        )
    return torch.from_numpy(arr != 0)


def fit_mask(mask: Tensor, height: int, width: int, what: str = "The mask") -> Tensor:
    """``mask`` at ``height x width``: as it is, or resampled when only the scale differs.

    A different size with the same aspect ratio is resampled by area: a pixel is missing when
    more than half of the area it covers is (the rule the rendered lorem mask uses), so the
    official 256x256 lorem mask works at 64x64 too. A different aspect ratio is refused: it
    would stretch the mask.
    """
    h, w = (int(v) for v in mask.shape)
    if (h, w) == (height, width):
        return mask
    if abs(h / w - height / width) > _ASPECT_TOL * (height / width):
        raise ConfigError(
            f"{what} is {h}x{w} (HxW) but the images are {height}x{width}, another aspect ratio; "
            f"it is not stretched. Give a mask of {height}x{width} pixels (or of that shape "
            "scaled), or set model.image_size / the dataset's size to match the mask."
        )
    kept = mask.to(torch.float32).view(1, 1, h, w)
    frac = F.interpolate(kept, size=(height, width), mode="area").view(height, width)
    return frac >= 0.5
