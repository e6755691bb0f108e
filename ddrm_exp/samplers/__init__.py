"""Samplers that restore x from y = Hx + z with a diffusion prior."""

from ddrm_exp.samplers.blind import InLoopKernelDDRM
from ddrm_exp.samplers.ddrm import (
    DDRM,
    SampleResult,
    WarmStart,
    draw_noise,
    timestep_sequence,
    warm_schedule,
)
from ddrm_exp.samplers.mcg import MCG, mcg_gradient

__all__ = [
    "DDRM",
    "MCG",
    "InLoopKernelDDRM",
    "SampleResult",
    "WarmStart",
    "draw_noise",
    "mcg_gradient",
    "timestep_sequence",
    "warm_schedule",
]
