"""Render a table from run directories and write it: the one path both
``scripts/make_tables.py`` and the multirun callback take."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from ddrm_exp.report.records import Record, load_records
from ddrm_exp.report.render import write_csv
from ddrm_exp.report.spec import TableResult, TableSpec, auto_table, get_spec


class NoResultsError(ValueError):
    """No run directory (no results.jsonl) under the given paths."""


def build_table(spec: TableSpec, records: list[Record]) -> TableResult:
    return spec.render(spec, records)


def plot_curves(
    result: TableResult, spec: TableSpec, records: list[Record], path: Path
) -> Path | None:
    """The table's plot at ``path``, or None where it has none (nothing was swept)."""
    if spec.plot is None or not any(result.curves.values()):
        return None
    spec.plot(spec, result, records, path)
    return path


@dataclass
class WrittenTable:
    name: str
    result: TableResult
    records: list[Record]
    files: list[Path]  # markdown, CSV and, for swept tables, the plot

    @property
    def plot(self) -> Path | None:
        return next((f for f in self.files if f.suffix == ".png"), None)

    def summary(self) -> str:
        return f"{self.result.markdown}\n\nWrote {', '.join(map(str, self.files))}"


def write_table(
    paths: Sequence[Path], table: str = "auto", out: Path | None = None
) -> WrittenTable:
    """Render ``table`` ("auto": the one the runs were made for) from every run directory under
    ``paths`` into ``out`` (default ``<first path>/tables``): ``<table>.md``, ``<table>.csv``
    and ``<table>_curve.png`` for a table with a plot.

    Raises NoResultsError when there are no results, MixedSettingsError when a fixed-layout
    table would pool runs of different settings; nothing is written then.
    """
    records = load_records(paths)
    if not records:
        raise NoResultsError(f"no results.jsonl under {', '.join(map(str, paths))}")
    name = auto_table(records) if table == "auto" else table
    spec = get_spec(name)
    result = build_table(spec, records)
    out = out or (Path(paths[0]) / "tables")
    out.mkdir(parents=True, exist_ok=True)
    files = [out / f"{name}.md", out / f"{name}.csv"]
    files[0].write_text(result.markdown + "\n")
    write_csv(result.rows, files[1])
    plot = plot_curves(result, spec, records, out / f"{name}_curve.png")
    if plot is not None:
        files.append(plot)
    return WrittenTable(name, result, records, files)
