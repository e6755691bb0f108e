"""Samplers that restore x from y = Hx + z with a diffusion prior."""

from ddrm_exp.samplers.blind import InLoopKernelDDRM
from ddrm_exp.samplers.ddrm import DDRM, SampleResult, draw_noise, timestep_sequence
from ddrm_exp.samplers.mcg import MCG, mcg_gradient

__all__ = [
    "DDRM",
    "MCG",
    "InLoopKernelDDRM",
    "SampleResult",
    "draw_noise",
    "mcg_gradient",
    "timestep_sequence",
]
