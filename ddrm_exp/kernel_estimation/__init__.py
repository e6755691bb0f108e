"""Blind blur-kernel estimation: estimate the blur of a measurement from the image alone.

* :class:`ClassicalEstimator` -- training-free, coarse-to-fine L0-gradient alternating
  estimator of one uniform kernel.
* :class:`LocalEstimator` -- any estimator run per cell of a grid: local kernels with coverage
  masks.
* :class:`LearnedEstimator` -- a user's trained network (TorchScript, or factory + weights).
* :func:`reduce_kernels` -- the report's reduction of local kernels to one uniform kernel
  (§5.2); :func:`ddrm_exp.degradations.kernels2d.rank1_approximation` then gives DDRM's
  separable operator (§5.3).

Configs live in ``conf/kernel_estimator/``.
"""

from __future__ import annotations

from ddrm_exp.kernel_estimation.base import (
    KernelEstimate,
    KernelEstimator,
    LearnedEstimator,
    as_image_batch,
    luminance,
    reduce_kernels,
)
from ddrm_exp.kernel_estimation.classical import ClassicalEstimator, psf2otf
from ddrm_exp.kernel_estimation.local import LocalEstimator

__all__ = [
    "ClassicalEstimator",
    "KernelEstimate",
    "KernelEstimator",
    "LearnedEstimator",
    "LocalEstimator",
    "as_image_batch",
    "luminance",
    "psf2otf",
    "reduce_kernels",
]
