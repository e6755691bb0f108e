"""Datasets: each item is ``{"image": (3, H, W) in [-1, 1], "index": int, "name": str}``.

The BSD datasets add ``"measurement"`` (the blurry frame, same shape), ``"sequence"`` and
``"frame"``; the synthetic one also ``"kernel"``. The miniature BSD writer lives in
:mod:`ddrm_exp.datasets.bsd_mini` (not imported here, so ``python -m`` on it stays clean).

Built by the runner with ``hydra.utils.instantiate(cfg.dataset, image_size=...)``.
"""

from ddrm_exp.datasets.base import ImageFileDataset
from ddrm_exp.datasets.bsd import BSDDataset, BSDSyntheticDataset
from ddrm_exp.datasets.folder import ImageFolderDataset
from ddrm_exp.datasets.lsun import LSUNDataset
from ddrm_exp.datasets.samples import SPLITS, SampleImages, load_sample_photos

__all__ = [
    "SPLITS",
    "BSDDataset",
    "BSDSyntheticDataset",
    "ImageFileDataset",
    "ImageFolderDataset",
    "LSUNDataset",
    "SampleImages",
    "load_sample_photos",
]
