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

import math
from dataclasses import dataclass, fields
from typing import Any

import numpy as np
import torch
from numpy.lib.stride_tricks import sliding_window_view
from torch import Tensor

from ddrm_exp.degradations._checks import as_float
from ddrm_exp.degradations.kernels2d import normalized_cross_correlation
from ddrm_exp.errors import ConfigError
from ddrm_exp.kernel_estimation.classical import kernel_spread

__all__ = [
    "FALLBACKS",
    "NoHarmRule",
    "corner_crops",
    "crop_agreement",
    "fallback_kernel",
    "noise_sigma",
]

FALLBACKS = ("blurry", "wiener", "richardson_lucy")


def noise_sigma(images: Tensor, patch: int = 5) -> list[float]:
    """Each image's white-noise standard deviation in [0, 1] pixel units (``noise.sigma_y``'s),
    estimated from the image alone by the eigenvalues of its patches' covariance (Chen, Zhu &
    Heng, ICCV 2015): image content lives in a few directions of the ``patch x patch x C``
    patch space and white noise in all of them, so the noise variance is the mean of the
    smallest eigenvalues, taken as many as have their mean equal to their median.

    ``images``: ``(B, C, H, W)`` in [-1, 1]. Fine texture, which a wavelet median reads as
    noise (up to 0.024 on clean 64-px frames of mildly blurred photos), stays out of the
    smallest eigenvalues: those frames read <= 0.0095, median 0.0013, and ``sigma_y`` 0.005 /
    0.01 / 0.02 added reads 0.0048-0.0077 / 0.0081-0.0128 / 0.0166-0.0223 (the selection trees).
    """
    a = ((images.detach().to("cpu", torch.float64) + 1.0) / 2.0).clamp(0.0, 1.0).numpy()
    out = []
    for img in a:
        c = img.shape[0]
        rows = sliding_window_view(img, (c, patch, patch))[0].reshape(-1, c * patch * patch)
        ev = np.sort(np.linalg.eigvalsh(np.cov(rows, rowvar=False)))
        variance = float(ev[0])
        for m in range(len(ev), 0, -1):
            mean = ev[:m].mean()
            if np.count_nonzero(ev[:m] > mean) == np.count_nonzero(ev[:m] < mean):
                variance = float(mean)
                break
        out.append(math.sqrt(max(variance, 0.0)))
    return out


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
        noisy_sigma: a mild-blur frame whose noise level is at least this returns
            ``noisy_fallback`` with ``noisy_fallback_mix`` instead (0: off): deconvolution
            sharpens the noise with the image. The noise level is the smaller of the frame's
            own estimate (:func:`noise_sigma`, [0, 1] units) and the level the run assumes
            (``noise.assumed_sigma_y``): fine texture reads as noise on a clean frame, and a
            run that assumes none has said there is none.
        noisy_fallback, noisy_fallback_mix: as ``fallback`` and ``fallback_mix``, for noisy
            frames.
        sample_sigma: frames whose noise level is at least this are restored by the sampler
            whatever their blur (0: off): with their estimate, or, where it is unreliable, with
            a delta kernel (denoising only). At such noise the prior's denoising is what gains.
    """

    min_agreement: float = 0.0
    min_spread: float = 0.0
    crop: float = 0.75
    fallback: str = "blurry"
    fallback_mix: float = 0.5
    noisy_sigma: float = 0.0
    noisy_fallback: str = "wiener"
    noisy_fallback_mix: float = 0.5
    sample_sigma: float = 0.0

    def __post_init__(self) -> None:
        as_float(self.min_agreement, "kernel_estimator.no_harm.min_agreement", low=0.0)
        as_float(self.min_spread, "kernel_estimator.no_harm.min_spread", low=0.0)
        as_float(self.noisy_sigma, "kernel_estimator.no_harm.noisy_sigma", low=0.0)
        as_float(self.sample_sigma, "kernel_estimator.no_harm.sample_sigma", low=0.0)
        for key in ("fallback", "noisy_fallback"):
            if getattr(self, key) not in FALLBACKS:
                raise ConfigError(
                    f"kernel_estimator.no_harm.{key} must be one of {', '.join(FALLBACKS)}, "
                    f"got {getattr(self, key)!r}."
                )
            mix = f"{key}_mix"
            as_float(getattr(self, mix), f"kernel_estimator.no_harm.{mix}", low=0.0, high=1.0)
        if not 0.25 <= float(self.crop) < 1.0:
            raise ConfigError(
                f"kernel_estimator.no_harm.crop must be in [0.25, 1), got {self.crop!r}."
            )

    @classmethod
    def from_config(cls, node: Any) -> NoHarmRule | None:
        """The rule of a ``no_harm`` config node (a mapping), or None when it is null/empty."""
        if node is None or len(node) == 0:
            return None
        keys = [f.name for f in fields(cls)]
        unknown = set(node) - set(keys)
        if unknown:
            raise ConfigError(
                f"kernel_estimator.no_harm has unknown keys {sorted(unknown)}; use "
                f"{', '.join(keys)}."
            )
        methods = ("fallback", "noisy_fallback")
        return cls(
            **{
                k: v if k in methods else as_float(v, f"kernel_estimator.no_harm.{k}")
                for k, v in node.items()
            }
        )

    @property
    def needs_noise(self) -> bool:
        return self.noisy_sigma > 0 or self.sample_sigma > 0

    @staticmethod
    def _reaches(noise: float | None, threshold: float) -> bool:
        if threshold <= 0:
            return False
        if noise is None:
            raise ValueError("NoHarmRule needs the frame's noise level (noisy/sample_sigma > 0)")
        return noise >= threshold

    def is_noisy(self, noise: float | None) -> bool:
        """Whether a frame of noise level ``noise`` takes the noisy fallback."""
        return self._reaches(noise, self.noisy_sigma)

    def samples(self, noise: float | None) -> bool:
        """Whether a frame of noise level ``noise`` is restored by the sampler, kept or not."""
        return self._reaches(noise, self.sample_sigma)

    def fallback_kernel(self, kernel: Tensor, noise: float | None = None) -> Tensor:
        """:func:`fallback_kernel` of ``kernel`` with the mix of the frame's fallback."""
        mix = self.noisy_fallback_mix if self.is_noisy(noise) else self.fallback_mix
        return fallback_kernel(kernel, mix)

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

    def returns(self, why: str, noise: float | None = None) -> str:
        """What a frame kept for ``why`` returns: ``blurry`` for an unreliable kernel (and a
        delta kernel: nothing to undo), for mild blur ``fallback``, or ``noisy_fallback``
        when its estimated noise ``noise`` reaches ``noisy_sigma``."""
        if why != "mild_blur":
            return "blurry"
        return self.noisy_fallback if self.is_noisy(noise) else self.fallback
