"""Per-image quality metrics, temporal consistency of videos, and their aggregation."""

from ddrm_exp.metrics.image import LPIPSMetric, psnr, ssim
from ddrm_exp.metrics.summary import format_stat, mean_ci
from ddrm_exp.metrics.temporal import flicker, temporal_summary, warping_error

__all__ = [
    "LPIPSMetric",
    "flicker",
    "format_stat",
    "mean_ci",
    "psnr",
    "ssim",
    "temporal_summary",
    "warping_error",
]
