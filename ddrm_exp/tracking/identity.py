"""Which input each result was computed from, and a refusal when a run directory's dataset changed.

Per-image results are stored by dataset index, and an index only means the same image while
the dataset is the same: add ``a.png`` to a folder of ``b.png, c.png`` and index 0 is another
file. Each record therefore carries the image's name and a hash of its file
(:data:`INPUT_KEY`), and a run that finds records of its own settings made from other inputs at
the same indices stops before building its model. Merging would silently restore some images
twice and others never.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from ddrm_exp.errors import ConfigError
from ddrm_exp.tracking.files import read_records
from ddrm_exp.tracking.resume import matches, results_files

INPUT_KEY = "input_sha256"


class DatasetChanged(ConfigError):
    """The run directory holds results of other input images at the same dataset indices."""


def dataset_names(dataset: Any) -> list[str] | None:
    names = getattr(dataset, "names", None)
    return [str(n) for n in names] if names is not None else None


def input_ids(dataset: Any) -> list[str | None]:
    """A content id per image of ``dataset``: a hash of its file(s), or None where it has none.

    Datasets without files (or LMDB entries, whose keys are their names) give None: their names
    alone identify them.
    """
    ids = getattr(dataset, "input_ids", None)
    if callable(ids):
        return list(ids())
    return [None] * len(dataset)


def _differs(record: dict[str, Any], name: str | None, digest: str | None) -> bool:
    if name is not None and record.get("name") is not None and record["name"] != name:
        return True
    stored = record.get(INPUT_KEY)
    # Records written before the hash was recorded are checked by name only.
    return stored is not None and digest is not None and stored != digest


def check_same_inputs(
    out_dir: Path, names: list[str] | None, ids: list[str | None], fingerprint: str
) -> None:
    """Raise :class:`DatasetChanged` if a reusable result of ``out_dir`` is another input's.

    Only records of the current ``fingerprint`` are reused, so only they are compared; records
    of other settings are recomputed anyway. Records past the end of the dataset (a smaller
    ``dataset.limit``) are not used and not compared.
    """
    count = len(ids)
    changed: list[tuple[int, dict[str, Any]]] = []
    for path in results_files(out_dir):
        for rec in read_records(path)[0]:
            index = int(rec["index"])
            if not 0 <= index < count or not matches(rec, fingerprint):
                continue
            name = names[index] if names is not None else None
            if _differs(rec, name, ids[index]):
                changed.append((index, rec))
    if not changed:
        return
    changed.sort(key=lambda item: item[0])
    index, rec = changed[0]
    now = names[index] if names is not None else "another image"
    was = rec.get("name")
    what = (
        f"the same name but other contents (sha256 {rec.get(INPUT_KEY)} then, {ids[index]} now)"
        if was == now
        else f"{was!r} then, {now!r} now"
    )
    more = f", and {len(changed) - 1} more result(s) like it" if len(changed) > 1 else ""
    reordered = ""
    if names is not None and all(r.get("name") in set(names) for _, r in changed):
        reordered = (
            " The same files now come in another order: the folder dataset sorts numbers in "
            "file names by value (orig_2 before orig_10), and files added or removed shift the "
            "images after them."
        )
    raise DatasetChanged(
        f"The dataset changed under the run directory {os.fspath(out_dir)}: its result for "
        f"image {index} was computed from {what}{more}.{reordered} Results of two datasets are "
        "never merged. Give this run a new directory (hydra.run.dir=...), or pass "
        "overwrite=true to discard the old results, or restore the dataset as it was."
    )
