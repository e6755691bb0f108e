"""How tables are written out: markdown lines, CSV rows, and PSNR-against-sweep plots."""

from __future__ import annotations

import csv
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from ddrm_exp.metrics.summary import error_bar
from ddrm_exp.report.spec import Curve

BAR_LABEL = "PSNR (dB); bars: 95 % CI, cut at min/max"


def md_row(cells: Iterable[str]) -> str:
    return "| " + " | ".join(cells) + " |"


def md_table(title: str, header: list[str]) -> list[str]:
    """A table's first lines: its title and the header of a markdown table."""
    return [f"## {title}", "", md_row(header), "|" + "---|" * len(header)]


def number(value: float | None, digits: int = 2) -> str:
    return "–" if value is None else f"{value:.{digits}f}"


def ordered(keys: Iterable[str], preferred: Iterable[str]) -> list[str]:
    """``keys`` with those in ``preferred`` first, in its order, the others sorted after."""
    keys = set(keys)
    first = [k for k in preferred if k in keys]
    return first + sorted(keys - set(first))


def write_csv(rows: list[dict[str, Any]], path: Path) -> None:
    keys: list[str] = []
    for row in rows:
        keys += [k for k in row if k not in keys]
    with open(path, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=keys)
        writer.writeheader()
        writer.writerows(rows)


def error_bars(curve: Curve) -> list[list[float]]:
    """Asymmetric error bars (a 2 × N list) for matplotlib, clipped to the data's range."""
    pairs = [error_bar(s["psnr"]) for _, s in curve]
    return [[lo for lo, _ in pairs], [hi for _, hi in pairs]]


def pyplot() -> Any:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt
