"""The baseline samplers (DDNM, ΠGDM, DPS, DiffPIR) against plain dense implementations of their
papers' updates, the same noise draws and a small nonlinear network, to float64 round-off; plus
their schedules, NFE counts, warm start and config errors."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch
from helpers import Spectral, dense_h, make_operator, measurement, run_sweep, tiny_eps_prior
from torch import Tensor, nn

from ddrm_exp.degradations.base import HFunctions
from ddrm_exp.errors import ConfigError
from ddrm_exp.models.base import DiffusionPrior
from ddrm_exp.models.schedule import Schedule
from ddrm_exp.samplers import DDNM, DPS, DiffPIR, PiGDM, WarmStart, timestep_sequence
from ddrm_exp.samplers.ddnm import time_travel_indices
from ddrm_exp.samplers.xt_loop import XtSampler


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
    h = dense_h(op)
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
                if kw.get("decay") == "alpha_bar":  # the authors' follow-up code's weight
                    gvec = a * gvec
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
    problem: Spectral,
    timesteps: int,
    eta: float,
    generators: list[torch.Generator],
) -> Tensor:
    """DDNM⁺'s per-singular-value Σ_t, Φ_t (σ_y > 0) written component by component."""
    vh, s, sigma_0 = problem.vh, problem.s, problem.sigma_0
    n = s.shape[0]
    sched = prior.schedule
    seq = timestep_sequence(timesteps)
    out = []
    for g, ut_y in zip(generators, problem.ut_y, strict=True):
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
    op, prior = make_operator(name), tiny_eps_prior()
    _, y = measurement(op, 0.0)
    ours = DDNM(7, eta=0.85).sample(prior, op, y, 0.0, generator=gens())
    ref = reference("ddnm", prior, op, y, 0.0, 7, gens(), eta=0.85)
    assert ours.nfe == len(timestep_sequence(7)) == 8
    torch.testing.assert_close(ours.x0, ref, rtol=1e-9, atol=1e-9)


@pytest.mark.parametrize("name", OPERATORS)
def test_ddnm_plus_equals_dense_reference(name: str) -> None:
    op, prior = make_operator(name), tiny_eps_prior()
    _, y = measurement(op, 0.1)
    ours = DDNM(7, eta=0.85).sample(prior, op, y, 0.1, generator=gens())
    ref = dense_ddnm_plus(prior, Spectral.of(op, y, 0.1), 7, 0.85, gens())
    torch.testing.assert_close(ours.x0, ref, rtol=1e-9, atol=1e-9)


@pytest.mark.parametrize("name", ["sr2", "inpaint_random", "colorize"])
@pytest.mark.parametrize("sigma_y", [0.0, 0.1])
def test_pigdm_equals_dense_reference(name: str, sigma_y: float) -> None:
    op, prior = make_operator(name), tiny_eps_prior()
    _, y = measurement(op, sigma_y)
    for decay in ("none", "alpha_bar"):
        sampler = PiGDM(5, eta=0.7, guidance_decay=decay)
        ours = sampler.sample(prior, op, y, sigma_y, generator=gens())
        ref = reference("pigdm", prior, op, y, sigma_y, 5, gens(), eta=0.7, decay=decay)
        torch.testing.assert_close(ours.x0, ref, rtol=1e-8, atol=1e-8)
    assert ours.nfe == 2 * len(timestep_sequence(5))


@pytest.mark.parametrize("name", ["sr2", "inpaint_random", "deblur_gauss"])
def test_dps_equals_dense_reference(name: str) -> None:
    op, prior = make_operator(name), tiny_eps_prior()
    _, y = measurement(op, 0.05)
    ours = DPS(5, zeta=0.7).sample(prior, op, y, 0.05, generator=gens())
    ref = reference("dps", prior, op, y, 0.05, 5, gens(), zeta=0.7)
    assert ours.nfe == 2 * len(timestep_sequence(5))
    torch.testing.assert_close(ours.x0, ref, rtol=1e-8, atol=1e-8)


@pytest.mark.parametrize("name", OPERATORS)
@pytest.mark.parametrize("sigma_y", [0.0, 0.05])
def test_diffpir_equals_dense_reference(name: str, sigma_y: float) -> None:
    op, prior = make_operator(name), tiny_eps_prior()
    _, y = measurement(op, sigma_y)
    ours = DiffPIR(6, lam=2.0, zeta=0.3).sample(prior, op, y, sigma_y, generator=gens())
    ref = reference("diffpir", prior, op, y, sigma_y, 6, gens(), lam=2.0, zeta=0.3)
    assert ours.nfe == len(timestep_sequence(6))
    torch.testing.assert_close(ours.x0, ref, rtol=1e-8, atol=1e-8)


@pytest.mark.parametrize("name", ["sr2", "sr4", "inpaint_random", "inpaint_box", "colorize", "cs2"])
def test_ddnm_noiseless_is_exactly_consistent(name: str) -> None:
    """σ_y = 0: the last step returns H⁺y + (I − H⁺H) x̂_0, so H x̂ = y to round-off."""
    op, prior = make_operator(name), tiny_eps_prior()
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
    op, prior = make_operator("sr2"), tiny_eps_prior()
    _, y = measurement(op, 0.0)
    out = travel.sample(prior, op, y, 0.0, generator=gens(), return_trajectory=True)
    assert out.nfe == travel.nfe == len(out.trajectory)
    assert op.H(out.x0.flatten(1)).sub(y).abs().max() < 1e-12  # still exactly consistent


SAMPLERS: list[XtSampler] = [DDNM(8), PiGDM(8), DPS(8), DiffPIR(8)]


@pytest.mark.parametrize("sampler", SAMPLERS, ids=lambda s: s.name)
def test_nfe_property_batch_independence_and_trajectory(sampler: XtSampler) -> None:
    op, prior = make_operator("sr2"), tiny_eps_prior()
    _, y = measurement(op, 0.05, batch=3)
    three = [torch.Generator().manual_seed(100 + i) for i in range(3)]
    full = sampler.sample(prior, op, y, 0.05, generator=three, return_trajectory=True)
    alone = sampler.sample(prior, op, y[2:], 0.05, generator=[torch.Generator().manual_seed(102)])
    torch.testing.assert_close(full.x0[2:], alone.x0, rtol=1e-12, atol=1e-12)
    assert full.nfe == sampler.nfe
    assert len(full.trajectory) == len(timestep_sequence(8))
    assert set(sampler.params()) >= {"timesteps"} and sampler.supports_warm_start


@pytest.mark.parametrize("sampler", SAMPLERS, ids=lambda s: s.name)
def test_warm_start_runs_only_the_low_steps(sampler: XtSampler) -> None:
    op, prior = make_operator("inpaint_random"), tiny_eps_prior()
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
        (lambda: PiGDM(10, guidance_decay="linear"), "sampler.guidance_decay"),
    ],
)
def test_bad_settings_raise_config_errors(build, key: str) -> None:  # noqa: ANN001
    with pytest.raises(ConfigError, match=key):
        build()


# ---- what each converges to, with a Gaussian prior whose posterior is known --------------------
GAUSS_SHAPE = (3, 4, 4)
PRIOR_MEAN = 0.3


class WhiteGaussianEps(nn.Module):
    """The exact ε̂ of the prior x_0 ~ N(μ, I): E[x_0 | x_t] = μ + √ᾱ (x_t − √ᾱ μ) (unit variance,
    so ``Cov[x_0 | x_t] = (1−ᾱ) I`` exactly: ΠGDM's r_t² assumption holds)."""

    def __init__(self, schedule: Schedule) -> None:
        super().__init__()
        self.alpha_bar = schedule.alphas_cumprod

    def forward(self, x: Tensor, t: Tensor) -> Tensor:
        a = self.alpha_bar[t.long()].view(-1, 1, 1, 1).to(x.dtype)
        x0 = PRIOR_MEAN + a.sqrt() * (x - a.sqrt() * PRIOR_MEAN)
        return (x - a.sqrt() * x0) / (1 - a).sqrt()


def gaussian_problem(name: str, sigma_y: float, draws: int) -> tuple:
    sched = Schedule.linear()
    prior = DiffusionPrior(WhiteGaussianEps(sched), sched, GAUSS_SHAPE[1:], 3, "white")
    op = make_operator(name, GAUSS_SHAPE)
    h = dense_h(op)
    g = torch.Generator().manual_seed(0)
    x = PRIOR_MEAN + torch.randn(op.n, generator=g, dtype=torch.float64)
    y = h @ x + 2 * sigma_y * torch.randn(h.shape[0], generator=g, dtype=torch.float64)
    generators = [torch.Generator().manual_seed(i) for i in range(draws)]
    return prior, op, h, y, y.expand(draws, -1).contiguous(), generators


def test_pigdm_samples_the_gaussian_posterior() -> None:
    """For a unit-variance Gaussian prior ΠGDM's likelihood is exact, so its draws have the
    posterior's mean and variance up to the DDPM discretisation. 1000 draws: a component's mean
    has standard error σ_post/√1000 ≈ 0.032 σ_post; we allow 0.15 σ_post (4.7 s.e.) on the
    worst of 48 components; the variance ratio averaged over components has s.e. ≈ 0.007, and
    250 steps leave it about 5 % low, so we allow [0.88, 1.05]."""
    prior, op, h, y1, y, generators = gaussian_problem("sr2", 0.1, 1000)
    out = (
        PiGDM(250, guidance_decay="none")
        .sample(prior, op, y, 0.1, generator=generators)
        .x0.flatten(1)
    )
    s2 = 0.2**2
    eye = torch.eye(op.n, dtype=torch.float64)
    cov = torch.linalg.inv(eye + h.T @ h / s2)
    mean = cov @ (PRIOR_MEAN + h.T @ y1 / s2)
    std = cov.diag().sqrt()
    assert ((out.mean(0) - mean).abs() / std).max() < 0.15
    ratio = (out.var(0) / cov.diag()).mean()
    assert 0.88 < ratio < 1.05, ratio
    # the guidance matters: without it the draws are the prior's, far from this posterior
    free = PiGDM(250, guidance_scale=0.0, guidance_decay="none").sample(
        prior, op, y[:200], 0.1, generator=generators[:200]
    )
    assert ((free.x0.flatten(1).mean(0) - mean).abs() / std).max() > 0.5


def test_ddnm_noiseless_gaussian_posterior_only_at_eta_zero() -> None:
    """σ_y = 0 and a white prior: the posterior is N(H⁺y + (I−H⁺H)μ, I−H⁺H). DDNM gets the range
    part exactly and the null-space mean; its null-space variance is right only for η = 0 (DDIM's
    ODE, as the steps grow). For η > 0 its step ``√ᾱ x̂_0' + σ(η z + √(1−η²) ε̂)`` treats x̂_0 as
    known, so the draws are too narrow: measured 0.97 of the posterior variance at η = 0, 0.74
    at the authors' η = 0.85, 0.49 at η = 1 (250 steps, 1000 draws; s.e. of the ratio ≈ 0.01)."""
    prior, op, h, y1, y, generators = gaussian_problem("inpaint_random", 0.0, 1000)
    h_pinv = torch.linalg.pinv(h)
    null = torch.eye(op.n, dtype=torch.float64) - h_pinv @ h
    mean = h_pinv @ y1 + null @ torch.full((op.n,), PRIOR_MEAN, dtype=torch.float64)
    missing = null.diag() > 0.5  # inpainting: the missing pixels are the null space
    ratios = {}
    for eta in (0.0, 0.85):
        out = DDNM(250, eta=eta).sample(prior, op, y, 0.0, generator=generators).x0.flatten(1)
        assert (out @ h.T - y).abs().max() < 1e-10
        assert ((out.mean(0) - mean)[missing]).abs().max() < 0.15  # 4.7 s.e., as for ΠGDM
        ratios[eta] = float(out.var(0)[missing].mean())
    assert 0.92 < ratios[0.0] < 1.05, ratios
    assert ratios[0.85] < 0.85, ratios


def test_dps_is_the_prior_sampler_pulled_towards_y() -> None:
    """DPS does not sample the posterior (ζ' is a free step, not the likelihood); what it does:
    ζ' = 0 is the DDPM sampler of the prior (its draws have the prior's moments), and ζ' > 0
    pulls the draws towards consistency with y."""
    prior, op, h, y1, y, generators = gaussian_problem("sr2", 0.05, 400)
    free = DPS(100, zeta=0.0).sample(prior, op, y, 0.05, generator=generators).x0.flatten(1)
    assert (free.mean(0) - PRIOR_MEAN).abs().max() < 0.25  # s.e. 0.05: 5 s.e.
    assert 0.85 < free.var(0).mean() < 1.1
    guided = DPS(100, zeta=1.0).sample(prior, op, y, 0.05, generator=generators).x0.flatten(1)
    resid_free = (free @ h.T - y1).norm(dim=1).mean()
    resid_guided = (guided @ h.T - y1).norm(dim=1).mean()
    assert resid_guided < 0.3 * resid_free


def test_diffpir_with_lambda_zero_is_consistent() -> None:
    """DiffPIR is an HQS (MAP-style) restorer, not a posterior sampler. Its data step weighs the
    network's x̂_0 by ρ_t = λσ_n²/σ̄_t²: with λ = 0 it is the projection onto {Hx = y}, so the
    result is consistent with y exactly; with λ > 0 the residual stays, shrunk by
    ρ_0/(s² + ρ_0) at the last step."""
    op, prior = make_operator("sr2"), tiny_eps_prior()
    _, y = measurement(op, 0.0)
    exact = DiffPIR(6, lam=0.0).sample(prior, op, y, 0.0, generator=gens()).x0
    assert (op.H(exact.flatten(1)) - y).abs().max() < 1e-12
    loose = DiffPIR(6, lam=1.0).sample(prior, op, y, 0.0, generator=gens()).x0
    assert (op.H(loose.flatten(1)) - y).abs().max() > 1e-6


# ---- the runner, end to end ------------------------------------------------------------------
@pytest.mark.slow
def test_cli_runs_each_baseline(tmp_path: Path) -> None:
    """Each config runs through today's runner unchanged, on the embedded default (one multirun
    over the four, so the test pays Python's and the model's start-up once)."""
    sweep = tmp_path / "sweep"
    args = [
        "sampler=ddnm,pigdm,dps,diffpir",
        "sampler.timesteps=3",
        "dataset.limit=1",
        "batch_size=1",
        "logger=none",
        "metrics.lpips=false",
        "save_images=false",
    ]
    seen = set()
    for job in run_sweep(args, sweep, tmp_path):
        summary = json.loads((job / "summary.json").read_text())
        sampler = summary["sampler"]
        per_forward = 2 if sampler in ("pigdm", "dps", "mcg") else 1  # a VJP: forward + backward
        assert summary["nfe"] == per_forward * 4, sampler
        record = json.loads((job / "results.jsonl").read_text().splitlines()[0])
        assert record["sampler_params"]["timesteps"] == 3
        assert math.isfinite(record["restored"]["psnr"])
        seen.add(sampler)
    assert seen == {"ddnm", "pigdm", "dps", "diffpir"}
