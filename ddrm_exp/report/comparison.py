"""The method × column layout (Table 1, the generic ``runs`` table): PSNR per cell, a swept
method reduced to its best value per column with its paired difference to a reference method,
and its curve against the swept value."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ddrm_exp.metrics.summary import CI_NOTE, format_stat
from ddrm_exp.report.cells import EMPTY_CELL, Cell, Grouping, group, images_per_cell, mean_nfe
from ddrm_exp.report.cells import paired_difference as paired
from ddrm_exp.report.records import Record
from ddrm_exp.report.render import BAR_LABEL, error_bars, md_row, pyplot
from ddrm_exp.report.spec import Curve, TableResult, TableSpec

METRICS = ("psnr", "ssim", "lpips")


@dataclass(frozen=True)
class Comparison:
    """How a method × column table reads its records."""

    method_of: Callable[[Record], str]
    column_of: Callable[[Record], str]
    reference_method: str
    swept_method: str | None = None  # methods named "<swept_method>@<value>" form a curve
    sweep_label: str = ""
    report: dict[tuple[str, str], float] = field(default_factory=dict)
    column_order: tuple[str, ...] = ()


def _columns(cells: dict[tuple[str, str], Cell], layout: Comparison) -> list[str]:
    order = {c: i for i, c in enumerate(layout.column_order)}
    # A split column ("inpaint_lorem σ_y=0.05") sorts with the column it was split from.
    return sorted(
        {k[1] for k in cells},
        key=lambda c: (order.get(c.split(" ")[0], len(order)), c.split(" ")[0], c),
    )


def _row(
    name: str, layout: Comparison, method: str, column: str, cell: Cell, variant: str, diff: Any
) -> dict[str, Any]:
    row = {"table": name, "method": method, "variant": variant, "column": column}
    for metric in (*METRICS, "baseline_psnr", "seconds"):
        st = cell.stats.get(metric) or {}
        row[f"{metric}_mean"], row[f"{metric}_ci95"] = st.get("mean"), st.get("ci95")
    row["n"] = cell.stats.get("psnr", {}).get("n")
    row["nfe"] = mean_nfe(cell.records)
    if diff is not None:
        row["diff_psnr_mean"], row["diff_psnr_ci95"] = diff.get("mean"), diff.get("ci95")
    row["report_psnr"] = layout.report.get((method, column))
    return row


def _rows_and_curves(
    name: str, layout: Comparison, cells: dict[tuple[str, str], Cell], columns: list[str]
) -> tuple[list[dict[str, Any]], dict[str, Curve], dict[str, Cell]]:
    """CSV rows of every cell, the swept method's curve and best cell per column."""
    methods = sorted({k[0] for k in cells})
    rows: list[dict[str, Any]] = []
    curves: dict[str, Curve] = defaultdict(list)
    best: dict[str, Cell] = {}
    swept = layout.swept_method
    for column in columns:
        ref = cells.get((layout.reference_method, column))
        for method in methods:
            cell = cells.get((method, column))
            if cell is None:
                continue
            if swept and method.startswith(swept + "@"):
                value = float(method.split("@", 1)[1])
                curves[column].append((value, cell.stats))
                diff = paired(cell, ref) if ref else None
                rows.append(_row(name, layout, swept, column, cell, f"{value:g}", diff))
                if column not in best or cell.mean() > best[column].mean():
                    best[column] = cell
            else:
                rows.append(_row(name, layout, method, column, cell, "", None))
        if column in curves:
            curves[column].sort()
    return rows, dict(curves), best


def render_comparison(spec: TableSpec, layout: Comparison, records: list[Record]) -> TableResult:
    grouping = Grouping()
    cells = group(records, layout.method_of, layout.column_of, grouping=grouping)
    columns = _columns(cells, layout)
    rows, curves, best = _rows_and_curves(spec.name, layout, cells, columns)
    swept = layout.swept_method
    plain_methods = [
        m for m in sorted({k[0] for k in cells}) if not (swept and m.startswith(swept + "@"))
    ]
    lines = [
        f"## {spec.title}",
        "",
        md_row(["method", *columns]),
        "|" + "---|" * (len(columns) + 1),
    ]

    def metric_row(label: str, getter: Callable[[str], str]) -> None:
        lines.append(md_row([label, *(getter(c) for c in columns)]))

    def cell_text(method: str, column: str, cell: Cell | None, extra: str = "") -> str:
        if cell is None:
            return "–"
        text = format_stat(cell.stats.get("psnr")) + extra
        rep = layout.report.get((method, column))
        return text + (f" (report {rep:.2f})" if rep is not None else "")

    for method in plain_methods:
        metric_row(method, lambda c, m=method: cell_text(m, c, cells.get((m, c))))
    if swept:
        _swept_rows(metric_row, cell_text, layout, cells, best)
    for metric, label in (("ssim", "SSIM"), ("lpips", "LPIPS")):
        if any(cells[k].stats.get(metric, {}).get("n") for k in cells):
            for method in plain_methods:
                metric_row(
                    f"{method} {label}",
                    lambda c, m=method, mt=metric: format_stat(
                        (cells.get((m, c)) or EMPTY_CELL).stats.get(mt), 3
                    ),
                )
    if any(c.stats.get("baseline_psnr", {}).get("n") for c in cells.values()):
        ref_cells = {c: next((v for k, v in cells.items() if k[1] == c), None) for c in columns}
        metric_row(
            "H⁺y baseline",
            lambda c: format_stat((ref_cells[c] or EMPTY_CELL).stats.get("baseline_psnr")),
        )
    lines += [
        "",
        f"PSNR in dB, mean over the images of each cell ({images_per_cell(cells.values())}); "
        f"{CI_NOTE}.",
        *grouping.notes(),
    ]
    if swept and curves:
        lines += _curve_table(swept, layout.sweep_label, curves, columns)
    return TableResult("\n".join(lines), rows, curves)


def _swept_rows(
    metric_row: Callable[[str, Callable[[str], str]], None],
    cell_text: Callable[..., str],
    layout: Comparison,
    cells: dict[tuple[str, str], Cell],
    best: dict[str, Cell],
) -> None:
    swept = str(layout.swept_method)

    def best_text(c: str) -> str:
        cell = best.get(c)
        if cell is None:
            return "–"
        alpha = cell.method.split("@", 1)[1]
        return cell_text(swept, c, cell, extra=f" [α={alpha}]")

    metric_row(f"{swept} (best α)", best_text)
    if layout.reference_method:

        def diff_text(c: str) -> str:
            cell, ref = best.get(c), cells.get((layout.reference_method, c))
            if cell is None or ref is None:
                return "–"
            return format_stat(paired(cell, ref))

        metric_row(f"paired Δ {swept} − {layout.reference_method}", diff_text)


def _curve_table(
    swept: str, sweep_label: str, curves: dict[str, Curve], columns: list[str]
) -> list[str]:
    lines = ["", f"### {swept}: PSNR against {sweep_label}", ""]
    values = sorted({v for curve in curves.values() for v, _ in curve})
    lines += ["| column | " + " | ".join(f"{v:g}" for v in values) + " |"]
    lines += ["|" + "---|" * (len(values) + 1)]
    for column in columns:
        by_value = dict(curves.get(column, []))
        texts = [format_stat(by_value[v].get("psnr")) if v in by_value else "–" for v in values]
        lines.append(f"| {column} | " + " | ".join(texts) + " |")
    return lines


def plot_comparison(
    spec: TableSpec, layout: Comparison, result: TableResult, records: list[Record], path: Path
) -> None:
    """PSNR against the swept value per column, the reference method as a dashed line."""
    plt = pyplot()
    ref = group(records, layout.method_of, layout.column_of)
    fig, ax = plt.subplots(figsize=(6.4, 4.0))
    for i, (column, curve) in enumerate(sorted(result.curves.items())):
        xs = [v for v, _ in curve]
        ys = [s["psnr"]["mean"] for _, s in curve]
        color = f"C{i}"
        ax.errorbar(
            xs, ys, yerr=error_bars(curve), marker="o", capsize=3, color=color, label=column
        )
        cell = ref.get((layout.reference_method, column))
        if cell is not None:
            ax.axhline(cell.mean(), color=color, linestyle="--", linewidth=1)
    ax.set_xlabel(layout.sweep_label)
    ax.set_ylabel(BAR_LABEL)
    ax.set_title(f"{layout.swept_method} vs {layout.reference_method} (dashed)")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
