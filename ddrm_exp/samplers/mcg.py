"""DDRM + Manifold Constraint Gradient (Chung et al. 2022), as the report's eq. (22).

At each step the gradient of the measurement loss at the network's own estimate,

    g = ∂/∂x_t  ‖W (y − H x̂_0(x_t))‖²,   x̂_0(x_t) = (x_t − √(1−ᾱ_t) ε̂(x_t, t)) / √ᾱ_t,

is taken through the network with autograd, moved to the spectral space (Vᵀ g) and subtracted,
scaled by α (``grad_scale``), from DDRM's x̄_{t−1} — on the components whose singular value is
zero (``apply_to=nullspace``, the report's choice: those are the components y says nothing about
directly) or on all of them (``apply_to=all``, closer to MCG's own image-space update).

Options and where they come from:

* ``norm``: ``squared`` is the report's eq. (22) and MCG's eq. (16); ``plain`` differentiates
  ‖·‖ itself, as MCG's released code does (its step size then does not grow with the residual).
* ``weighting``: W of eq. (16). ``identity``; or ``pinv``, W = Σ⁺Uᵀ, which measures the residual
  in DDRM's ȳ coordinates, i.e. weights each measured direction by 1/s_i — the whitening that
  eq. (16) asks for when the noise seen through Σ⁺ has variance σ_y²/s_i².
* ``grad_scale = 0`` skips the gradient altogether: the sampler is then DDRM exactly.

``grad_wrt`` says which variable the gradient is taken with respect to: ``xt_mod`` (default) is
DDRM's variance-exploding x_t/√ᾱ_t — eq. (22) differentiates with respect to x̄_{t+1}, and DDRM's
x̄ are Vᵀ of that variable — and ``xt`` is the network input x_t, the variance-preserving sample,
as in MCG's released code. The two differ by the factor √ᾱ_t (chain rule), which is ≈ 0.01 at
the noisiest steps: there the ``xt`` gradient is ~100× larger and, at the report's α ∈ [1, 3.5],
swamps the update (measured with the bundled tiny prior on inpaint_lorem, α = 2: 11.9 dB with
``xt``, 31.1 dB with ``xt_mod``, 27.6 dB for DDRM). Either is subtracted from DDRM's
variance-exploding x̄_{t−1}. Each step builds and frees its own graph: nothing is kept
across steps, so memory is that of one backward pass through the network.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
from torch import Tensor

from ddrm_exp.degradations.base import HFunctions
from ddrm_exp.errors import ConfigError
from ddrm_exp.models.base import DiffusionPrior
from ddrm_exp.samplers.ddrm import DDRM, Problem

APPLY_TO = ("nullspace", "all")
NORMS = ("squared", "plain")
WEIGHTINGS = ("identity", "pinv")
GRAD_WRT = ("xt", "xt_mod")


def measurement_loss(
    operator: HFunctions, x0: Tensor, y: Tensor, norm: str, weighting: str
) -> Tensor:
    """Σ over the batch of ‖W (y − H x̂_0)‖ (``plain``) or its square (``squared``)."""
    residual = y.reshape(y.shape[0], -1) - operator.H(x0.reshape(x0.shape[0], -1))
    if weighting == "pinv":
        s = operator.singulars()
        inv = torch.where(s > 0, 1.0 / torch.where(s > 0, s, torch.ones_like(s)), 0.0)
        residual = inv * operator.Ut(residual)
    per_image = residual.pow(2).sum(dim=1)
    if norm == "plain":
        per_image = per_image.sqrt()
    return per_image.sum()


def denoiser_gradient(
    prior: DiffusionPrior,
    x_t: Tensor,
    t: Tensor,
    alpha_bar_t: float,
    objective: Callable[[Tensor], Tensor],
) -> tuple[Tensor, Tensor]:
    """(ε̂(x_t, t), ∂ objective(x̂_0(x_t)) / ∂x_t), both detached; the graph is freed before
    returning. One forward and one backward pass through the network.

    ``objective`` maps x̂_0 (B, C, H, W) to a scalar; summed over the batch, each image's
    gradient is that of its own term. A vector-Jacobian product ``Jᵀv`` of x̂_0 is the
    gradient of ``(v.detach() * x̂_0).sum()`` (ΠGDM's guidance).
    """
    with torch.enable_grad():
        x_in = x_t.detach().requires_grad_(True)
        eps = prior.eps(x_in, t)
        x0 = (x_in - math.sqrt(1.0 - alpha_bar_t) * eps) / math.sqrt(alpha_bar_t)
        (grad,) = torch.autograd.grad(objective(x0), x_in)
    return eps.detach(), grad.detach()


def mcg_gradient(
    prior: DiffusionPrior,
    operator: HFunctions,
    x_t: Tensor,
    t: Tensor,
    alpha_bar_t: float,
    y: Tensor,
    norm: str = "squared",
    weighting: str = "identity",
) -> tuple[Tensor, Tensor]:
    """(ε̂(x_t, t), ∂ loss / ∂x_t), both detached; the graph is freed before returning.

    The loss sums over the batch, so each image's gradient is that of its own loss. DPS
    (``samplers.dps``) uses it with ``norm="plain"``.
    """
    return denoiser_gradient(
        prior, x_t, t, alpha_bar_t, lambda x0: measurement_loss(operator, x0, y, norm, weighting)
    )


class MCG(DDRM):
    """DDRM with the manifold constraint gradient correction of eq. (22)."""

    name = "mcg"
    PARAMS = (*DDRM.PARAMS, "grad_scale", "apply_to", "norm", "grad_wrt", "weighting")

    def __init__(
        self,
        timesteps: int = 20,
        eta: float = 0.85,
        eta_b: float = 1.0,
        grad_scale: float = 1.0,
        apply_to: str = "nullspace",
        norm: str = "squared",
        weighting: str = "identity",
        clip_x0: bool = False,
        grad_wrt: str = "xt_mod",
    ) -> None:
        super().__init__(timesteps, eta, eta_b, clip_x0)
        for key, value, valid in (
            ("grad_wrt", grad_wrt, GRAD_WRT),
            ("apply_to", apply_to, APPLY_TO),
            ("norm", norm, NORMS),
            ("weighting", weighting, WEIGHTINGS),
        ):
            if value not in valid:
                raise ConfigError(
                    f"sampler.{key} must be one of {', '.join(valid)}, got {value!r}."
                )
        if not math.isfinite(float(grad_scale)) or float(grad_scale) < 0:
            raise ConfigError(f"sampler.grad_scale must be a number >= 0, got {grad_scale!r}.")
        self.grad_scale = float(grad_scale)
        self.apply_to = apply_to
        self.norm = norm
        self.weighting = weighting
        self.grad_wrt = grad_wrt

    def network_cost(self, steps: int) -> int:
        # The gradient is a backward pass through the network, which costs about one more
        # forward pass; counted as the VJP samplers (DPS, ΠGDM) count it.
        return steps if self.grad_scale == 0.0 else 2 * steps

    def network_step(
        self, problem: Problem, x_t: Tensor, t: Tensor, alpha_bar_t: float
    ) -> tuple[Tensor, Tensor | None]:
        if self.grad_scale == 0.0:
            return super().network_step(problem, x_t, t, alpha_bar_t)
        prior, operator, y = problem.prior, problem.operator, problem.y
        eps, grad = mcg_gradient(prior, operator, x_t, t, alpha_bar_t, y, self.norm, self.weighting)
        if self.grad_wrt == "xt_mod":
            grad = math.sqrt(alpha_bar_t) * grad  # chain rule through x_t = √ᾱ_t · x_mod
        grad_bar = operator.Vt(grad.reshape(grad.shape[0], -1))
        if self.apply_to == "nullspace":
            grad_bar = torch.where(problem.sp.measured, 0.0, grad_bar)
        return eps, self.grad_scale * grad_bar
