"""The one interface every diffusion prior implements for the samplers."""

from __future__ import annotations

import torch
from torch import Tensor, nn

from ddrm_exp.models.schedule import Schedule

PREDICTIONS = ("eps", "v")


class DiffusionPrior(nn.Module):
    """An ε-prediction network together with its β schedule and image geometry.

    ``network(x_t, t)`` takes images in [-1, 1] of shape (B, C, H, W) and timesteps ``t`` as a
    float tensor of shape (B,), and returns ε (B, C, H, W) or, for networks with a learned
    variance, (B, 2C, H, W) of which the first C channels are ε.

    ``prediction="v"``: the network predicts ``v = √ᾱ ε − √(1−ᾱ) x_0`` (Salimans & Ho, 2022)
    and :meth:`eps` converts, ``ε = √ᾱ v + √(1−ᾱ) x_t``, so every sampler sees ε. At the noisiest
    steps an ε-network's error reaches x̂_0 divided by √ᾱ_t (≈ 0.01 at t = 950); a v-network
    predicts what is essentially −x̂_0 there, so its x̂_0 stays bounded.
    """

    def __init__(
        self,
        network: nn.Module,
        schedule: Schedule,
        image_size: int | tuple[int, int],
        channels: int = 3,
        name: str = "prior",
        prediction: str = "eps",
    ) -> None:
        super().__init__()
        if prediction not in PREDICTIONS:
            raise ValueError(f"prediction must be one of {PREDICTIONS}, got {prediction!r}")
        self.prediction = prediction
        abar = schedule.alphas_cumprod
        # Buffers, so they follow the prior to its device; float32 like the network's output.
        self.register_buffer("sqrt_alpha_bar", abar.sqrt().float(), persistent=False)
        self.register_buffer(
            "sqrt_one_minus_alpha_bar", (1 - abar).sqrt().float(), persistent=False
        )
        self.network = network
        self.schedule = schedule
        self.image_size: tuple[int, int] = (
            (image_size, image_size) if isinstance(image_size, int) else tuple(image_size)
        )
        self.channels = channels
        self.name = name

    @property
    def shape(self) -> tuple[int, int, int]:
        return (self.channels, *self.image_size)

    def eps(self, x_t: Tensor, t: Tensor) -> Tensor:
        """Predicted noise ε̂(x_t, t), shape (B, C, H, W)."""
        out = self.network(x_t, t)
        if out.shape[1] == 2 * self.channels:
            out = out[:, : self.channels]
        if self.prediction == "v":
            idx = t.long()
            a = self.sqrt_alpha_bar[idx].view(-1, 1, 1, 1)
            b = self.sqrt_one_minus_alpha_bar[idx].view(-1, 1, 1, 1)
            out = a * out + b * x_t
        return out

    def forward(self, x_t: Tensor, t: Tensor) -> Tensor:
        return self.eps(x_t, t)

    @property
    def device(self) -> torch.device:
        for p in self.parameters():
            return p.device
        for b in self.buffers():
            return b.device
        return torch.device("cpu")
