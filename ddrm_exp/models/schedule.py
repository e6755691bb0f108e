"""The diffusion noise schedule shared by every prior."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor


@dataclass(frozen=True)
class Schedule:
    """A discrete DDPM schedule ``β_1..β_T`` and ``ᾱ_t = Π_{s<=t} (1 - β_s)``.

    Timesteps are indexed ``0..T-1`` as in the official code; ``alpha_bar(-1) = 1`` is the
    clean image the sampler's last step lands on.
    """

    betas: Tensor  # (T,), float64

    @classmethod
    def linear(
        cls, beta_start: float = 1e-4, beta_end: float = 0.02, num_timesteps: int = 1000
    ) -> Schedule:
        return cls(torch.linspace(beta_start, beta_end, num_timesteps, dtype=torch.float64))

    @property
    def num_timesteps(self) -> int:
        return int(self.betas.shape[0])

    @property
    def alphas_cumprod(self) -> Tensor:
        return torch.cumprod(1.0 - self.betas, dim=0)

    def alpha_bar(self, t: int) -> float:
        """ᾱ_t as a Python float, with ``alpha_bar(-1) == 1``."""
        if t < 0:
            return 1.0
        return float(self.alphas_cumprod[t])
