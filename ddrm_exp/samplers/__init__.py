"""Samplers that restore x from y = Hx + z with a diffusion prior."""

from ddrm_exp.samplers.base import Sampler, SampleResult, WarmStart
from ddrm_exp.samplers.blind import InLoopKernelDDRM
from ddrm_exp.samplers.ddnm import DDNM
from ddrm_exp.samplers.ddrm import (
    DDRM,
    draw_noise,
    timestep_sequence,
    warm_schedule,
)
from ddrm_exp.samplers.diffpir import DiffPIR
from ddrm_exp.samplers.dps import DPS
from ddrm_exp.samplers.mcg import MCG, denoiser_gradient, mcg_gradient
from ddrm_exp.samplers.pigdm import PiGDM

__all__ = [
    "DDNM",
    "DDRM",
    "DPS",
    "MCG",
    "DiffPIR",
    "PiGDM",
    "InLoopKernelDDRM",
    "SampleResult",
    "Sampler",
    "WarmStart",
    "denoiser_gradient",
    "draw_noise",
    "mcg_gradient",
    "timestep_sequence",
    "warm_schedule",
]
