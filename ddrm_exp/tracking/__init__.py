"""Outputs of a run: files in its directory and, optionally, a wandb run."""

from ddrm_exp.tracking.files import (
    ResultsFile,
    atomic_write,
    read_records,
    save_grid,
    save_png,
    write_json_atomic,
    write_text_atomic,
)
from ddrm_exp.tracking.resume import complete_summary, config_hash
from ddrm_exp.tracking.trackers import NullTracker, Tracker, WandbTracker

__all__ = [
    "NullTracker",
    "ResultsFile",
    "Tracker",
    "WandbTracker",
    "atomic_write",
    "complete_summary",
    "config_hash",
    "read_records",
    "save_grid",
    "save_png",
    "write_json_atomic",
    "write_text_atomic",
]
