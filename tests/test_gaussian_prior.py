"""The embedded Gaussian prior: its FFT denoiser against the dense closed form, and its fit."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from ddrm_exp.datasets import SampleImages
from ddrm_exp.models.base import DiffusionPrior
from ddrm_exp.models.gaussian import (
    GaussianEpsNet,
    _fit_cached,
    build_gaussian_prior,
    fit_gaussian_image_model,
)
from ddrm_exp.models.schedule import Schedule

SIZE = 8
TIMESTEPS = [0, 1, 10, 100, 400, 700, 999]


@pytest.fixture(scope="module")
def small_net() -> GaussianEpsNet:
    prior = build_gaussian_prior(image_size=SIZE)
    assert isinstance(prior.network, GaussianEpsNet)
    return prior.network


def _dft(n: int) -> torch.Tensor:
    k = torch.arange(n, dtype=torch.float64)
    return torch.exp(-2j * math.pi * torch.outer(k, k) / n) / math.sqrt(n)


def _dense_covariance(net: GaussianEpsNet) -> torch.Tensor:
    """Σ (3HW x 3HW, channel-major) built explicitly from (P, S) and the DFT matrix."""
    h, w = net.image_size
    f2 = torch.kron(_dft(h), _dft(w))  # unitary DFT of a row-major flattened H x W image
    spec = net.spectrum.to(torch.float64)
    blocks = []
    for c in range(3):
        cov_c = f2.conj().T @ torch.diag(spec[c].reshape(-1).to(torch.complex128)) @ f2
        assert cov_c.imag.abs().max() < 1e-10  # S is even, so the circulant is real
        blocks.append(cov_c.real)
    cw = torch.block_diag(*blocks)
    lift = torch.kron(net.colour_basis.to(torch.float64), torch.eye(h * w, dtype=torch.float64))
    return lift @ cw @ lift.T


def _noisy(x0: torch.Tensor, eps: torch.Tensor, t: int) -> tuple[torch.Tensor, float]:
    ab = float(Schedule.linear().alphas_cumprod[t])
    return math.sqrt(ab) * x0 + math.sqrt(1.0 - ab) * eps, ab


def _heldout_batch(size: int) -> torch.Tensor:
    ds = SampleImages(image_size=size)
    return torch.stack([ds[i]["image"] for i in range(len(ds))]).to(torch.float64)


def test_denoiser_equals_dense_posterior_mean(small_net: GaussianEpsNet) -> None:
    sigma_cov = _dense_covariance(small_net)
    mu = small_net.mean.to(torch.float64).repeat_interleave(SIZE * SIZE)
    n = sigma_cov.shape[0]
    assert n == 3 * SIZE * SIZE
    x0 = _heldout_batch(SIZE)
    gen = torch.Generator().manual_seed(0)
    for t in TIMESTEPS:
        eps = torch.randn(x0.shape, generator=gen, dtype=torch.float64)
        x_t, ab = _noisy(x0, eps, t)
        sigma2 = (1.0 - ab) / ab
        x_mod = (x_t / math.sqrt(ab)).reshape(len(x0), n)
        rhs = (x_mod - mu).T
        dense = mu[:, None] + sigma_cov @ torch.linalg.solve(
            sigma_cov + sigma2 * torch.eye(n, dtype=torch.float64), rhs
        )
        dense = dense.T.reshape(x0.shape)
        fast = small_net.posterior_mean(x_t.to(torch.float32), torch.full((len(x0),), float(t))).to(
            torch.float64
        )
        err = (fast - dense).abs().max().item()
        assert err < 1e-5, f"t={t}: max |FFT - dense| = {err}"


def test_eps_reconstructs_x_t(small_net: GaussianEpsNet) -> None:
    x0 = _heldout_batch(SIZE).to(torch.float32)
    gen = torch.Generator().manual_seed(1)
    acp = small_net.alphas_cumprod.to(torch.float64)
    for t in TIMESTEPS:
        eps = torch.randn(x0.shape, generator=gen)
        x_t, _ = _noisy(x0, eps, t)
        x_t = x_t.to(torch.float32)
        tt = torch.full((len(x0),), float(t))
        eps_hat = small_net(x_t, tt)
        x0_hat = small_net.posterior_mean(x_t, tt)
        ab = float(acp[t])
        recon = math.sqrt(ab) * x0_hat + math.sqrt(1.0 - ab) * eps_hat
        assert eps_hat.shape == x_t.shape and eps_hat.dtype == torch.float32
        assert (recon - x_t).abs().max().item() < 1e-4


def test_eps_is_noise_estimate_at_high_noise(small_net: GaussianEpsNet) -> None:
    # At t=999 x_t is almost pure noise, so ε̂ must be close to the noise actually added.
    x0 = _heldout_batch(SIZE).to(torch.float32)
    eps = torch.randn(x0.shape, generator=torch.Generator().manual_seed(2))
    x_t, _ = _noisy(x0, eps, 999)
    eps_hat = small_net(x_t.to(torch.float32), torch.full((len(x0),), 999.0))
    assert (eps_hat - eps).abs().mean().item() < 0.05


def test_posterior_mean_limits() -> None:
    net = build_gaussian_prior(image_size=32).network
    assert isinstance(net, GaussianEpsNet)
    x0 = _heldout_batch(32).to(torch.float32)
    mu = net.mean.reshape(1, 3, 1, 1)
    eps = torch.randn(x0.shape, generator=torch.Generator().manual_seed(3))

    x_t, ab = _noisy(x0, eps, 999)
    pm = net.posterior_mean(x_t.float(), torch.full((4,), 999.0))
    # Almost all that is left of x_0 is a small shift of each image's mean (the DC term, whose
    # prior variance is large); the structure is gone.
    assert (pm - mu).abs().mean().item() < 0.1
    assert (pm - mu).abs().mean().item() < 0.25 * (x0 - mu).abs().mean().item()
    assert (pm - pm.mean(dim=(2, 3), keepdim=True)).abs().max().item() < 0.02

    x_t, ab = _noisy(x0, eps, 0)
    x_mod = x_t.float() / math.sqrt(ab)
    pm = net.posterior_mean(x_t.float(), torch.zeros(4))
    assert (pm - x_mod).abs().mean().item() < 0.01
    # ... and it denoises: closer to x_0 than the noisy observation is.
    assert ((pm - x0) ** 2).mean() < ((x_mod - x0) ** 2).mean()


def test_denoising_beats_noisy_input_on_heldout_photos() -> None:
    net = build_gaussian_prior(image_size=64).network
    x0 = _heldout_batch(64).to(torch.float32)
    eps = torch.randn(x0.shape, generator=torch.Generator().manual_seed(4))
    for t in (50, 200, 500):
        x_t, ab = _noisy(x0, eps, t)
        pm = net.posterior_mean(x_t.float(), torch.full((4,), float(t)))
        noisy_mse = ((x_t.float() / math.sqrt(ab) - x0) ** 2).mean()
        assert ((pm - x0) ** 2).mean() < 0.5 * noisy_mse


def test_fit_is_deterministic_and_uses_train_split() -> None:
    a = fit_gaussian_image_model(SIZE)
    _fit_cached.cache_clear()
    b = fit_gaussian_image_model(SIZE)
    assert a is not b
    np.testing.assert_array_equal(a.spectrum, b.spectrum)
    np.testing.assert_array_equal(a.mean, b.mean)
    np.testing.assert_array_equal(a.colour_basis, b.colour_basis)
    assert a.split == "train"

    heldout = fit_gaussian_image_model(SIZE, split="heldout")
    assert not np.allclose(heldout.spectrum, a.spectrum)
    other_seed = fit_gaussian_image_model(SIZE, seed=1)
    assert not np.array_equal(other_seed.spectrum, a.spectrum)

    net = build_gaussian_prior(image_size=SIZE).network
    np.testing.assert_array_equal(net.spectrum.numpy(), a.spectrum.astype(np.float32))


def test_fitted_parameters_are_valid() -> None:
    m = fit_gaussian_image_model(16)
    assert m.spectrum.shape == (3, 16, 16)
    assert (m.spectrum > 0).all()
    np.testing.assert_allclose(m.colour_basis.T @ m.colour_basis, np.eye(3), atol=1e-12)
    # Even in frequency: S(-k) = S(k), so the covariance is real.
    flipped = np.roll(np.flip(m.spectrum, (-2, -1)), 1, axis=(-2, -1))
    np.testing.assert_allclose(flipped, m.spectrum, rtol=1e-12)
    # The luminance-like first channel carries most of the power.
    assert m.spectrum[0].sum() > m.spectrum[1].sum() > m.spectrum[2].sum()


def test_prior_samples_have_model_mean() -> None:
    net = build_gaussian_prior(image_size=16).network
    assert isinstance(net, GaussianEpsNet)
    x = net.sample_prior(512, generator=torch.Generator().manual_seed(5))
    assert x.shape == (512, 3, 16, 16)
    np.testing.assert_allclose(x.mean(dim=(0, 2, 3)).numpy(), net.mean.numpy(), atol=0.05)


def test_built_prior_shapes_and_errors() -> None:
    prior = build_gaussian_prior(64)
    assert isinstance(prior, DiffusionPrior)
    assert prior.name == "gaussian"
    assert prior.image_size == (64, 64) and prior.shape == (3, 64, 64)
    assert prior.schedule.num_timesteps == 1000
    x = torch.randn(2, 3, 64, 64)
    eps = prior.eps(x, torch.tensor([10.0, 900.0]))
    assert eps.shape == (2, 3, 64, 64)
    assert torch.isfinite(eps).all()
    # Buffers follow the module; float64 input gives float64 output.
    assert {name for name, _ in prior.named_buffers()} >= {
        "network.mean",
        "network.spectrum",
        "network.alphas_cumprod",
    }
    assert prior.eps(x.double(), torch.tensor([5.0, 5.0])).dtype == torch.float64
    with pytest.raises(ValueError, match="64"):
        prior.eps(torch.randn(1, 3, 32, 32), torch.tensor([1.0]))
    with pytest.raises(ValueError, match="timesteps"):
        prior.eps(torch.randn(1, 3, 64, 64), torch.tensor([1000.0]))


def test_fit_time_at_64_is_small() -> None:
    import time

    _fit_cached.cache_clear()
    start = time.perf_counter()
    fit_gaussian_image_model(64)
    assert time.perf_counter() - start < 3.0
