"""Pure denoising (official ``deno``): ``H`` is the identity, so DDRM only removes noise.

It is the degenerate case of the protocol (``m = n``, every singular value 1), useful as a
baseline and as a smoke test of the sampler.
"""

from __future__ import annotations

import torch
from torch import Tensor

from ddrm_exp.degradations._checks import as_dtype, as_shape
from ddrm_exp.degradations.base import IdentityU

__all__ = ["Denoising"]


class Denoising(IdentityU):
    """Identity operator; ``U = V = I``; the measurement is the (noisy) image itself."""

    def __init__(
        self,
        shape: tuple[int, int, int],
        *,
        device: str | torch.device = "cpu",
        dtype: torch.dtype = torch.float32,
    ) -> None:
        self.shape = as_shape(shape)
        self._singulars = torch.ones(self.n, device=device, dtype=as_dtype(dtype))

    def V(self, vec: Tensor) -> Tensor:
        return vec.reshape(vec.shape[0], -1).clone()

    def Vt(self, vec: Tensor) -> Tensor:
        return vec.reshape(vec.shape[0], -1).clone()

    def singulars(self) -> Tensor:
        return self._singulars
