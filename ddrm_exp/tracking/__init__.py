"""Outputs of a run: files in its directory and, optionally, a wandb run."""

from ddrm_exp.tracking.files import ResultsFile, save_grid, save_png, write_json_atomic
from ddrm_exp.tracking.trackers import NullTracker, Tracker, WandbTracker

__all__ = [
    "NullTracker",
    "ResultsFile",
    "Tracker",
    "WandbTracker",
    "save_grid",
    "save_png",
    "write_json_atomic",
]
