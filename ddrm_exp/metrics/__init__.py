"""Per-image quality metrics and their aggregation."""

from ddrm_exp.metrics.image import LPIPSMetric, psnr, ssim
from ddrm_exp.metrics.summary import format_stat, mean_ci

__all__ = ["LPIPSMetric", "format_stat", "mean_ci", "psnr", "ssim"]
