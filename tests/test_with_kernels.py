"""``with_kernels``: a blur operator of the same kind for other kernels (issue 18)."""

from __future__ import annotations

import pytest
import torch

from ddrm_exp.degradations.assumed_blur import AssumedBlur
from ddrm_exp.degradations.denoising import Denoising
from ddrm_exp.degradations.fft_blur import FFTBlur
from ddrm_exp.degradations.kernels2d import gaussian_kernel2d, motion_kernel
from ddrm_exp.degradations.valid_blur import BorderBlur, TaperedFFTBlur

SHAPE = (3, 12, 12)
F64 = torch.float64


def test_fft_blur_with_kernels_keeps_its_kind_and_settings() -> None:
    motion = motion_kernel(5, 0.5, generator=1)
    kernels = torch.stack([motion, gaussian_kernel2d(5, 1.0)])
    for cls in (FFTBlur, TaperedFFTBlur):
        op = cls(SHAPE, kernel=gaussian_kernel2d(3, 0.7), zero_threshold=1e-3, dtype=F64)
        new = op.with_kernels(kernels)
        assert type(new) is cls and new.per_image and new.zero_threshold == 1e-3
        assert new.kernel.dtype == F64
        torch.testing.assert_close(new.kernel2d, kernels.to(F64))
        fresh = cls(SHAPE, kernel=kernels, zero_threshold=1e-3, dtype=F64)
        x = torch.randn(2, 3 * 12 * 12, dtype=F64)
        torch.testing.assert_close(new.H(x), fresh.H(x))
        torch.testing.assert_close(new.singulars(), fresh.singulars())


@pytest.mark.parametrize("border", ["valid", "reflect"])
def test_border_blur_with_kernels_keeps_its_border_and_settings(border: str) -> None:
    kernels = torch.stack([motion_kernel(5, 0.5, generator=1), gaussian_kernel2d(5, 1.0)])
    first = gaussian_kernel2d(3, 0.7)
    op = BorderBlur(SHAPE, kernel=first, border=border, zero_threshold=1e-3, dtype=F64)
    torch.testing.assert_close(op.kernel2d, first.to(F64))  # declared when built directly
    new = op.with_kernels(kernels)
    assert type(new) is BorderBlur and new.border == border and new.per_image
    assert new.zero_threshold == 1e-3 and new.kernel.dtype == F64
    torch.testing.assert_close(new.kernel2d, kernels.to(F64))
    fresh = BorderBlur(SHAPE, kernel=kernels, border=border, zero_threshold=1e-3, dtype=F64)
    x = torch.randn(2, 3 * 12 * 12, dtype=F64)
    torch.testing.assert_close(new.H(x), fresh.H(x))


def test_assumed_blur_batch_of_fft_kernels_is_one_batched_fft_blur() -> None:
    kernels = torch.stack([motion_kernel(5, 0.5, generator=s) for s in (1, 2)])
    op = AssumedBlur(SHAPE, assumed_kernel="gt").with_kernels(kernels)
    assert type(op) is FFTBlur and op.per_image
    torch.testing.assert_close(op.kernel2d, kernels.float())
    x = torch.randn(2, 3 * 12 * 12)
    for i in range(2):
        alone = FFTBlur(SHAPE, kernel=kernels[i])
        torch.testing.assert_close(op.H(x)[i : i + 1], alone.H(x[i : i + 1]))


def test_an_fft_blur_declares_its_kernel() -> None:
    k = gaussian_kernel2d(3, 0.7)
    torch.testing.assert_close(FFTBlur(SHAPE, kernel=k, dtype=F64).kernel2d, k)
    assert Denoising(SHAPE).kernel2d is None


def test_an_operator_without_a_kernel_refuses_new_kernels() -> None:
    with pytest.raises(TypeError, match="Denoising"):
        Denoising(SHAPE).with_kernels(gaussian_kernel2d(3, 1.0))
