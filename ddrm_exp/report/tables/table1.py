"""Report Table 1 (§3.3): DDRM against DDRM+MCG, the MCG α swept, best α per task."""

from __future__ import annotations

from pathlib import Path

from ddrm_exp.report.comparison import Comparison, plot_comparison, render_comparison
from ddrm_exp.report.records import Record
from ddrm_exp.report.spec import TableResult, TableSpec


def _alpha(r: Record) -> float:
    return float(r.params.get("grad_scale", 0.0) or 0.0)


def method(r: Record) -> str:
    """MCG with α = 0 takes no gradient: it is DDRM, and lands in DDRM's row."""
    if r.sampler == "ddrm" or (r.sampler == "mcg" and _alpha(r) == 0.0):
        return "DDRM"
    if r.sampler == "mcg":
        return f"DDRM+MCG@{_alpha(r):g}"
    return r.sampler


LAYOUT = Comparison(
    method_of=method,
    column_of=lambda r: r.degradation,
    reference_method="DDRM",
    swept_method="DDRM+MCG",
    sweep_label="α (sampler.grad_scale)",
    # The report's Table 1 (PSNR, dB).
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


def render(spec: TableSpec, records: list[Record]) -> TableResult:
    return render_comparison(spec, LAYOUT, records)


def plot(spec: TableSpec, result: TableResult, records: list[Record], path: Path) -> None:
    plot_comparison(spec, LAYOUT, result, records, path)


SPEC = TableSpec(
    name="table1",
    title="Table 1 — PSNR of DDRM and DDRM+MCG (best α per task)",
    render=render,
    plot=plot,
    detect=lambda records: any(r.sampler == "mcg" for r in records),
    auto_rank=40,
    sweep_label=LAYOUT.sweep_label,
)
