"""Pixel masking (official ``Inpainting``) with index tensors instead of the official O(n²) loop.

The mask is per pixel and shared by all channels. ``V`` is the permutation putting the kept
entries first (channel-major, pixels in raster order) and the missing ones after; ``U`` is the
identity, so the measurement ``y`` is just the kept values in that order and every singular
value is 1. The three config-facing classes differ only in how they draw the mask
(:mod:`ddrm_exp.degradations.masks`).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

from ddrm_exp.degradations._checks import as_dtype, as_shape
from ddrm_exp.degradations.base import IdentityU
from ddrm_exp.degradations.masks import LOREM_IPSUM, box_mask, lorem_mask, random_mask
from ddrm_exp.errors import ConfigError

__all__ = ["BoxInpainting", "LoremInpainting", "Masking", "RandomInpainting"]


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
    """A seeded random ``fraction`` of the pixels missing (official ``inp``: half of them)."""

    def __init__(
        self,
        shape: tuple[int, int, int],
        *,
        fraction: float = 0.5,
        seed: int = 0,
        device: str | torch.device = "cpu",
        dtype: torch.dtype = torch.float32,
    ) -> None:
        _, h, w = as_shape(shape)
        super().__init__(shape, mask=random_mask(h, w, fraction, seed), device=device, dtype=dtype)
        self.fraction = fraction
        self.seed = seed


class LoremInpainting(Masking):
    """Text lines rendered over the image (stand-in for the official ``inp_lorem`` mask file).

    See :func:`~ddrm_exp.degradations.masks.lorem_mask` for the parameters.
    """

    def __init__(
        self,
        shape: tuple[int, int, int],
        *,
        text: str = LOREM_IPSUM,
        font_size_frac: float = 0.08,
        line_spacing_frac: float = 0.16,
        stroke_frac: float = 0.05,
        device: str | torch.device = "cpu",
        dtype: torch.dtype = torch.float32,
    ) -> None:
        _, h, w = as_shape(shape)
        mask = lorem_mask(h, w, text, font_size_frac, line_spacing_frac, stroke_frac)
        super().__init__(shape, mask=mask, device=device, dtype=dtype)


class BoxInpainting(Masking):
    """A rectangular hole (no official equivalent); default: centred, half height and width."""

    def __init__(
        self,
        shape: tuple[int, int, int],
        *,
        height_frac: float = 0.5,
        width_frac: float = 0.5,
        center: Sequence[float] = (0.5, 0.5),
        device: str | torch.device = "cpu",
        dtype: torch.dtype = torch.float32,
    ) -> None:
        _, h, w = as_shape(shape)
        mask = box_mask(h, w, height_frac, width_frac, center)
        super().__init__(shape, mask=mask, device=device, dtype=dtype)
