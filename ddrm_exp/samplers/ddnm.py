"""DDNM and DDNM⁺ (Wang, Yu, Zhang, ICLR 2023): range-null space decomposition.

Each step takes the network's ``x̂_0`` and replaces its range-space part by the measurement's,

    x̂_0' = x̂_0 − Σ_t H⁺(H x̂_0 − y)                                   (eq. 13 / DDNM⁺ eq. 17)

then moves to ``t_next`` with DDIM-style noise, ``x_{t-1} = √ᾱ_{t-1} x̂_0' + noise``. Everything
is diagonal in ``H = U Σ Vᵀ``, so it runs on the operator's SVD like DDRM: in the spectral
coordinates ``H⁺(H x̂_0 − y)`` is ``x̄_0 − ȳ`` on the measured components and 0 elsewhere.

σ_y = 0 (DDNM, the released ``ddnm_diffusion``): ``Σ_t = I``, noise
``σ (η z + √(1-η²) ε̂)`` with ``σ = √(1-ᾱ_{t-1})``; the last step (ᾱ = 1, no noise) returns
``H⁺y + (I − H⁺H) x̂_0``, so ``H x̂ = y`` exactly for ``y`` in the range of ``H``.

σ_y > 0 (DDNM⁺, eq. 19, in the per-singular-value form of the released SVD code,
``Lambda``/``Lambda_noise``): with ``a = √ᾱ_{t-1}``, ``σ = √(1-ᾱ_{t-1})`` and the measured
component's noise seen at ``x_0``, ``τ_i = a σ_y / s_i``,

* ``σ ≥ τ_i``: full correction ``λ_i = 1`` and noise ``√(σ² − τ_i²) z`` (the measurement's own
  noise makes up the rest);
* ``σ < τ_i``: partial correction ``λ_i = σ √(1-η²) / τ_i`` and noise ``σ η z``;
* null space: no correction, noise ``σ (η z + √(1-η²) ε̂)``.

(The paper's eq. 19 writes ``λ = σ/(a σ_y)`` and a DDPM step; the released code uses the
DDIM step with the ``√(1-η²)`` factor above, which we follow.) Images live in [-1, 1], so σ_y is
doubled as in DDRM. At the last step σ = 0, so with σ_y > 0 the output is the network's
``x̂_0`` on the measured components: DDNM⁺ trusts the denoiser over a noisy y at the end.

Time travel (DDNM⁺ §3.4, RePaint's schedule): after every ``travel_length`` steps, go back up
``travel_length`` steps ``travel_repeat − 1`` times by re-noising the last ``x̂_0``,
``x_{t+L} = √ᾱ_{t+L} x̂_0 + √(1-ᾱ_{t+L}) z`` (as the released code, the un-projected ``x̂_0``).
``travel_length = 1, travel_repeat = 1`` (the authors' default configs) switches it off. Each
extra descending step is one more network evaluation, counted in ``nfe``.

What it converges to: DDNM is consistent with a noiseless y by construction, but it is not a
posterior sampler for η > 0: its step treats the projected ``x̂_0'`` as known and adds fresh
noise instead of DDIM's smaller share, so the null-space draws are too narrow. With a white
Gaussian prior (exact denoiser, 250 steps) they carry 0.97 of the posterior variance at η = 0,
0.74 at the authors' η = 0.85 and 0.49 at η = 1 (tests/test_baseline_samplers.py).
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from ddrm_exp.errors import ConfigError
from ddrm_exp.samplers.ddrm import Problem
from ddrm_exp.samplers.xt_loop import (
    Step,
    XtSampler,
    check_unit,
    denoise,
    flat,
)


def time_travel_indices(num_steps: int, length: int, repeat: int) -> list[int]:
    """Indices into the schedule, from ``num_steps - 1`` down to ``-1``, with RePaint's jumps:
    after reaching an index ``j`` that is a multiple of ``length`` (below ``num_steps -
    length``), go back up ``length`` indices, ``repeat - 1`` times."""
    jumps = {j: repeat - 1 for j in range(0, num_steps - length, length)}
    out: list[int] = []
    t = num_steps
    while t >= 1:
        t -= 1
        out.append(t)
        if jumps.get(t, 0) > 0:
            jumps[t] -= 1
            for _ in range(length):
                t += 1
                out.append(t)
    out.append(-1)
    return out


class DDNM(XtSampler):
    """DDNM (σ_y = 0) / DDNM⁺ (σ_y > 0) with ``timesteps``, ``eta`` and time travel."""

    name = "ddnm"
    PARAMS = (*XtSampler.PARAMS, "eta", "travel_length", "travel_repeat")

    def __init__(
        self,
        timesteps: int = 100,
        eta: float = 0.85,
        travel_length: int = 1,
        travel_repeat: int = 1,
    ) -> None:
        super().__init__(timesteps)
        self.eta = check_unit("eta", eta)
        if int(travel_length) < 1 or int(travel_repeat) < 1:
            raise ConfigError(
                "sampler.travel_length and sampler.travel_repeat must be integers >= 1, got "
                f"{travel_length!r} and {travel_repeat!r} (1 and 1 switch time travel off)."
            )
        self.travel_length = int(travel_length)
        self.travel_repeat = int(travel_repeat)

    def moves(self, seq: list[int]) -> list[tuple[int, int]]:
        idx = time_travel_indices(len(seq), self.travel_length, self.travel_repeat)
        ts = [seq[i] if i >= 0 else -1 for i in idx]
        return list(zip(ts[:-1], ts[1:], strict=True))

    def step(self, problem: Problem, x_t: Tensor, s: Step, z: Tensor) -> tuple[Tensor, Tensor]:
        if s.t_next > s.t:  # time travel: back up the schedule, no network call
            assert s.x0_prev is not None, "time travel cannot be the first move"
            x0 = s.x0_prev
            x_next = math.sqrt(s.a_next) * x0 + math.sqrt(1.0 - s.a_next) * z
            return x_next, x0
        eps, x0 = denoise(problem.prior, x_t, s)
        operator, sp, eta = problem.operator, problem.sp, self.eta
        x0_bar = operator.Vt(flat(x0))
        eps_bar = operator.Vt(flat(eps))
        z_bar = operator.Vt(flat(z))
        a = math.sqrt(s.a_next)
        sig = math.sqrt(1.0 - s.a_next)
        keep = math.sqrt(1.0 - eta**2)
        if problem.sigma_0 == 0.0:
            lam = sp.measured.to(x0_bar.dtype)
            d1: Tensor | float = sig * eta
            d2: Tensor | float = sig * keep
        else:
            # τ_i = a σ_y / s_i on measured components (s_i > 0 there, σ_y > 0 here).
            tau = torch.where(
                sp.measured, a * problem.sigma_0 / torch.where(sp.measured, sp.s, 1.0), 0.0
            )
            full = sp.measured & (sig >= tau)
            partial = sp.measured & ~full
            lam = torch.where(
                full, 1.0, torch.where(partial, sig * keep / torch.where(partial, tau, 1.0), 0.0)
            )
            d1 = torch.where(full, (sig**2 - tau**2).clamp_min(0.0).sqrt(), sig * eta)
            d2 = (sig * keep) * (~sp.measured).to(x0_bar.dtype)  # where() of two floats is float32
        # (1-λ) x̄_0 + λ ȳ rather than x̄_0 − λ(x̄_0 − ȳ): where λ = 1 it is ȳ exactly, with no
        # cancellation against the large x̄_0 of the noisiest steps.
        x0_hat_bar = (1.0 - lam) * x0_bar + lam * sp.y_bar
        x_next_bar = a * x0_hat_bar + d1 * z_bar + d2 * eps_bar
        return operator.V(x_next_bar).reshape(x_t.shape), x0
