"""What a table is (:class:`TableSpec`), what rendering it gives (:class:`TableResult`), and the
registry of every table the project knows, one module each under ``ddrm_exp/report/tables/``."""

from __future__ import annotations

import importlib
import pkgutil
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ddrm_exp.report.records import Record, Stat

Curve = list[tuple[float, Stat]]  # (swept value, the cell's statistics), sorted by value


@dataclass
class TableResult:
    markdown: str
    rows: list[dict[str, Any]]  # long format, for CSV and wandb
    curves: dict[str, Curve]  # label -> curve, for the plot
    # The report's curves (drawn dotted beside ours) and horizontal reference lines
    # (label -> PSNR), e.g. the blurry measurement's own PSNR.
    report_curves: dict[str, list[tuple[float, float]]] = field(default_factory=dict)
    hlines: dict[str, float] = field(default_factory=dict)


@dataclass(frozen=True)
class TableSpec:
    """One table: how it renders from records, how it plots, and which runs it is made for.

    ``detect`` says whether a set of records is this table's (for ``--table auto``); the specs
    are asked in ``auto_rank`` order and the first that claims the records names the table.
    """

    name: str
    title: str
    render: Callable[[TableSpec, list[Record]], TableResult]
    plot: Callable[[TableSpec, TableResult, list[Record], Path], None] | None = None
    detect: Callable[[list[Record]], bool] | None = None
    auto_rank: int = 100
    sweep_label: str = ""  # the plot's x axis


TABLES_PACKAGE = "ddrm_exp.report.tables"


def _discover() -> dict[str, TableSpec]:
    """Every ``SPEC`` of a module in ddrm_exp/report/tables: adding a table adds a module."""
    package = importlib.import_module(TABLES_PACKAGE)
    specs: dict[str, TableSpec] = {}
    for info in sorted(pkgutil.iter_modules(package.__path__), key=lambda m: m.name):
        spec = getattr(importlib.import_module(f"{TABLES_PACKAGE}.{info.name}"), "SPEC", None)
        if isinstance(spec, TableSpec):
            if spec.name in specs:
                raise ValueError(f"two table specs are named {spec.name!r}")
            specs[spec.name] = spec
    return specs


_SPECS: dict[str, TableSpec] | None = None


def specs() -> dict[str, TableSpec]:
    """The registry: table name -> spec (what ``--table`` and experiment configs name)."""
    global _SPECS
    if _SPECS is None:
        _SPECS = _discover()
    return _SPECS


def get_spec(name: str) -> TableSpec:
    try:
        return specs()[name]
    except KeyError:
        raise KeyError(f"no table named {name!r}; known: {', '.join(sorted(specs()))}") from None


def auto_table(records: list[Record]) -> str:
    """The table a set of runs was made for: the first spec (by ``auto_rank``) claiming them."""
    ranked = sorted(specs().values(), key=lambda s: (s.auto_rank, s.name))
    return next(s.name for s in ranked if s.detect is None or s.detect(records))
