"""What a run directory already holds: which results can be reused, whether a job is complete.

A run directory belongs to one configuration. Every record and the summary carry a
``config_hash`` of the settings that change per-image results, so a rerun (or a multirun whose
job numbers now point at other settings) never mixes results of different configurations:
records of another hash are recomputed, and a job is skipped only when its ``summary.json`` is
complete for the current hash.
"""

from __future__ import annotations

import hashlib
import json
import logging
import re
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

from ddrm_exp.tracking.files import read_json, read_records, record_line, write_text_atomic

log = logging.getLogger(__name__)

RESULTS_NAME = "results.jsonl"
SUMMARY_NAME = "summary.json"
GRID_NAME = "grid.png"

# Settings that do not change any image's result: where things are written or logged, the
# device and the batch (per-image noise is seeded by dataset index, not by batch), and how many
# images are taken (image i is the same image for every dataset.limit). Changing these reuses
# what a directory holds.
_NEUTRAL = (
    "overwrite",
    "paths",
    "logger",
    "device",
    "threads",  # CPU threads: how fast a run goes, not what it computes
    "batch_size",
    "save_images",
    "grid_max_images",
    "measurement_style",  # how images/*_measurement.png shows y, not what is computed
    "dataset.limit",
    # Which files a folder dataset leaves out; the input check refuses results of other files.
    "dataset.skip_unreadable",
    "video",  # task=video's output options (fps)
    # Where a downloaded inpainting mask is cached; its content is pinned by its sha256.
    "degradation.cache_dir",
    # Reaches results only through degradation.source (hashed, resolved) of inpaint_lorem.
    "lorem_source",
)
# Settings added after results existed, left out of the hash while they hold the value that
# computes what was computed before them, so existing run directories keep their hash.
_NEUTRAL_AT_DEFAULT: dict[str, Any] = {
    "degradation.official_compat": False,  # the official blur operators as published
    "degradation.mask_path": None,  # an inpainting mask read from a file
    "degradation.source": "rendered",  # inpaint_lorem: rendered | official
}
_RANK_FILE = re.compile(r"results\.rank(\d+)\.jsonl")


def neutral_keys(group: str) -> set[str]:
    """The keys of a config group that never change a result (e.g. ``degradation.cache_dir``)."""
    return {d.split(".", 1)[1] for d in _NEUTRAL if d.startswith(group + ".")}


def later_defaults(group: str) -> dict[str, Any]:
    """The keys of ``group`` added after results existed, with the value that computes what was
    computed before them: a record or config without such a key was made at that value."""
    prefix = group + "."
    return {d[len(prefix) :]: v for d, v in _NEUTRAL_AT_DEFAULT.items() if d.startswith(prefix)}


# New ``_target_`` -> the path it had when results were first hashed with it.
_MOVED_TARGETS = {"ddrm_exp.degradations.AssumedBlur": "ddrm_exp.blind.AssumedBlur"}


def config_hash(cfg: DictConfig) -> str:
    """A short hash of the resolved settings that determine per-image results."""
    values: dict[str, Any] = OmegaConf.to_container(cfg, resolve=True)  # type: ignore[assignment]
    for dotted in _NEUTRAL:
        *parents, leaf = dotted.split(".")
        node: Any = values
        for key in parents:
            node = node.get(key) if isinstance(node, dict) else None
        if isinstance(node, dict):
            node.pop(leaf, None)
    for dotted, default in _NEUTRAL_AT_DEFAULT.items():
        group, leaf = dotted.split(".")
        node = values.get(group)
        if isinstance(node, dict) and leaf in node and node[leaf] == default:
            node.pop(leaf)
    for node in values.values():
        # A class that moved hashes as its old path: run directories made before the move
        # resume instead of recomputing.
        if isinstance(node, dict) and node.get("_target_") in _MOVED_TARGETS:
            node["_target_"] = _MOVED_TARGETS[node["_target_"]]
    if values.get("task", "image") == "image":
        # Frame-to-frame settings mean nothing to an image run; leaving them out also keeps
        # the hashes of image runs what they were before task=video existed.
        values.pop("task", None)
        values.pop("temporal", None)
    text = json.dumps(values, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def rank_results_name(rank: int) -> str:
    return f"results.rank{rank}.jsonl"


def results_files(out_dir: Path) -> list[Path]:
    """``results.jsonl`` first, then the per-rank files of a distributed run, by rank."""
    ranks = [
        (int(m.group(1)), p)
        for p in out_dir.glob("results.rank*.jsonl")
        if (m := _RANK_FILE.fullmatch(p.name))
    ]
    return [out_dir / RESULTS_NAME, *(p for _, p in sorted(ranks))]


def matches(record: dict[str, Any], fingerprint: str) -> bool:
    """Whether a stored record was computed under the current settings.

    Records written before hashes were recorded carry none and are trusted, as they always were.
    """
    stored = record.get("config_hash")
    return stored is None or stored == fingerprint


def complete_summary(out_dir: Path, num_images: int, fingerprint: str) -> dict[str, Any] | None:
    """The job's ``summary.json`` if the job is complete, else None.

    Complete means: the summary parses, counts every image of the dataset as configured now and
    has the current ``config_hash``; and ``results.jsonl`` holds an intact record of each of
    those images, with no per-rank file waiting to be merged. The results are checked too, not
    trusted from the summary, so a damaged ``results.jsonl`` is repaired by rerunning.
    """
    summary = read_json(out_dir / SUMMARY_NAME)
    if not isinstance(summary, dict):
        return None
    if summary.get("count") != num_images or summary.get("config_hash") != fingerprint:
        return None
    if len(results_files(out_dir)) > 1:
        return None
    records, dropped = read_records(out_dir / RESULTS_NAME)
    # A record of other settings means another configuration wrote here after this summary
    # (and perhaps its PNGs): the job is not complete until it is recomputed.
    if dropped or not all(matches(r, fingerprint) for r in records):
        return None
    if not {int(r["index"]) for r in records}.issuperset(range(num_images)):
        return None
    return summary


def purge_other_settings(out_dir: Path, fingerprint: str) -> set[int]:
    """Before a run writes anything: drop every file that describes results of other settings.

    Records of another ``config_hash`` go from ``results.jsonl`` and the per-rank files, with
    every other record of the same image (its PNGs may be the other settings'), and a
    ``summary.json`` of another hash goes with ``grid.png``. Done at the start rather than at
    the end, so that a run killed halfway leaves no record of settings A beside PNGs it already
    overwrote with settings B: rerunning A then recomputes those images instead of reporting
    them complete. Returns the dataset indices whose records were dropped. Caller holds the
    run directory's lock.
    """
    files = {path: read_records(path)[0] for path in results_files(out_dir)}
    # An image with a record of other settings may have their PNGs on disk, whichever record
    # came last: every record of it goes, so it is recomputed.
    purged = {
        int(r["index"])
        for records in files.values()
        for r in records
        if not matches(r, fingerprint)
    }
    if purged:
        for path, records in files.items():
            keep = [r for r in records if int(r["index"]) not in purged]
            if len(keep) < len(records):
                write_text_atomic(path, "".join(record_line(r) for r in keep))
    summary = read_json(out_dir / SUMMARY_NAME)
    other_summary = isinstance(summary, dict) and summary.get("config_hash") not in (
        None,
        fingerprint,
    )
    if other_summary or purged:
        for path in (out_dir / SUMMARY_NAME, out_dir / GRID_NAME):
            path.unlink(missing_ok=True)
    return purged


def clear_outputs(out_dir: Path) -> list[Path]:
    """``overwrite=true``: remove the results, summary and grid of earlier runs, per-rank files too.

    Images are left to be overwritten one by one; they are named by dataset index.
    """
    removed = []
    for path in [*results_files(out_dir), out_dir / SUMMARY_NAME, out_dir / GRID_NAME]:
        if path.exists():
            path.unlink()
            removed.append(path)
    return removed
