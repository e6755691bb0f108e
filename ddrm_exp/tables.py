"""Tables from run directories: load per-image results, group, compare, write.

Everything here reads what the runner writes (``results.jsonl`` beside ``config_resolved.yaml``
in each run directory), never a tracking server. A table is a :class:`TableSpec`: how to name a
record's *method* and *column* (e.g. sampler and α; degradation), which method is the reference
for paired differences, how to pick the reported variant of a swept method, and the report's
own numbers to print beside ours. Table 1 is one spec; the blind-deblurring tables are others.
"""

from __future__ import annotations

import csv
import json
import math
from collections import defaultdict
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ddrm_exp.metrics.summary import format_stat, mean_ci

METRICS = ("psnr", "ssim", "lpips")


@dataclass(frozen=True)
class Record:
    """One restored image, flattened from a results.jsonl line."""

    run_dir: Path
    degradation: str
    sampler: str
    params: dict[str, Any]
    sigma_y: float
    index: int
    seed: int
    values: dict[str, float | None]  # psnr, ssim, lpips, baseline_psnr, ...
    seconds: float
    nfe: int
    raw: dict[str, Any] = field(repr=False, default_factory=dict)

    @property
    def key(self) -> tuple[int, int]:
        """Identifies the same image and measurement across runs, for paired differences."""
        return (self.index, self.seed)


def find_run_dirs(paths: Iterable[Path]) -> list[Path]:
    runs: set[Path] = set()
    for root in paths:
        root = Path(root)
        if (root / "results.jsonl").is_file():
            runs.add(root)
        runs.update(p.parent for p in root.rglob("results.jsonl"))
    return sorted(runs)


def load_records(paths: Iterable[Path]) -> list[Record]:
    records = []
    for run_dir in find_run_dirs(paths):
        for line in (run_dir / "results.jsonl").read_text().splitlines():
            try:
                r = json.loads(line)
            except json.JSONDecodeError:
                continue  # a torn last line of a killed run
            values: dict[str, float | None] = {}
            for part, prefix in (("restored", ""), ("baseline", "baseline_")):
                for k, v in (r.get(part) or {}).items():
                    values[prefix + k] = v
            records.append(
                Record(
                    run_dir=run_dir,
                    degradation=str(r.get("degradation")),
                    sampler=str(r.get("sampler")),
                    params=dict(r.get("sampler_params") or {}),
                    sigma_y=float(r.get("sigma_y", 0.0)),
                    index=int(r["index"]),
                    seed=int(r.get("seed", 0)),
                    values=values,
                    seconds=float(r.get("seconds", math.nan)),
                    nfe=int(r.get("nfe", 0)),
                    raw=r,
                )
            )
    return records


@dataclass
class Cell:
    """Statistics of one (method, column) group."""

    method: str
    column: str
    stats: dict[str, dict[str, Any]]
    records: list[Record]

    def mean(self, metric: str = "psnr") -> float:
        m = self.stats.get(metric, {}).get("mean")
        return -math.inf if m is None else float(m)


def group(
    records: list[Record], method_of: Callable[[Record], str], column_of: Callable[[Record], str]
) -> dict[tuple[str, str], Cell]:
    buckets: dict[tuple[str, str], list[Record]] = defaultdict(list)
    for r in records:
        buckets[(method_of(r), column_of(r))].append(r)
    cells = {}
    for (method, column), recs in buckets.items():
        keys = sorted({k for r in recs for k in r.values})
        stats = {k: mean_ci(r.values.get(k) for r in recs) for k in keys}
        stats["seconds"] = mean_ci(r.seconds for r in recs)
        cells[(method, column)] = Cell(method, column, stats, recs)
    return cells


def paired_difference(a: Cell, b: Cell, metric: str = "psnr") -> dict[str, Any]:
    """Mean and CI of a − b over the images (index, seed) both cells restored."""
    bv = {r.key: r.values.get(metric) for r in b.records}
    diffs = [
        float(r.values[metric]) - float(bv[r.key])  # type: ignore[arg-type]
        for r in a.records
        if r.values.get(metric) is not None and bv.get(r.key) is not None
    ]
    return mean_ci(diffs)


# ---- specs ---------------------------------------------------------------------------------
@dataclass
class TableSpec:
    """How one of the report's tables is read out of records."""

    name: str
    title: str
    method_of: Callable[[Record], str]
    column_of: Callable[[Record], str]
    reference_method: str
    swept_method: str | None = None  # methods named "<swept_method>@<value>" form a curve
    sweep_label: str = ""
    report: dict[tuple[str, str], float] = field(default_factory=dict)
    column_order: tuple[str, ...] = ()


def _alpha(r: Record) -> float:
    return float(r.params.get("grad_scale", 0.0) or 0.0)


def table1_method(r: Record) -> str:
    if r.sampler == "ddrm" or (r.sampler == "mcg" and _alpha(r) == 0.0):
        return "DDRM"
    if r.sampler == "mcg":
        return f"DDRM+MCG@{_alpha(r):g}"
    return r.sampler


TABLE1 = TableSpec(
    name="table1",
    title="Table 1 — PSNR of DDRM and DDRM+MCG (best α per task)",
    method_of=table1_method,
    column_of=lambda r: r.degradation,
    reference_method="DDRM",
    swept_method="DDRM+MCG",
    sweep_label="α (sampler.grad_scale)",
    report={
        ("DDRM", "colorize"): 24.52,
        ("DDRM", "inpaint_lorem"): 30.08,
        ("DDRM", "denoise"): 51.57,
        ("DDRM+MCG", "colorize"): 25.22,
        ("DDRM+MCG", "inpaint_lorem"): 30.07,
        ("DDRM+MCG", "denoise"): 51.65,
    },
    column_order=("colorize", "inpaint_lorem", "denoise"),
)

GENERIC = TableSpec(
    name="runs",
    title="Mean metrics per sampler setting and degradation",
    method_of=lambda r: (
        r.sampler
        + "".join(f" {k}={v}" for k, v in sorted(r.params.items()) if k not in ("timesteps",))
        + f" σ_y={r.sigma_y:g}"
    ),
    column_of=lambda r: r.degradation,
    reference_method="",
)

SPECS = {s.name: s for s in (TABLE1, GENERIC)}


@dataclass
class TableResult:
    markdown: str
    rows: list[dict[str, Any]]  # long format, for CSV and wandb
    curves: dict[str, list[tuple[float, dict[str, Any]]]]  # column -> [(sweep value, stats)]


def build_table(spec: TableSpec, records: list[Record]) -> TableResult:
    cells = group(records, spec.method_of, spec.column_of)
    columns = [c for c in spec.column_order if any(k[1] == c for k in cells)]
    columns += sorted({k[1] for k in cells} - set(columns))
    methods = sorted({k[0] for k in cells})
    rows: list[dict[str, Any]] = []
    curves: dict[str, list[tuple[float, dict[str, Any]]]] = defaultdict(list)
    best: dict[str, Cell] = {}

    def add_row(method: str, column: str, cell: Cell, variant: str = "", diff: Any = None) -> None:
        row = {"table": spec.name, "method": method, "variant": variant, "column": column}
        for metric in (*METRICS, "baseline_psnr", "seconds"):
            st = cell.stats.get(metric) or {}
            row[f"{metric}_mean"], row[f"{metric}_ci95"] = st.get("mean"), st.get("ci95")
        row["n"] = cell.stats.get("psnr", {}).get("n")
        row["nfe"] = cell.records[0].nfe if cell.records else None
        if diff is not None:
            row["diff_psnr_mean"], row["diff_psnr_ci95"] = diff.get("mean"), diff.get("ci95")
        row["report_psnr"] = spec.report.get((method, column))
        rows.append(row)

    swept = spec.swept_method
    for column in columns:
        ref = cells.get((spec.reference_method, column))
        for method in methods:
            cell = cells.get((method, column))
            if cell is None:
                continue
            if swept and method.startswith(swept + "@"):
                value = float(method.split("@", 1)[1])
                curves[column].append((value, cell.stats))
                diff = paired_difference(cell, ref) if ref else None
                add_row(swept, column, cell, variant=f"{value:g}", diff=diff)
                if column not in best or cell.mean() > best[column].mean():
                    best[column] = cell
            else:
                add_row(method, column, cell)
        curves[column].sort()

    lines = [f"## {spec.title}", ""]
    plain_methods = [m for m in methods if not (swept and m.startswith(swept + "@"))]
    header = ["method", *columns]
    lines += ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]

    def metric_row(label: str, getter: Callable[[str], str]) -> None:
        lines.append("| " + " | ".join([label, *(getter(c) for c in columns)]) + " |")

    def cell_text(method: str, column: str, cell: Cell | None, extra: str = "") -> str:
        if cell is None:
            return "–"
        text = format_stat(cell.stats.get("psnr")) + extra
        rep = spec.report.get((method, column))
        return text + (f" (report {rep:.2f})" if rep is not None else "")

    for method in plain_methods:
        metric_row(method, lambda c, m=method: cell_text(m, c, cells.get((m, c))))
    if swept:

        def best_text(c: str) -> str:
            cell = best.get(c)
            if cell is None:
                return "–"
            alpha = cell.method.split("@", 1)[1]
            return cell_text(swept, c, cell, extra=f" [α={alpha}]")

        metric_row(f"{swept} (best α)", best_text)
        if spec.reference_method:

            def diff_text(c: str) -> str:
                cell, ref = best.get(c), cells.get((spec.reference_method, c))
                if cell is None or ref is None:
                    return "–"
                return format_stat(paired_difference(cell, ref))

            metric_row(f"paired Δ {swept} − {spec.reference_method}", diff_text)
    for metric, label in (("ssim", "SSIM"), ("lpips", "LPIPS")):
        if any(cells[k].stats.get(metric, {}).get("n") for k in cells):
            for method in plain_methods:
                metric_row(
                    f"{method} {label}",
                    lambda c, m=method, mt=metric: format_stat(
                        (cells.get((m, c)) or Cell("", "", {}, [])).stats.get(mt), 3
                    ),
                )
    if any(c.stats.get("baseline_psnr", {}).get("n") for c in cells.values()):
        ref_cells = {c: next((v for k, v in cells.items() if k[1] == c), None) for c in columns}
        metric_row(
            "H⁺y baseline",
            lambda c: format_stat(
                (ref_cells[c] or Cell("", "", {}, [])).stats.get("baseline_psnr")
            ),
        )
    n_images = {len({r.key for r in cell.records}) for cell in cells.values()}
    lines += ["", f"PSNR in dB, mean ± 95 % CI over {sorted(n_images)} images per cell."]
    if swept and curves:
        lines += ["", f"### {swept}: PSNR against {spec.sweep_label}", ""]
        values = sorted({v for curve in curves.values() for v, _ in curve})
        lines += ["| column | " + " | ".join(f"{v:g}" for v in values) + " |"]
        lines += ["|" + "---|" * (len(values) + 1)]
        for column in columns:
            by_value = dict(curves.get(column, []))
            cells_txt = [
                format_stat(by_value[v].get("psnr")) if v in by_value else "–" for v in values
            ]
            lines.append(f"| {column} | " + " | ".join(cells_txt) + " |")
    return TableResult("\n".join(lines), rows, dict(curves))


def write_csv(rows: list[dict[str, Any]], path: Path) -> None:
    keys: list[str] = []
    for row in rows:
        keys += [k for k in row if k not in keys]
    with open(path, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=keys)
        writer.writeheader()
        writer.writerows(rows)


def plot_curves(
    result: TableResult, spec: TableSpec, records: list[Record], path: Path
) -> Path | None:
    """PSNR against the swept value per column, the reference method as a dashed line."""
    if not result.curves:
        return None
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    ref = group(records, spec.method_of, spec.column_of)
    fig, ax = plt.subplots(figsize=(6.4, 4.0))
    for i, (column, curve) in enumerate(sorted(result.curves.items())):
        xs = [v for v, _ in curve]
        ys = [s["psnr"]["mean"] for _, s in curve]
        es = [s["psnr"]["ci95"] or 0.0 for _, s in curve]
        color = f"C{i}"
        ax.errorbar(xs, ys, yerr=es, marker="o", capsize=3, color=color, label=column)
        cell = ref.get((spec.reference_method, column))
        if cell is not None:
            ax.axhline(cell.mean(), color=color, linestyle="--", linewidth=1)
    ax.set_xlabel(spec.sweep_label)
    ax.set_ylabel("PSNR (dB)")
    ax.set_title(f"{spec.swept_method} vs {spec.reference_method} (dashed)")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path
