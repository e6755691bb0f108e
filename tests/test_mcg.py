"""DDRM+MCG: reduces to DDRM at α = 0, its gradient is the true gradient, and it acts only
where it is told to."""

from __future__ import annotations

import math

import pytest
import torch
from helpers import TinyEps, make_operator, measurement, tiny_eps_prior
from torch import Tensor

from ddrm_exp.errors import ConfigError
from ddrm_exp.models.base import DiffusionPrior
from ddrm_exp.models.schedule import Schedule
from ddrm_exp.samplers import DDRM, MCG, mcg_gradient
from ddrm_exp.samplers.ddrm import Problem
from ddrm_exp.samplers.mcg import measurement_loss


@pytest.mark.parametrize("name", ["colorize", "inpaint_lorem", "denoise", "sr2"])
def test_alpha_zero_equals_ddrm(name: str) -> None:
    operator = make_operator(name)
    _, y = measurement(operator, 0.0, seed=3)
    gens = lambda: [torch.Generator().manual_seed(i) for i in range(2)]  # noqa: E731
    prior = tiny_eps_prior()
    ddrm = DDRM(6, 1.0, 0.8).sample(prior, operator, y, 0.0, generator=gens()).x0
    mcg = MCG(6, 1.0, 0.8, grad_scale=0.0).sample(prior, operator, y, 0.0, generator=gens()).x0
    assert torch.equal(ddrm, mcg)


@pytest.mark.parametrize("norm", ["squared", "plain"])
@pytest.mark.parametrize("weighting", ["identity", "pinv"])
def test_gradient_matches_finite_differences(norm: str, weighting: str) -> None:
    operator = make_operator("sr2")
    x, y = measurement(operator, 0.0, seed=3)
    p = tiny_eps_prior()
    t = torch.full((2,), 400.0, dtype=torch.float64)
    a = p.schedule.alpha_bar(400)
    g = torch.Generator().manual_seed(9)
    x_t = math.sqrt(a) * x + math.sqrt(1 - a) * torch.randn(
        x.shape, generator=g, dtype=torch.float64
    )
    _, grad = mcg_gradient(p, operator, x_t, t, a, y, norm, weighting)

    def loss(z: Tensor) -> float:
        with torch.no_grad():
            x0 = (z - math.sqrt(1 - a) * p.eps(z, t)) / math.sqrt(a)
            return float(measurement_loss(operator, x0, y, norm, weighting))

    for k in range(5):
        direction = torch.randn(x.shape, generator=g, dtype=torch.float64)
        h = 1e-6
        fd = (loss(x_t + h * direction) - loss(x_t - h * direction)) / (2 * h)
        assert float((grad * direction).sum()) == pytest.approx(fd, rel=1e-6, abs=1e-8), k


def test_nullspace_update_leaves_measured_components_untouched() -> None:
    operator = make_operator("inpaint_random")
    x, y = measurement(operator, 0.0, seed=3)
    p = tiny_eps_prior()
    problem = Problem(p, operator, y, sigma_y=0.0)
    sp = problem.sp
    t = torch.full((2,), 300.0, dtype=torch.float64)
    a = p.schedule.alpha_bar(300)
    x_t = math.sqrt(a) * x + math.sqrt(1 - a) * torch.randn(x.shape, dtype=torch.float64)
    for apply_to in ("nullspace", "all"):
        sampler = MCG(grad_scale=2.0, apply_to=apply_to)
        eps, correction = sampler.network_step(problem, x_t, t, a)
        assert correction is not None
        measured = sp.measured.expand_as(correction)
        if apply_to == "nullspace":
            assert torch.all(correction[measured] == 0)
            assert correction[~measured].abs().max() > 0
        else:
            assert correction[measured].abs().max() > 0
        with torch.no_grad():
            assert torch.equal(eps, p.eps(x_t, t))


def test_mcg_changes_the_result_and_keeps_no_graph() -> None:
    operator = make_operator("colorize")
    _, y = measurement(operator, 0.0, seed=3)
    gens = lambda: [torch.Generator().manual_seed(i) for i in range(2)]  # noqa: E731
    prior = tiny_eps_prior()
    ddrm = DDRM(6, 1.0, 0.8).sample(prior, operator, y, 0.0, generator=gens()).x0
    out = MCG(6, 1.0, 0.8, grad_scale=1.0).sample(prior, operator, y, 0.0, generator=gens()).x0
    assert not torch.allclose(ddrm, out)
    assert not out.requires_grad and out.grad_fn is None


@pytest.mark.parametrize("grad_scale", [0.0, 1.0])
def test_nfe_counts_every_forward_and_backward_pass(grad_scale: float) -> None:
    """NFE is the network's work: a gradient step is a forward and a backward pass, as the
    VJP baselines (DPS, ΠGDM) count it, so MCG's NFE is not flattered against theirs."""
    net = TinyEps()
    passes = {"forward": 0, "backward": 0}
    net.register_forward_hook(lambda *_: passes.__setitem__("forward", passes["forward"] + 1))
    net.register_full_backward_hook(
        lambda *_: passes.__setitem__("backward", passes["backward"] + 1)
    )
    operator = make_operator("colorize")
    _, y = measurement(operator, 0.0, seed=3)
    sampler = MCG(5, 1.0, 0.8, grad_scale=grad_scale)
    pri = DiffusionPrior(net, Schedule.linear(), 8, 3, "tiny-test")
    out = sampler.sample(pri, operator, y, 0.0, generator=torch.Generator().manual_seed(0))
    assert out.nfe == sampler.nfe == passes["forward"] + passes["backward"]
    assert passes["backward"] == (passes["forward"] if grad_scale else 0)


@pytest.mark.parametrize(
    ("kwargs", "needle"),
    [
        ({"apply_to": "everything"}, "apply_to"),
        ({"norm": "l1"}, "norm"),
        ({"weighting": "noise"}, "weighting"),
        ({"grad_scale": -1.0}, "grad_scale"),
    ],
)
def test_bad_options(kwargs: dict, needle: str) -> None:
    with pytest.raises(ConfigError, match=needle):
        MCG(**kwargs)


def test_grad_wrt_xt_mod_is_the_chain_rule_scaling() -> None:
    operator = make_operator("inpaint_random")
    x, y = measurement(operator, 0.0, seed=3)
    p = tiny_eps_prior()
    problem = Problem(p, operator, y, sigma_y=0.0)
    t = torch.full((2,), 700.0, dtype=torch.float64)
    a = p.schedule.alpha_bar(700)
    x_t = math.sqrt(a) * x + math.sqrt(1 - a) * torch.randn(x.shape, dtype=torch.float64)
    _, c_vp = MCG(grad_scale=1.0, grad_wrt="xt").network_step(problem, x_t, t, a)
    _, c_ve = MCG(grad_scale=1.0, grad_wrt="xt_mod").network_step(problem, x_t, t, a)
    torch.testing.assert_close(c_ve, math.sqrt(a) * c_vp)
