"""Aggregation of per-image values: means with Student-t 95 % confidence intervals.

Every "±" the project prints comes from :func:`format_stat`, and every place that prints one
says what it is with :data:`CI_NOTE`: a reader cannot tell a standard deviation from a CI
half-width otherwise. Below :data:`MIN_N_FOR_CI` values a t-interval is too wide to mean much
(with n = 2 its half-width is 12.7 standard errors), so the values themselves are shown.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from typing import Any

from scipy import stats

# Below this many values format_stat lists them instead of a CI.
MIN_N_FOR_CI = 5
# An image this far below its measurement (PSNR, dB) counts as made worse: the bar the blind
# deblurring runs, tables and summaries count frames against.
WORSE_THAN_DB = 0.2

CI_NOTE = (
    "± is the half-width of the 95 % confidence interval of the mean (Student t, n − 1 "
    f"degrees of freedom, n = number of images); with n < {MIN_N_FOR_CI} the values are "
    "listed instead"
)


def mean_ci(values: Iterable[float | None], level: float = 0.95) -> dict[str, Any]:
    """Mean, standard deviation, half-width of the ``level`` CI, count, min and max of the
    finite values.

    With fewer than :data:`MIN_N_FOR_CI` values the values are kept too (``values``), so a
    printout can show them rather than an interval that says little.
    """
    vals = [float(v) for v in values if v is not None and math.isfinite(float(v))]
    n = len(vals)
    if n == 0:
        return {"mean": None, "std": None, "ci95": None, "n": 0}
    mean = sum(vals) / n
    out: dict[str, Any] = {
        "mean": mean,
        "std": None,
        "ci95": None,
        "n": n,
        "min": min(vals),
        "max": max(vals),
    }
    if n < MIN_N_FOR_CI:
        out["values"] = vals
    if n > 1:
        std = math.sqrt(sum((v - mean) ** 2 for v in vals) / (n - 1))
        out["std"] = std
        out["ci95"] = float(stats.t.ppf(0.5 + level / 2, n - 1)) * std / math.sqrt(n)
    return out


def format_stat(stat: Mapping[str, Any] | None, digits: int = 2, missing: str = "–") -> str:
    """A :func:`mean_ci` result as text: ``mean ± ci95 (n=…)``.

    With fewer than :data:`MIN_N_FOR_CI` values: ``mean (n=2: v1, v2)``, or
    ``mean (n=2, too few for a CI)`` when the values were not kept.
    """
    if not stat or stat.get("mean") is None:
        return missing
    mean = f"{stat['mean']:.{digits}f}"
    n = stat.get("n")
    if not isinstance(n, int):
        # A hand-made stat without a count: say nothing about its spread we cannot back.
        return mean
    if n < MIN_N_FOR_CI:
        vals = stat.get("values")
        if n == 1:
            return f"{mean} (n=1)"
        if vals:
            return f"{mean} (n={n}: " + ", ".join(f"{v:.{digits}f}" for v in vals) + ")"
        return f"{mean} (n={n}, too few for a CI)"
    ci = stat.get("ci95")
    if ci is None or not math.isfinite(ci):
        return f"{mean} (n={n})"
    return f"{mean} ± {ci:.{digits}f} (n={n})"


def error_bar(stat: Mapping[str, Any]) -> tuple[float, float]:
    """(below, above) the mean for a plot's CI bar, clipped to the range of the values.

    A t-interval over a few values can reach far past anything observed (−60 dB for a PSNR);
    drawn in full it squashes the axis, so a bar stops at the smallest and largest value.
    """
    mean, ci = stat.get("mean"), stat.get("ci95")
    if mean is None or ci is None or not math.isfinite(ci):
        return 0.0, 0.0
    low = max(mean - ci, stat.get("min", -math.inf))
    high = min(mean + ci, stat.get("max", math.inf))
    return max(mean - low, 0.0), max(high - mean, 0.0)
