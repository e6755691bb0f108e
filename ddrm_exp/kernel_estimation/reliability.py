"""Whether an estimated blur kernel can be trusted, judged without the sharp frame.

A uniform blur is the same everywhere in the frame, so a reliable estimate is found again on
any large part of it. :func:`crop_agreement` estimates the kernel once more on the four corner
crops of each frame (each ``crop`` of its height and width; real blur of a crop is valid blur
too) and returns how well those estimates agree with the whole frame's (mean kernel NCC, 1 =
the same kernel up to a shift). :class:`NoHarmRule` turns that and the estimate's spread into
a per-frame decision: restore it, or return the blurry frame as it is (deblurring with a wrong
kernel, or restoring a barely blurred frame with a prior whose own error is larger than the
blur's, makes the frame worse than doing nothing). The run's measurement policy applies it
(:mod:`ddrm_exp.run.measurement`, ``kernel_estimator.no_harm``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from ddrm_exp.degradations._checks import as_float
from ddrm_exp.degradations.kernels2d import normalized_cross_correlation
from ddrm_exp.errors import ConfigError
from ddrm_exp.kernel_estimation.classical import kernel_spread

__all__ = ["FALLBACKS", "NoHarmRule", "corner_crops", "crop_agreement", "fallback_kernel"]

FALLBACKS = ("blurry", "wiener", "richardson_lucy")


def corner_crops(images: Tensor, crop: float) -> list[Tensor]:
    """The four corner crops of ``(B, C, H, W)`` images, each ``crop`` of their height and
    width (overlapping when ``crop > 0.5``)."""
    h, w = images.shape[-2:]
    ch, cw = max(1, round(h * crop)), max(1, round(w * crop))
    return [images[..., r : r + ch, c : c + cw] for r in (0, h - ch) for c in (0, w - cw)]


def _reduced(estimator: Any, images: Tensor, min_coverage: float) -> Tensor:
    estimate = estimator.estimate(images)
    reduce = getattr(estimate, "reduce", None)
    kernels = reduce(min_coverage) if callable(reduce) else estimate.kernels
    return kernels.to(torch.float64).cpu().reshape(images.shape[0], *kernels.shape[-2:])


def crop_agreement(
    estimator: Any, images: Tensor, kernels: Tensor, crop: float, min_coverage: float = 0.025
) -> list[float]:
    """Mean NCC of each image's kernel (``kernels``, (B, kh, kw): the whole frame's estimate)
    with the same estimator's estimates on its four corner crops."""
    crops = [_reduced(estimator, c, min_coverage) for c in corner_crops(images, crop)]
    return [
        sum(normalized_cross_correlation(c[b], kernels[b]) for c in crops) / len(crops)
        for b in range(images.shape[0])
    ]


def fallback_kernel(kernel: Tensor, mix: float) -> Tensor:
    """``(1 - mix) * kernel + mix * delta`` (odd-sided ``(kh, kw)`` kernel summing to 1)."""
    delta = torch.zeros_like(kernel)
    delta[kernel.shape[0] // 2, kernel.shape[1] // 2] = 1
    return (1 - mix) * kernel + mix * delta


@dataclass(frozen=True)
class NoHarmRule:
    """Restore a frame only when its kernel estimate is trustworthy and its blur large enough.

    Attributes:
        min_agreement: frames whose :func:`crop_agreement` is below this are kept as they are
            (the estimate is not the frame's blur); 0 turns the check off (no crops estimated).
        min_spread: frames whose estimated :func:`kernel_spread` (px) is below this are kept
            (too little blur for the prior to gain); 0: off.
        crop: side of the corner crops as a fraction of the frame's.
        fallback: what a frame kept for mild blur returns: ``blurry`` (the frame as it is),
            ``wiener`` or ``richardson_lucy`` (that deconvolution with the milder kernel ``(1 -
            fallback_mix) * estimate + fallback_mix * delta``: a little sharper and, on
            validation frames, rarely worse). A frame kept for an unreliable kernel always
            returns the blurry frame: a kernel that is not the frame's blur is not used at all.
        fallback_mix: see ``fallback``.
    """

    min_agreement: float = 0.0
    min_spread: float = 0.0
    crop: float = 0.75
    fallback: str = "blurry"
    fallback_mix: float = 0.5

    def __post_init__(self) -> None:
        as_float(self.min_agreement, "kernel_estimator.no_harm.min_agreement", low=0.0)
        as_float(self.min_spread, "kernel_estimator.no_harm.min_spread", low=0.0)
        if self.fallback not in FALLBACKS:
            raise ConfigError(
                f"kernel_estimator.no_harm.fallback must be one of {', '.join(FALLBACKS)}, got "
                f"{self.fallback!r}."
            )
        as_float(self.fallback_mix, "kernel_estimator.no_harm.fallback_mix", low=0.0, high=1.0)
        if not 0.25 <= float(self.crop) < 1.0:
            raise ConfigError(
                f"kernel_estimator.no_harm.crop must be in [0.25, 1), got {self.crop!r}."
            )

    @classmethod
    def from_config(cls, node: Any) -> NoHarmRule | None:
        """The rule of a ``no_harm`` config node (a mapping), or None when it is null/empty."""
        if node is None or len(node) == 0:
            return None
        keys = ("min_agreement", "min_spread", "crop", "fallback", "fallback_mix")
        unknown = set(node) - set(keys)
        if unknown:
            raise ConfigError(
                f"kernel_estimator.no_harm has unknown keys {sorted(unknown)}; use "
                f"{', '.join(keys)}."
            )
        return cls(**{k: v if k == "fallback" else float(v) for k, v in node.items()})

    def fallback_kernel(self, kernel: Tensor) -> Tensor:
        """:func:`fallback_kernel` of ``kernel`` with this rule's ``fallback_mix``."""
        return fallback_kernel(kernel, self.fallback_mix)

    @property
    def needs_agreement(self) -> bool:
        return self.min_agreement > 0

    def decide(self, kernel: Tensor, agreement: float | None) -> str | None:
        """Why the frame is not restored (``"unreliable_kernel"``, ``"mild_blur"``), or None
        to restore it (:meth:`judge` of the kernel's spread)."""
        return self.judge(kernel_spread(kernel), agreement)

    def judge(self, spread: float, agreement: float | None) -> str | None:
        """:meth:`decide` from the estimate's spread (px) and crop agreement. An unreliable
        kernel comes first: its spread says nothing."""
        if self.needs_agreement:
            if agreement is None:
                raise ValueError("NoHarmRule.decide needs the crop agreement (min_agreement > 0)")
            if agreement < self.min_agreement:
                return "unreliable_kernel"
        if self.min_spread > 0 and spread < self.min_spread:
            return "mild_blur"
        return None

    def returns(self, why: str) -> str:
        """What a frame kept for ``why`` returns: ``blurry`` for an unreliable kernel (and a
        delta kernel: nothing to undo), ``fallback`` for mild blur."""
        return self.fallback if why == "mild_blur" else "blurry"
