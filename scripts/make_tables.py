"""Print and write the report's tables from run directories (never from a tracking server).

    python scripts/make_tables.py outputs/multirun/2026-11-26/12-00-00
    python scripts/make_tables.py DIR [DIR ...] --table table1 --out tables/ --wandb
    python scripts/make_tables.py --table table2 DIR      # blind deblurring, synthetic blur
    python scripts/make_tables.py --table figure8 DIR     # naive DDRM on real blur (+ plot)

Reads every run directory under the given paths (any directory holding results.jsonl), groups
the per-image results, and writes ``<table>.md``, ``<table>.csv`` and, for swept methods,
``<table>_curve.png`` (Figure 8: PSNR against the assumed σ_y per assumed kernel) into
``--out`` (default: ``<first DIR>/tables``). Runs that sweep a setting besides the compared
one (e.g. σ_y) are never pooled: ``--table runs`` and Table 1 split their columns by it, the
fixed-layout tables refuse with a message (exit 2). ``--wandb`` also logs the
table and plot to the wandb group of the runs (from their ``wandb_run.json``).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from ddrm_exp.report import MixedSettingsError, NoResultsError, specs, write_table
from ddrm_exp.report.records import find_run_dirs


def log_to_wandb(run_dirs: list[Path], name: str, csv_rows: list[dict], plot: Path | None) -> None:
    info = next(
        (
            json.loads((d / "wandb_run.json").read_text())
            for d in run_dirs
            if (d / "wandb_run.json").is_file()
        ),
        None,
    )
    if info is None:
        print("no wandb_run.json in these runs (logger=none?): nothing logged", file=sys.stderr)
        return
    import wandb

    run = wandb.init(
        project=info["project"],
        group=info["group"],
        name=f"{info['group'] or 'runs'}/{name}",
        job_type="tables",
        mode=info.get("mode", "offline"),
        dir=str(run_dirs[0]),
    )
    columns = sorted({k for r in csv_rows for k in r})
    payload = {
        name: wandb.Table(columns=columns, data=[[r.get(c) for c in columns] for r in csv_rows])
    }
    if plot is not None:
        payload[f"{name}_curve"] = wandb.Image(str(plot))
    run.log(payload)
    run.finish()


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawTextHelpFormatter
    )
    parser.add_argument("dirs", nargs="+", type=Path)
    parser.add_argument("--table", choices=["auto", *specs()], default="auto")
    parser.add_argument("--out", type=Path, default=None)
    parser.add_argument(
        "--wandb", action="store_true", help="log table and plot to the runs' wandb group"
    )
    args = parser.parse_args()

    missing = [d for d in args.dirs if not d.exists()]
    if missing:
        sys.exit(f"make_tables: no such directory: {', '.join(map(str, missing))}")
    try:
        written = write_table(args.dirs, args.table, args.out)
    except NoResultsError as exc:
        sys.exit(f"make_tables: {exc}")
    except MixedSettingsError as exc:
        print(f"make_tables: error: {exc}", file=sys.stderr)
        sys.exit(2)
    print(written.summary())
    if args.wandb:
        log_to_wandb(find_run_dirs(args.dirs), written.name, written.result.rows, written.plot)


if __name__ == "__main__":
    main()
