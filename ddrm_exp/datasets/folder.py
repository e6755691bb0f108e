"""Any directory of images, searched recursively."""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

from ddrm_exp.datasets.base import (
    IMAGE_EXTENSIONS,
    ImageFileDataset,
    find_images,
    names_for,
    subset_range,
)
from ddrm_exp.errors import ConfigError


def _extensions_text() -> str:
    return "/".join(sorted(e.lstrip(".") for e in IMAGE_EXTENSIONS))


def resolve_image_root(root: str | os.PathLike[str] | None, layout_hint: str) -> Path:
    """``root`` as an existing directory, or a :class:`ConfigError` that says what to pass."""
    if root is None or str(root).strip() == "":
        raise ConfigError(
            f"dataset.root is not set; pass the image directory, e.g. "
            f"dataset.root=/path/to/images ({layout_hint})."
        )
    path = Path(os.path.expanduser(os.fspath(root)))
    if not path.exists():
        raise ConfigError(
            f"Image directory {os.fspath(path)!r} does not exist; set dataset.root to a "
            f"directory that holds {layout_hint}."
        )
    if not path.is_dir():
        raise ConfigError(
            f"dataset.root={os.fspath(path)!r} is a file, not a directory; set it to a "
            f"directory that holds {layout_hint}."
        )
    return path


def folder_images(root: Path, layout_hint: str) -> list[Path]:
    paths = find_images(root)
    if not paths:
        raise ConfigError(
            f"No images ({_extensions_text()}) found under {os.fspath(root)!r}; expected "
            f"{layout_hint}."
        )
    return paths


class ImageFolderDataset(ImageFileDataset):
    """Every image under ``root`` (any depth), in order of relative path.

    ``names`` are relative paths without the extension (``"sub/img_001"``), with the extension
    kept when two files differ only by it.
    """

    def __init__(
        self,
        image_size: int | Sequence[int],
        root: str | os.PathLike[str] | None = None,
        limit: int | None = None,
        start: int = 0,
        resize: bool = True,
    ) -> None:
        hint = f"image files ({_extensions_text()}), possibly in subdirectories"
        self.root = resolve_image_root(root, hint)
        paths = folder_images(self.root, hint)
        names = names_for(paths, self.root)
        chosen = subset_range(len(paths), start, limit, f"{os.fspath(self.root)!r}")
        super().__init__(
            [paths[i] for i in chosen], [names[i] for i in chosen], image_size, resize=resize
        )
