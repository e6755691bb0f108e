"""One entry point for 2-D blurs: the separable Toeplitz operator when it fits, else the FFT one.

:func:`operator_for_kernel` picks the operator for a given 2-D kernel; :func:`blur2d_operator`,
the ``_target_`` of ``conf/degradation/blur2d.yaml``, builds the kernel from its YAML spec first.

The two operators model the border differently. The separable :class:`Deblurring` blurs with
zero padding (pixels outside the image are 0); :class:`FFTBlur` is circular (the image wraps
around). Inside the image, farther than the kernel's reach from every border, they agree. Each
is self-consistent: the runner measures ``y = H x`` with the same operator it restores with.
Their ``zero_threshold`` differs in kind too: the separable operator zeroes 1-D singular values
below it, the FFT operator zeroes 2-D ones (``|K(f)|``).
"""

from __future__ import annotations

from typing import Any, Unpack

import torch
from torch import Tensor

from ddrm_exp.degradations._checks import OperatorOptions, as_float, as_shape
from ddrm_exp.degradations.base import HFunctions
from ddrm_exp.degradations.fft_blur import ZERO_THRESHOLD, FFTBlur, _as_kernels
from ddrm_exp.degradations.kernels2d import kernel2d_from_spec, rank1_approximation
from ddrm_exp.degradations.separable import Deblurring
from ddrm_exp.errors import ConfigError

__all__ = [
    "METHODS",
    "SEPARABLE_TOL",
    "blur2d_operator",
    "operator_for_kernel",
    "separable_factors",
]

METHODS = ("auto", "separable", "fft")
SEPARABLE_TOL = 1e-6
"""A kernel whose best rank-1 approximation has a relative error at most this is separable."""


def separable_factors(kernel: Tensor, tol: float = SEPARABLE_TOL) -> tuple[Tensor, Tensor] | None:
    """``(k_rows, k_cols)`` with ``kernel == outer(k_rows, k_cols)`` (to ``tol``), else None.

    The factors keep the kernel's scale (``k_rows`` carries its sum).
    """
    try:
        k_rows, k_cols, err = rank1_approximation(kernel)
    except ConfigError:
        return None
    if err > tol:
        return None
    return k_rows * float(kernel.to(torch.float64).sum()), k_cols


def _convolution_taps(k: Tensor) -> Tensor:
    """1-D correlation taps for :class:`Deblurring` that apply ``k`` as a convolution.

    Deblurring correlates with origin ``K//2``; the flipped kernel convolves with origin
    ``K//2`` only for odd ``K``, so an even kernel first gets a zero tap at its end (which keeps
    its origin ``K//2``) to match :class:`FFTBlur`'s convention.
    """
    if k.numel() % 2 == 0:
        k = torch.cat([k, k.new_zeros(1)])
    return k.flip(0)


def operator_for_kernel(
    kernel: Tensor,
    shape: tuple[int, int, int],
    device: str | torch.device = "cpu",
    method: str = "auto",
    zero_threshold: float = ZERO_THRESHOLD,
    *,
    dtype: torch.dtype = torch.float32,
    separable_tol: float = SEPARABLE_TOL,
) -> HFunctions:
    """The blur operator for a ``(kh, kw)`` kernel, or ``(B, kh, kw)`` kernels (one per image).

    ``method``: ``separable`` builds the zero-padded separable :class:`Deblurring` from the
    kernel's rank-1 factors and refuses a kernel that is not rank 1 (to ``separable_tol``) or
    a batch of kernels; ``fft`` builds the circular :class:`FFTBlur`; ``auto`` takes the
    separable operator when it can (a single rank-1 kernel whose factors fit the image) and the
    FFT one otherwise. Both apply the kernel as a convolution with origin ``(kh//2, kw//2)``.
    The chosen kernel is kept on the operator as ``kernel2d``.
    """
    if method not in METHODS:
        raise ConfigError(f"The blur method must be one of {', '.join(METHODS)}, got {method!r}.")
    shape = as_shape(shape)
    zero_threshold = as_float(zero_threshold, "zero_threshold", low=0.0)
    kernels, batched = _as_kernels(torch.as_tensor(kernel))
    single = kernels[0]

    op: HFunctions | None = None
    if method != "fft":
        factors = None if batched else separable_factors(single, separable_tol)
        if factors is not None:
            k_rows, k_cols = (_convolution_taps(f) for f in factors)
            _, h, w = shape
            if method == "separable" or (k_rows.numel() <= h and k_cols.numel() <= w):
                op = Deblurring(
                    shape,
                    kernel_rows=k_rows,
                    kernel_cols=k_cols,
                    zero_threshold=zero_threshold,
                    device=device,
                    dtype=dtype,
                )
        elif method == "separable":
            why = (
                "one kernel per image was given"
                if batched
                else f"its best rank-1 approximation is off by "
                f"{rank1_approximation(single)[2]:.3g} (relative), above {separable_tol:g}"
            )
            raise ConfigError(
                f"method=separable needs a single separable (rank-1) kernel, but {why}. Use "
                "method=fft (any kernel) or auto, or make it separable with rank1_approximation."
            )
    if op is None:
        op = FFTBlur(
            shape,
            kernel=kernels if batched else single,
            zero_threshold=zero_threshold,
            device=device,
            dtype=dtype,
        )
    # Kept for whoever reports or saves the kernel; HFunctions.to() moves it with the rest.
    op.kernel2d = (kernels if batched else single).to(device=device, dtype=dtype)
    return op


def blur2d_operator(
    shape: tuple[int, int, int],
    *,
    kernel: Any,
    method: str = "auto",
    **options: Unpack[OperatorOptions],
) -> HFunctions:
    """Degradation ``_target_``: the 2-D blur by the kernel that the spec ``kernel`` describes.

    ``kernel`` is a :func:`~ddrm_exp.degradations.kernels2d.kernel2d_from_spec` mapping
    (``{type: motion, size: 31, intensity: 0.5, seed: 0}``, ``{type: ddrm, name:
    deblur_gauss}``, ...) or an explicit 2-D array; keys that belong to other kernel types are
    ignored, so the YAML can hold defaults for every type and ``degradation.kernel.type=...``
    alone switches type. See :func:`operator_for_kernel` for ``method`` and ``zero_threshold``.
    """
    k = kernel2d_from_spec(kernel, what="degradation.kernel", ignore_other_types=True)
    return operator_for_kernel(k, shape, method=method, **options)
