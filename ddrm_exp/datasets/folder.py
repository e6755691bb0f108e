"""Any directory of images, searched recursively."""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from pathlib import Path

from ddrm_exp.datasets.base import (
    IMAGE_EXTENSIONS,
    ImageFileDataset,
    find_images,
    names_for,
    subset_range,
    unreadable_files,
)
from ddrm_exp.errors import ConfigError

log = logging.getLogger(__name__)


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


def folder_images(root: Path, layout_hint: str, natural: bool = False) -> list[Path]:
    paths = find_images(root, natural=natural)
    if not paths:
        raise ConfigError(
            f"No images ({_extensions_text()}) found under {os.fspath(root)!r}; expected "
            f"{layout_hint}."
        )
    return paths


class ImageFolderDataset(ImageFileDataset):
    """Every image under ``root`` (any depth), in natural order of relative path.

    Natural order sorts numbers in names by value (``orig_2`` before ``orig_10``), so an index
    is the position a person would count to. ``names`` are relative paths without the extension
    (``"sub/img_001"``), with the extension kept when two files differ only by it.

    Every file is checked to open before anything is built; ``skip_unreadable=True`` leaves out
    the ones that do not (with a warning) before ``start`` and ``limit`` are applied, so the
    indices count readable images only.
    """

    def __init__(
        self,
        image_size: int | Sequence[int],
        root: str | os.PathLike[str] | None = None,
        limit: int | None = None,
        start: int = 0,
        resize: bool = True,
        skip_unreadable: bool = False,
    ) -> None:
        hint = f"image files ({_extensions_text()}), possibly in subdirectories"
        if not isinstance(skip_unreadable, bool):
            raise ConfigError(
                f"dataset.skip_unreadable must be true or false, got {skip_unreadable!r}."
            )
        self.root = resolve_image_root(root, hint)
        paths = folder_images(self.root, hint, natural=True)
        if skip_unreadable:
            bad = unreadable_files(paths)
            for path, reason in bad:
                log.warning("dataset.skip_unreadable: leaving out %s (%s)", path, reason)
            skipped = {p for p, _ in bad}
            paths = [p for p in paths if p not in skipped]
            if not paths:
                raise ConfigError(
                    f"None of the image files under {os.fspath(self.root)!r} can be read; "
                    "check that they are images."
                )
        names = names_for(paths, self.root)
        chosen = subset_range(len(paths), start, limit, f"{os.fspath(self.root)!r}")
        super().__init__(
            [paths[i] for i in chosen],
            [names[i] for i in chosen],
            image_size,
            resize=resize,
            skip_hint=True,
        )
