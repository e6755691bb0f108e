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
cost about the same. (``sampler=mcg`` reports forwards only.)
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from ddrm_exp.degradations.base import HFunctions
from ddrm_exp.degradations.noise import GeneratorArg, draw_noise
from ddrm_exp.errors import ConfigError
from ddrm_exp.models.base import DiffusionPrior
from ddrm_exp.samplers.base import SampleResult, SettingsByName, WarmStart, check_timesteps
from ddrm_exp.samplers.ddrm import (
    DDRM,
    NUM_TRAIN_TIMESTEPS,
    NoiseStream,
    _Spectral,
    timestep_sequence,
    warm_schedule,
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


def spectral_constants(operator: HFunctions, y: Tensor) -> _Spectral:
    """``s`` (padded to n), ``s > 0``, ``ȳ = Σ⁺Uᵀy`` and ``Uᵀy`` in the spectral layout."""
    return DDRM._spectral(operator, y)


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
    """One (t, t_next) move; ``a_t``/``a_next`` are ᾱ, ``t_batch`` the network's time input."""

    index: int
    t: int
    t_next: int
    a_t: float
    a_next: float
    t_batch: Tensor


class XtSampler(SettingsByName):
    """Base of the ``x_t``-space baselines: subclasses implement :meth:`prepare` and
    :meth:`step` (and may override :meth:`moves` and :meth:`network_cost`)."""

    name = "xt"
    PARAMS: tuple[str, ...] = ("timesteps",)
    supports_warm_start = True
    # As DDRM's: draw the next step's noise on a host thread (CUDA with per-image generators).
    prefetch_noise: bool | None = None
    progress: Callable[[int, int], None] | None = None

    def __init__(self, timesteps: int) -> None:
        steps = int(timesteps)
        if not 1 <= steps <= NUM_TRAIN_TIMESTEPS:
            raise ConfigError(
                f"sampler.timesteps must be an integer in 1..{NUM_TRAIN_TIMESTEPS}, got "
                f"{timesteps!r}."
            )
        self.timesteps = steps

    # ---- the Sampler contract -------------------------------------------------------------
    def check_prior(self, prior: DiffusionPrior) -> None:
        check_timesteps(self.timesteps, prior)

    @property
    def nfe(self) -> int:
        """Network evaluations of one full run on a 1000-step prior (see the module doc)."""
        seq = timestep_sequence(self.timesteps, NUM_TRAIN_TIMESTEPS)
        return self.network_cost(self.moves(seq))

    def network_cost(self, moves: list[tuple[int, int]]) -> int:
        """Network evaluations of ``moves``: one per descending move (overridden for VJPs)."""
        return sum(1 for t, t_next in moves if t_next < t)

    def moves(self, seq: list[int]) -> list[tuple[int, int]]:
        """The (t, t_next) pairs walked, from the top of ``seq`` down to ``t_next = -1``."""
        seq_next = [-1, *seq[:-1]]
        return list(zip(reversed(seq), reversed(seq_next), strict=True))

    # ---- what a subclass provides ----------------------------------------------------------
    def prepare(
        self, prior: DiffusionPrior, operator: HFunctions, y: Tensor, sigma_y: float
    ) -> Any:
        """Per-run constants handed to every :meth:`step`."""
        return spectral_constants(operator, y)

    def step(
        self,
        prior: DiffusionPrior,
        operator: HFunctions,
        y: Tensor,
        state: Any,
        x_t: Tensor,
        s: Step,
        z: Tensor,
    ) -> tuple[Tensor, Tensor]:
        """(x_{t_next}, x̂_0 of this step for the trajectory)."""
        raise NotImplementedError

    # ---- the loop ---------------------------------------------------------------------------
    def sample(
        self,
        prior: DiffusionPrior,
        operator: HFunctions,
        y: Tensor,
        sigma_y: float,
        *,
        noise: Tensor | None = None,
        generator: GeneratorArg = None,
        return_trajectory: bool = False,
        warm_start: WarmStart | None = None,
    ) -> SampleResult:
        """Restore ``x`` from ``y = H x + σ_y z`` (``y``: (B, m), images in [-1, 1]; ``sigma_y``
        in [0, 1] pixel units). Arguments as :meth:`DDRM.sample`."""
        if sigma_y < 0:
            raise ValueError(f"sigma_y must be >= 0, got {sigma_y}")
        batch = y.shape[0]
        shape = (batch, *prior.shape)
        device, dtype = y.device, y.dtype
        sched = prior.schedule
        seq = timestep_sequence(self.timesteps, sched.num_timesteps)
        mean: Tensor | float = 0.0
        if warm_start is not None:
            seq = warm_schedule(seq, warm_start.t_star)
            if not seq:
                raise ValueError(f"warm start t_star={warm_start.t_star} leaves no step to run")
            if tuple(warm_start.x0.shape) != shape:
                raise ValueError(
                    f"warm_start.x0 must be {shape} for this batch, got "
                    f"{tuple(warm_start.x0.shape)}"
                )
            mean = warm_start.x0.to(device, dtype)
        moves = self.moves(seq)
        state = self.prepare(prior, operator, y, float(sigma_y))
        if noise is None:
            noise = draw_noise(shape, generator, device, dtype)
        a_top = sched.alpha_bar(seq[-1])
        x_t = math.sqrt(a_top) * mean + math.sqrt(1.0 - a_top) * noise.to(device, dtype)

        ahead = self.prefetch_noise
        if ahead is None:
            per_image = generator is not None and not isinstance(generator, torch.Generator)
            ahead = device.type == "cuda" and per_image
        trajectory: list[Tensor] = []
        with NoiseStream(shape, generator, device, dtype, len(moves), ahead) as noises:
            for i, (t, t_next) in enumerate(moves):
                s = Step(
                    index=i,
                    t=t,
                    t_next=t_next,
                    a_t=sched.alpha_bar(t),
                    a_next=sched.alpha_bar(t_next),
                    t_batch=torch.full((batch,), float(t), device=device, dtype=dtype),
                )
                x_t, x0 = self.step(prior, operator, y, state, x_t, s, noises.next())
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
