"""Run-directory outputs: PNGs, the results.jsonl stream, atomic JSON files.

Results are appended one JSON line per image as soon as it is computed and flushed to disk, so a
crash loses nothing already done and a rerun in the same directory can skip what is there.
Every other file is written to a temporary name and renamed into place: a killed run leaves
either the old file or the new one, never half of one.
"""

from __future__ import annotations

import json
import math
import os
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Any

import torch
from torch import Tensor
from torchvision.utils import make_grid, save_image

from ddrm_exp.metrics.image import to_unit


def _json_default(value: Any) -> Any:
    if isinstance(value, Tensor):
        return value.tolist()
    if isinstance(value, Path):
        return str(value)
    raise TypeError(f"not JSON serialisable: {type(value).__name__}")


def _clean(value: Any) -> Any:
    """JSON has no inf/nan: write them as null."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _clean(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_clean(v) for v in value]
    return value


TEMP_SUFFIX = ".tmp"


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


# mkstemp creates files readable by their owner only; outputs get the permissions an ordinary
# open() would give them. Read once: the umask is process-wide, and setting it to read it races
# with other threads (wandb's) creating files.
_FILE_MODE = 0o666 & ~_umask()


@contextmanager
def atomic_write(path: Path, mode: str = "w", fsync: bool = True) -> Iterator[IO[Any]]:
    """A file object whose contents replace ``path`` only once the block has succeeded.

    The temporary file sits beside ``path`` (same filesystem, so the rename is atomic) under a
    hidden name that :func:`remove_stale_temps` recognises.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=TEMP_SUFFIX)
    try:
        os.fchmod(fd, _FILE_MODE)
        with os.fdopen(fd, mode) as f:
            yield f
            f.flush()
            if fsync:
                os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def remove_stale_temps(directory: Path) -> int:
    """Delete temporary files that a killed writer left in ``directory``; return how many."""
    if not directory.is_dir():
        return 0
    stale = [p for p in directory.glob(f".*{TEMP_SUFFIX}") if p.is_file()]
    for p in stale:
        p.unlink(missing_ok=True)
    return len(stale)


def write_json_atomic(path: Path, data: Any) -> None:
    """Write JSON through a temp file and a rename, so readers never see half a file."""
    with atomic_write(path) as f:
        json.dump(_clean(data), f, indent=2, default=_json_default)
        f.write("\n")


def write_text_atomic(path: Path, text: str) -> None:
    with atomic_write(path) as f:
        f.write(text)


def read_json(path: Path) -> Any | None:
    """The JSON in ``path``, or None when it is missing or unreadable."""
    try:
        return json.loads(path.read_text())
    except (OSError, json.JSONDecodeError):
        return None


def read_records(path: Path) -> tuple[list[dict[str, Any]], int]:
    """The per-image records of a results file, in file order, and the number of lines dropped.

    A line torn by a crash (or any line that is not a record) is dropped, so its image is
    recomputed; the file itself is left alone, since another process may own it.
    """
    if not path.exists():
        return [], 0
    records: list[dict[str, Any]] = []
    dropped = 0
    for line in path.read_text().splitlines():
        try:
            rec = json.loads(line)
        except json.JSONDecodeError:
            dropped += 1
            continue
        if isinstance(rec, dict) and "index" in rec:
            records.append(rec)
        else:
            dropped += 1
    return records, dropped


def record_line(record: dict[str, Any]) -> str:
    return json.dumps(_clean(record), default=_json_default) + "\n"


class ResultsFile:
    """``results.jsonl``: one record per image, keyed by its dataset index."""

    def __init__(self, path: Path, overwrite: bool = False) -> None:
        self.path = path
        if overwrite and path.exists():
            path.unlink()
        self.records: dict[int, dict[str, Any]] = {}
        lines, dropped = read_records(path)
        for rec in lines:
            self.records[int(rec["index"])] = rec
        if dropped:
            self._rewrite()

    def _rewrite(self) -> None:
        # Torn lines are cut before anything is appended, or the next record would be glued to
        # the torn fragment and lost as well.
        write_text_atomic(self.path, "".join(record_line(r) for r in self.records.values()))

    def done(self, index: int) -> bool:
        return index in self.records

    def append(self, record: dict[str, Any]) -> None:
        record = _clean(record)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        line = record_line(record)
        with open(self.path, "a") as f:
            f.write(line)
            f.flush()
            os.fsync(f.fileno())
        self.records[int(record["index"])] = record


def _save_png_atomic(image: Tensor, path: Path) -> None:
    # No fsync: a killed process cannot lose what the kernel already holds, and a per-image fsync
    # is slow on the network filesystems of clusters. results.jsonl, the record of what is done,
    # is fsynced.
    with atomic_write(path, "wb", fsync=False) as f:
        save_image(image, f, format="png")


def save_png(image: Tensor, path: Path) -> None:
    """Save one (C, H, W) image in [-1, 1] as PNG."""
    _save_png_atomic(to_unit(image.detach().float().cpu()), path)


def save_grid(rows: list[list[Tensor]], path: Path) -> None:
    """A grid with one row per image: original | H⁺y | restoration."""
    if not rows:
        return
    tiles = [to_unit(t.detach().float().cpu()) for row in rows for t in row]
    grid = make_grid(torch.stack(tiles), nrow=len(rows[0]), padding=2, pad_value=1.0)
    _save_png_atomic(grid, path)
