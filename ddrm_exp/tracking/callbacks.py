"""Hydra callbacks: what a multirun does once all its jobs are done."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from hydra.experimental.callback import Callback
from omegaconf import DictConfig

log = logging.getLogger(__name__)


class WriteTables(Callback):
    """Render the sweep's table (as ``scripts/make_tables.py`` would) into ``<sweep>/tables``.

    Enabled by an experiment file (``experiment=video_bsd``) or on the command line with
    ``+hydra.callbacks.tables._target_=ddrm_exp.tracking.callbacks.WriteTables``. A failure is
    logged, never raised: the jobs' results are already on disk and make_tables can redo it.
    """

    def __init__(self, table: str = "auto") -> None:
        self.table = table

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        from ddrm_exp.tables import SPECS, auto_table, build_table, load_records, write_csv

        sweep_dir = Path(str(config.hydra.sweep.dir))
        try:
            records = load_records([sweep_dir])
            if not records:
                log.warning("no results under %s: no table written", sweep_dir)
                return
            name = auto_table(records) if self.table == "auto" else self.table
            result = build_table(SPECS[name], records)
            out = sweep_dir / "tables"
            out.mkdir(parents=True, exist_ok=True)
            (out / f"{name}.md").write_text(result.markdown + "\n")
            write_csv(result.rows, out / f"{name}.csv")
        except Exception as exc:  # noqa: BLE001 - the jobs' results must survive a table bug
            log.warning("could not write the %s table of %s: %s", self.table, sweep_dir, exc)
            return
        print(result.markdown)
        print(f"\nWrote {out / (name + '.md')}")
