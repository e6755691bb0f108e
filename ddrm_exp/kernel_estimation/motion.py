"""Linear-motion kernels: the family a short exposure of a moving camera or scene draws.

Over one short exposure (BSD's long exposures are 8-24 ms) the motion is close to a straight
line at constant speed, so the blur is a uniform segment: two numbers (length, angle) instead
of ``kernel_size²`` free taps. A small, noisy frame does not pin down ``kernel_size²`` taps (at
64 px the free estimate's NCC with the true kernel is 0.7-0.85), but it does pin down two; the
estimator's kernel step can then pick the segment that fits its least squares best
(:func:`best_line`) instead of solving for every tap.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor

__all__ = ["LineBank", "best_line", "line_kernel"]


def line_kernel(
    length: float, angle: float, size: int, dtype: torch.dtype = torch.float64
) -> Tensor:
    """A ``(size, size)`` uniform segment of ``length`` px through the centre tap, at
    ``angle`` radians from the +x axis (towards +y), summing to 1.

    The segment is sampled every 0.1 px and each sample splatted bilinearly, so lengths and
    angles between whole pixels give kernels between the digital lines. Length 0 is the delta.
    """
    r = size // 2
    n = max(int(math.ceil(length / 0.1)), 0) + 1
    t = torch.linspace(-length / 2, length / 2, n, dtype=torch.float64)
    ys = r + t * math.sin(angle)
    xs = r + t * math.cos(angle)
    y0, x0 = ys.floor(), xs.floor()
    fy, fx = ys - y0, xs - x0
    k = torch.zeros(size + 1, size + 1, dtype=torch.float64)
    for dy, wy in ((0, 1 - fy), (1, fy)):
        for dx, wx in ((0, 1 - fx), (1, fx)):
            iy = (y0 + dy).long().clamp(0, size)
            ix = (x0 + dx).long().clamp(0, size)
            k.index_put_((iy, ix), wy * wx, accumulate=True)
    k = k[:size, :size]
    return (k / k.sum()).to(dtype)


@dataclass(frozen=True)
class LineBank:
    """Every segment of a ``size``-tap kernel on a grid of lengths and angles.

    ``kernels`` is ``(N, size * size)`` (row-major kernels), ``lengths`` and ``angles`` the
    ``(N,)`` parameters; the first entry is the delta. Lengths run from ``length_step`` to the
    longest segment the support holds (``size - 1``), angles over [0, π) (a centred segment
    is the same turned by π).
    """

    size: int
    kernels: Tensor
    lengths: Tensor
    angles: Tensor

    @classmethod
    def build(cls, size: int, length_step: float = 0.25, angle_step_deg: float = 3.0) -> LineBank:
        params = [(0.0, 0.0)]
        n_len = int(math.floor((size - 1) / length_step + 1e-9))
        n_ang = int(round(180.0 / angle_step_deg))
        for i in range(1, n_len + 1):
            for j in range(n_ang):
                params.append((i * length_step, math.radians(j * angle_step_deg)))
        kernels = torch.stack([line_kernel(ln, an, size).reshape(-1) for ln, an in params])
        lengths = torch.tensor([p[0] for p in params], dtype=torch.float64)
        angles = torch.tensor([p[1] for p in params], dtype=torch.float64)
        return cls(size, kernels, lengths, angles)


_BANKS: dict[int, LineBank] = {}
_KERNELS: dict[tuple[int, torch.dtype, torch.device], Tensor] = {}


def _bank(size: int) -> LineBank:
    # Built once per size: a 31-tap bank is 7,000 kernels, which takes a second to draw.
    if size not in _BANKS:
        _BANKS[size] = LineBank.build(size)
    return _BANKS[size]


def _bank_kernels(size: int, dtype: torch.dtype, device: torch.device) -> Tensor:
    # The estimator asks every kernel step (tens a frame): convert the bank once, not each time.
    key = (size, dtype, device)
    if key not in _KERNELS:
        _KERNELS[key] = _bank(size).kernels.to(device=device, dtype=dtype)
    return _KERNELS[key]


def best_line(gram: Tensor, rhs: Tensor, size: int) -> Tensor:
    """The segment ``k`` of the bank minimising ``kᵀ gram k - 2 rhsᵀ k``: the least squares
    ``||conv(latent, k) - blurry||²`` (up to a constant) whose normal equations are
    ``gram k = rhs``, over row-major ``(size, size)`` kernels. Returns ``(size, size)`` in
    ``gram``'s dtype and device."""
    bank = _bank_kernels(size, gram.dtype, gram.device)
    cost = ((bank @ gram) * bank).sum(1) - 2 * (bank @ rhs)
    return bank[int(torch.argmin(cost))].reshape(size, size)
