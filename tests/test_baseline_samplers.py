"""The baseline samplers (DDNM, ΠGDM, DPS, DiffPIR) against plain dense implementations of their
papers' updates, the same noise draws and a small nonlinear network, to float64 round-off; plus
their schedules, NFE counts, warm start and config errors."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch
from hydra.utils import instantiate
from omegaconf import OmegaConf
from torch import Tensor, nn

from ddrm_exp.degradations.base import HFunctions
from ddrm_exp.errors import ConfigError
from ddrm_exp.models.base import DiffusionPrior
from ddrm_exp.models.schedule import Schedule
from ddrm_exp.samplers import DDNM, DPS, DiffPIR, PiGDM, WarmStart, timestep_sequence
from ddrm_exp.samplers.ddnm import time_travel_indices
from ddrm_exp.samplers.xt_loop import XtSampler

CONF = Path(__file__).resolve().parents[1] / "conf"
SHAPE = (3, 8, 8)


def make_operator(name: str, shape: tuple[int, int, int] = SHAPE) -> HFunctions:
    cfg = OmegaConf.load(CONF / "degradation" / f"{name}.yaml")
    return instantiate(cfg, shape=shape, dtype=torch.float64)


class TinyEps(nn.Module):
    """A small nonlinear, time-dependent ε-network (its Jacobian is not symmetric or constant)."""

    def __init__(self, channels: int = 3) -> None:
        super().__init__()
        g = torch.Generator().manual_seed(0)
        self.conv = nn.Conv2d(channels, channels, 3, padding=1, bias=True).double()
        with torch.no_grad():
            self.conv.weight.copy_(0.2 * torch.randn(self.conv.weight.shape, generator=g))
            self.conv.bias.copy_(0.1 * torch.randn(self.conv.bias.shape, generator=g))

    def forward(self, x: Tensor, t: Tensor) -> Tensor:
        scale = (1.0 + t.double() / 1000.0).view(-1, 1, 1, 1)
        return torch.tanh(self.conv(x) * scale)


def tiny_prior(shape: tuple[int, int, int] = SHAPE) -> DiffusionPrior:
    return DiffusionPrior(TinyEps(shape[0]), Schedule.linear(), shape[1:], shape[0], "tiny")


def dense(op: HFunctions) -> Tensor:
    """The explicit m x n matrix of ``op``."""
    return op.H(torch.eye(op.n, dtype=torch.float64)).T


def measurement(op: HFunctions, sigma_y: float, batch: int = 2) -> tuple[Tensor, Tensor]:
    g = torch.Generator().manual_seed(1)
    x = 2 * torch.rand((batch, *SHAPE), generator=g, dtype=torch.float64) - 1
    y = op.H(x.flatten(1))
    y = y + 2 * sigma_y * torch.randn(y.shape, generator=torch.Generator().manual_seed(2), dtype=torch.float64)
    return x, y


def gens(batch: int = 2) -> list[torch.Generator]:
    return [torch.Generator().manual_seed(10 + i) for i in range(batch)]


# ---- dense references, one image at a time ------------------------------------------------------
def net_x0(prior: DiffusionPrior, x_t: Tensor, t: int) -> tuple[Tensor, Tensor]:
    """(ε̂, x̂_0) for a flat image ``x_t`` (n,)."""
    a = prior.schedule.alpha_bar(t)
    eps = prior.eps(x_t.view(1, *prior.shape), torch.tensor([float(t)], dtype=torch.float64))
    eps = eps.flatten()
    return eps, (x_t - math.sqrt(1 - a) * eps) / math.sqrt(a)


def jacobian_x0(prior: DiffusionPrior, x_t: Tensor, t: int) -> Tensor:
    """∂x̂_0/∂x_t as an explicit n x n matrix."""
    return torch.autograd.functional.jacobian(lambda v: net_x0(prior, v, t)[1], x_t)


def reference(
    kind: str,
    prior: DiffusionPrior,
    op: HFunctions,
    y: Tensor,
    sigma_y: float,
    timesteps: int,
    generators: list[torch.Generator],
    **kw: float,
) -> Tensor:
    """Each paper's update written with dense matrices (no SVD of ours), image by image."""
    h = dense(op)
    n = op.n
    h_pinv = torch.linalg.pinv(h)
    sched = prior.schedule
    seq = timestep_sequence(timesteps)
    pairs = list(zip(reversed(seq), reversed([-1, *seq[:-1]]), strict=True))
    sigma_0 = 2 * sigma_y
    out = []
    for b in range(y.shape[0]):
        g = generators[b]
        yb = y[b]
        z0 = torch.randn(prior.shape, generator=g, dtype=torch.float64).flatten()
        x = math.sqrt(1 - sched.alpha_bar(seq[-1])) * z0
        for t, t_next in pairs:
            a, an = sched.alpha_bar(t), sched.alpha_bar(t_next)
            z = torch.randn(prior.shape, generator=g, dtype=torch.float64).flatten()
            eps, x0 = net_x0(prior, x, t)
            eps, x0 = eps.detach(), x0.detach()
            c1 = kw.get("eta", 1.0) * math.sqrt((1 - an) / (1 - a) * (1 - a / an))
            c2 = math.sqrt(max(1 - an - c1**2, 0.0))
            if kind == "ddnm":  # σ_y = 0 only: eq. 13 and the DDIM step of the released code
                eta = kw["eta"]
                x0h = x0 - h_pinv @ (h @ x0 - yb)
                x = math.sqrt(an) * x0h + math.sqrt(1 - an) * (
                    eta * z + math.sqrt(1 - eta**2) * eps
                )
            elif kind == "pigdm":
                r2 = 1 - a
                cov = r2 * h @ h.T + sigma_0**2 * torch.eye(h.shape[0], dtype=torch.float64)
                v = h.T @ torch.linalg.solve(cov, yb - h @ x0)
                gvec = jacobian_x0(prior, x, t).T @ v
                # Tweedie with the guided score: x̂_0 += (1-ᾱ)/√ᾱ g, ε̂ -= √(1-ᾱ) g
                x0g = x0 + r2 / math.sqrt(a) * gvec
                epsg = eps - math.sqrt(r2) * gvec
                x = math.sqrt(an) * x0g + c1 * z + c2 * epsg
            elif kind == "dps":
                resid = yb - h @ x0
                grad = -(jacobian_x0(prior, x, t).T @ h.T @ resid) / resid.norm()
                x = math.sqrt(an) * x0 + c1 * z + c2 * eps - kw["zeta"] * grad
            elif kind == "diffpir":
                rho = kw["lam"] * max(sigma_y, 1e-3) ** 2 * a / (1 - a)
                # (HᵀH + ρI)⁻¹(Hᵀy + ρx_0) = x_0 + Hᵀ(HHᵀ + ρI)⁻¹(y − Hx_0): the m x m system
                # stays well conditioned for the tiny ρ of the noisy steps
                gram = h @ h.T + rho * torch.eye(h.shape[0], dtype=torch.float64)
                x0h = x0 + h.T @ torch.linalg.solve(gram, yb - h @ x0)
                epsh = (x - math.sqrt(a) * x0h) / math.sqrt(1 - a)
                zeta = kw["zeta"]
                x = math.sqrt(an) * x0h + math.sqrt(1 - an) * (
                    math.sqrt(1 - zeta) * epsh + math.sqrt(zeta) * z
                )
        out.append(x.view(prior.shape))
    return torch.stack(out)


def dense_ddnm_plus(
    prior: DiffusionPrior,
    op: HFunctions,
    y: Tensor,
    sigma_y: float,
    timesteps: int,
    eta: float,
    generators: list[torch.Generator],
) -> Tensor:
    """DDNM⁺'s per-singular-value Σ_t, Φ_t (σ_y > 0) written component by component."""
    h = dense(op)
    u, s_m, vh = torch.linalg.svd(h, full_matrices=True)
    n, m = op.n, h.shape[0]
    s = torch.zeros(n, dtype=torch.float64)
    s[:m] = torch.where(s_m < 1e-9, 0.0, s_m)
    sigma_0 = 2 * sigma_y
    sched = prior.schedule
    seq = timestep_sequence(timesteps)
    out = []
    for b in range(y.shape[0]):
        g = generators[b]
        ut_y = torch.zeros(n, dtype=torch.float64)
        ut_y[:m] = u.T @ y[b]
        z0 = torch.randn(prior.shape, generator=g, dtype=torch.float64).flatten()
        x = math.sqrt(1 - sched.alpha_bar(seq[-1])) * z0
        for t, t_next in zip(reversed(seq), reversed([-1, *seq[:-1]]), strict=True):
            an = sched.alpha_bar(t_next)
            z = torch.randn(prior.shape, generator=g, dtype=torch.float64).flatten()
            eps, x0 = (v.detach() for v in net_x0(prior, x, t))
            x0b, epsb, zb = vh @ x0, vh @ eps, vh @ z
            a_, sig = math.sqrt(an), math.sqrt(1 - an)
            nxt = torch.empty(n, dtype=torch.float64)
            for i in range(n):
                if s[i] == 0:
                    nxt[i] = a_ * x0b[i] + sig * eta * zb[i] + sig * math.sqrt(1 - eta**2) * epsb[i]
                    continue
                ybar = ut_y[i] / s[i]
                tau = a_ * sigma_0 / s[i]
                if sig >= tau:
                    nxt[i] = a_ * ybar + math.sqrt(sig**2 - tau**2) * zb[i]
                else:
                    lam = sig * math.sqrt(1 - eta**2) / tau
                    nxt[i] = a_ * (x0b[i] - lam * (x0b[i] - ybar)) + sig * eta * zb[i]
            x = vh.T @ nxt
        out.append(x.view(prior.shape))
    return torch.stack(out)


OPERATORS = ["sr2", "inpaint_random", "colorize", "deblur_gauss"]


@pytest.mark.parametrize("name", OPERATORS)
def test_ddnm_equals_dense_reference(name: str) -> None:
    op, prior = make_operator(name), tiny_prior()
    _, y = measurement(op, 0.0)
    ours = DDNM(7, eta=0.85).sample(prior, op, y, 0.0, generator=gens())
    ref = reference("ddnm", prior, op, y, 0.0, 7, gens(), eta=0.85)
    assert ours.nfe == len(timestep_sequence(7)) == 8
    torch.testing.assert_close(ours.x0, ref, rtol=1e-9, atol=1e-9)


@pytest.mark.parametrize("name", OPERATORS)
def test_ddnm_plus_equals_dense_reference(name: str) -> None:
    op, prior = make_operator(name), tiny_prior()
    _, y = measurement(op, 0.1)
    ours = DDNM(7, eta=0.85).sample(prior, op, y, 0.1, generator=gens())
    ref = dense_ddnm_plus(prior, op, y, 0.1, 7, 0.85, gens())
    torch.testing.assert_close(ours.x0, ref, rtol=1e-9, atol=1e-9)


@pytest.mark.parametrize("name", ["sr2", "inpaint_random", "colorize"])
@pytest.mark.parametrize("sigma_y", [0.0, 0.1])
def test_pigdm_equals_dense_reference(name: str, sigma_y: float) -> None:
    op, prior = make_operator(name), tiny_prior()
    _, y = measurement(op, sigma_y)
    ours = PiGDM(5, eta=0.7).sample(prior, op, y, sigma_y, generator=gens())
    ref = reference("pigdm", prior, op, y, sigma_y, 5, gens(), eta=0.7)
    assert ours.nfe == 2 * len(timestep_sequence(5))
    torch.testing.assert_close(ours.x0, ref, rtol=1e-8, atol=1e-8)


@pytest.mark.parametrize("name", ["sr2", "inpaint_random", "deblur_gauss"])
def test_dps_equals_dense_reference(name: str) -> None:
    op, prior = make_operator(name), tiny_prior()
    _, y = measurement(op, 0.05)
    ours = DPS(5, zeta=0.7).sample(prior, op, y, 0.05, generator=gens())
    ref = reference("dps", prior, op, y, 0.05, 5, gens(), zeta=0.7)
    assert ours.nfe == 2 * len(timestep_sequence(5))
    torch.testing.assert_close(ours.x0, ref, rtol=1e-8, atol=1e-8)


@pytest.mark.parametrize("name", OPERATORS)
@pytest.mark.parametrize("sigma_y", [0.0, 0.05])
def test_diffpir_equals_dense_reference(name: str, sigma_y: float) -> None:
    op, prior = make_operator(name), tiny_prior()
    _, y = measurement(op, sigma_y)
    ours = DiffPIR(6, lam=2.0, zeta=0.3).sample(prior, op, y, sigma_y, generator=gens())
    ref = reference("diffpir", prior, op, y, sigma_y, 6, gens(), lam=2.0, zeta=0.3)
    assert ours.nfe == len(timestep_sequence(6))
    torch.testing.assert_close(ours.x0, ref, rtol=1e-8, atol=1e-8)


@pytest.mark.parametrize("name", ["sr2", "sr4", "inpaint_random", "inpaint_box", "colorize", "cs2"])
def test_ddnm_noiseless_is_exactly_consistent(name: str) -> None:
    """σ_y = 0: the last step returns H⁺y + (I − H⁺H) x̂_0, so H x̂ = y to round-off."""
    op, prior = make_operator(name), tiny_prior()
    _, y = measurement(op, 0.0)
    x_hat = DDNM(6, eta=0.85).sample(prior, op, y, 0.0, generator=gens()).x0
    residual = op.H(x_hat.flatten(1)) - y
    assert residual.abs().max() < 1e-12 * max(1.0, float(y.abs().max()))


# ---- schedules, NFE, warm start, errors --------------------------------------------------------
def test_time_travel_schedule() -> None:
    assert time_travel_indices(5, 1, 1) == [4, 3, 2, 1, 0, -1]
    # after reaching 0 and 2 (multiples of 2 below 6 - 2), go back up 2 steps once
    assert time_travel_indices(6, 2, 2) == [5, 4, 3, 2, 3, 4, 3, 2, 1, 0, 1, 2, 1, 0, -1]
    travel = DDNM(5, travel_length=2, travel_repeat=2)  # 5 steps: jumps at indices 0 and 2
    moves = travel.moves(timestep_sequence(5))
    assert moves[:5] == [(800, 600), (600, 400), (400, 600), (600, 800), (800, 600)]
    descending = sum(1 for t, t_next in moves if t_next < t)
    assert travel.nfe == descending == len(timestep_sequence(5)) + 4
    op, prior = make_operator("sr2"), tiny_prior()
    _, y = measurement(op, 0.0)
    out = travel.sample(prior, op, y, 0.0, generator=gens(), return_trajectory=True)
    assert out.nfe == travel.nfe == len(out.trajectory)
    assert op.H(out.x0.flatten(1)).sub(y).abs().max() < 1e-12  # still exactly consistent


SAMPLERS: list[XtSampler] = [DDNM(8), PiGDM(8), DPS(8), DiffPIR(8)]


@pytest.mark.parametrize("sampler", SAMPLERS, ids=lambda s: s.name)
def test_nfe_property_batch_independence_and_trajectory(sampler: XtSampler) -> None:
    op, prior = make_operator("sr2"), tiny_prior()
    _, y = measurement(op, 0.05, batch=3)
    three = [torch.Generator().manual_seed(100 + i) for i in range(3)]
    full = sampler.sample(prior, op, y, 0.05, generator=three, return_trajectory=True)
    alone = sampler.sample(
        prior, op, y[2:], 0.05, generator=[torch.Generator().manual_seed(102)]
    )
    torch.testing.assert_close(full.x0[2:], alone.x0, rtol=1e-12, atol=1e-12)
    assert full.nfe == sampler.nfe
    assert len(full.trajectory) == len(timestep_sequence(8))
    assert set(sampler.params()) >= {"timesteps"} and sampler.supports_warm_start


@pytest.mark.parametrize("sampler", SAMPLERS, ids=lambda s: s.name)
def test_warm_start_runs_only_the_low_steps(sampler: XtSampler) -> None:
    op, prior = make_operator("inpaint_random"), tiny_prior()
    x, y = measurement(op, 0.0)
    seq = timestep_sequence(8)
    warm = WarmStart(x0=x, t_star=seq[3])
    out = sampler.sample(prior, op, y, 0.0, generator=gens(), warm_start=warm)
    cold = sampler.sample(prior, op, y, 0.0, generator=gens())
    assert out.nfe == cold.nfe * 4 // len(seq)
    # started near the truth with little noise left, the result stays near it
    assert (out.x0 - x).pow(2).mean() < (cold.x0 - x).pow(2).mean()


@pytest.mark.parametrize(
    ("build", "key"),
    [
        (lambda: DDNM(10, eta=1.5), "sampler.eta"),
        (lambda: DDNM(10, travel_length=0), "sampler.travel_length"),
        (lambda: DPS(10, zeta=-1.0), "sampler.zeta"),
        (lambda: PiGDM(10, guidance_scale=float("nan")), "sampler.guidance_scale"),
        (lambda: DiffPIR(10, zeta=2.0), "sampler.zeta"),
        (lambda: DiffPIR(0), "sampler.timesteps"),
    ],
)
def test_bad_settings_raise_config_errors(build, key: str) -> None:  # noqa: ANN001
    with pytest.raises(ConfigError, match=key):
        build()
