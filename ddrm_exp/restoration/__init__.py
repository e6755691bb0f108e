"""Restoration methods that are not diffusion samplers (the classical baselines of the tables)."""

from ddrm_exp.restoration.classical import (
    BORDERS,
    RL_ITERATIONS,
    WIENER_BALANCE,
    classical_metrics,
    richardson_lucy_deconvolve,
    wiener_deconvolve,
)

__all__ = [
    "BORDERS",
    "RL_ITERATIONS",
    "WIENER_BALANCE",
    "classical_metrics",
    "richardson_lucy_deconvolve",
    "wiener_deconvolve",
]
