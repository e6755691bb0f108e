"""degradations/dense.py: the SVD protocol check passes a correct operator and catches a broken
one; DenseSVD built from an operator's dense factors is that operator."""

from __future__ import annotations

import pytest
import torch

from ddrm_exp.degradations import FFTBlur
from ddrm_exp.degradations.dense import DenseSVD, check_svd_protocol
from ddrm_exp.degradations.kernels2d import gaussian_kernel2d

SHAPE = (1, 5, 4)


def blur() -> FFTBlur:
    return FFTBlur(SHAPE, kernel=gaussian_kernel2d(3, 0.8, 0.5, 10.0), dtype=torch.float64)


def test_a_correct_operator_passes() -> None:
    d = check_svd_protocol(blur())
    assert d.H.shape == (20, 20) and d.s.shape == (20,)


class WrongTranspose(FFTBlur):
    def Ut(self, vec: torch.Tensor) -> torch.Tensor:
        return super().Ut(vec).flip(-1)


def test_a_broken_transpose_is_caught() -> None:
    op = WrongTranspose(SHAPE, kernel=gaussian_kernel2d(3, 0.8, 0.5, 10.0), dtype=torch.float64)
    with pytest.raises(AssertionError):
        check_svd_protocol(op)


def test_dense_svd_of_the_blur_is_the_blur() -> None:
    op = blur()
    d = check_svd_protocol(op)
    dense = DenseSVD(SHAPE, d.U, d.s, d.V)
    x = torch.randn(2, 20, dtype=torch.float64)
    torch.testing.assert_close(dense.H(x), op.H(x))
    check_svd_protocol(dense)
