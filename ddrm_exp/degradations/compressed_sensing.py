"""Compressed sensing with a subsampled Walsh–Hadamard transform (official ``cs2``/``cs4``).

The orthonormal WHT is symmetric and its own inverse, so ``V`` and ``Vt`` are the same fast
butterfly (``log2 N`` vectorised stages) plus a seeded permutation; the measurement keeps the
first ``N/ratio`` permuted coefficients of every channel and all singular values are 1.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from ddrm_exp.degradations._checks import as_dtype, as_int, as_shape
from ddrm_exp.degradations.base import IdentityU
from ddrm_exp.errors import ConfigError

__all__ = ["WalshHadamardCS", "fwht"]


def fwht(x: Tensor) -> Tensor:
    """Orthonormal Walsh–Hadamard transform along the last axis (length a power of 2).

    Natural (Sylvester/Hadamard) order: ``fwht(x) == x @ hadamard(N) / sqrt(N)``.
    """
    n = x.shape[-1]
    if n & (n - 1) or n == 0:
        raise ValueError(f"fwht needs a power-of-2 length, got {n}")
    lead = x.shape[:-1]
    y = x.reshape(-1, n)
    h = 1
    while h < n:
        pairs = y.reshape(-1, n // (2 * h), 2, h)
        a, b = pairs[:, :, 0], pairs[:, :, 1]
        y = torch.stack((a + b, a - b), dim=2).reshape(-1, n)
        h *= 2
    return (y / math.sqrt(n)).reshape(*lead, n)


class WalshHadamardCS(IdentityU):
    """Per channel: WHT of the ``N = H*W`` flattened pixels, seeded permutation, keep ``N/ratio``.

    Spectral layout: the kept coefficients of all channels (channel-major, ``C*N/ratio``),
    then the dropped ones (channel-major). The measurement is the kept block, so ``U = I``.
    ``H*W`` must be a power of 2 and ``ratio`` must divide it.
    """

    def __init__(
        self,
        shape: tuple[int, int, int],
        *,
        ratio: int,
        seed: int = 0,
        device: str | torch.device = "cpu",
        dtype: torch.dtype = torch.float32,
    ) -> None:
        c, h, w = self.shape = as_shape(shape)
        dtype = as_dtype(dtype)
        n_px = h * w
        if n_px & (n_px - 1):
            raise ConfigError(
                f"Walsh-Hadamard compressed sensing needs H*W to be a power of 2, got "
                f"{h}x{w} = {n_px} pixels."
            )
        ratio = as_int(ratio, "Compressed-sensing ratio", minimum=1)
        if n_px % ratio:
            raise ConfigError(
                f"Compressed-sensing ratio {ratio} must divide the {n_px} pixels (use a power of 2 "
                f"up to {n_px})."
            )
        seed = as_int(seed, "Compressed-sensing seed", minimum=0)
        self.ratio = ratio
        self.kept = n_px // ratio
        perm = torch.randperm(n_px, generator=torch.Generator().manual_seed(seed))
        self.perm = perm.to(device)
        self.inv_perm = torch.argsort(perm).to(device)
        self._singulars = torch.ones(c * self.kept, device=device, dtype=dtype)

    def Vt(self, vec: Tensor) -> Tensor:
        b, c = vec.shape[0], self.shape[0]
        coeffs = fwht(vec.reshape(b, c, -1))[:, :, self.perm]
        kept = coeffs[:, :, : self.kept].reshape(b, -1)
        rest = coeffs[:, :, self.kept :].reshape(b, -1)
        return torch.cat([kept, rest], dim=1)

    def V(self, vec: Tensor) -> Tensor:
        b, c = vec.shape[0], self.shape[0]
        vec = vec.reshape(b, -1)
        split = c * self.kept
        kept = vec[:, :split].reshape(b, c, -1)
        rest = vec[:, split:].reshape(b, c, -1)
        coeffs = torch.cat([kept, rest], dim=2)[:, :, self.inv_perm]
        return fwht(coeffs).reshape(b, -1)

    def singulars(self) -> Tensor:
        return self._singulars
