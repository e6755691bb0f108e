"""Video deblurring on BSD (§6, §9): each temporal setting against independent frame-by-frame
DDRM (PSNR, paired ΔPSNR, flicker, warping error, NFE and seconds per frame)."""

from __future__ import annotations

from typing import Any

from ddrm_exp.metrics.summary import CI_NOTE, format_stat, mean_ci
from ddrm_exp.report.cells import (
    Cell,
    group,
    images_per_cell,
    mean_nfe,
    paired_difference,
    unique_mean,
)
from ddrm_exp.report.records import Record, Stat, kernel_field, temporal_field
from ddrm_exp.report.render import md_row, md_table
from ddrm_exp.report.spec import TableResult, TableSpec

TEMPORAL_FLAGS = ("warm_start", "shared_noise", "kernel_propagation")
# What each conf/temporal preset switches on.
TEMPORAL_PRESETS: dict[str, tuple[str, ...]] = {
    "independent": (),
    "warm_start": ("warm_start",),
    "shared_noise": ("shared_noise",),
    "kernel_propagation": ("kernel_propagation",),
    "all": TEMPORAL_FLAGS,
}
REFERENCE = "independent"
HEADER = [
    "temporal",
    "frames",
    "PSNR",
    "SSIM",
    "ΔPSNR vs independent",
    "blurry PSNR",
    "Wiener PSNR",
    "RL PSNR",
    "flicker ↓",
    "warping error ↓",
    "NFE / frame",
    "s / frame",
]

# What the columns mean, under the table.
COLUMNS = (
    "ΔPSNR: paired over the same frames. Blurry: the measured frame itself; Wiener, RL "
    "(Richardson–Lucy): classical deconvolution of it with the kernel DDRM used in that row "
    "(ddrm_exp.restoration). Flicker: mean |(x̂_k − x̂_{{k−1}}) − (x_k − x_{{k−1}})| over "
    "consecutive frames ([0, 1] units). Warping error: mean squared difference between x̂_k and "
    "x̂_{{k−1}} warped by the sharp frames' Farnebäck flow, non-occluded pixels (Lai et al. "
    "2018); the sharp frames' own: {floor} (the flow's floor). Blurry frames' PSNR: {blurry}. "
    "NFE and seconds per frame: the sampler's network evaluations and the sampling plus "
    "kernel-estimation time; frames the blind plan keeps unrestored (records' kernel.kept) "
    "are not sampled and count 0 NFE."
)


def temporal_mode(r: Record) -> str:
    """A video run's temporal setting: its preset's name, with switches changed on top of it."""
    t = r.raw.get("temporal") or {}
    name = str(t.get("name", "independent"))
    flags = {f for f in TEMPORAL_FLAGS if t.get(f)}
    implied = set(TEMPORAL_PRESETS.get(name, ()))
    label = name + "".join(f" + {f}" for f in sorted(flags - implied))
    label += "".join(f" − {f}" for f in sorted(implied - flags))
    if t.get("warm_start"):
        label += f" (t*={t.get('t_star')}{', no flow' if t.get('align') == 'none' else ''})"
    return label


def _rank(mode: str) -> int:
    base = mode.split(" ")[0]
    order = list(TEMPORAL_PRESETS)
    return order.index(base) if base in order else len(order)


def _temporal(records: list[Record], key: str) -> Stat:
    return mean_ci(temporal_field(r, key) for r in records)


def _row(spec: TableSpec, mode: str, cell: Cell, diff: Stat) -> tuple[str, dict[str, Any]]:
    """One temporal setting: its markdown line and its CSV row."""
    recs = cell.records
    flick, warp_err = _temporal(recs, "flicker"), _temporal(recs, "warping_error")
    nfe = float(mean_nfe(recs) or 0.0)
    # The estimate is part of a frame's cost (a kept frame costs nothing else).
    estimation = (float(kernel_field(r, "estimation_seconds") or 0.0) for r in recs)
    seconds = (sum(r.seconds for r in recs) + sum(estimation)) / len(recs)
    line = md_row(
        [
            mode,
            str(len(recs)),
            format_stat(cell.stats.get("psnr")),
            format_stat(cell.stats.get("ssim"), 3),
            format_stat(diff) if diff else "–",
            format_stat(cell.stats.get("measurement_psnr")),
            format_stat(cell.stats.get("wiener_psnr")),
            format_stat(cell.stats.get("rl_psnr")),
            format_stat(flick, 4),
            format_stat(warp_err, 5),
            f"{nfe:.1f}",
            f"{seconds:.3f}",
        ]
    )
    row = {
        "table": spec.name,
        "method": mode,
        "frames": len(recs),
        "psnr_mean": cell.stats.get("psnr", {}).get("mean"),
        "psnr_ci95": cell.stats.get("psnr", {}).get("ci95"),
        "ssim_mean": cell.stats.get("ssim", {}).get("mean"),
        "psnr_diff_vs_independent": diff.get("mean"),
        "measurement_psnr_mean": cell.stats.get("measurement_psnr", {}).get("mean"),
        "wiener_psnr_mean": cell.stats.get("wiener_psnr", {}).get("mean"),
        "rl_psnr_mean": cell.stats.get("rl_psnr", {}).get("mean"),
        "flicker_mean": flick.get("mean"),
        "warping_error_mean": warp_err.get("mean"),
        "nfe_per_frame": nfe,
        "seconds_per_frame": seconds,
    }
    return line, row


def render(spec: TableSpec, records: list[Record]) -> TableResult:
    cells = group(records, temporal_mode, lambda r: "all", split=False)
    modes = sorted({m for m, _ in cells}, key=lambda m: (_rank(m), m))
    reference = cells.get((REFERENCE, "all"))
    lines = md_table(spec.title, HEADER)
    rows: list[dict[str, Any]] = []
    for mode in modes:
        cell = cells[(mode, "all")]
        diff = paired_difference(cell, reference) if reference and mode != REFERENCE else {}
        line, row = _row(spec, mode, cell, diff)
        lines.append(line)
        rows.append(row)
    floor = _temporal(records, "warping_error_sharp")
    measured = unique_mean(records, "measurement_psnr")
    lines += [
        "",
        f"PSNR/SSIM: mean over frames ({images_per_cell(cells.values())}); {CI_NOTE}. "
        + COLUMNS.format(floor=format_stat(floor, 5), blurry=format_stat(measured)),
    ]
    return TableResult("\n".join(lines), rows, {})


SPEC = TableSpec(
    name="video",
    title="Video deblurring on BSD sequences: temporal help against frame-by-frame DDRM",
    render=render,
    detect=lambda records: any(r.raw.get("task") == "video" for r in records),
    auto_rank=10,
)
