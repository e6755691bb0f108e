"""Diffusion priors: ε-prediction networks with their schedules."""

from ddrm_exp.models.base import DiffusionPrior
from ddrm_exp.models.schedule import Schedule

__all__ = ["DiffusionPrior", "Schedule"]
