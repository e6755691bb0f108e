"""What the blind-deblurring tables (Table 2, Figure 8) share: kernel labels and NFE/s."""

from __future__ import annotations

import math

from ddrm_exp.report.records import Record, kernel_field

KERNEL_LABELS = {
    "gt": "Ground truth",
    "aniso2d": "2D deblurring",
    "gauss": "Gaussian deblurring",
    "uniform": "Uniform deblurring",
    "estimated": "Kernel estimation",
}


def is_blind(records: list[Record]) -> list[Record]:
    """The records of blind runs (those with a kernel)."""
    return [r for r in records if r.raw.get("kernel")]


def nfe_per_second(records: list[Record]) -> float | None:
    """NFE/s of a cell, counting a batched network call once (as the runner's summary does)
    and including the kernel estimation time, which the report's estimated row pays."""
    if not records:
        return None
    batches = sum(1.0 / max(int(r.raw.get("batch_size", 1)), 1) for r in records)
    seconds = sum(r.seconds for r in records if math.isfinite(r.seconds))
    seconds += sum(float(kernel_field(r, "estimation_seconds") or 0.0) for r in records)
    return records[0].nfe * batches / seconds if seconds > 0 else None
