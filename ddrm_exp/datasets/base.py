"""A dataset over a fixed list of image files, shared by the file-based datasets."""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from torch.utils.data import Dataset

from ddrm_exp.datasets.transforms import Size, as_size, check_file_sizes, load_image
from ddrm_exp.errors import ConfigError

IMAGE_EXTENSIONS: frozenset[str] = frozenset(
    {".png", ".jpg", ".jpeg", ".bmp", ".webp", ".tif", ".tiff"}
)


def subset_range(total: int, start: int, limit: int | None, what: str) -> range:
    """Indices ``start .. start+limit`` of ``total`` items, validated with readable errors."""
    if isinstance(start, bool) or not isinstance(start, int) or start < 0:
        raise ConfigError(f"dataset.start={start!r} must be a non-negative integer.")
    if limit is not None and (isinstance(limit, bool) or not isinstance(limit, int) or limit < 1):
        raise ConfigError(
            f"dataset.limit={limit!r} must be a positive integer, or null for all images."
        )
    if start >= total:
        raise ConfigError(
            f"dataset.start={start} but {what} has only {total} image(s); "
            f"use a start below {total}."
        )
    stop = total if limit is None else min(total, start + limit)
    return range(start, stop)


def find_images(root: Path) -> list[Path]:
    """Image files under ``root`` at any depth, sorted by their path relative to ``root``.

    Sorting on the POSIX form of the relative path makes the order (and hence ``start`` and
    ``limit``) the same on every OS and filesystem.
    """
    found: list[tuple[str, Path]] = []
    for dirpath, dirnames, filenames in os.walk(root, followlinks=True):
        dirnames[:] = [d for d in dirnames if not d.startswith(".")]
        for fname in filenames:
            if fname.startswith("."):
                continue
            if os.path.splitext(fname)[1].lower() in IMAGE_EXTENSIONS:
                path = Path(dirpath) / fname
                found.append((path.relative_to(root).as_posix(), path))
    found.sort(key=lambda item: item[0])
    return [path for _, path in found]


def names_for(paths: Sequence[Path], root: Path) -> list[str]:
    """A unique name per file: its relative path without extension (with it on a clash)."""
    stems = [p.relative_to(root).with_suffix("").as_posix() for p in paths]
    counts: dict[str, int] = {}
    for s in stems:
        counts[s] = counts.get(s, 0) + 1
    return [
        s if counts[s] == 1 else p.relative_to(root).as_posix()
        for s, p in zip(stems, paths, strict=True)
    ]


class ImageFileDataset(Dataset[dict[str, Any]]):
    """Images read lazily from ``paths``, transformed to ``image_size`` in [-1, 1].

    ``names`` is parallel to ``paths``; subsetting is the caller's job so that ``names`` and
    ``index`` always refer to the selected images only.
    """

    def __init__(
        self,
        paths: Sequence[Path],
        names: Sequence[str],
        image_size: int | Sequence[int],
        resize: bool = True,
    ) -> None:
        if len(paths) != len(names):
            raise ValueError("paths and names must have the same length")
        self.paths: list[Path] = list(paths)
        self.names: list[str] = list(names)
        self.image_size: Size = as_size(image_size)
        self.resize = bool(resize)
        if not self.resize:
            check_file_sizes(self.paths, self.image_size)

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, index: int) -> dict[str, Any]:
        if index < 0:
            index += len(self)
        if not 0 <= index < len(self):
            raise IndexError(f"index {index} out of range for {len(self)} images")
        image = load_image(self.paths[index], self.image_size, resize=self.resize)
        return {"image": image, "index": index, "name": self.names[index]}
