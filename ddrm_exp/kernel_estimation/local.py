"""Patch-wise kernel estimation: one kernel per cell of a grid, with its share of the image.

Real blur (camera shake, moving objects) varies across the frame. Running a global estimator
on each cell of a grid gives ``K = rows * cols`` local kernels with coverage masks -- the same
shape of answer as the non-uniform learned estimator the report uses -- so the report's
reduction (:func:`~ddrm_exp.kernel_estimation.base.reduce_kernels`) applies unchanged.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor

from ddrm_exp.degradations._checks import as_float
from ddrm_exp.errors import ConfigError
from ddrm_exp.kernel_estimation.base import (
    KernelEstimate,
    KernelEstimator,
    as_image_batch,
    as_init_kernels,
    reduce_kernels,
)

__all__ = ["LocalEstimator", "grid_bounds", "hat_weights"]


def grid_bounds(length: int, cells: int) -> list[tuple[int, int]]:
    """``cells`` contiguous ``[start, stop)`` ranges covering ``0 .. length``, near equal."""
    edges = torch.linspace(0, length, cells + 1).round().long().tolist()
    return list(zip(edges[:-1], edges[1:], strict=True))


def hat_weights(length: int, bounds: Sequence[tuple[int, int]]) -> Tensor:
    """``(cells, length)`` piecewise-linear weights peaking at each cell's centre, summing to 1.

    Between two neighbouring centres the weight moves linearly from one cell to the other;
    before the first and after the last centre that cell takes everything.
    """
    centres = torch.tensor([(a + b - 1) / 2 for a, b in bounds], dtype=torch.float64)
    pos = torch.arange(length, dtype=torch.float64)
    n = len(bounds)
    w = torch.zeros(n, length, dtype=torch.float64)
    if n == 1:
        return w + 1
    for i in range(n):
        left = (
            torch.ones(length, dtype=torch.float64)
            if i == 0
            else ((pos - centres[i - 1]) / (centres[i] - centres[i - 1])).clamp(0, 1)
        )
        right = (
            torch.ones(length, dtype=torch.float64)
            if i == n - 1
            else ((centres[i + 1] - pos) / (centres[i + 1] - centres[i])).clamp(0, 1)
        )
        w[i] = torch.minimum(left, right)
    return w / w.sum(0, keepdim=True)


class LocalEstimator(KernelEstimator):
    """Runs ``inner`` on each cell of a ``grid`` (rows, cols) and returns the kernels together.

    Args:
        inner: any estimator (e.g. :class:`~ddrm_exp.kernel_estimation.ClassicalEstimator`).
            If it returns several kernels for a cell they are first reduced to one with
            :func:`reduce_kernels` (default threshold).
        grid: cells along the height and along the width.
        overlap: each cell is estimated from a patch extended on every side by this fraction of
            the cell size (clipped to the image), so edges near the cell border still count.
        kernel_size: the inner estimator's kernel size, repeated (and checked) here; the
            config sets the inner one from it.
        soft_masks: ``False`` gives hard masks (1 on the cell, 0 elsewhere); ``True`` gives
            bilinear "hat" weights peaking at each cell centre, which blend neighbouring
            kernels smoothly. Either way the masks sum to 1 at every pixel, and each kernel's
            coverage is its cell's share of the image.

    ``estimate(blurry, init)``: a ``(B, kh, kw)`` initial kernel per image (e.g. the previous
    video frame's reduced kernel) is passed to ``inner`` for every patch of that image, so each
    cell warm-starts from the same kernel. It is checked here (any size with an ``inner`` that
    has no ``kernel_size``; else as ``inner`` sizes it); ``init=None`` calls
    ``inner.estimate(patch)`` exactly as before, so an ``inner`` without ``init`` still works.
    """

    def __init__(
        self,
        inner: KernelEstimator,
        grid: Sequence[int] = (3, 3),
        overlap: float = 0.25,
        soft_masks: bool = False,
        kernel_size: int | None = None,
    ) -> None:
        if not isinstance(inner, KernelEstimator):
            raise ConfigError(
                f"kernel_estimator.inner must be a kernel estimator, got {type(inner).__name__}."
            )
        # The config passes the inner estimator's size here too (inner.kernel_size interpolates
        # it), so that kernel_estimator.kernel_size=... is one override for every estimator.
        inner_size = getattr(inner, "kernel_size", None)
        if kernel_size is not None and inner_size is not None and kernel_size != inner_size:
            raise ConfigError(
                f"kernel_estimator.kernel_size={kernel_size} but kernel_estimator.inner."
                f"kernel_size={inner_size}; set kernel_estimator.kernel_size only."
            )
        self.inner = inner
        self.grid = _as_grid(grid)
        self.overlap = as_float(overlap, "kernel_estimator.overlap", low=0.0, high=1.0)
        self.soft_masks = bool(soft_masks)
        self.method = f"local({inner.method})"

    def patches(self, height: int, width: int) -> list[tuple[slice, slice]]:
        """The ``(rows, cols)`` slices of the patch each cell's kernel is estimated from."""
        out = []
        for r0, r1 in grid_bounds(height, self.grid[0]):
            for c0, c1 in grid_bounds(width, self.grid[1]):
                dr = int(round(self.overlap * (r1 - r0)))
                dc = int(round(self.overlap * (c1 - c0)))
                rows = slice(max(0, r0 - dr), min(height, r1 + dr))
                cols = slice(max(0, c0 - dc), min(width, c1 + dc))
                out.append((rows, cols))
        return out

    def masks(self, height: int, width: int) -> Tensor:
        """``(rows * cols, H, W)`` float32 weights, cell by cell in row-major order."""
        rb, cb = grid_bounds(height, self.grid[0]), grid_bounds(width, self.grid[1])
        if self.soft_masks:
            wr, wc = hat_weights(height, rb), hat_weights(width, cb)
        else:
            wr = torch.zeros(len(rb), height, dtype=torch.float64)
            wc = torch.zeros(len(cb), width, dtype=torch.float64)
            for i, (a, b) in enumerate(rb):
                wr[i, a:b] = 1
            for j, (a, b) in enumerate(cb):
                wc[j, a:b] = 1
        return torch.einsum("ih,jw->ijhw", wr, wc).reshape(-1, height, width).float()

    def estimate(self, blurry: Tensor, init: Tensor | None = None) -> KernelEstimate:
        x = as_image_batch(blurry)
        b, _, h, w = x.shape
        gh, gw = self.grid
        if gh > h or gw > w:
            raise ConfigError(
                f"The local estimator grid {gh}x{gw} has more cells than the {h}x{w} image has "
                "pixels along one side; use a smaller kernel_estimator.grid."
            )
        patches = self.patches(h, w)
        ks = getattr(self.inner, "kernel_size", None)
        if isinstance(ks, int):
            smallest = min(min(r.stop - r.start, c.stop - c.start) for r, c in patches)
            if smallest < ks:
                raise ConfigError(
                    f"With kernel_estimator.grid={list(self.grid)} the patches of this {h}x{w} "
                    f"image are only {smallest} pixels wide, smaller than the kernel "
                    f"(kernel_size={ks}); use a coarser grid, a larger overlap or a smaller "
                    "kernel_size."
                )
        starts = as_init_kernels(init, b, ks if isinstance(ks, int) else None)
        kernels: list[Tensor] = []
        seconds = torch.zeros(b, dtype=torch.float64)
        for rows, cols in patches:
            patch = x[:, :, rows, cols]
            if starts is None:
                part = self.inner.estimate(patch)
            else:
                part = self.inner.estimate(patch, init=starts)
            k = part.kernels[:, 0] if part.num_kernels == 1 else reduce_kernels(part)
            kernels.append(k)
            seconds += torch.tensor(part.seconds, dtype=torch.float64)
        masks = self.masks(h, w)
        info: dict[str, Any] = {
            "grid": list(self.grid),
            "overlap": self.overlap,
            "soft_masks": self.soft_masks,
            "inner": getattr(self.inner, "params", dict)(),
            "warm_start": starts is not None,
        }
        return KernelEstimate(
            kernels=torch.stack(kernels, dim=1),
            masks=masks.unsqueeze(0).expand(b, -1, -1, -1).contiguous(),
            seconds=tuple(seconds.tolist()),
            method=self.method,
            info=info,
        )


def _as_grid(grid: Any) -> tuple[int, int]:
    try:
        values = [int(v) for v in grid]
        exact = all(float(v) == int(v) for v in grid)
    except (TypeError, ValueError):
        values, exact = [], False
    if len(values) != 2 or not exact or min(values) < 1:
        raise ConfigError(
            f"kernel_estimator.grid must be two positive integers [rows, cols], got {grid!r}."
        )
    return values[0], values[1]
