"""The DDRM sampler (Kawar et al. 2022; the report's eq. (8)-(9)).

The diffusion runs in the spectral space of ``H = U Σ Vᵀ`` and in the variance-exploding form of
the official code: ``x_mod = x_t / √ᾱ_t = x_0 + σ_t ε`` with ``σ_t = √(1-ᾱ_t)/√ᾱ_t``.
Conventions kept from the official implementation, so results can be compared with it:

* timesteps ``seq = range(0, 1000, 1000 // N)`` walked backwards, ``t_next = -1`` (ᾱ = 1) last;
  for an ``N`` that does not divide 1000 this gives ``len(seq) = N + 1`` network evaluations, as
  the official code does — ``nfe`` reports the true count;
* images live in [-1, 1], so the ``sigma_y`` given in [0, 1] pixel units is doubled here;
* the returned image is the last ``x̂_0`` prediction (the one at ``t = seq[0] = 0``);
* ``η`` drives both the null-space and the "less noisy than y" cases, ``η_b`` the other;
* x̂_0 is not clipped (``clip_x0=True`` clamps it to [-1, 1] and uses the ε consistent with the
  clamped value, as DDPM's ``clip_denoised``: it helps small networks whose x̂_0 at the noisiest
  steps overshoots, which the ``1/√ᾱ_t`` of x̂_0 amplifies).

Differences, each deliberate:

* A singular value of exactly zero is always treated as null space (eq. (9), first case). The
  official code sends zero singular values of the blur operators to the "less noisy than y"
  branch when ``σ_y > 0``, which feeds pure measurement noise into them.
* The initial ``x_T`` is ``√ᾱ_T · V x̄_T``; the official code divides by ``σ_T`` instead, which
  differs from it by a relative ``1e-5`` at ``T = 950``.
* All the randomness is drawn in pixel space and mapped by ``Vᵀ``: the result does not depend on
  which orthonormal basis an operator picks for equal singular values, and per-image generators
  make every image's result independent of its batch. Draw order, per image: ``x_T`` noise, then
  one image-shaped draw per step.

The three cases of eq. (9) are computed as masked arithmetic over the whole spectral vector, with
no boolean indexing, so a step has no host synchronisation.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, replace
from functools import cached_property

import torch
from torch import Tensor

from ddrm_exp.degradations.base import HFunctions
from ddrm_exp.degradations.noise import draw_noise
from ddrm_exp.errors import ConfigError
from ddrm_exp.models.base import DiffusionPrior
from ddrm_exp.samplers.base import (
    GeneratorArg,
    SampleResult,
    SettingsByName,
    WarmStart,
    check_timesteps,
)

# after_step(i, num_steps, x0, x_bar_mod, operator) -> (x_bar_mod, operator) or None
AfterStep = Callable[[int, int, Tensor, Tensor, HFunctions], tuple[Tensor, HFunctions] | None]


# The training schedule's length of every published DDPM prior (and the default schedule's).
NUM_TRAIN_TIMESTEPS = 1000


def timestep_sequence(timesteps: int, num_train_steps: int = NUM_TRAIN_TIMESTEPS) -> list[int]:
    """The official DDRM skip schedule: ``range(0, T, T // N)``."""
    if not 1 <= timesteps <= num_train_steps:
        raise ValueError(f"timesteps must be in 1..{num_train_steps}, got {timesteps}")
    return list(range(0, num_train_steps, num_train_steps // timesteps))


def warm_schedule(seq: list[int], t_star: int) -> list[int]:
    """The steps of ``seq`` a warm start at ``t_star`` runs: those at or below it."""
    if t_star < 0:
        raise ValueError(f"warm start t_star must be >= 0, got {t_star}")
    return [t for t in seq if t <= t_star]


class NoiseStream:
    """The per-step noise of one run, optionally drawn a step ahead on a host thread.

    On CUDA with per-image CPU generators (the runner's case), drawing a batch of image-sized
    normals costs the host milliseconds a step (8 x 3 x 256 x 256 values: 6-13 ms on an H200's
    host), time in which it should be queueing the network's kernels; with a fast network
    (bf16, compile) the GPU then waits. ``ahead=True`` draws step i+1's noise on one worker
    thread while step i runs. The worker is the generators' only user during the loop and
    draws in the same order, so the values are exactly those of drawing in line.
    """

    def __init__(
        self,
        shape: Sequence[int],
        generator: GeneratorArg,
        device: torch.device,
        dtype: torch.dtype,
        count: int,
        ahead: bool,
    ) -> None:
        self._args = (tuple(shape), generator, device, dtype)
        self._left = count
        self._pool = ThreadPoolExecutor(1, "ddrm-noise") if ahead and count > 0 else None
        self._next: Future[Tensor] | None = None
        if self._pool is not None:
            self._next = self._pool.submit(draw_noise, *self._args)

    def next(self) -> Tensor:
        if self._left <= 0:
            raise RuntimeError("NoiseStream: more draws than announced")
        self._left -= 1
        if self._pool is None or self._next is None:
            return draw_noise(*self._args)
        z = self._next.result()
        self._next = self._pool.submit(draw_noise, *self._args) if self._left > 0 else None
        return z

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=True, cancel_futures=True)
            self._pool = None

    def __enter__(self) -> NoiseStream:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


@dataclass
class _Spectral:
    """Per-run constants of eq. (9) in the spectral layout (B or 1, n)."""

    s: Tensor  # singular values padded with zeros to n
    measured: Tensor  # s > 0
    y_bar: Tensor  # Σ⁺ Uᵀ y, zero in the null space
    ut_y: Tensor  # Uᵀ y padded to n


def spectral_constants(operator: HFunctions, y: Tensor) -> _Spectral:
    """``s`` (padded to n), ``s > 0``, ``ȳ = Σ⁺Uᵀy`` and ``Uᵀy`` in the spectral layout."""
    # singulars() is (m,) for one operator shared by the batch, or (B, m) for per-image
    # operators (e.g. FFTBlur with one kernel per image); the rest broadcasts over rows.
    s = operator.singulars()
    if s.dim() == 1:
        s = s.unsqueeze(0)
    if s.dim() != 2 or s.shape[0] not in (1, y.shape[0]):
        raise ValueError(
            f"singulars() must be (m,) or (B, m) for a batch of B = {y.shape[0]}, "
            f"got {tuple(s.shape)}"
        )
    ut_y = operator.Ut(y.reshape(y.shape[0], -1))
    measured_m = s > 0
    y_bar_m = torch.where(measured_m, ut_y / torch.where(measured_m, s, 1.0), 0.0)
    return _Spectral(
        s=operator.add_zeros(s),
        measured=operator.add_zeros(s) > 0,
        y_bar=operator.add_zeros(y_bar_m),
        ut_y=operator.add_zeros(ut_y),
    )


@dataclass
class Problem:
    """What one ``sample()`` call restores, as every step of its loop sees it: ``y`` (B, m)
    measured through ``operator`` with noise ``sigma_y`` ([0, 1] pixel units)."""

    prior: DiffusionPrior
    operator: HFunctions
    y: Tensor
    sigma_y: float

    def __post_init__(self) -> None:
        if self.sigma_y < 0:
            raise ValueError(f"sigma_y must be >= 0, got {self.sigma_y}")

    @property
    def sigma_0(self) -> float:
        """σ_y in the [-1, 1] units of the images the samplers work on."""
        return 2.0 * self.sigma_y

    @cached_property
    def sp(self) -> _Spectral:
        """The spectral constants, computed on first use (DPS never needs them)."""
        return spectral_constants(self.operator, self.y)


@dataclass
class Walk:
    """A ``sample()`` call settled before its loop: the problem, the schedule (cut at a warm
    start's ``t*``), the initial pixel-space noise (B, C, H, W) and the warm start's guess."""

    problem: Problem
    seq: list[int]
    noise: Tensor
    warm_x0: Tensor | None
    generator: GeneratorArg

    def noises(self, count: int, prefetch: bool | None, hooked: bool = False) -> NoiseStream:
        """The stream of the loop's ``count`` per-step draws. ``prefetch`` None: ahead where it
        pays (CUDA, per-image generators) and no hook shares the generators (``hooked``)."""
        gen, noise = self.generator, self.noise
        ahead = prefetch
        if ahead is None:
            per_image = gen is not None and not isinstance(gen, torch.Generator)
            ahead = noise.device.type == "cuda" and per_image and not hooked
        return NoiseStream(noise.shape, gen, noise.device, noise.dtype, count, ahead)


class ScheduledSampler(SettingsByName):
    """Base of the samplers that walk DDRM's timestep schedule (DDRM, MCG, the in-loop blind
    DDRM and the ``x_t`` baselines): one ``sample()`` that checks the inputs, settles the
    schedule and draws the initial noise; a subclass implements :meth:`walk`."""

    timesteps: int
    supports_warm_start = True
    # Draw each step's noise one step ahead on a host thread (see NoiseStream). None: where it
    # pays, i.e. on CUDA with per-image CPU generators and no after_step hook (a hook may use
    # the generators itself, which would race with the worker).
    prefetch_noise: bool | None = None
    # Called as progress(steps_done, num_steps) after every step, with Python ints only (no
    # device sync); the runner sets it to report NFE inside a batch (samplers.progress).
    progress: Callable[[int, int], None] | None = None

    def check_prior(self, prior: DiffusionPrior) -> None:
        check_timesteps(self.timesteps, prior)

    def sequence(self, prior: DiffusionPrior) -> list[int]:
        return timestep_sequence(self.timesteps, prior.schedule.num_timesteps)

    def schedule(self, prior: DiffusionPrior, warm_start: WarmStart | None) -> list[int]:
        """The timesteps a run walks: all of :meth:`sequence`, or those at or below ``t*``."""
        seq = self.sequence(prior)
        if warm_start is None:
            return seq
        seq = warm_schedule(seq, warm_start.t_star)
        if not seq:
            raise ValueError(f"warm start t_star={warm_start.t_star} leaves no step to run")
        return seq

    def moves(self, seq: list[int]) -> list[tuple[int, int]]:
        """The (t, t_next) pairs walked, from the top of ``seq`` down to ``t_next = -1``."""
        seq_next = [-1, *seq[:-1]]
        return list(zip(reversed(seq), reversed(seq_next), strict=True))

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
        """Restore ``x`` from ``y = H x + σ_y z``.

        ``y``: (B, m) in the operator's layout, from images in [-1, 1]. ``sigma_y``: the assumed
        noise level in [0, 1] pixel units. ``noise``: the initial pixel-space noise (B, C, H, W)
        (drawn from ``generator`` if not given). ``generator``: one ``torch.Generator`` for the
        batch, or one per image. ``warm_start``: start at ``t_star`` from a guess (see
        :class:`WarmStart`) instead of from pure noise at the top of the schedule.
        """
        problem = Problem(prior, operator, y, float(sigma_y))
        return self.walk(self.begin(problem, noise, generator, warm_start), return_trajectory)

    def begin(
        self,
        problem: Problem,
        noise: Tensor | None,
        generator: GeneratorArg,
        warm_start: WarmStart | None,
    ) -> Walk:
        """Check the warm start, settle the schedule and draw the initial noise (the first draw
        of every image's stream)."""
        y = problem.y
        shape = (y.shape[0], *problem.prior.shape)
        warm_x0 = None
        if warm_start is not None:
            if tuple(warm_start.x0.shape) != shape:
                raise ValueError(
                    f"warm_start.x0 must be {shape} for this batch, got "
                    f"{tuple(warm_start.x0.shape)}"
                )
            warm_x0 = warm_start.x0.to(y.device, y.dtype)
        seq = self.schedule(problem.prior, warm_start)
        if noise is None:
            noise = draw_noise(shape, generator, y.device, y.dtype)
        return Walk(problem, seq, noise.to(y.device, y.dtype), warm_x0, generator)

    def walk(self, start: Walk, return_trajectory: bool) -> SampleResult:
        """The sampling loop from ``start``."""
        raise NotImplementedError


class DDRM(ScheduledSampler):
    """DDRM with ``timesteps`` network evaluations, ``eta`` (η) and ``eta_b`` (η_b).

    Usage from Python::

        sampler = DDRM(timesteps=20, eta=0.85, eta_b=1.0)
        out = sampler.sample(prior, operator, y, sigma_y=0.05, generator=g)
        restored = out.x0  # (B, C, H, W) in [-1, 1]
    """

    name = "ddrm"
    # The constructor's settings, recorded with every result by params(); subclasses extend it.
    PARAMS: tuple[str, ...] = ("timesteps", "eta", "eta_b", "clip_x0")

    def __init__(
        self, timesteps: int = 20, eta: float = 0.85, eta_b: float = 1.0, clip_x0: bool = False
    ) -> None:
        if (
            isinstance(timesteps, bool)
            or not isinstance(timesteps, int)
            or not 1 <= timesteps <= NUM_TRAIN_TIMESTEPS
        ):
            raise ConfigError(
                f"sampler.timesteps must be an integer in 1..{NUM_TRAIN_TIMESTEPS}, "
                f"got {timesteps!r}."
            )
        self.timesteps = int(timesteps)
        self.eta = float(eta)
        self.eta_b = float(eta_b)
        self.clip_x0 = bool(clip_x0)

    @property
    def nfe(self) -> int:
        return self.network_cost(len(timestep_sequence(self.timesteps)))

    def network_cost(self, steps: int) -> int:
        """Network evaluations of ``steps`` steps: one forward pass each (overridden where a
        step also back-propagates through the network)."""
        return steps

    # ---- the spectral update ----------------------------------------------------------------
    def initial_spectral(
        self,
        sp: _Spectral,
        sigma_T: float,
        sigma_0: float,
        z_bar: Tensor,
        mean_bar: Tensor | None = None,
    ) -> Tensor:
        """x̄_T from eq. (8): ȳ plus the remaining noise where the measurement is less noisy.

        ``mean_bar``: a warm start's ``Vᵀx0``, the mean of the other components (0 otherwise).
        """
        large = sp.s * sigma_T > sigma_0
        inv = torch.where(large, sigma_0 / torch.where(large, sp.s, 1.0), 0.0)
        remaining = (sigma_T**2 - inv**2).clamp_min(0.0).sqrt()
        other = 0.0 if mean_bar is None else mean_bar
        return torch.where(large, sp.y_bar, other) + remaining * z_bar

    def step_spectral(
        self,
        sp: _Spectral,
        x0_bar: Tensor,
        eps_bar: Tensor,
        z_bar: Tensor,
        sigma_next: float,
        sigma_0: float,
    ) -> Tensor:
        """x̄_{t-1} in the VE form from eq. (9), all three cases as masked arithmetic."""
        eta, eta_b = self.eta, self.eta_b
        std_next = eta * sigma_next
        tilde_next = math.sqrt(max(sigma_next**2 - std_next**2, 0.0))
        s = sp.s
        # Null space: x̄_0 + √(1-η²) σ_{t-1} (x̄_t - x̄_0)/σ_t, and (x̄_t - x̄_0)/σ_t = ε̄ exactly.
        null = x0_bar + tilde_next * eps_bar + std_next * z_bar
        # σ_{t-1} < σ_y/s: pull towards ȳ; (ȳ - x̄_0)/(σ_y/s) = (Uᵀy - s x̄_0)/σ_y.
        safe_sigma_0 = sigma_0 if sigma_0 > 0 else 1.0
        after = x0_bar + tilde_next * (sp.ut_y - s * x0_bar) / safe_sigma_0 + std_next * z_bar
        # σ_{t-1} >= σ_y/s: a noisier version of ȳ.
        inv_s = torch.where(sp.measured, sigma_0 / torch.where(sp.measured, s, 1.0), 0.0)
        before_std = (sigma_next**2 - (inv_s * eta_b) ** 2).clamp_min(0.0).sqrt()
        before = eta_b * sp.y_bar + (1.0 - eta_b) * x0_bar + before_std * z_bar
        is_before = sp.measured & (s * sigma_next >= sigma_0)
        is_after = sp.measured & ~is_before
        return torch.where(is_before, before, torch.where(is_after, after, null))

    # ---- the loop -------------------------------------------------------------------------
    def walk(
        self, start: Walk, return_trajectory: bool, after_step: AfterStep | None = None
    ) -> SampleResult:
        """The sampling loop of :meth:`sample`.

        ``after_step(i, num_steps, x0, x_bar_mod, operator)``, when given, runs after step
        ``i`` and may return a new ``(x_bar_mod, operator)`` for the next steps (the blind
        sampler swaps in re-estimated kernels there); ``None`` keeps them.
        """
        problem, seq = start.problem, start.seq
        batch, shape = problem.y.shape[0], start.noise.shape
        device, dtype = problem.y.device, problem.y.dtype
        sched = problem.prior.schedule
        sigma_0 = problem.sigma_0
        mean_bar = None
        if start.warm_x0 is not None:
            mean_bar = problem.operator.Vt(start.warm_x0.reshape(batch, -1))

        def ve_sigma(t: int) -> float:
            a = sched.alpha_bar(t)
            return math.sqrt(1.0 - a) / math.sqrt(a)

        operator, sp = problem.operator, problem.sp  # sp first: it checks the singulars' batch
        z_bar = operator.Vt(start.noise.reshape(batch, -1))
        x_bar_mod = self.initial_spectral(sp, ve_sigma(seq[-1]), sigma_0, z_bar, mean_bar)
        x_t = math.sqrt(sched.alpha_bar(seq[-1])) * operator.V(x_bar_mod).reshape(shape)

        trajectory: list[Tensor] = []
        x0 = x_t
        steps = self.moves(seq)
        hooked = after_step is not None
        with start.noises(len(steps), self.prefetch_noise, hooked) as noises:
            for i, (t, t_next) in enumerate(steps):
                a_t = sched.alpha_bar(t)
                sigma_t, sigma_next = ve_sigma(t), ve_sigma(t_next)
                t_batch = torch.full((batch,), float(t), device=device, dtype=dtype)
                eps, correction = self.network_step(problem, x_t, t_batch, a_t)
                x0 = (x_t - math.sqrt(1.0 - a_t) * eps) / math.sqrt(a_t)
                if self.clip_x0:
                    # DDPM's clip_denoised: keep x̂_0 in the image range and use the ε consistent
                    # with it, so the spectral update sees the clipped estimate.
                    x0 = x0.clamp(-1.0, 1.0)
                    eps = (x_t - math.sqrt(a_t) * x0) / math.sqrt(1.0 - a_t)
                if return_trajectory:
                    trajectory.append(x0.detach().cpu())
                eps_bar = operator.Vt(eps.reshape(batch, -1))
                # Vᵀx̂_0 from quantities already in the spectral space saves one transform a step.
                x0_bar = x_bar_mod - sigma_t * eps_bar
                z_bar = operator.Vt(noises.next().reshape(batch, -1))
                x_bar_mod = self.step_spectral(
                    problem.sp, x0_bar, eps_bar, z_bar, sigma_next, sigma_0
                )
                if correction is not None:
                    x_bar_mod = x_bar_mod - correction
                x_t = math.sqrt(sched.alpha_bar(t_next)) * operator.V(x_bar_mod).reshape(shape)
                if after_step is not None:
                    swapped = after_step(i, len(steps), x0, x_bar_mod, operator)
                    if swapped is not None:
                        x_bar_mod, operator = swapped
                        problem = replace(problem, operator=operator)
                if self.progress is not None:
                    self.progress(i + 1, len(steps))
        return SampleResult(x0=x0, nfe=self.network_cost(len(seq)), trajectory=trajectory)

    def network_step(
        self, problem: Problem, x_t: Tensor, t: Tensor, alpha_bar_t: float
    ) -> tuple[Tensor, Tensor | None]:
        """ε̂(x_t, t) and an optional spectral correction subtracted from x̄_{t-1}.

        DDRM has no correction; DDRM+MCG overrides this to add its manifold constraint gradient.
        """
        with torch.no_grad():
            return problem.prior.eps(x_t, t), None
