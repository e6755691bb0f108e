"""DiffPIR, denoising diffusion models for plug-and-play image restoration (Zhu, Zhang, Liang,
Cao, Wen, Timofte, Van Gool, CVPRW 2023), Algorithm 1.

Half-quadratic splitting with the diffusion network as the denoiser: each step

    x_0^(t) = x̂_0(x_t)                                                 (eq. 6a, the prior step)
    x̂_0     = argmin_x ‖y − H x‖² + ρ_t ‖x − x_0^(t)‖²,  ρ_t = λ σ_n² / σ̄_t²      (eq. 6b, 13)
    ε̂'      = (x_t − √ᾱ_t x̂_0) / √(1−ᾱ_t)                                     (eq. 14)
    x_{t-1} = √ᾱ_{t-1} x̂_0 + √(1−ᾱ_{t-1}) (√(1−ζ) ε̂' + √ζ z)                 (eq. 15)

with ``σ̄_t = √(1−ᾱ_t)/√ᾱ_t``. The data step is closed form through the SVD: on a measured
component ``x̄ = (s Uᵀy + ρ x̄_0)/(s² + ρ)``, elsewhere ``x̄_0`` is kept. Units as in the
authors' code: σ_n is the measurement noise in [0, 1] pixel units floored at 0.001
(``max(0.001, noise_level_img)``), σ̄_t is in the network's [-1, 1] units; the minimiser does not
depend on the images' scale, so λ means what it means there. ζ = 1 re-noises with fresh noise
only (DDPM-like), ζ = 0 is deterministic (DDIM-like).

Authors' defaults (configs/{sisr,deblur,inpaint}.yaml of the released code): λ = 1 everywhere;
ζ = 0.1 for super-resolution and deblurring (σ_n = 12.75/255, 100 steps), ζ = 1 for inpainting
(σ_n = 0, 20 steps). Their timesteps are spaced quadratically; ours are DDRM's uniform ones, so
the samplers share a schedule. DiffPIR is a MAP-style (HQS) restorer, not a posterior sampler:
as σ_n → 0 its last data step makes the result consistent with y (``H x̂ → y``); with
σ_n > 0 it stays a Tikhonov-regularised compromise.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from ddrm_exp.degradations.base import HFunctions
from ddrm_exp.samplers.ddrm import Problem, _Spectral
from ddrm_exp.samplers.xt_loop import (
    Step,
    XtSampler,
    check_nonnegative,
    check_unit,
    denoise,
    flat,
)

# The authors' floor on σ_n: ρ_t > 0 keeps the data step well posed for noiseless y.
SIGMA_FLOOR = 1e-3


class DiffPIR(XtSampler):
    """DiffPIR with ``timesteps``, ``lam`` (λ) and ``zeta`` (ζ)."""

    name = "diffpir"
    PARAMS = (*XtSampler.PARAMS, "lam", "zeta")

    def __init__(self, timesteps: int = 100, lam: float = 1.0, zeta: float = 0.1) -> None:
        super().__init__(timesteps)
        self.lam = check_nonnegative("lam", lam)
        self.zeta = check_unit("zeta", zeta)

    @staticmethod
    def data_step(operator: HFunctions, sp: _Spectral, x0: Tensor, rho: float) -> Tensor:
        """``argmin_x ‖y − Hx‖² + ρ ‖x − x0‖²`` through the SVD, (B, C, H, W)."""
        x0_bar = operator.Vt(flat(x0))
        num = sp.s * sp.ut_y + rho * x0_bar
        x_bar = torch.where(sp.measured, num / (sp.s**2 + rho), x0_bar)
        return operator.V(x_bar).reshape(x0.shape)

    def step(self, problem: Problem, x_t: Tensor, s: Step, z: Tensor) -> tuple[Tensor, Tensor]:
        _, x0 = denoise(problem.prior, x_t, s)
        sigma_n = max(SIGMA_FLOOR, problem.sigma_y)  # [0, 1] pixel units, floored
        sigma_bar2 = (1.0 - s.a_t) / s.a_t
        rho = self.lam * sigma_n**2 / sigma_bar2
        x0_hat = self.data_step(problem.operator, problem.sp, x0, rho)
        eps_hat = (x_t - math.sqrt(s.a_t) * x0_hat) / math.sqrt(1.0 - s.a_t)
        noise_part = math.sqrt(1.0 - self.zeta) * eps_hat + math.sqrt(self.zeta) * z
        x_next = math.sqrt(s.a_next) * x0_hat + math.sqrt(1.0 - s.a_next) * noise_part
        return x_next, x0
