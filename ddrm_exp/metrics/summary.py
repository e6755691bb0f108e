"""Aggregation of per-image values: means with Student-t 95 % confidence intervals."""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from typing import Any

from scipy import stats


def mean_ci(values: Iterable[float | None], level: float = 0.95) -> dict[str, float | int | None]:
    """Mean, standard deviation, half-width of the ``level`` CI and count of the finite values."""
    vals = [float(v) for v in values if v is not None and math.isfinite(float(v))]
    n = len(vals)
    if n == 0:
        return {"mean": None, "std": None, "ci95": None, "n": 0}
    mean = sum(vals) / n
    if n == 1:
        return {"mean": mean, "std": None, "ci95": None, "n": 1}
    std = math.sqrt(sum((v - mean) ** 2 for v in vals) / (n - 1))
    half = float(stats.t.ppf(0.5 + level / 2, n - 1)) * std / math.sqrt(n)
    return {"mean": mean, "std": std, "ci95": half, "n": n}


def format_stat(stat: Mapping[str, Any] | None, digits: int = 2, missing: str = "–") -> str:
    """``mean ± ci95`` of a :func:`mean_ci` result (just the mean when there is no CI)."""
    if not stat or stat.get("mean") is None:
        return missing
    text = f"{stat['mean']:.{digits}f}"
    ci = stat.get("ci95")
    if ci is not None and math.isfinite(ci):
        text += f" ± {ci:.{digits}f}"
    return text
