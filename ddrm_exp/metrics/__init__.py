"""Per-image quality metrics and their aggregation."""

from ddrm_exp.metrics.image import LPIPSMetric, psnr, ssim
from ddrm_exp.metrics.summary import mean_ci

__all__ = ["LPIPSMetric", "mean_ci", "psnr", "ssim"]
