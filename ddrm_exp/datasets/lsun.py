"""LSUN scenes (bedroom by default), in DDRM's folder layout or as the official LMDB export.

``format: folder`` reads DDRM's ``ood_<category>`` layout, ``root/<class>/*.png`` (what
``torchvision.datasets.ImageFolder`` reads), exactly like :class:`ImageFolderDataset`.

``format: lmdb`` reads ``root/<category>_<split>_lmdb/`` (e.g. ``bedroom_val_lmdb``) through
``torchvision.datasets.LSUN``, which needs the optional ``lmdb`` package. Note that torchvision
writes a key cache file named ``_cache_<letters of the path>`` into the current directory the
first time it opens an LMDB.
"""

from __future__ import annotations

import importlib.util
import io
import os
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from PIL import Image
from torch.utils.data import Dataset

from ddrm_exp.datasets.base import ImageFileDataset, names_for, subset_range
from ddrm_exp.datasets.folder import folder_images
from ddrm_exp.datasets.transforms import (
    Size,
    as_size,
    pil_to_tensor,
    resize_center_crop,
    size_mismatch_error,
)
from ddrm_exp.errors import ConfigError

FORMATS = ("folder", "lmdb")
_SAFE_NAME = re.compile(r"^[A-Za-z0-9_.-]+$")


def _layout(fmt: str, root: str, category: str, split: str) -> str:
    if fmt == "folder":
        return f"DDRM's ood_{category} layout {root}/<class>/*.png (e.g. {root}/{category}/0.png)"
    return (
        f"the LSUN LMDB export {root}/{category}_{split}_lmdb/ (containing data.mdb and lock.mdb)"
    )


def _require_lmdb() -> None:
    if importlib.util.find_spec("lmdb") is None:
        raise ConfigError(
            "dataset.format=lmdb needs the 'lmdb' package, which is not installed; run "
            "`pip install lmdb` (or install this project with the [lsun] extra: "
            "`pip install -e .[lsun]`), or use dataset.format=folder with PNG files."
        )


class LSUNDataset(Dataset[dict[str, Any]]):
    """LSUN images resized (short side) and centre-cropped to the model size, in [-1, 1]."""

    def __init__(
        self,
        image_size: int | Sequence[int],
        root: str | os.PathLike[str] | None = None,
        format: str = "folder",  # shadows the builtin: it is the YAML key users write
        category: str = "bedroom",
        split: str = "val",
        limit: int | None = None,
        start: int = 0,
        resize: bool = True,
    ) -> None:
        if format not in FORMATS:
            raise ConfigError(
                f"dataset.format={format!r} is not supported; use one of {', '.join(FORMATS)}."
            )
        if format == "lmdb":
            _require_lmdb()
        self.format = format
        self.category = category
        self.split = split
        self.image_size: Size = as_size(image_size)
        self.resize = bool(resize)
        root_text = "<root>" if root is None else os.fspath(root)
        layout = _layout(format, root_text, category, split)
        if root is None or str(root).strip() == "":
            raise ConfigError(f"dataset.root is not set; point it at {layout}.")
        self.root = Path(os.path.expanduser(os.fspath(root)))
        if not self.root.is_dir():
            raise ConfigError(
                f"LSUN directory {os.fspath(self.root)!r} does not exist; set dataset.root to "
                f"a directory with {layout}."
            )

        self._files: ImageFileDataset | None = None
        self._lsun: Any = None
        self._indices: list[int] = []
        if format == "folder":
            paths = folder_images(self.root, layout)
            names = names_for(paths, self.root)
            chosen = subset_range(len(paths), start, limit, f"{os.fspath(self.root)!r}")
            self._files = ImageFileDataset(
                [paths[i] for i in chosen],
                [names[i] for i in chosen],
                self.image_size,
                resize=self.resize,
            )
            self.names: list[str] = self._files.names
        else:
            self._open_lmdb(layout, start, limit)

    def _open_lmdb(self, layout: str, start: int, limit: int | None) -> None:
        import torchvision.datasets

        db_dir = self.root / f"{self.category}_{self.split}_lmdb"
        if not db_dir.is_dir():
            raise ConfigError(
                f"LSUN LMDB {os.fspath(db_dir)!r} not found; expected {layout}. Check "
                f"dataset.root, dataset.category and dataset.split."
            )
        self._lsun = torchvision.datasets.LSUN(
            os.fspath(self.root), classes=[f"{self.category}_{self.split}"]
        )
        total = len(self._lsun)
        if total == 0:
            raise ConfigError(f"LSUN LMDB {os.fspath(db_dir)!r} is empty; expected {layout}.")
        self._indices = list(subset_range(total, start, limit, f"{os.fspath(db_dir)!r}"))
        keys = self._keys()
        self.names = []
        for i in self._indices:
            key = keys[i] if keys is not None else None
            text = key.decode("ascii", "replace") if isinstance(key, bytes) else None
            ok = text is not None and _SAFE_NAME.match(text) is not None
            self.names.append(text if ok else f"{self.category}_{self.split}_{i:07d}")
        if not self.resize:
            for i, name in zip(self._indices, self.names, strict=True):
                found = self._header_size(i)
                if found != self.image_size:
                    raise size_mismatch_error(
                        f"{name!r} (entry {i} of {os.fspath(db_dir)!r})", found, self.image_size
                    )

    def _keys(self) -> list[Any] | None:
        dbs = getattr(self._lsun, "dbs", None)
        keys = getattr(dbs[0], "keys", None) if dbs else None
        return keys if isinstance(keys, list) else None

    def _header_size(self, i: int) -> Size:
        """(H, W) of entry ``i``; reads only the JPEG header when torchvision's internals allow."""
        dbs = getattr(self._lsun, "dbs", None)
        env = getattr(dbs[0], "env", None) if dbs else None
        keys = self._keys()
        if env is not None and keys is not None:
            with env.begin(write=False) as txn:
                buf = txn.get(keys[i])
            with Image.open(io.BytesIO(buf)) as img:
                return (img.height, img.width)
        img = self._lsun[i][0]
        return (img.height, img.width)

    def __len__(self) -> int:
        if self._files is not None:
            return len(self._files)
        return len(self._indices)

    def input_ids(self) -> list[str | None]:
        """Content hashes of the folder format's files; the LMDB keys (the names) identify the
        LMDB format's images on their own."""
        if self._files is not None:
            return list(self._files.input_ids())
        return [None] * len(self)

    def __getitem__(self, index: int) -> dict[str, Any]:
        if self._files is not None:
            return self._files[index]
        if index < 0:
            index += len(self)
        if not 0 <= index < len(self):
            raise IndexError(f"index {index} out of range for {len(self)} images")
        img = self._lsun[self._indices[index]][0]
        if not isinstance(img, Image.Image):
            raise TypeError("torchvision.datasets.LSUN returned a non-PIL image")
        img = resize_center_crop(img.convert("RGB"), self.image_size, resize=self.resize)
        return {"image": pil_to_tensor(img), "index": index, "name": self.names[index]}
