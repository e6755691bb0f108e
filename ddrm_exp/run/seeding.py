"""Per-image randomness: each image's noise depends on (seed, dataset index, stream) only, so a
result does not depend on the batch, the shard or the order it is computed in."""

from __future__ import annotations

import numpy as np
import torch

# Streams of per-image randomness, kept apart so that e.g. changing the sampler's step count
# does not change the measurement noise.
STREAM_SAMPLER, STREAM_MEASUREMENT = 0, 1


def image_generator(seed: int, index: int, stream: int) -> torch.Generator:
    """A CPU generator for one image, seeded by (seed, dataset index, stream)."""
    state = np.random.SeedSequence([seed, index, stream]).generate_state(2, dtype=np.uint32)
    return torch.Generator().manual_seed(int(state[0]) << 32 | int(state[1]))


def image_generators(seed: int, indices: list[int], stream: int) -> list[torch.Generator]:
    return [image_generator(seed, i, stream) for i in indices]
