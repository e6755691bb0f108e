"""The ``H_functions`` protocol of the official DDRM code, on flattened ``(B, C*H*W)`` vectors.

An operator ``H`` (``m x n``, ``n = C*H*W``) is given by its SVD ``H = U Σ Vᵀ`` through the
functions ``V, Vt, U, Ut, singulars, add_zeros``. ``singulars()`` holds the ``m`` singular values
in descending order (zeros allowed, for directions the measurement does not see); the first ``m``
entries of ``Vt(x)`` are the spectral components those singular values multiply, the remaining
``n - m`` are the null space. Keeping the protocol lets operators written for DDRM and its
follow-ups (DDNM, GibbsDDRM) drop in.

``H``, ``Ht`` and ``H_pinv`` are derived. Unlike the official ``H_pinv``, ours is a true
pseudo-inverse: components with a zero singular value are set to zero instead of divided by zero.
"""

from __future__ import annotations

from abc import ABC, abstractmethod

import torch
from torch import Tensor

from ddrm_exp.degradations.noise import GeneratorArg, add_measurement_noise


class HFunctions(ABC):
    """Base class of all degradation operators.

    Subclasses set ``self.shape = (C, H, W)`` (the image shape) and implement the six protocol
    functions. Inputs may be of any leading batch size ``B``.
    """

    shape: tuple[int, int, int]
    # A blur with a known kernel declares it here: (kh, kw), or (B, kh, kw) with one per image
    # (recorded with blind and real-blur results); None for every other operator.
    kernel2d: Tensor | None = None

    def with_kernels(self, kernels: Tensor) -> HFunctions:
        """An operator of this kind blurring by ``kernels`` ((kh, kw), or (B, kh, kw) with one
        per image): what a blind run needs once each image's kernel is known."""
        raise TypeError(f"{type(self).__name__} is not a blur whose kernel can be replaced.")

    # ---- the protocol -------------------------------------------------------------------------
    @abstractmethod
    def V(self, vec: Tensor) -> Tensor:
        """Spectral (B, n) -> pixel (B, n)."""

    @abstractmethod
    def Vt(self, vec: Tensor) -> Tensor:
        """Pixel (B, n) -> spectral (B, n)."""

    @abstractmethod
    def U(self, vec: Tensor) -> Tensor:
        """Spectral (B, m) -> measurement (B, m)."""

    @abstractmethod
    def Ut(self, vec: Tensor) -> Tensor:
        """Measurement (B, m) -> spectral (B, m)."""

    @abstractmethod
    def singulars(self) -> Tensor:
        """The m singular values, sorted in descending order."""

    def add_zeros(self, vec: Tensor) -> Tensor:
        """Pad a (B, m) spectral vector with zeros to (B, n)."""
        out = vec.new_zeros(vec.shape[0], self.n)
        out[:, : vec.shape[1]] = vec
        return out

    # ---- sizes --------------------------------------------------------------------------------
    @property
    def n(self) -> int:
        c, h, w = self.shape
        return c * h * w

    @property
    def m(self) -> int:
        return int(self.singulars().shape[-1])

    # ---- derived ------------------------------------------------------------------------------
    def measure(self, x: Tensor, sigma_y: float, generators: GeneratorArg) -> Tensor:
        """``y = Hx + σ_y z`` for images ``x`` (B, C, H, W) in [-1, 1], ``z`` drawn per image."""
        return add_measurement_noise(self.H(x.reshape(x.shape[0], -1)), sigma_y, generators)

    def H(self, vec: Tensor) -> Tensor:
        """Apply the degradation: (B, n) -> (B, m)."""
        temp = self.Vt(vec.reshape(vec.shape[0], -1))
        s = self.singulars()
        return self.U(s * temp[:, : s.shape[-1]])

    def Ht(self, vec: Tensor) -> Tensor:
        """Apply the transpose: (B, m) -> (B, n)."""
        temp = self.Ut(vec.reshape(vec.shape[0], -1))
        s = self.singulars()
        return self.V(self.add_zeros(s * temp[:, : s.shape[-1]]))

    def H_pinv(self, vec: Tensor) -> Tensor:
        """Moore-Penrose pseudo-inverse: (B, m) -> (B, n); zero singular values are skipped."""
        temp = self.Ut(vec.reshape(vec.shape[0], -1))
        s = self.singulars()
        safe = torch.where(s > 0, s, torch.ones_like(s))
        inv = torch.where(s > 0, 1.0 / safe, torch.zeros_like(s))
        return self.V(self.add_zeros(inv * temp))

    def to(self, device: torch.device | str) -> HFunctions:
        """Move every tensor attribute to ``device`` (in place) and return self."""
        for name, value in vars(self).items():
            if isinstance(value, Tensor):
                setattr(self, name, value.to(device))
        return self


class IdentityU(HFunctions):
    """Operators whose measurement is already in spectral order (U = I): masks, denoising, CS."""

    def U(self, vec: Tensor) -> Tensor:
        return vec.reshape(vec.shape[0], -1).clone()

    def Ut(self, vec: Tensor) -> Tensor:
        return vec.reshape(vec.shape[0], -1).clone()
