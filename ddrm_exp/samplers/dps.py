"""Diffusion Posterior Sampling (Chung, Kim, McCann, Klasky, Ye, ICLR 2023), Algorithm 1.

Each step is DDPM's ancestral step from the network's ``x̂_0(x_t)`` followed by a gradient step
on the measurement residual taken through the network:

    x'_{t-1} = √ᾱ_{t-1} x̂_0 + c2 ε̂ + c1 z            (DDPM posterior, DDIM form with η = 1)
    x_{t-1}  = x'_{t-1} − ζ' ∇_{x_t} ‖y − H x̂_0(x_t)‖

The paper writes the step as ``ζ_t ∇‖y − H x̂_0‖²`` with ``ζ_t = ζ'/‖y − H x̂_0‖``; the released
code differentiates the norm itself with step ``ζ'`` (``scale``), which is the same direction with
half that length; we follow the code. The gradient is MCG's (``samplers.mcg.mcg_gradient``,
``norm="plain"``, taken with respect to the network input ``x_t``), one forward and one
backward pass per step, so ``nfe = 2 × steps``. σ_y does not enter: DPS' Gaussian likelihood
is folded into ζ'. ``eta`` < 1 gives the DDIM variant (η = 1 is the paper's).

DPS is not an exact posterior sampler: even for a Gaussian prior, where ``x̂_0`` is exact, the
step ζ' is a free weight, not the likelihood's 1/σ_y², and ``p(y | x_t)`` is approximated by
``p(y | x̂_0)``. With ζ' = 0 it is the unconditional DDPM sampler of the prior.
"""

from __future__ import annotations

import math

from torch import Tensor

from ddrm_exp.samplers.ddrm import Problem
from ddrm_exp.samplers.mcg import mcg_gradient
from ddrm_exp.samplers.xt_loop import (
    Step,
    XtSampler,
    check_nonnegative,
    check_unit,
    ddim_coefficients,
    denoise,
    x0_from_eps,
)


class DPS(XtSampler):
    """DPS with ``timesteps``, step size ``zeta`` (ζ') and ``eta`` (1 = DDPM ancestral)."""

    name = "dps"
    PARAMS = (*XtSampler.PARAMS, "zeta", "eta")

    def __init__(self, timesteps: int = 1000, zeta: float = 1.0, eta: float = 1.0) -> None:
        super().__init__(timesteps)
        self.zeta = check_nonnegative("zeta", zeta)
        self.eta = check_unit("eta", eta)

    def network_cost(self, moves: list[tuple[int, int]]) -> int:
        per_step = 2 if self.zeta > 0 else 1  # forward + backward; ζ' = 0 takes no gradient
        return per_step * super().network_cost(moves)

    def step(self, problem: Problem, x_t: Tensor, s: Step, z: Tensor) -> tuple[Tensor, Tensor]:
        prior, operator, y = problem.prior, problem.operator, problem.y
        if self.zeta > 0:
            eps, grad = mcg_gradient(prior, operator, x_t, s.t_batch, s.a_t, y, "plain")
            x0 = x0_from_eps(x_t, eps, s.a_t)
        else:
            eps, x0 = denoise(prior, x_t, s)
        c1, c2 = ddim_coefficients(s.a_t, s.a_next, self.eta)
        x_next = math.sqrt(s.a_next) * x0 + c1 * z + c2 * eps
        if self.zeta > 0:
            x_next = x_next - self.zeta * grad
        return x_next, x0
