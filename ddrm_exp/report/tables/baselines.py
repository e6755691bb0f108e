"""The baselines table (``experiment=baselines``, issue 16): DDRM against DDRM+MCG, DDNM, ΠGDM,
DPS and DiffPIR on the same images, per task, with the paired difference of each against DDRM
(same image and measurement) for PSNR, SSIM and LPIPS, their NFE and seconds per image."""

from __future__ import annotations

from typing import Any

from ddrm_exp.metrics.summary import CI_NOTE, format_stat, mean_ci
from ddrm_exp.report.cells import (
    Cell,
    Grouping,
    group,
    images_per_cell,
    mean_nfe,
    paired_difference,
)
from ddrm_exp.report.records import Record
from ddrm_exp.report.spec import TableResult, TableSpec

LABELS = {
    "ddrm": "DDRM",
    "mcg": "DDRM+MCG",
    "ddnm": "DDNM",
    "pigdm": "ΠGDM",
    "dps": "DPS",
    "diffpir": "DiffPIR",
}
BASELINES = frozenset(("ddnm", "pigdm", "dps", "diffpir"))
REFERENCE = "DDRM"
COLUMN_ORDER = ("colorize", "inpaint_lorem", "denoise")
METRICS = (("psnr", 2), ("ssim", 3), ("lpips", 3))


def method(r: Record) -> str:
    return LABELS.get(r.sampler, r.sampler)


def _exact(cell: Cell) -> int:
    """Images restored exactly: their PSNR is recorded as null (zero error), their SSIM as 1."""
    return sum(
        1 for r in cell.records if r.values.get("psnr") is None and r.values.get("ssim") == 1.0
    )


def _psnr_text(cell: Cell) -> str:
    text = format_stat(cell.stats.get("psnr"))
    exact, n = _exact(cell), len(cell.records)
    if exact == n:
        return "∞ (exact)"
    return f"{text}; {exact} of {n} exact" if exact else text


def _order(label: str) -> tuple[int, str]:
    ranks = list(LABELS.values())
    return (ranks.index(label) if label in ranks else len(ranks), label)


def render(spec: TableSpec, records: list[Record]) -> TableResult:
    grouping = Grouping()
    cells = group(records, method, lambda r: r.degradation, grouping=grouping)
    rank = {c: i for i, c in enumerate(COLUMN_ORDER)}
    columns = sorted({k[1] for k in cells}, key=lambda c: (rank.get(c.split(" ")[0], 99), c))
    methods = sorted({k[0] for k in cells}, key=_order)
    header = ["task", "method"]
    for name, _ in METRICS:
        header += [name.upper(), f"Δ {name.upper()} vs {REFERENCE}"]
    header += ["NFE", "s/image"]
    lines = [f"## {spec.title}", "", "| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    rows: list[dict[str, Any]] = []
    for column in columns:
        ref = cells.get((REFERENCE, column))
        for label in methods:
            cell = cells.get((label, column))
            if cell is None:
                continue
            row: dict[str, Any] = {"table": spec.name, "method": label, "column": column}
            texts: list[str] = []
            for metric, digits in METRICS:
                st = cell.stats.get(metric) or {}
                row[f"{metric}_mean"], row[f"{metric}_ci95"] = st.get("mean"), st.get("ci95")
                texts.append(_psnr_text(cell) if metric == "psnr" else format_stat(st, digits))
                if ref is None or label == REFERENCE:
                    texts.append("–")
                    continue
                diff = paired_difference(cell, ref, metric)
                row[f"diff_{metric}_mean"], row[f"diff_{metric}_ci95"] = (
                    diff.get("mean"),
                    diff.get("ci95"),
                )
                texts.append(format_stat(diff, digits))
            seconds = mean_ci(r.seconds for r in cell.records)
            nfe = mean_nfe(cell.records)
            row.update(
                n=len(cell.records),
                nfe=nfe,
                seconds_mean=seconds.get("mean"),
                seconds_ci95=seconds.get("ci95"),
            )
            rows.append(row)
            sec = "–" if seconds.get("mean") is None else f"{seconds['mean']:.2f}"
            lines.append("| " + " | ".join([column, label, *texts, str(nfe), sec]) + " |")
        pinv = next((c for k, c in cells.items() if k[1] == column), None)
        if pinv is not None and (pinv.stats.get("baseline_psnr") or {}).get("n"):
            blanks = ["–"] * (2 * len(METRICS) - 1)
            psnr = format_stat(pinv.stats["baseline_psnr"])
            lines.append("| " + " | ".join([column, "H⁺y", psnr, *blanks, "0", "–"]) + " |")
    lines += [
        "",
        f"Mean over the images of each cell ({images_per_cell(cells.values())}); Δ: the paired "
        f"difference method − {REFERENCE} over the same images and measurements; {CI_NOTE}. "
        "A PSNR of ∞ is an exact restoration (noiseless denoising); such images leave the PSNR "
        "means and differences. NFE counts a step that back-propagates through the network "
        "(ΠGDM, DPS, DDRM+MCG) as two.",
        *grouping.notes(),
    ]
    return TableResult("\n".join(lines), rows, {})


SPEC = TableSpec(
    name="baselines",
    title="DDRM against its baselines (paired differences against DDRM)",
    render=render,
    detect=lambda records: any(r.sampler in BASELINES for r in records),
    auto_rank=35,  # before table1 (40), which would claim these runs for their MCG jobs
)
