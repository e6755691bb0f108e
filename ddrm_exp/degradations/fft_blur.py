"""Circular 2-D convolution with any kernel, diagonalised exactly by the 2-D DFT.

A circular convolution ``y = k ⊛ x`` multiplies the DFT by the kernel's transfer function:
``Y(f) = K(f) X(f)``. To fit the real ``H_functions`` protocol the complex DFT is turned into a
real orthonormal basis. With ``X`` the orthonormal DFT of a real image, ``X(-f) = conj X(f)``,
so the image is described by one frequency ``f`` of each conjugate pair ``{f, -f}``, with two
real coordinates ``√2 Re X(f)`` and ``√2 Im X(f)``, and by the self-conjugate frequencies
(``f = -f``: (0, 0), (H/2, 0), (0, W/2), (H/2, W/2) where the sides are even) with the single
coordinate ``X(f)``, which is real. These ``H*W`` coordinates per channel are an orthonormal
real transform: that is ``Vᵀ``.

In those coordinates a pair's ``(Re, Im)`` is multiplied by the complex ``K(f) = |K(f)| e^{iφ}``,
i.e. scaled by ``|K(f)|`` and rotated by ``φ``; a self-conjugate coordinate is multiplied by the
real ``K(f) = ±|K(f)|``. So ``H = U Σ Vᵀ`` with ``Σ = |K|`` (each value on both coordinates of a
pair and on every channel) and ``U = V ∘ (rotation by φ)``, i.e. ``Uᵀ y`` takes the same real
coordinates of ``e^{-iφ} Y(f)``. Everything runs through ``torch.fft.rfft2``/``irfft2``
(``O(n log n)``); the half spectrum ``rfft2`` keeps holds exactly one frequency of each pair,
apart from the columns ``v = 0`` and ``v = W/2``, which hold both members of their pairs and are
handled by index tensors built once per image size.

The spectral coordinates are sorted by singular value, descending (stable), as every operator
of the project does; the sort is one gather with a precomputed index per image.

Per-image kernels: ``kernel`` of shape ``(B, kh, kw)`` gives one blur per image of a batch of
exactly ``B``; ``singulars()`` is then ``(B, n)`` (each image has its own spectrum and order),
which the base class, DDRM and MCG all broadcast over. A single ``(kh, kw)`` kernel gives
``(n,)`` singulars and works with any batch size.

Conventions: ``k`` is applied as a convolution (not a correlation) with its origin at index
``(kh//2, kw//2)``, so a delta there is the identity and ``y[p] = Σ_q k[q] x[p - q + origin]``
with indices wrapping around the image. The same kernel blurs each channel.
"""

from __future__ import annotations

import math
from functools import cache
from typing import Unpack

import torch
from torch import Tensor

from ddrm_exp.degradations._checks import (
    OperatorOptions,
    as_shape,
    operator_options,
)
from ddrm_exp.degradations.base import HFunctions
from ddrm_exp.errors import ConfigError

__all__ = ["FFTBlur", "blur_circular", "transfer_function"]

ZERO_THRESHOLD = 3e-2
"""Singular values ``|K(f)|`` below it count as 0 (the official DDRM ``ZERO``; a normalised,
non-negative kernel has ``max |K| = K(0) = 1``, so it is relative to the largest as well)."""


def _as_kernels(kernel: Tensor, what: str = "kernel") -> tuple[Tensor, bool]:
    """``(B, kh, kw)`` float64 kernels on the CPU and whether a batch of them was given."""
    k = torch.as_tensor(kernel).detach().to(device="cpu", dtype=torch.float64)
    if k.dim() not in (2, 3) or k.numel() == 0:
        raise ConfigError(
            f"The {what} must be a (kh, kw) kernel or a (B, kh, kw) batch of kernels, got shape "
            f"{tuple(k.shape)}."
        )
    if not bool(torch.isfinite(k).all()):
        raise ConfigError(f"The {what} has non-finite values.")
    batched = k.dim() == 3
    k = k if batched else k.unsqueeze(0)
    if bool((k.flatten(1).abs().amax(dim=1) == 0).any()):
        raise ConfigError(f"The {what} is all zero (for at least one image).")
    return k, batched


def transfer_function(kernel: Tensor, size: tuple[int, int]) -> Tensor:
    """Half-spectrum transfer function ``K`` (``rfft2`` layout) of a circular blur on ``size``.

    ``kernel``: ``(..., kh, kw)``; its origin ``(kh//2, kw//2)`` goes to pixel ``(0, 0)`` and
    every tap wraps around the ``H x W`` torus (taps of a kernel larger than the image add up).
    Returns ``(..., H, W//2 + 1)`` complex, unnormalised: ``rfft2(k ⊛ x) = K · rfft2(x)``.
    """
    h, w = size
    kh, kw = kernel.shape[-2:]
    rows = (torch.arange(kh, device=kernel.device) - kh // 2) % h
    cols = (torch.arange(kw, device=kernel.device) - kw // 2) % w
    flat = (rows.view(kh, 1) * w + cols.view(1, kw)).reshape(-1)
    lead = kernel.shape[:-2]
    placed = kernel.new_zeros(*lead, h * w)
    placed.index_add_(-1, flat, kernel.reshape(*lead, kh * kw))
    return torch.fft.rfft2(placed.reshape(*lead, h, w))


def blur_circular(x: Tensor, kernel: Tensor) -> Tensor:
    """Circular convolution of images ``x`` (``(B, C, H, W)`` or ``(C, H, W)``) with ``kernel``.

    ``kernel``: ``(kh, kw)`` for all images or ``(B, kh, kw)``, one per image; the same kernel
    blurs every channel, with its origin at ``(kh//2, kw//2)``. Circular means the image is
    treated as periodic: near a border the blur wraps around, so the right edge bleeds into the
    left one and the bottom into the top (the ``k`` taps that fall outside the image read the
    opposite side). This is exactly the exact (unthresholded) :class:`FFTBlur` operator; use it
    to make measurements for that operator, not a zero- or reflect-padded blur.
    """
    squeeze = x.dim() == 3
    xb = x.unsqueeze(0) if squeeze else x
    if xb.dim() != 4:
        raise ValueError(f"x must be (B, C, H, W) or (C, H, W), got {tuple(x.shape)}")
    k, batched = _as_kernels(kernel)
    if batched and k.shape[0] != xb.shape[0]:
        raise ValueError(f"{k.shape[0]} kernels for a batch of {xb.shape[0]} images")
    h, w = xb.shape[-2:]
    spectrum = transfer_function(k, (h, w)).to(device=x.device)
    real_dtype = x.dtype if x.dtype.is_floating_point else torch.float32
    xf = torch.fft.rfft2(xb.to(real_dtype))
    out = torch.fft.irfft2(xf * spectrum.to(xf.dtype).unsqueeze(1), s=(h, w))
    return out.squeeze(0) if squeeze else out


@cache
def _real_layout(h: int, w: int) -> tuple[Tensor, Tensor, Tensor, Tensor, Tensor]:
    """Index tensors between the ``rfft2`` half spectrum and the real orthonormal coordinates.

    The half spectrum viewed as real is an ``(h, wr, 2)`` array (``wr = w//2 + 1``, last axis
    Re/Im), flattened. Returns:

    * ``src`` (h*w,): where each real coordinate is read from, in row-major order of the half
      spectrum, skipping what is redundant: in the columns ``v = 0`` and ``v = w/2`` the rows
      ``u > h - u`` (conjugates of rows already kept) and the zero Im of self-conjugate entries;
    * ``scale`` (h*w,): ``√2`` for a member of a conjugate pair, 1 for a self-conjugate entry;
    * ``dup_dst``, ``dup_src``, ``dup_sign``: the skipped conjugates, to be refilled before
      ``irfft2`` as ``R[dup_dst] = dup_sign * R[dup_src]`` (Re copied, Im negated).
    """
    wr = w // 2 + 1
    u = torch.arange(h).view(h, 1, 1)
    v = torch.arange(wr).view(1, wr, 1)
    part = torch.arange(2).view(1, 1, 2)
    edge_col = (v == 0) | ((w % 2 == 0) & (v == w // 2))
    self_conj_row = (u == 0) | ((h % 2 == 0) & (u == h // 2))
    upper_row = (u > (h - u) % h) & ~self_conj_row
    redundant = edge_col & (upper_row | (self_conj_row & (part == 1)))
    keep = ~redundant.expand(h, wr, 2)
    src = torch.nonzero(keep.reshape(-1)).squeeze(1)
    single = (edge_col & self_conj_row).expand(h, wr, 2).reshape(-1)[src]
    scale = torch.full(single.shape, math.sqrt(2.0), dtype=torch.float64)
    scale[single] = 1.0
    if src.numel() != h * w:  # a bug, not a user error
        raise AssertionError(f"real DFT layout has {src.numel()} coordinates for {h}x{w}")

    dup = (edge_col & upper_row).expand(h, wr, 2)
    uu, vv, pp = (t.expand(h, wr, 2)[dup] for t in (u, v, part))
    dup_dst = (uu * wr + vv) * 2 + pp
    dup_src = (((h - uu) % h) * wr + vv) * 2 + pp
    dup_sign = 1.0 - 2.0 * pp.to(torch.float64)
    return src, scale, dup_dst, dup_src, dup_sign


class FFTBlur(HFunctions):
    """Circular blur by any 2-D kernel (not necessarily separable), as ``H = U Σ Vᵀ``.

    ``kernel``: a ``(kh, kw)`` tensor for every image, or ``(B, kh, kw)`` for one kernel per
    image of a batch of ``B`` (then ``singulars()`` is ``(B, n)`` and every call must pass
    exactly ``B`` images). Kernels are used as given (normalise them to sum 1 for a blur that
    keeps the brightness; see :mod:`ddrm_exp.degradations.kernels2d`). ``zero_threshold``:
    ``|K(f)|`` below it is set to 0, so those frequencies are null space, as the separable
    operators do with their 1-D singular values; ``H`` is that thresholded operator and
    ``H = U Σ Vᵀ`` holds for it exactly. :func:`blur_circular` is the unthresholded blur.

    The measurement is the blurred image itself (``m = n``). See the module docstring for the
    basis, the convention (convolution, origin ``(kh//2, kw//2)``, wrap-around borders) and
    the sort.
    """

    def __init__(
        self,
        shape: tuple[int, int, int],
        *,
        kernel: Tensor,
        **options: Unpack[OperatorOptions],
    ) -> None:
        c, h, w = self.shape = as_shape(shape)
        zero_threshold, device, dtype = operator_options(options, ZERO_THRESHOLD)
        kernels, batched = _as_kernels(kernel)
        self.per_image = batched
        self.batch = kernels.shape[0]
        self.zero_threshold = zero_threshold
        wr = w // 2 + 1
        n_chan = h * w

        spectrum = transfer_function(kernels, (h, w))  # (B, h, wr) complex128
        mag = spectrum.abs()
        # Round-off floor as in the separable operators: keeps H_pinv from inverting noise
        # when zero_threshold is 0.
        floor = mag.flatten(1).amax(dim=1) * max(h, w) * torch.finfo(torch.float64).eps
        tol = floor.clamp_min(zero_threshold).view(-1, 1, 1)
        zeroed = mag < tol
        transfer = torch.where(zeroed, torch.zeros_like(spectrum), spectrum)
        # Any unit phase is a valid U where |K| is 0; 1 keeps U = V there.
        phase = torch.where(mag > 0, spectrum / torch.where(mag > 0, mag, 1.0), 1.0 + 0j)

        src, scale, dup_dst, dup_src, dup_sign = _real_layout(h, w)
        values_nat = torch.where(zeroed, 0.0, mag).reshape(self.batch, h * wr)[:, src // 2]
        values_all = values_nat.unsqueeze(1).expand(self.batch, c, n_chan).reshape(self.batch, -1)
        values, order = torch.sort(values_all, dim=1, descending=True, stable=True)
        channel, coord = order // n_chan, order % n_chan
        block = h * wr * 2  # one channel of the half spectrum viewed as real
        gather = channel * block + src[coord]
        chan_off = (torch.arange(c) * block).view(c, 1)

        complex_dtype = torch.complex64 if dtype != torch.float64 else torch.complex128

        def real(t: Tensor) -> Tensor:
            return t.to(device=device, dtype=dtype)

        self.kernel = real(kernels if batched else kernels[0])
        self.kernel2d = self.kernel  # the declared kernel (HFunctions.kernel2d)
        self.transfer = transfer.unsqueeze(1).to(device=device, dtype=complex_dtype)
        self.phase = phase.unsqueeze(1).to(device=device, dtype=complex_dtype)
        self._singulars = real(values)
        self.gather = gather.to(device)
        self.gather_scale = real(scale[coord])
        self.dup_dst = (chan_off + dup_dst.view(1, -1)).reshape(-1).to(device)
        self.dup_src = (chan_off + dup_src.view(1, -1)).reshape(-1).to(device)
        self.dup_sign = real(dup_sign.repeat(c))

    def with_kernels(self, kernels: Tensor) -> FFTBlur:
        """This blur (its class, threshold, device and dtype) for ``kernels``: ``(kh, kw)``, or
        ``(B, kh, kw)`` with one per image."""
        return type(self)(
            self.shape,
            kernel=kernels,
            zero_threshold=self.zero_threshold,
            device=self.kernel.device,
            dtype=self.kernel.dtype,
        )

    # ---- helpers ---------------------------------------------------------------------------------
    def _check_batch(self, b: int) -> None:
        if self.per_image and b != self.batch:
            raise ValueError(
                f"This FFTBlur holds {self.batch} per-image kernels but was given a batch of {b}."
            )

    def _expand(self, t: Tensor, b: int) -> Tensor:
        return t.expand(b, -1) if t.shape[0] != b else t

    def _to_coords(self, spectrum: Tensor) -> Tensor:
        """(B, C, h, wr) half spectrum (orthonormal) -> (B, n) sorted real coordinates."""
        b = spectrum.shape[0]
        flat = torch.view_as_real(spectrum).reshape(b, -1)
        coords = torch.gather(flat, 1, self._expand(self.gather, b))
        return coords * self.gather_scale

    def _from_coords(self, vec: Tensor) -> Tensor:
        """(B, n) sorted real coordinates -> (B, C, h, wr) orthonormal half spectrum."""
        b = vec.shape[0]
        c, h, w = self.shape
        wr = w // 2 + 1
        flat = vec.new_zeros(b, c * h * wr * 2)
        flat.scatter_(1, self._expand(self.gather, b), vec / self.gather_scale)
        flat[:, self.dup_dst] = flat[:, self.dup_src] * self.dup_sign
        return torch.view_as_complex(flat.view(b, c, h, wr, 2))

    def _spectrum(self, vec: Tensor) -> Tensor:
        b = vec.shape[0]
        return torch.fft.rfft2(vec.reshape(b, *self.shape), norm="ortho")

    def _image(self, spectrum: Tensor) -> Tensor:
        _, h, w = self.shape
        return torch.fft.irfft2(spectrum, s=(h, w), norm="ortho").reshape(spectrum.shape[0], -1)

    # ---- protocol --------------------------------------------------------------------------------
    def Vt(self, vec: Tensor) -> Tensor:
        self._check_batch(vec.shape[0])
        return self._to_coords(self._spectrum(vec))

    def V(self, vec: Tensor) -> Tensor:
        self._check_batch(vec.shape[0])
        return self._image(self._from_coords(vec.reshape(vec.shape[0], -1)))

    def Ut(self, vec: Tensor) -> Tensor:
        self._check_batch(vec.shape[0])
        return self._to_coords(self._spectrum(vec) * self.phase.conj())

    def U(self, vec: Tensor) -> Tensor:
        self._check_batch(vec.shape[0])
        return self._image(self._from_coords(vec.reshape(vec.shape[0], -1)) * self.phase)

    def singulars(self) -> Tensor:
        return self._singulars if self.per_image else self._singulars[0]

    # ---- derived, directly in the Fourier domain (same operator, no sort/gather) -----------------
    def H(self, vec: Tensor) -> Tensor:
        self._check_batch(vec.shape[0])
        return self._image(self._spectrum(vec) * self.transfer)

    def Ht(self, vec: Tensor) -> Tensor:
        self._check_batch(vec.shape[0])
        return self._image(self._spectrum(vec) * self.transfer.conj())

    def H_pinv(self, vec: Tensor) -> Tensor:
        self._check_batch(vec.shape[0])
        t = self.transfer
        power = (t * t.conj()).real
        inverse = torch.where(power > 0, t.conj() / torch.where(power > 0, power, 1.0), 0.0)
        return self._image(self._spectrum(vec) * inverse)
