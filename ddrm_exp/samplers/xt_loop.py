"""The loop shared by the baselines that step the variance-preserving sample ``x_t`` itself.

DDNM, ΠGDM, DPS and DiffPIR all walk ``x_t`` (the network's input, ``x_t = √ᾱ_t x_0 +
√(1-ᾱ_t) ε``) down a schedule, calling the network once per step, and differ only in how a step
turns ``(x_t, ε̂)`` into ``x_{t_next}``. This module holds what they share, with DDRM's
conventions so that their results are comparable image by image:

* the schedule is DDRM's ``seq = range(0, T, T // N)`` walked backwards to ``t_next = -1``
  (ᾱ = 1), so ``timesteps = N`` costs the same network forwards as DDRM's;
* ``x_T = √(1-ᾱ_T) z`` (the exact marginal of ``x_T`` for a zero mean); a warm start at ``t*``
  starts from ``√ᾱ_{t*} x0 + √(1-ᾱ_{t*}) z`` instead (SDEdit's initialisation) and runs only the
  steps at or below ``t*``;
* per-image generators; draw order, per image: the ``x_T`` noise, then one image-shaped draw per
  step (drawn even where a step does not use it, so the stream does not depend on the settings);
* the returned image is the last state, ``x_{-1}``: with ᾱ = 1 it is each method's final clean
  estimate (with its last data step, guidance or projection applied);
* no host synchronisation in the loop: every step coefficient is a Python float.

``nfe`` counts network evaluations honestly: one per forward pass, and a vector-Jacobian
product through the network (ΠGDM, DPS) counts two, its forward and its backward pass, which
cost about the same. ``sampler=mcg`` counts the same way.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor

from ddrm_exp.errors import ConfigError
from ddrm_exp.models.base import DiffusionPrior
from ddrm_exp.samplers.base import SampleResult
from ddrm_exp.samplers.ddrm import (
    NUM_TRAIN_TIMESTEPS,
    Problem,
    ScheduledSampler,
    Walk,
    timestep_sequence,
)


def check_unit(name: str, value: float) -> float:
    """A float in [0, 1], or a ConfigError naming ``sampler.<name>``."""
    v = float(value)
    if not (math.isfinite(v) and 0.0 <= v <= 1.0):
        raise ConfigError(f"sampler.{name} must be a number in [0, 1], got {value!r}.")
    return v


def check_nonnegative(name: str, value: float) -> float:
    v = float(value)
    if not (math.isfinite(v) and v >= 0.0):
        raise ConfigError(f"sampler.{name} must be a number >= 0, got {value!r}.")
    return v


def ddim_coefficients(a_t: float, a_next: float, eta: float) -> tuple[float, float]:
    """(c1, c2) of DDIM's ``x_{t-1} = √ᾱ_{t-1} x̂_0 + c1 z + c2 ε̂`` (Song et al. 2021, eq. 12).

    ``c1 = η √((1-ᾱ_{t-1})/(1-ᾱ_t)) √(1-ᾱ_t/ᾱ_{t-1})``; η = 1 is DDPM's ancestral step with the
    posterior variance β̃ (the DDPM posterior mean written through ε̂), η = 0 deterministic DDIM.
    """
    c1 = eta * math.sqrt((1.0 - a_next) / (1.0 - a_t) * (1.0 - a_t / a_next))
    c2 = math.sqrt(max(1.0 - a_next - c1**2, 0.0))
    return c1, c2


@dataclass
class Step:
    """One (t, t_next) move; ``a_t``/``a_next`` are ᾱ, ``t_batch`` the network's time input,
    ``x0_prev`` the x̂_0 the previous move returned (None at the first)."""

    index: int
    t: int
    t_next: int
    a_t: float
    a_next: float
    t_batch: Tensor
    x0_prev: Tensor | None


class XtSampler(ScheduledSampler):
    """Base of the ``x_t``-space baselines: subclasses implement :meth:`step` (and may
    override :meth:`moves` and :meth:`network_cost`)."""

    name = "xt"
    PARAMS: tuple[str, ...] = ("timesteps",)

    def __init__(self, timesteps: int) -> None:
        steps = int(timesteps)
        if not 1 <= steps <= NUM_TRAIN_TIMESTEPS:
            raise ConfigError(
                f"sampler.timesteps must be an integer in 1..{NUM_TRAIN_TIMESTEPS}, got "
                f"{timesteps!r}."
            )
        self.timesteps = steps

    @property
    def nfe(self) -> int:
        """Network evaluations of one full run on a 1000-step prior (see the module doc)."""
        seq = timestep_sequence(self.timesteps, NUM_TRAIN_TIMESTEPS)
        return self.network_cost(self.moves(seq))

    def network_cost(self, moves: list[tuple[int, int]]) -> int:
        """Network evaluations of ``moves``: one per descending move (overridden for VJPs)."""
        return sum(1 for t, t_next in moves if t_next < t)

    # ---- what a subclass provides ----------------------------------------------------------
    def step(self, problem: Problem, x_t: Tensor, s: Step, z: Tensor) -> tuple[Tensor, Tensor]:
        """(x_{t_next}, x̂_0 of this step for the trajectory)."""
        raise NotImplementedError

    # ---- the loop ---------------------------------------------------------------------------
    def walk(self, start: Walk, return_trajectory: bool) -> SampleResult:
        problem = start.problem
        batch, device, dtype = problem.y.shape[0], problem.y.device, problem.y.dtype
        sched = problem.prior.schedule
        moves = self.moves(start.seq)
        mean: Tensor | float = 0.0 if start.warm_x0 is None else start.warm_x0
        a_top = sched.alpha_bar(start.seq[-1])
        x_t = math.sqrt(a_top) * mean + math.sqrt(1.0 - a_top) * start.noise

        trajectory: list[Tensor] = []
        x0: Tensor | None = None
        with start.noises(len(moves), self.prefetch_noise) as noises:
            for i, (t, t_next) in enumerate(moves):
                s = Step(
                    index=i,
                    t=t,
                    t_next=t_next,
                    a_t=sched.alpha_bar(t),
                    a_next=sched.alpha_bar(t_next),
                    t_batch=torch.full((batch,), float(t), device=device, dtype=dtype),
                    x0_prev=x0,
                )
                x_t, x0 = self.step(problem, x_t, s, noises.next())
                if return_trajectory and t_next < t:
                    trajectory.append(x0.detach().cpu())
                if self.progress is not None:
                    self.progress(i + 1, len(moves))
        return SampleResult(x0=x_t, nfe=self.network_cost(moves), trajectory=trajectory)


def denoise(prior: DiffusionPrior, x_t: Tensor, s: Step) -> tuple[Tensor, Tensor]:
    """(ε̂, x̂_0) without a graph: ``x̂_0 = (x_t - √(1-ᾱ_t) ε̂)/√ᾱ_t``."""
    with torch.no_grad():
        eps = prior.eps(x_t, s.t_batch)
    return eps, x0_from_eps(x_t, eps, s.a_t)


def x0_from_eps(x_t: Tensor, eps: Tensor, a_t: float) -> Tensor:
    return (x_t - math.sqrt(1.0 - a_t) * eps) / math.sqrt(a_t)


def flat(x: Tensor) -> Tensor:
    return x.reshape(x.shape[0], -1)
