"""Pixel masking (official ``Inpainting``) with index tensors instead of the official O(n²) loop.

The mask is per pixel and shared by all channels. ``V`` is the permutation putting the kept
entries first (channel-major, pixels in raster order) and the missing ones after; ``U`` is the
identity, so the measurement ``y`` is just the kept values in that order and every singular
value is 1. The three config-facing classes differ only in how they draw the mask
(:mod:`ddrm_exp.degradations.masks`); each also takes ``mask_path``, a ``.npy`` or image mask
(0 = missing) that replaces the drawn one.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Sequence
from pathlib import Path

import torch
from torch import Tensor

from ddrm_exp.degradations import masks
from ddrm_exp.degradations._checks import as_dtype, as_shape
from ddrm_exp.degradations.base import IdentityU
from ddrm_exp.degradations.official_masks import check_official_lorem, official_lorem_path
from ddrm_exp.errors import ConfigError

__all__ = ["LOREM_SOURCES", "BoxInpainting", "LoremInpainting", "Masking", "RandomInpainting"]

log = logging.getLogger(__name__)

MaskPath = str | os.PathLike[str] | None
LOREM_SOURCES = ("rendered", "official")


def _given(mask_path: MaskPath) -> bool:
    return mask_path is not None and bool(str(mask_path).strip())


def _file_mask(path: str | os.PathLike[str], h: int, w: int, what: str | None = None) -> Tensor:
    """The mask in the file ``path`` at the images' size; ``what``: the option that named it."""
    mask = masks.read_mask_file(path, what or "The mask file")
    fitted = masks.fit_mask(mask, h, w, f"{what}={path}" if what else f"The mask file {path}")
    if fitted is not mask:
        mh, mw = mask.shape
        log.info("The mask %s is %dx%d; resampled by area to %dx%d.", path, mh, mw, h, w)
    return fitted


def _mask_or_file(mask_path: MaskPath, h: int, w: int, draw: Callable[[], Tensor]) -> Tensor:
    """The mask from ``mask_path`` when one is given (the drawn one is then unused)."""
    if mask_path is not None and _given(mask_path):
        log.info("Inpainting mask from degradation.mask_path=%s.", mask_path)
        return _file_mask(mask_path, h, w, "degradation.mask_path")
    return draw()


class Masking(IdentityU):
    """Keep the pixels where ``mask`` (bool ``(H, W)``, True = kept) is set, in every channel.

    ``H x = x.view(B, C, H*W)[:, :, mask.flatten()].flatten(1)``. A mask keeping no pixel is
    rejected: the operator would measure nothing.
    """

    def __init__(
        self,
        shape: tuple[int, int, int],
        *,
        mask: Tensor,
        device: str | torch.device = "cpu",
        dtype: torch.dtype = torch.float32,
    ) -> None:
        c, h, w = self.shape = as_shape(shape)
        dtype = as_dtype(dtype)
        mask = torch.as_tensor(mask).cpu()
        if mask.shape != (h, w):
            raise ConfigError(f"The mask must have shape ({h}, {w}), got {tuple(mask.shape)}.")
        flat = mask.reshape(-1).to(torch.bool)
        kept_px = torch.nonzero(flat).flatten()
        missing_px = torch.nonzero(~flat).flatten()
        if kept_px.numel() == 0:
            raise ConfigError(f"The inpainting mask keeps none of the {h}x{w} pixels.")
        offsets = torch.arange(c).unsqueeze(1) * (h * w)
        kept = (offsets + kept_px).reshape(-1)
        missing = (offsets + missing_px).reshape(-1)
        perm = torch.cat([kept, missing])
        self.mask = mask.to(device=device, dtype=torch.bool)
        self.perm = perm.to(device)
        self.inv_perm = torch.argsort(perm).to(device)
        self._singulars = torch.ones(kept.numel(), device=device, dtype=dtype)

    def Vt(self, vec: Tensor) -> Tensor:
        return vec.reshape(vec.shape[0], -1)[:, self.perm]

    def V(self, vec: Tensor) -> Tensor:
        return vec.reshape(vec.shape[0], -1)[:, self.inv_perm]

    def singulars(self) -> Tensor:
        return self._singulars


class RandomInpainting(Masking):
    """A seeded random ``fraction`` of the pixels missing (official ``inp``: half of them).

    The official code draws its mask from the global RNG after building the model, so its
    ``--seed`` maps to other masks than our ``seed`` (a ``torch.Generator`` of its own).
    """

    def __init__(
        self,
        shape: tuple[int, int, int],
        *,
        fraction: float = 0.5,
        seed: int = 0,
        mask_path: MaskPath = None,
        device: str | torch.device = "cpu",
        dtype: torch.dtype = torch.float32,
    ) -> None:
        _, h, w = as_shape(shape)
        mask = _mask_or_file(mask_path, h, w, lambda: masks.random_mask(h, w, fraction, seed))
        super().__init__(shape, mask=mask, device=device, dtype=dtype)
        self.fraction = fraction
        self.seed = seed


class LoremInpainting(Masking):
    """Lorem-ipsum text over the image (official ``inp_lorem``); text pixels are missing.

    ``source="rendered"`` draws our own text (:func:`~ddrm_exp.degradations.masks.lorem_mask`
    with the other parameters): it needs no file or network, but it is not the official mask
    (22 % of the pixels missing against 14 %). ``source="official"`` uses the official
    ``lorem3.npy`` (:mod:`~ddrm_exp.degradations.official_masks`: downloaded once into
    ``cache_dir``, sha256-checked), resampled by area if the images are not 256x256; with
    ``mask_path`` given, that file is used instead and must be the official one byte for byte.
    With ``source="rendered"``, ``mask_path`` is any mask of one's own.
    """

    def __init__(
        self,
        shape: tuple[int, int, int],
        *,
        source: str = "rendered",
        text: str = masks.LOREM_IPSUM,
        font_size_frac: float = 0.08,
        line_spacing_frac: float = 0.16,
        stroke_frac: float = 0.05,
        mask_path: MaskPath = None,
        cache_dir: str | os.PathLike[str] | None = None,
        device: str | torch.device = "cpu",
        dtype: torch.dtype = torch.float32,
    ) -> None:
        _, h, w = as_shape(shape)
        if source not in LOREM_SOURCES:
            raise ConfigError(
                f"degradation.source must be one of {', '.join(LOREM_SOURCES)} (rendered: our "
                f"own text, works offline; official: the official DDRM lorem3.npy, downloaded "
                f"once), got {source!r}."
            )
        if source == "official":
            if mask_path is not None and _given(mask_path):
                path = check_official_lorem(
                    Path(os.path.expanduser(str(mask_path))), "degradation.mask_path"
                )
            else:
                path = official_lorem_path(cache_dir)
            mask = _file_mask(path, h, w)
        else:
            mask = _mask_or_file(
                mask_path,
                h,
                w,
                lambda: masks.lorem_mask(
                    h, w, text, font_size_frac, line_spacing_frac, stroke_frac
                ),
            )
        super().__init__(shape, mask=mask, device=device, dtype=dtype)
        self.source = source


class BoxInpainting(Masking):
    """A rectangular hole (no official equivalent); default: centred, half height and width."""

    def __init__(
        self,
        shape: tuple[int, int, int],
        *,
        height_frac: float = 0.5,
        width_frac: float = 0.5,
        center: Sequence[float] = (0.5, 0.5),
        mask_path: MaskPath = None,
        device: str | torch.device = "cpu",
        dtype: torch.dtype = torch.float32,
    ) -> None:
        _, h, w = as_shape(shape)
        mask = _mask_or_file(
            mask_path, h, w, lambda: masks.box_mask(h, w, height_frac, width_frac, center)
        )
        super().__init__(shape, mask=mask, device=device, dtype=dtype)
