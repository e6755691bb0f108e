"""Hydra callbacks: what a multirun does once all its jobs are done."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from hydra.experimental.callback import Callback
from omegaconf import DictConfig

log = logging.getLogger(__name__)


class WriteTables(Callback):
    """Render the sweep's table into ``<sweep>/tables``, as ``scripts/make_tables.py`` does.

    Enabled by an experiment file (``experiment=video_bsd``) or on the command line with
    ``+hydra.callbacks.tables._target_=ddrm_exp.tracking.callbacks.WriteTables``. A failure is
    logged, never raised: the jobs' results are already on disk and make_tables can redo it.
    """

    def __init__(self, table: str = "auto") -> None:
        # A name from ddrm_exp.report's registry (ddrm_exp/report/tables/<name>.py), or "auto".
        self.table = table

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        from ddrm_exp.report import NoResultsError, write_table

        sweep_dir = Path(str(config.hydra.sweep.dir))
        try:
            written = write_table([sweep_dir], self.table)
        except NoResultsError:
            log.warning("no results under %s: no table written", sweep_dir)
            return
        except Exception as exc:  # noqa: BLE001 - the jobs' results must survive a table bug
            log.warning("could not write the %s table of %s: %s", self.table, sweep_dir, exc)
            return
        print(written.summary())
