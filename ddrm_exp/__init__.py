"""ddrm_exp: Denoising Diffusion Restoration Models as a Hydra experiment runner and a library.

Library use::

    import torch
    import ddrm_exp

    prior = ddrm_exp.load_prior("tiny")                      # any model=... of the CLI
    H = ddrm_exp.load_operator("sr4", image_size=64)         # any degradation=...
    y = H.H(x.flatten(1)) + 2 * 0.05 * torch.randn(x.shape[0], H.m)   # x in [-1, 1]
    x_hat = ddrm_exp.DDRM(timesteps=20, eta=0.85, eta_b=1.0).sample(prior, H, y, sigma_y=0.05).x0
"""

from ddrm_exp.errors import ConfigError
from ddrm_exp.library import load_operator, load_prior
from ddrm_exp.models.base import DiffusionPrior
from ddrm_exp.models.schedule import Schedule
from ddrm_exp.samplers.ddrm import DDRM, SampleResult
from ddrm_exp.samplers.mcg import MCG

__all__ = [
    "DDRM",
    "MCG",
    "ConfigError",
    "DiffusionPrior",
    "SampleResult",
    "Schedule",
    "load_operator",
    "load_prior",
]
__version__ = "0.1.0"
