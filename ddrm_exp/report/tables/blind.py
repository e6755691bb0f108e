"""What the blind-deblurring tables (Table 2, Figure 8) share: kernel labels and NFE/s."""

from __future__ import annotations

import math

from ddrm_exp.report.cells import unique_mean
from ddrm_exp.report.records import Record, Stat, kernel_field

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
    # A record holds its image's share of a batched call; kept frames add no NFE.
    nfe = sum(r.nfe / max(int(r.raw.get("batch_size", 1)), 1) for r in records)
    seconds = sum(r.seconds for r in records if math.isfinite(r.seconds))
    seconds += sum(float(kernel_field(r, "estimation_seconds") or 0.0) for r in records)
    return nfe / seconds if seconds > 0 else None


CLASSICAL = (("wiener_psnr", "Wiener"), ("rl_psnr", "Richardson–Lucy"))
"""The classical baselines every blind and video table shows beside DDRM: Wiener and
Richardson-Lucy (``ddrm_exp.restoration``) with the kernel DDRM used, per image."""


def classical_stats(records: list[Record]) -> dict[str, Stat]:
    """Mean PSNR of each classical baseline over the distinct images of ``records``."""
    return {key: unique_mean(records, key) for key, _ in CLASSICAL}


def has_classical(records: list[Record]) -> bool:
    return any(r.values.get("wiener_psnr") is not None for r in records)
