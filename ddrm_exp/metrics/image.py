"""PSNR, SSIM and LPIPS on images in [-1, 1], computed on [0, 1] after clamping."""

from __future__ import annotations

import logging
import math
import warnings

import numpy as np
import torch
from skimage.metrics import structural_similarity
from torch import Tensor

log = logging.getLogger(__name__)


def to_unit(x: Tensor) -> Tensor:
    """[-1, 1] -> [0, 1], clamped."""
    return ((x + 1.0) / 2.0).clamp(0.0, 1.0)


def psnr(x: Tensor, ref: Tensor) -> list[float]:
    """PSNR in dB per image of a (B, C, H, W) batch; ``inf`` for identical images."""
    mse = (to_unit(x).double() - to_unit(ref).double()).pow(2).flatten(1).mean(1)
    return [math.inf if m == 0 else float(10.0 * math.log10(1.0 / m)) for m in mse.tolist()]


def ssim(x: Tensor, ref: Tensor) -> list[float]:
    """SSIM (scikit-image, Gaussian-free default window, data range 1) per image."""
    a = to_unit(x).detach().cpu().numpy().astype(np.float64)
    b = to_unit(ref).detach().cpu().numpy().astype(np.float64)
    return [
        float(structural_similarity(ai, bi, channel_axis=0, data_range=1.0))
        for ai, bi in zip(a, b, strict=True)
    ]


class LPIPSMetric:
    """LPIPS with the AlexNet backbone, or ``None`` values when it cannot be loaded.

    The lpips package ships its linear heads, but the AlexNet backbone comes from torchvision's
    download cache. Offline and with an empty cache that download fails: we say so once and
    record LPIPS as null instead of stopping the run.
    """

    def __init__(self, device: torch.device, enabled: bool = True) -> None:
        self.device = device
        self.model: torch.nn.Module | None = None
        self.reason: str | None = None
        if not enabled:
            self.reason = "disabled by metrics.lpips=false"
            return
        try:
            import lpips  # imported lazily: it is slow and prints on import

            with warnings.catch_warnings():
                # lpips calls torchvision's deprecated `pretrained=` API; not ours to fix
                warnings.simplefilter("ignore", UserWarning)
                self.model = lpips.LPIPS(net="alex", verbose=False).to(device).eval()
        except Exception as exc:  # offline, no cached backbone, or any load failure
            self.reason = (
                f"LPIPS unavailable ({type(exc).__name__}: {exc}); its AlexNet backbone must be "
                "in torch's hub cache (run once with network access). Recording lpips as null."
            )
            log.warning(self.reason)

    @property
    def available(self) -> bool:
        return self.model is not None

    def __call__(self, x: Tensor, ref: Tensor) -> list[float | None]:
        if self.model is None:
            return [None] * x.shape[0]
        with torch.no_grad():
            d = self.model(x.clamp(-1, 1).to(self.device), ref.clamp(-1, 1).to(self.device))
        return [float(v) for v in d.flatten().tolist()]
