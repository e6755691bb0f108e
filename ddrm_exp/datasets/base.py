"""A dataset over a fixed list of image files, shared by the file-based datasets."""

from __future__ import annotations

import hashlib
import logging
import os
import re
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

from PIL import Image
from torch.utils.data import Dataset

from ddrm_exp.datasets.transforms import Size, as_size, check_file_sizes, load_image
from ddrm_exp.errors import ConfigError

log = logging.getLogger(__name__)

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


_DIGITS = re.compile(r"(\d+)")

NaturalKey = tuple[tuple[tuple[int, int, str], ...], ...]


def natural_key(relative: str) -> NaturalKey:
    """Sort key of a relative POSIX path that orders embedded numbers by value.

    ``orig_2`` comes before ``orig_10``; text is compared as it is (case-sensitive), one path
    component at a time, and the text of a number breaks ties (``02`` after ``2``), so the
    order is total and the same on every OS.
    """
    return tuple(
        tuple(
            (0, int(part), part) if i % 2 else (1, 0, part)
            for i, part in enumerate(_DIGITS.split(component))
            if part
        )
        for component in relative.split("/")
    )


def find_images(root: Path, natural: bool = False) -> list[Path]:
    """Image files under ``root`` at any depth, sorted by their path relative to ``root``.

    Sorting on the POSIX form of the relative path makes the order (and hence ``start`` and
    ``limit``) the same on every OS and filesystem; ``natural=True`` sorts numbers by value
    (:func:`natural_key`). Symbolic links are followed, but each real directory is entered once
    (a link back up the tree would otherwise repeat its files until the path grows too long)
    and each real file is listed once, under the first of its paths in sorted order; duplicates
    are reported in a warning.
    """
    found: list[tuple[Any, Path]] = []
    seen_dirs: set[tuple[int, int]] = set()
    looped = 0
    for dirpath, dirnames, filenames in os.walk(root, followlinks=True):
        try:
            st = os.stat(dirpath)
        except OSError:
            continue
        if (st.st_dev, st.st_ino) in seen_dirs:
            dirnames[:] = []
            looped += 1
            continue
        seen_dirs.add((st.st_dev, st.st_ino))
        # Sorted, so which of two links to one directory is entered first does not depend on
        # the filesystem's listing order.
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
        for fname in filenames:
            if fname.startswith("."):
                continue
            if os.path.splitext(fname)[1].lower() in IMAGE_EXTENSIONS:
                path = Path(dirpath) / fname
                rel = path.relative_to(root).as_posix()
                found.append((natural_key(rel) if natural else rel, path))
    found.sort(key=lambda item: item[0])
    unique: list[Path] = []
    first_of: dict[str, Path] = {}
    duplicates: list[tuple[Path, Path]] = []
    for _, path in found:
        real = os.path.realpath(path)
        if real in first_of:
            duplicates.append((path, first_of[real]))
            continue
        first_of[real] = path
        unique.append(path)
    if duplicates or looped:
        dup, kept = duplicates[0] if duplicates else (None, None)
        example = f" (e.g. {dup} is {kept})" if dup is not None else ""
        log.warning(
            "%s: symbolic links reach %d director%s and %d image file(s) more than once%s; "
            "each is used once.",
            root,
            looped,
            "y" if looped == 1 else "ies",
            len(duplicates),
            example,
        )
    return unique


def unreadable_reason(path: Path) -> str | None:
    """Why ``path`` is not a readable image, or None if it is.

    Cheap next to a model, and enough to find truncated files: a PNG is walked chunk by chunk
    with its CRCs checked (``verify``, no pixel decode); a JPEG is decoded at 1/8 scale (draft
    mode), which still reads all of its data; other formats are decoded.
    """
    try:
        with Image.open(path) as img:
            if img.format == "PNG":
                img.verify()
            else:
                if img.format == "JPEG":
                    img.draft("RGB", (1, 1))
                img.load()
    except Exception as exc:  # noqa: BLE001 - PIL raises many types for a broken file
        text = str(exc) or type(exc).__name__
        return text.splitlines()[0][:200]
    return None


def unreadable_files(paths: Iterable[Path]) -> list[tuple[Path, str]]:
    return [(p, reason) for p in paths if (reason := unreadable_reason(p)) is not None]


def unreadable_error(bad: list[tuple[Path, str]], skip_hint: bool) -> ConfigError:
    shown = "; ".join(f"{os.fspath(p)!r} ({reason})" for p, reason in bad[:5])
    more = f" and {len(bad) - 5} more" if len(bad) > 5 else ""
    fix = (
        "remove or replace these files, or set dataset.skip_unreadable=true to leave them out "
        "(the images after them are then numbered without them)"
        if skip_hint
        else "remove or replace these files"
    )
    return ConfigError(
        f"{len(bad)} image file(s) cannot be read: {shown}{more}. Nothing was computed; {fix}."
    )


def file_digest(path: Path) -> str:
    """The first 16 hex digits of the SHA-256 of a file's bytes: what a result was made from."""
    with open(path, "rb") as f:
        return hashlib.file_digest(f, "sha256").hexdigest()[:16]


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
        skip_hint: bool = False,
    ) -> None:
        if len(paths) != len(names):
            raise ValueError("paths and names must have the same length")
        self.paths: list[Path] = list(paths)
        self.names: list[str] = list(names)
        self.image_size: Size = as_size(image_size)
        self.resize = bool(resize)
        self._input_ids: list[str] | None = None
        bad = unreadable_files(self.paths)
        if bad:
            raise unreadable_error(bad, skip_hint=skip_hint)
        if not self.resize:
            check_file_sizes(self.paths, self.image_size)

    def input_ids(self) -> list[str]:
        """A content hash of each image file, so results can be told apart from another file's.

        Read on first use (once per process): hashing is about as cheap as reading the files.
        """
        if self._input_ids is None:
            self._input_ids = [file_digest(p) for p in self.paths]
        return self._input_ids

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, index: int) -> dict[str, Any]:
        if index < 0:
            index += len(self)
        if not 0 <= index < len(self):
            raise IndexError(f"index {index} out of range for {len(self)} images")
        try:
            image = load_image(self.paths[index], self.image_size, resize=self.resize)
        except (OSError, SyntaxError, ValueError) as exc:
            # A file that passed the up-front check but fails to decode (a JPEG cut short), or
            # one changed since: name it rather than show PIL's traceback.
            raise ConfigError(
                f"Image file {os.fspath(self.paths[index])!r} cannot be decoded ({exc}), though "
                "its header passed the check at start. The images already done are kept in "
                "results.jsonl; remove or replace the file and rerun the same command to resume."
            ) from exc
        return {"image": image, "index": index, "name": self.names[index]}
