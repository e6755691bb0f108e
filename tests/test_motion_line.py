"""The linear-motion kernel family and the estimator's ``motion_model=line`` kernel step."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st
from test_kernel_estimation import circular_blur, ncc, photo, to_model_range

from ddrm_exp.errors import ConfigError
from ddrm_exp.kernel_estimation import ClassicalEstimator
from ddrm_exp.kernel_estimation.classical import _circular_normal_equations, psf2otf
from ddrm_exp.kernel_estimation.motion import LineBank, best_line, line_kernel


@settings(max_examples=40, deadline=None)
@given(
    length=st.floats(0.0, 6.0),
    angle=st.floats(0.0, 2 * math.pi),
)
def test_a_segment_sums_to_one_and_is_symmetric_about_the_centre(
    length: float, angle: float
) -> None:
    k = line_kernel(length, angle, 7)
    assert float(k.sum()) == pytest.approx(1.0, abs=1e-12) and bool((k >= 0).all())
    # A centred segment is its own half-turn: the same blur whichever way it was travelled.
    assert torch.allclose(k, k.flip(0, 1), atol=1e-12)
    assert torch.allclose(k, line_kernel(length, angle + math.pi, 7), atol=1e-9)


def test_whole_pixel_segments_are_the_digital_lines() -> None:
    assert torch.equal(
        line_kernel(0.0, 1.0, 5), F.one_hot(torch.tensor(12), 25).double().view(5, 5)
    )
    # A 4-px exposure spends a quarter of its time over each pixel it crosses and half as long
    # over the two it starts and ends in (their centres are the segment's ends).
    horizontal = line_kernel(4.0, 0.0, 5)
    assert float(horizontal[2].sum()) == pytest.approx(1.0)
    assert torch.allclose(
        horizontal[2, 1:4], torch.full((3,), 0.25, dtype=torch.float64), atol=0.01
    )
    assert horizontal[2, 0] == horizontal[2, 4] and 0.11 < float(horizontal[2, 0]) < 0.14
    vertical = line_kernel(4.0, math.pi / 2, 5)
    assert torch.allclose(vertical, horizontal.T, atol=1e-12)


def test_bank_covers_lengths_and_angles_of_the_support() -> None:
    bank = LineBank.build(5)
    assert bank.kernels.shape == (1 + 16 * 60, 25)
    assert float(bank.lengths[0]) == 0 and float(bank.lengths.max()) == 4.0
    assert torch.allclose(bank.kernels.sum(1), torch.ones(len(bank.lengths), dtype=torch.float64))


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_circular_normal_equations_are_the_residual(seed: int) -> None:
    """``kᵀ G k - 2 rᵀ k`` is ``||k ⊛ l - b||² - ||b||²`` for every kernel: the line step
    ranks candidates by the same least squares the free step solves."""
    g = torch.Generator().manual_seed(seed)
    shape, ks = (18, 22), 5
    latent = torch.randn(shape, generator=g, dtype=torch.float64)
    blurry = torch.randn(shape, generator=g, dtype=torch.float64)
    lat_hat, b_hat = torch.fft.rfft2(latent), torch.fft.rfft2(blurry)
    gram, rhs = _circular_normal_equations(lat_hat.conj() * b_hat, lat_hat.abs() ** 2, ks, shape)
    for _ in range(3):
        k = torch.rand(ks, ks, generator=g, dtype=torch.float64)
        res = torch.fft.irfft2(psf2otf(k, shape) * lat_hat, s=shape) - blurry
        v = k.reshape(-1)
        assert float(v @ gram @ v - 2 * rhs @ v) == pytest.approx(
            float(res.square().sum() - blurry.square().sum()), rel=1e-10
        )


def test_best_line_finds_the_segment_that_made_the_blur() -> None:
    g = torch.Generator().manual_seed(3)
    shape, ks = (32, 32), 7
    latent = torch.randn(shape, generator=g, dtype=torch.float64)
    bank = LineBank.build(ks)
    truth = bank.kernels[500].reshape(ks, ks)
    lat_hat = torch.fft.rfft2(latent)
    blurry_hat = psf2otf(truth, shape) * lat_hat
    gram, rhs = _circular_normal_equations(
        lat_hat.conj() * blurry_hat, lat_hat.abs() ** 2, ks, shape
    )
    assert torch.allclose(best_line(gram, rhs, ks), truth, atol=1e-12)


@pytest.mark.parametrize("fit_region", ["all", "valid"])
def test_estimator_returns_a_segment_close_to_a_motion_blur(fit_region: str) -> None:
    ks = 9
    truth = line_kernel(6.0, math.radians(30), ks)
    y = to_model_range(circular_blur(photo(2, 96), truth))
    est = ClassicalEstimator(
        kernel_size=ks, num_threads=1, motion_model="line", fit_region=fit_region
    )
    k = est.estimate(y).kernels[0, 0]
    bank = LineBank.build(ks).kernels
    assert bool(
        ((bank - k.reshape(1, -1)).abs().amax(1) < 1e-6).any()
    )  # one of the family (float32)
    assert ncc(k, truth) > 0.9
    assert est.params()["motion_model"] == "line"


def test_bad_motion_model_raises() -> None:
    with pytest.raises(ConfigError, match="motion_model must be one of free, line"):
        ClassicalEstimator(kernel_size=5, motion_model="curve")
