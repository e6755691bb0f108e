"""Where a run's per-image files go, beside ``results.jsonl``: ``images/<index>_<name>_*``."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from ddrm_exp.tracking.files import atomic_write

IMAGE_KINDS = ("original", "pinv", "restored")


def image_paths(out_dir: Path, index: int, name: str) -> dict[str, Path]:
    """Where an image's PNGs go: ``images/<index>_<name>_{original,pinv,restored}.png``."""
    stem = f"{index:05d}_{name}"
    return {kind: out_dir / "images" / f"{stem}_{kind}.png" for kind in IMAGE_KINDS}


def kernel_path(out_dir: Path, index: int, name: str) -> Path:
    """Where an image's kernel goes, beside its PNGs: ``images/<index>_<name>_kernel.npy``."""
    return out_dir / "images" / f"{index:05d}_{name}_kernel.npy"


def measurement_png_path(out_dir: Path, index: int, name: str) -> Path:
    return out_dir / "images" / f"{index:05d}_{name}_measurement.png"


def save_npy(array: Tensor, path: Path) -> None:
    with atomic_write(path, "wb", fsync=False) as f:
        np.save(f, array.detach().cpu().to(torch.float64).numpy())
