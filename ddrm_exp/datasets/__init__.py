"""Datasets: each item is ``{"image": (3, H, W) in [-1, 1], "index": int, "name": str}``.

Built by the runner with ``hydra.utils.instantiate(cfg.dataset, image_size=...)``.
"""

from ddrm_exp.datasets.base import ImageFileDataset
from ddrm_exp.datasets.folder import ImageFolderDataset
from ddrm_exp.datasets.lsun import LSUNDataset
from ddrm_exp.datasets.samples import SPLITS, SampleImages, load_sample_photos

__all__ = [
    "SPLITS",
    "ImageFileDataset",
    "ImageFolderDataset",
    "LSUNDataset",
    "SampleImages",
    "load_sample_photos",
]
