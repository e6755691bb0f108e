"""The DDRM sampler against a plain dense implementation of the report's eq. (8)-(9)."""

from __future__ import annotations

import math

import pytest
import torch
from helpers import Spectral, make_operator, measurement, tiny_eps_prior
from torch import Tensor

from ddrm_exp.models.base import DiffusionPrior
from ddrm_exp.samplers import DDRM, timestep_sequence


def reference_ddrm(
    prior: DiffusionPrior,
    problem: Spectral,
    timesteps: int,
    eta: float,
    eta_b: float,
    generators: list[torch.Generator],
) -> Tensor:
    """Eq. (8)-(9) written out component by component on a dense SVD."""
    vh, s, sigma_0 = problem.vh, problem.s, problem.sigma_0
    n = s.shape[0]
    sched = prior.schedule
    seq = timestep_sequence(timesteps)

    def sig(t: int) -> float:
        a = sched.alpha_bar(t)
        return math.sqrt(1 - a) / math.sqrt(a)

    out = []
    for g, ut_y in zip(generators, problem.ut_y, strict=True):
        y_bar = torch.where(s > 0, ut_y / torch.where(s > 0, s, 1.0), 0.0)
        z = torch.randn(prior.shape, generator=g, dtype=torch.float64).flatten()
        z_bar = vh @ z
        s_T = sig(seq[-1])
        x_bar = torch.empty(n, dtype=torch.float64)
        for i in range(n):
            if s[i] > 0 and s[i] * s_T > sigma_0:
                x_bar[i] = y_bar[i] + math.sqrt(s_T**2 - (sigma_0 / s[i]) ** 2) * z_bar[i]
            else:
                x_bar[i] = s_T * z_bar[i]
        x_t = math.sqrt(sched.alpha_bar(seq[-1])) * (vh.T @ x_bar)
        x0 = x_t
        for t, t_next in zip(reversed(seq), reversed([-1, *seq[:-1]]), strict=True):
            a = sched.alpha_bar(t)
            s_t, s_next = sig(t), sig(t_next)
            eps = prior.eps(x_t.view(1, *prior.shape), torch.tensor([float(t)])).flatten()
            x0 = (x_t - math.sqrt(1 - a) * eps) / math.sqrt(a)
            x0_bar = vh @ x0
            xt_bar = vh @ (x_t / math.sqrt(a))
            z_bar = vh @ torch.randn(prior.shape, generator=g, dtype=torch.float64).flatten()
            nxt = torch.empty(n, dtype=torch.float64)
            for i in range(n):
                if s[i] == 0:
                    nxt[i] = (
                        x0_bar[i]
                        + math.sqrt(1 - eta**2) * s_next * (xt_bar[i] - x0_bar[i]) / s_t
                        + eta * s_next * z_bar[i]
                    )
                elif s_next < sigma_0 / s[i]:
                    nxt[i] = (
                        x0_bar[i]
                        + math.sqrt(1 - eta**2) * s_next * (y_bar[i] - x0_bar[i]) / (sigma_0 / s[i])
                        + eta * s_next * z_bar[i]
                    )
                else:
                    nxt[i] = (
                        (1 - eta_b) * x0_bar[i]
                        + eta_b * y_bar[i]
                        + math.sqrt(max(s_next**2 - (sigma_0 / s[i]) ** 2 * eta_b**2, 0.0))
                        * z_bar[i]
                    )
            x_t = math.sqrt(sched.alpha_bar(t_next)) * (vh.T @ nxt)
        out.append(x0.view(prior.shape))
    return torch.stack(out)


FAMILIES = [
    ("denoise", 8),
    ("inpaint_random", 8),
    ("inpaint_box", 8),
    ("inpaint_lorem", 8),
    ("colorize", 8),
    ("sr2", 8),
    ("sr4", 8),
    ("sr_bicubic4", 16),
    ("deblur_uniform", 16),
    ("deblur_gauss", 8),
    ("deblur_aniso", 16),
    ("cs2", 8),
    ("cs4", 8),
]


@pytest.mark.parametrize(("name", "size"), FAMILIES)
@pytest.mark.parametrize("sigma_y", [0.0, 0.1])
def test_efficient_sampler_equals_dense_reference(name: str, size: int, sigma_y: float) -> None:
    shape = (3, size, size)
    op = make_operator(name, shape)
    prior = tiny_eps_prior(shape)
    _, y = measurement(op, sigma_y, shape=shape)
    # few steps keep the dense per-component reference fast; 7 also exercises len(seq) = N + 1
    timesteps, eta, eta_b = 7, 0.85, 0.7

    def gens() -> list[torch.Generator]:
        return [torch.Generator().manual_seed(10 + i) for i in range(2)]

    ours = DDRM(timesteps, eta, eta_b).sample(prior, op, y, sigma_y, generator=gens())
    ref = reference_ddrm(prior, Spectral.of(op, y, sigma_y), timesteps, eta, eta_b, gens())
    assert ours.nfe == len(timestep_sequence(timesteps)) == 8
    torch.testing.assert_close(ours.x0, ref, rtol=1e-7, atol=1e-7)


def test_timestep_sequence_matches_official_skip() -> None:
    assert timestep_sequence(20) == list(range(0, 1000, 50))
    assert timestep_sequence(1000) == list(range(1000))
    assert len(timestep_sequence(3)) == 4  # 1000 // 3 = 333 -> 0, 333, 666, 999
    with pytest.raises(ValueError):
        timestep_sequence(0)


def test_deterministic_and_batch_independent() -> None:
    shape = (3, 8, 8)
    op = make_operator("sr2", shape)
    prior = tiny_eps_prior(shape)
    _, y = measurement(op, 0.0, batch=3, shape=shape, seed=0)
    sampler = DDRM(10, 0.85, 1.0)

    def gens(idx: list[int]) -> list[torch.Generator]:
        return [torch.Generator().manual_seed(100 + i) for i in idx]

    full = sampler.sample(prior, op, y, 0.0, generator=gens([0, 1, 2])).x0
    again = sampler.sample(prior, op, y, 0.0, generator=gens([0, 1, 2])).x0
    alone = sampler.sample(prior, op, y[2:], 0.0, generator=gens([2])).x0
    assert torch.equal(full, again)
    torch.testing.assert_close(full[2:], alone, rtol=1e-12, atol=1e-12)


def test_explicit_initial_noise_and_trajectory() -> None:
    shape = (3, 8, 8)
    op = make_operator("colorize", shape)
    prior = tiny_eps_prior(shape)
    _, y = measurement(op, 0.0, batch=1, shape=shape, seed=0)
    noise = torch.randn(
        (1, *shape), generator=torch.Generator().manual_seed(5), dtype=torch.float64
    )
    sampler = DDRM(5, 1.0, 0.8)
    a = sampler.sample(prior, op, y, 0.0, noise=noise, generator=torch.Generator().manual_seed(1))
    b = sampler.sample(
        prior,
        op,
        y,
        0.0,
        noise=noise,
        generator=torch.Generator().manual_seed(1),
        return_trajectory=True,
    )
    assert torch.equal(a.x0, b.x0)
    assert len(b.trajectory) == a.nfe and torch.equal(b.trajectory[-1], b.x0)
    c = sampler.sample(prior, op, y, 0.0, noise=-noise, generator=torch.Generator().manual_seed(1))
    assert not torch.allclose(a.x0, c.x0)


def test_negative_sigma_rejected() -> None:
    shape = (3, 8, 8)
    op = make_operator("denoise", shape)
    with pytest.raises(ValueError, match="sigma_y"):
        DDRM().sample(tiny_eps_prior(shape), op, torch.zeros(1, op.m, dtype=torch.float64), -0.1)


def test_clip_x0_bounds_the_estimate_and_is_off_by_default() -> None:
    shape = (3, 8, 8)
    op = make_operator("colorize", shape)
    prior = tiny_eps_prior(shape)
    _, y = measurement(op, 0.0, shape=shape, seed=0)

    def gens() -> list[torch.Generator]:
        return [torch.Generator().manual_seed(i) for i in range(2)]

    plain = DDRM(6, 1.0, 0.8).sample(prior, op, y, 0.0, generator=gens(), return_trajectory=True)
    clipped = DDRM(6, 1.0, 0.8, clip_x0=True).sample(
        prior, op, y, 0.0, generator=gens(), return_trajectory=True
    )
    assert max(t.abs().max() for t in plain.trajectory) > 1  # the tiny net overshoots
    assert all(t.abs().max() <= 1 for t in clipped.trajectory)
    assert DDRM().clip_x0 is False
