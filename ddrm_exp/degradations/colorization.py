"""Colorization (official ``color``): each pixel's channels mixed into one gray value.

The per-pixel ``1 x C`` matrix has a closed-form SVD, computed once at construction; the big
operator is that SVD applied to every pixel, so ``Vt`` is a ``C x C`` matmul along channels.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

from ddrm_exp.degradations._checks import as_dtype, as_float, as_shape
from ddrm_exp.degradations.base import HFunctions
from ddrm_exp.errors import ConfigError

__all__ = ["Colorization"]

OFFICIAL_WEIGHTS = (0.3333, 0.3334, 0.3333)


class Colorization(HFunctions):
    """``y[p] = sum_c weights[c] * x[c, p]``; ``m = H*W``, measurement in raster order.

    Spectral layout: ``Vt(x)`` is ``V_smallᵀ`` applied to each pixel's channel vector, stored
    channel-major, so the first ``H*W`` entries are the measured component of every pixel
    (singular value ``‖weights‖``) and the rest the per-pixel null space.
    """

    def __init__(
        self,
        shape: tuple[int, int, int],
        *,
        weights: Sequence[float] = OFFICIAL_WEIGHTS,
        device: str | torch.device = "cpu",
        dtype: torch.dtype = torch.float32,
    ) -> None:
        c, h, w = self.shape = as_shape(shape)
        dtype = as_dtype(dtype)
        if isinstance(weights, str) or not isinstance(weights, Sequence) or len(weights) != c:
            raise ConfigError(
                f"Colorization weights must be a list of {c} numbers (one per channel), "
                f"got {weights!r}."
            )
        values = torch.tensor(
            [as_float(v, "Colorization weight") for v in weights], dtype=torch.float64
        )
        if not bool(values.ne(0).any()):
            raise ConfigError(f"Colorization weights must not all be zero, got {list(weights)!r}.")
        u, s, vh = torch.linalg.svd(values.view(1, c), full_matrices=True)
        self.weights = values.to(device=device, dtype=dtype)
        self.u_small = u.to(device=device, dtype=dtype)  # (1, 1): ±1
        self.vh_small = vh.to(device=device, dtype=dtype)  # (C, C)
        self._singulars = s.expand(h * w).to(device=device, dtype=dtype).contiguous()

    def Vt(self, vec: Tensor) -> Tensor:
        b = vec.shape[0]
        x = vec.reshape(b, self.shape[0], -1)
        return (self.vh_small @ x).reshape(b, -1)

    def V(self, vec: Tensor) -> Tensor:
        b = vec.shape[0]
        z = vec.reshape(b, self.shape[0], -1)
        return (self.vh_small.transpose(0, 1) @ z).reshape(b, -1)

    def Ut(self, vec: Tensor) -> Tensor:
        return self.u_small[0, 0] * vec.reshape(vec.shape[0], -1)

    def U(self, vec: Tensor) -> Tensor:
        return self.u_small[0, 0] * vec.reshape(vec.shape[0], -1)

    def singulars(self) -> Tensor:
        return self._singulars
