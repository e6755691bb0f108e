"""Run-directory outputs: PNGs, the results.jsonl stream, atomic JSON files.

Results are appended one JSON line per image as soon as it is computed and flushed to disk, so a
crash loses nothing already done and a rerun in the same directory can skip what is there.
"""

from __future__ import annotations

import json
import math
import os
import tempfile
from pathlib import Path
from typing import Any

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


def write_json_atomic(path: Path, data: Any) -> None:
    """Write JSON through a temp file and a rename, so readers never see half a file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w") as f:
            json.dump(_clean(data), f, indent=2, default=_json_default)
            f.write("\n")
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


class ResultsFile:
    """``results.jsonl``: one record per image, keyed by its dataset index."""

    def __init__(self, path: Path, overwrite: bool = False) -> None:
        self.path = path
        if overwrite and path.exists():
            path.unlink()
        self.records: dict[int, dict[str, Any]] = self._read()
        self._rewrite_if_torn()

    def _read(self) -> dict[int, dict[str, Any]]:
        records: dict[int, dict[str, Any]] = {}
        if not self.path.exists():
            return records
        for line in self.path.read_text().splitlines():
            try:
                rec = json.loads(line)
            except json.JSONDecodeError:
                continue  # a line torn by a crash: the image is recomputed
            if isinstance(rec, dict) and "index" in rec:
                records[int(rec["index"])] = rec
        return records

    def _rewrite_if_torn(self) -> None:
        if not self.path.exists():
            return
        expected = len(self.records)
        if len(self.path.read_text().splitlines()) != expected:
            lines = "".join(json.dumps(r) + "\n" for r in self.records.values())
            tmp = self.path.with_suffix(".jsonl.tmp")
            tmp.write_text(lines)
            os.replace(tmp, self.path)

    def done(self, index: int) -> bool:
        return index in self.records

    def append(self, record: dict[str, Any]) -> None:
        record = _clean(record)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        line = json.dumps(record, default=_json_default) + "\n"
        with open(self.path, "a") as f:
            f.write(line)
            f.flush()
            os.fsync(f.fileno())
        self.records[int(record["index"])] = record


def save_png(image: Tensor, path: Path) -> None:
    """Save one (C, H, W) image in [-1, 1] as PNG."""
    path.parent.mkdir(parents=True, exist_ok=True)
    save_image(to_unit(image.detach().float().cpu()), str(path))


def save_grid(rows: list[list[Tensor]], path: Path) -> None:
    """A grid with one row per image: original | H⁺y | restoration."""
    if not rows:
        return
    tiles = [to_unit(t.detach().float().cpu()) for row in rows for t in row]
    grid = make_grid(torch.stack(tiles), nrow=len(rows[0]), padding=2, pad_value=1.0)
    path.parent.mkdir(parents=True, exist_ok=True)
    save_image(grid, str(path))
