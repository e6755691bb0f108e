"""Samplers that restore x from y = Hx + z with a diffusion prior."""

from ddrm_exp.samplers.ddrm import DDRM, SampleResult, draw_noise, timestep_sequence

__all__ = ["DDRM", "SampleResult", "draw_noise", "timestep_sequence"]
