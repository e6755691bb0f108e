"""Degradation operators following the official DDRM ``H_functions`` protocol.

Configs under ``conf/degradation`` name a class here as their ``_target_``; every class is
built as ``Cls(shape=(C, H, W), device=..., dtype=..., **params)``.
"""

from __future__ import annotations

from ddrm_exp.degradations.assumed_blur import AssumedBlur, PerImageOperators
from ddrm_exp.degradations.base import HFunctions
from ddrm_exp.degradations.blur2d import blur2d_operator, operator_for_kernel
from ddrm_exp.degradations.colorization import Colorization
from ddrm_exp.degradations.compressed_sensing import WalshHadamardCS, fwht
from ddrm_exp.degradations.denoising import Denoising
from ddrm_exp.degradations.fft_blur import FFTBlur, blur_circular, transfer_function
from ddrm_exp.degradations.inpainting import (
    BoxInpainting,
    LoremInpainting,
    Masking,
    RandomInpainting,
)
from ddrm_exp.degradations.kernels import (
    bicubic_1d,
    gaussian_1d,
    kernel_from_spec,
    keys_cubic,
    uniform_1d,
)
from ddrm_exp.degradations.kernels2d import (
    box_kernel2d,
    ddrm_kernel2d,
    gaussian_kernel2d,
    kernel2d_from_file,
    kernel2d_from_spec,
    motion_kernel,
    normalized_cross_correlation,
    rank1_approximation,
)
from ddrm_exp.degradations.masks import (
    LOREM_IPSUM,
    box_mask,
    fit_mask,
    lorem_mask,
    random_mask,
    read_mask_file,
)
from ddrm_exp.degradations.separable import (
    BicubicSuperResolution,
    Deblurring,
    SeparableOperator,
    SuperResolution,
    block_average_matrix,
    blur_matrix,
    strided_reflect_matrix,
)
from ddrm_exp.degradations.valid_blur import (
    BORDERS,
    BorderBlur,
    TaperedFFTBlur,
    blur_valid,
    edge_taper,
    valid_blur_operator,
)

__all__ = [
    "BORDERS",
    "AssumedBlur",
    "PerImageOperators",
    "LOREM_IPSUM",
    "BicubicSuperResolution",
    "BorderBlur",
    "BoxInpainting",
    "Colorization",
    "Deblurring",
    "Denoising",
    "FFTBlur",
    "HFunctions",
    "LoremInpainting",
    "Masking",
    "RandomInpainting",
    "SeparableOperator",
    "SuperResolution",
    "TaperedFFTBlur",
    "WalshHadamardCS",
    "bicubic_1d",
    "block_average_matrix",
    "blur2d_operator",
    "blur_circular",
    "blur_matrix",
    "blur_valid",
    "box_kernel2d",
    "box_mask",
    "ddrm_kernel2d",
    "edge_taper",
    "fit_mask",
    "fwht",
    "gaussian_1d",
    "gaussian_kernel2d",
    "kernel2d_from_file",
    "kernel2d_from_spec",
    "kernel_from_spec",
    "keys_cubic",
    "lorem_mask",
    "motion_kernel",
    "normalized_cross_correlation",
    "operator_for_kernel",
    "random_mask",
    "rank1_approximation",
    "read_mask_file",
    "strided_reflect_matrix",
    "transfer_function",
    "uniform_1d",
    "valid_blur_operator",
]
