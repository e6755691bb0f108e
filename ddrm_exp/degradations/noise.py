"""Noise drawn per image, so an image's noise does not depend on its batch; and the one place a
measurement gets its noise (``y = Hx + σ_y z``, used by every operator and by blur datasets)."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

GeneratorArg = torch.Generator | Sequence[torch.Generator] | None


def draw_noise(
    shape: Sequence[int], generator: GeneratorArg, device: torch.device, dtype: torch.dtype
) -> Tensor:
    """Standard normal noise of ``shape`` (B, ...); one generator per image when a list is given."""
    if generator is None or isinstance(generator, torch.Generator):
        gen_device = generator.device if generator is not None else device
        z = torch.randn(*shape, generator=generator, device=gen_device, dtype=dtype)
        return z.to(device)
    if len(generator) != shape[0]:
        raise ValueError(f"got {len(generator)} generators for a batch of {shape[0]}")
    if device.type == "cuda" and all(g.device.type == "cpu" for g in generator):
        # Drawn into pinned memory and copied without blocking: a pageable host->device copy
        # would make the host wait for the GPU every step, so it could never queue ahead.
        # The values are those of the CPU generators, identical on every device.
        buf = torch.empty(tuple(shape), dtype=dtype, pin_memory=True)
        for i, g in enumerate(generator):
            torch.randn(*shape[1:], generator=g, dtype=dtype, out=buf[i])
        return buf.to(device, non_blocking=True)
    parts = [torch.randn(*shape[1:], generator=g, device=g.device, dtype=dtype) for g in generator]
    return torch.stack(parts).to(device)


def add_measurement_noise(y: Tensor, sigma_y: float, generators: GeneratorArg) -> Tensor:
    """``y + σ_y z`` on images in [-1, 1], so the noise std there is 2σ_y (σ_y in [0, 1]
    pixel units); nothing is drawn for σ_y = 0."""
    if sigma_y > 0:
        y = y + 2.0 * sigma_y * draw_noise(tuple(y.shape), generators, y.device, y.dtype)
    return y
