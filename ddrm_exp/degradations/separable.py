"""Separable operators ``X -> A_r X A_cᵀ`` (per channel), with their SVD from two 1-D SVDs.

Super-resolution, bicubic downsampling and the official blurs are all separable, so one class
holds the shared machinery: the 1-D SVDs (float64 at construction), the Kronecker products of
the 1-D singular values sorted into one descending list, and the permutations that map the
``(C, H, W)`` spectral grid to the protocol layout. Everything is applied with ``matmul`` on
``(B, C, H, W)``; no ``n x n`` matrix is ever formed, so 256x256 and 480x640 images are cheap.

The 1-D matrix builders are public functions so tests and later operators can reuse them.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, Unpack

import torch
from torch import Tensor

from ddrm_exp.degradations._checks import (
    OperatorOptions,
    as_int,
    as_shape,
    operator_options,
)
from ddrm_exp.degradations.base import HFunctions
from ddrm_exp.degradations.kernels import bicubic_1d, kernel_from_spec
from ddrm_exp.errors import ConfigError

__all__ = [
    "BicubicSuperResolution",
    "Deblurring",
    "SeparableOperator",
    "SuperResolution",
    "block_average_matrix",
    "blur_matrix",
    "official_tiled_grid",
    "strided_reflect_matrix",
]

ZERO_THRESHOLD = 3e-2
"""The official ``ZERO``: 1-D singular values below it are treated as 0."""


# ---- 1-D matrices ----------------------------------------------------------------------------
def blur_matrix(kernel: Tensor, size: int, *, official: bool = False) -> Tensor:
    """Square ``size x size`` Toeplitz matrix of a zero-padded "same" correlation.

    Row ``i`` holds ``M[i, j] = kernel[j - i + K//2]`` for every tap whose ``j`` lies inside
    the image, i.e. ``M @ x == F.conv1d(x, kernel, padding=K//2)`` for odd ``K``. With
    ``official=True`` the official builder is reproduced: its loop stops at ``j = i + K//2 - 1``,
    so for odd ``K`` the last tap ``kernel[K-1]`` is dropped (even kernels are unaffected).
    """
    kernel = kernel.to(torch.float64).flatten()
    k = kernel.numel()
    rows = torch.arange(size).unsqueeze(1)
    taps = torch.arange(k).unsqueeze(0)
    cols = rows - k // 2 + taps
    valid = (cols >= 0) & (cols < size)
    if official:
        valid &= taps < 2 * (k // 2)
    out = torch.zeros(size, size, dtype=torch.float64)
    weights = kernel.unsqueeze(0).expand(size, k)
    out.index_put_((rows.expand(size, k)[valid], cols[valid]), weights[valid], accumulate=True)
    return out


def block_average_matrix(size: int, factor: int) -> Tensor:
    """``(size/factor) x size`` matrix averaging consecutive blocks of ``factor`` pixels."""
    cols = torch.arange(size)
    out = torch.zeros(size // factor, size, dtype=torch.float64)
    out[cols // factor, cols] = 1.0 / factor
    return out


def strided_reflect_matrix(kernel: Tensor, size: int, stride: int) -> Tensor:
    """``(size/stride) x size`` strided correlation with symmetric (edge-repeating) padding.

    Row ``r`` is centred at ``i = r*stride + stride//2`` and takes taps ``j = i - K//2 ..
    i - K//2 + K - 1`` with weight ``kernel[j - i + K//2]``; out-of-range ``j`` reflect as
    ``j < 0 -> -j-1`` and ``j >= size -> 2*size-1-j`` and their weights add up. This is the
    official ``SRConv`` matrix. Every tap must need at most one reflection.
    """
    kernel = kernel.to(torch.float64).flatten()
    k = kernel.numel()
    centres = torch.arange(size // stride) * stride + stride // 2
    cols = centres.unsqueeze(1) - k // 2 + torch.arange(k).unsqueeze(0)
    cols = torch.where(cols < 0, -cols - 1, cols)
    cols = torch.where(cols >= size, 2 * size - 1 - cols, cols)
    if bool(((cols < 0) | (cols >= size)).any()):
        raise ValueError(f"a kernel of {k} taps needs more than one reflection on {size} pixels")
    rows = torch.arange(size // stride).unsqueeze(1).expand_as(cols)
    out = torch.zeros(size // stride, size, dtype=torch.float64)
    weights = kernel.repeat(size // stride)
    out.index_put_((rows.reshape(-1), cols.reshape(-1)), weights, accumulate=True)
    return out


def _threshold(s: Tensor, zero: float, shape: torch.Size) -> Tensor:
    """Zero the 1-D singular values below ``zero`` or below the numerical rank tolerance.

    The tolerance (``max(s) * max(shape) * eps``, as in ``numpy.linalg.matrix_rank``) only
    matters with ``zero_threshold=0``: it keeps round-off singular values of rank-deficient
    matrices from being inverted by ``H_pinv``.
    """
    tol = max(zero, float(s.max()) * max(shape) * torch.finfo(torch.float64).eps)
    return torch.where(s < tol, torch.zeros_like(s), s)


def official_tiled_grid(s_r: Tensor, s_c: Tensor, channels: int = 3) -> Tensor:
    """The singular values the official blur operators pair with each spectral entry.

    The official ``Deblurring`` and ``Deblurring2D`` sort the ``n = m1*m2`` products
    ``S_r[i] * S_c[j]`` (pixel mode ``(i, j)`` at index ``i*m2 + j``) in descending order and
    order their spectral vector pixel-major, channel-minor: entry ``3k + c`` is channel ``c`` of
    the mode at sorted position ``k``. Their ``singulars()`` is ``sorted.repeat(1, 3)``, the
    sorted list three times over, so entry ``(k, c)`` is scaled by ``sorted[(3k + c) mod n]``
    instead of ``sorted[k]`` (``SRConv`` uses ``repeat_interleave`` and is right). Returns
    those values on the ``(C, m1, m2)`` grid of :class:`SeparableOperator`.

    Ties are broken by the mode index, as the stable (cub radix) sort that PyTorch's CUDA
    ``sort`` runs on large inputs does (over 2048 entries in PyTorch 1.10, the official
    environment; over 4096 today), so as the official 256x256 runs on a GPU did; the CPU sort
    orders ties differently. Only the official three channels are defined.
    """
    if channels != 3:
        raise ConfigError(
            f"official_compat reproduces the official blur operators, which tile their singular "
            f"values for exactly 3 channels; this image has {channels}. Set "
            "degradation.official_compat=false."
        )
    m1, m2 = s_r.numel(), s_c.numel()
    n = m1 * m2
    values, order = torch.sort(
        (s_r.unsqueeze(1) * s_c.unsqueeze(0)).reshape(-1), descending=True, stable=True
    )
    position = torch.empty_like(order)
    position[order] = torch.arange(n)
    tiled = (channels * position.unsqueeze(0) + torch.arange(channels).unsqueeze(1)) % n
    return values[tiled].reshape(channels, m1, m2)


# ---- the generic operator --------------------------------------------------------------------
class SeparableOperator(HFunctions):
    """Per channel ``H X = A_r X A_cᵀ``, ``A_r`` (m1 x H) on rows, ``A_c`` (m2 x W) on columns.

    With the 1-D SVDs ``A_r = U_r S_r V_rᵀ`` and ``A_c = U_c S_c V_cᵀ``, the spectral grid is
    ``V_rᵀ X V_c`` (per channel, ``(C, H, W)``) and entry ``(c, i, j)`` with ``i < m1, j < m2`` has
    singular value ``S_r[i] * S_c[j]``. ``Vt`` lists those ``C*m1*m2`` entries sorted by singular
    value (descending, stable), then the null-space entries in ``(c, i, j)`` order. The
    measurement lives on the ``(C, m1, m2)`` grid (an image when ``A`` downsamples or blurs);
    ``Ut`` maps ``U_rᵀ Y U_c`` through the same sort.

    As in the official code, 1-D singular values below ``zero_threshold`` are set to 0 before
    the products are formed, so ``H`` is that thresholded operator and ``H = U Σ Vᵀ`` holds for
    it exactly. (Singular values at round-off level are zeroed too, which only matters with
    ``zero_threshold=0``.) ``matrix_rows``/``matrix_cols`` keep the unthresholded 1-D matrices.
    """

    def __init__(
        self,
        shape: tuple[int, int, int],
        *,
        rows: Tensor,
        cols: Tensor,
        **options: Unpack[OperatorOptions],
    ) -> None:
        c, h, w = self.shape = as_shape(shape)
        zero_threshold, device, dtype = operator_options(options, ZERO_THRESHOLD)
        rows = torch.as_tensor(rows, dtype=torch.float64).cpu()
        cols = torch.as_tensor(cols, dtype=torch.float64).cpu()
        for name, mat, size, axis in (("rows", rows, h, "height"), ("cols", cols, w, "width")):
            if mat.dim() != 2 or mat.shape[1] != size or not 1 <= mat.shape[0] <= size:
                raise ConfigError(
                    f"The {name} matrix must be (m x {size}) with 1 <= m <= {size} for an image "
                    f"{axis} of {size}, got shape {tuple(mat.shape)}."
                )
        m1, m2 = rows.shape[0], cols.shape[0]
        self.out_hw = (m1, m2)

        u_r, s_r, vh_r = torch.linalg.svd(rows, full_matrices=True)
        u_c, s_c, vh_c = torch.linalg.svd(cols, full_matrices=True)
        s_r = _threshold(s_r, zero_threshold, rows.shape)
        s_c = _threshold(s_c, zero_threshold, cols.shape)

        grid = self._spectral_grid(s_r, s_c, c).reshape(-1)
        values, order = torch.sort(grid, descending=True, stable=True)
        # Position on the (C, H, W) spectral grid of each (c, i, j) with i < m1, j < m2.
        ch = torch.arange(c).view(c, 1, 1)
        ii = torch.arange(h).view(1, h, 1)
        jj = torch.arange(w).view(1, 1, w)
        flat = ch * (h * w) + ii * w + jj
        measured = (ii < m1) & (jj < m2)
        kept = flat[:, :m1, :m2].reshape(-1)[order]
        null = flat[~measured.expand(c, h, w)]
        perm = torch.cat([kept, null])

        def cast(t: Tensor) -> Tensor:
            return t.to(device=device, dtype=dtype)

        self.matrix_rows = cast(rows)
        self.matrix_cols = cast(cols)
        self.u_r, self.u_c = cast(u_r), cast(u_c)
        self.vh_r, self.vh_c = cast(vh_r), cast(vh_c)
        self._singulars = cast(values)
        self.perm = perm.to(device)
        self.inv_perm = torch.argsort(perm).to(device)
        self.perm_m = order.to(device)
        self.inv_perm_m = torch.argsort(order).to(device)

    def _spectral_grid(self, s_r: Tensor, s_c: Tensor, channels: int) -> Tensor:
        """The singular value of each spectral entry ``(c, i, j)``, shape ``(C, m1, m2)``.

        For a separable operator it is ``S_r[i] * S_c[j]`` in every channel; a subclass may pair
        the same singular vectors with other values (see :class:`Deblurring`'s
        ``official_compat``), which defines another operator with the same ``U`` and ``V``.
        """
        return (s_r.unsqueeze(1) * s_c.unsqueeze(0)).expand(channels, -1, -1)

    # ---- protocol -----------------------------------------------------------------------------
    def Vt(self, vec: Tensor) -> Tensor:
        b = vec.shape[0]
        x = vec.reshape(b, *self.shape)
        z = self.vh_r @ x @ self.vh_c.transpose(0, 1)
        return z.reshape(b, -1)[:, self.perm]

    def V(self, vec: Tensor) -> Tensor:
        b = vec.shape[0]
        z = vec.reshape(b, -1)[:, self.inv_perm].reshape(b, *self.shape)
        return (self.vh_r.transpose(0, 1) @ z @ self.vh_c).reshape(b, -1)

    def Ut(self, vec: Tensor) -> Tensor:
        b = vec.shape[0]
        y = vec.reshape(b, self.shape[0], *self.out_hw)
        z = self.u_r.transpose(0, 1) @ y @ self.u_c
        return z.reshape(b, -1)[:, self.perm_m]

    def U(self, vec: Tensor) -> Tensor:
        b = vec.shape[0]
        z = vec.reshape(b, -1)[:, self.inv_perm_m].reshape(b, self.shape[0], *self.out_hw)
        return (self.u_r @ z @ self.u_c.transpose(0, 1)).reshape(b, -1)

    def singulars(self) -> Tensor:
        return self._singulars


# ---- concrete operators ----------------------------------------------------------------------
def _checked_factor(
    shape: tuple[int, int, int], factor: int, what: str
) -> tuple[tuple[int, int, int], int]:
    """The checked shape and downsampling ``factor``: an integer >= 1 dividing both sides."""
    shape = as_shape(shape)
    factor = as_int(factor, f"{what} factor", minimum=1)
    _, h, w = shape
    if h % factor or w % factor:
        raise ConfigError(
            f"{what} factor {factor} must divide the image height and width, got {h}x{w}."
        )
    return shape, factor


class SuperResolution(SeparableOperator):
    """Average-pooling downsampling by ``factor`` (official ``sr2`` .. ``sr16``).

    The 1-D block-averaging matrix has ``factor`` taps of ``1/factor``; the 2-D operator
    averages ``factor x factor`` blocks, matching the official per-patch ``SuperResolution``.
    The measurement is the ``(C, H/factor, W/factor)`` low-resolution image.
    """

    def __init__(
        self, shape: tuple[int, int, int], *, factor: int, **options: Unpack[OperatorOptions]
    ) -> None:
        shape, factor = _checked_factor(shape, factor, "Super-resolution")
        _, h, w = shape
        super().__init__(
            shape,
            rows=block_average_matrix(h, factor),
            cols=block_average_matrix(w, factor),
            **options,
        )
        self.factor = factor


class BicubicSuperResolution(SeparableOperator):
    """Bicubic downsampling by ``factor`` (official ``sr_bicubic4/8/16``, class ``SRConv``).

    Each axis uses :func:`strided_reflect_matrix` with :func:`bicubic_1d` (``4*factor`` taps,
    Keys ``a``) and stride ``factor``; each image side must be a multiple of ``factor`` and at
    least ``2*factor`` so one reflection suffices. Unlike the official ``SRConv``, the singular
    values are sorted (the operator is the same).
    """

    def __init__(
        self,
        shape: tuple[int, int, int],
        *,
        factor: int,
        a: float = -0.5,
        **options: Unpack[OperatorOptions],
    ) -> None:
        shape, factor = _checked_factor(shape, factor, "Bicubic super-resolution")
        _, h, w = shape
        if min(h, w) < 2 * factor:
            raise ConfigError(
                f"Bicubic super-resolution factor {factor} uses a {4 * factor}-tap kernel and "
                f"needs image sides of at least {2 * factor} pixels, got {h}x{w}."
            )
        kernel = bicubic_1d(factor, a)
        super().__init__(
            shape,
            rows=strided_reflect_matrix(kernel, h, factor),
            cols=strided_reflect_matrix(kernel, w, factor),
            **options,
        )
        self.factor = factor
        self.kernel = kernel.to(self.matrix_rows)  # the operator's device and dtype


KernelSpec = Mapping[str, Any] | Sequence[float] | Tensor


class Deblurring(SeparableOperator):
    """Separable zero-padded blur (official ``deblur_uni``, ``deblur_gauss``, ``deblur_aniso``).

    ``kernel_rows`` blurs along the height (applied from the left), ``kernel_cols`` along the
    width (``None``: same as ``kernel_rows``). Each is a spec for
    :func:`~ddrm_exp.degradations.kernels.kernel_from_spec`, e.g. ``{type: gaussian, size: 5,
    sigma: 10}``, or a list of weights. The blur is a "same"-size correlation: row ``i`` of the
    Toeplitz matrix takes all ``K`` taps ``kernel[j - i + K//2]`` with ``j`` inside the image.

    ``official_toeplitz=True`` builds the official ``Deblurring``/``Deblurring2D`` Toeplitz
    matrix, whose loop drops the LAST tap of odd-length kernels (``kernel[K-1]``, e.g. the
    right-most 1/9 of the uniform blur); even-length kernels are unaffected. That alone is NOT
    the operator the official code runs.

    ``official_compat=True`` is the official operator as published: the dropped tap AND the
    singular values paired with the wrong spectral entries (:func:`official_tiled_grid`), so
    ``H = U Σ' Vᵀ`` with the Toeplitz blur's ``U``, ``V`` but ``Σ'`` a shuffle of its singular
    values. That ``H`` is no blur (on the sample photos ``H x`` is off from the blur by a
    relative 0.14-0.38, see ``scripts/official_blur_gap.py``); it is what the official code both
    measures with and restores with, so this reproduces official runs, not the physics.
    ``matrix_rows``/``matrix_cols`` stay the Toeplitz matrices, which ``H`` then is not the
    Kronecker product of. Because values are paired with individual singular vectors, the
    operator depends on them, not only on their span: where a 1-D singular value is (nearly)
    repeated, the official float32 SVD picks vectors that ours (float64) does not; at 256x256 that
    moves ``H x`` by 2e-6 (Gaussian) to 2e-4 (uniform) relative. 3 channels only. The default is
    the correct blur.
    """

    def __init__(
        self,
        shape: tuple[int, int, int],
        *,
        kernel_rows: KernelSpec,
        kernel_cols: KernelSpec | None = None,
        official_toeplitz: bool = False,
        official_compat: bool = False,
        **options: Unpack[OperatorOptions],
    ) -> None:
        shape = as_shape(shape)
        _, h, w = shape
        for name, flag in (
            ("official_toeplitz", official_toeplitz),
            ("official_compat", official_compat),
        ):
            if not isinstance(flag, bool):
                raise ConfigError(f"{name} must be true or false, got {flag!r}.")
        k_rows = kernel_from_spec(kernel_rows, "kernel_rows")
        k_cols = k_rows if kernel_cols is None else kernel_from_spec(kernel_cols, "kernel_cols")
        for name, k, size, axis in (
            ("kernel_rows", k_rows, h, "height"),
            ("kernel_cols", k_cols, w, "width"),
        ):
            if k.numel() > size:
                raise ConfigError(
                    f"{name} has {k.numel()} taps, longer than the image {axis} of {size}; "
                    f"use a kernel of at most {size} taps or a larger image."
                )
        # Read by _spectral_grid during the base constructor, so set first.
        self.official_compat = official_compat
        dropped = official_toeplitz or official_compat
        super().__init__(
            shape,
            rows=blur_matrix(k_rows, h, official=dropped),
            cols=blur_matrix(k_cols, w, official=dropped),
            **options,
        )
        self.official_toeplitz = dropped
        self.kernel_rows = k_rows.to(self.matrix_rows)  # the operator's device and dtype
        self.kernel_cols = k_cols.to(self.matrix_rows)

    def _spectral_grid(self, s_r: Tensor, s_c: Tensor, channels: int) -> Tensor:
        if self.official_compat:
            return official_tiled_grid(s_r, s_c, channels)
        return super()._spectral_grid(s_r, s_c, channels)
