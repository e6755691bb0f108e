"""PSNR, SSIM and LPIPS on images in [-1, 1], computed on [0, 1] after clamping."""

from __future__ import annotations

import logging
import math
import warnings
from pathlib import Path

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


# What a process has already been told about LPIPS: a multirun's jobs share one process.
_TOLD: set[str] = set()


def alexnet_cache_path() -> tuple[Path, str]:
    """Where torchvision looks for the AlexNet weights LPIPS needs, and their download URL."""
    from torchvision.models import AlexNet_Weights

    url = AlexNet_Weights.IMAGENET1K_V1.url
    return Path(torch.hub.get_dir()) / "checkpoints" / url.rsplit("/", 1)[1], url


class LPIPSMetric:
    """LPIPS with the AlexNet backbone, or ``None`` values when it cannot be loaded.

    The lpips package ships its linear heads, but the AlexNet backbone comes from torchvision's
    hub cache. Nothing is downloaded at run time: without the file we say once per process
    where to put it (and how to turn LPIPS off) and record LPIPS as null.
    """

    def __init__(self, device: torch.device, enabled: bool = True) -> None:
        self.device = device
        self.model: torch.nn.Module | None = None
        self.reason: str | None = None
        if not enabled:
            self.reason = "disabled by metrics.lpips=false"
            return
        path, url = alexnet_cache_path()
        if not path.is_file():
            # Checked here, not left to torchvision: it would print "Downloading: ..." and try
            # the network on every run.
            self.reason = (
                f"LPIPS off: its AlexNet backbone is not at {path}. Download {url} to that path "
                "(TORCH_HOME moves it) to get LPIPS, or set metrics.lpips=false to skip it "
                "without this message. Recording lpips as null."
            )
            self._tell(self.reason)
            return
        try:
            import lpips  # imported lazily: it is slow and prints on import

            with warnings.catch_warnings():
                # lpips calls torchvision's deprecated `pretrained=` API; not ours to fix
                warnings.simplefilter("ignore", UserWarning)
                self.model = lpips.LPIPS(net="alex", verbose=False).to(device).eval()
        except Exception as exc:  # a corrupt file, or any other load failure
            self.reason = (
                f"LPIPS unavailable ({type(exc).__name__}: {exc}); check {path} or set "
                "metrics.lpips=false. Recording lpips as null."
            )
            self._tell(self.reason)

    @staticmethod
    def _tell(message: str) -> None:
        if message not in _TOLD:
            _TOLD.add(message)
            log.warning(message)

    @property
    def available(self) -> bool:
        return self.model is not None

    def __call__(self, x: Tensor, ref: Tensor) -> list[float | None]:
        if self.model is None:
            return [None] * x.shape[0]
        with torch.no_grad():
            d = self.model(x.clamp(-1, 1).to(self.device), ref.clamp(-1, 1).to(self.device))
        return [float(v) for v in d.flatten().tolist()]
