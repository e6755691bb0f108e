"""Records grouped into table cells that never pool runs of different settings.

A cell is one (method, column) of a table. :func:`group` splits a cell whose records differ in
a setting (a σ_y sweep under one degradation) or, for tables with a fixed layout, refuses it;
:func:`paired_difference` compares two cells over the images both restored.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

from ddrm_exp.metrics.summary import mean_ci
from ddrm_exp.report.records import Record, Stat, assumed_sigma

# Settings a record carries that make two runs different experiments. Per-image outcomes (the
# kernel an image got, its NFE under a warm start) are left out: they differ within one run.
_TEMPORAL_SETTINGS = ("name", "warm_start", "t_star", "align", "shared_noise", "kernel_propagation")
SETTING_LABELS = {"sigma_y": "σ_y", "assumed_sigma_y": "assumed σ_y"}


def settings(r: Record) -> dict[str, Any]:
    """What was set for the run that made ``r``, flattened (``sampler.grad_scale``, ...)."""
    out: dict[str, Any] = {
        "task": r.raw.get("task", "image"),
        "degradation": r.degradation,
        "model": r.raw.get("model"),
        "sampler": r.sampler,
        "sigma_y": r.sigma_y,
        "assumed_sigma_y": assumed_sigma(r),
    }
    out.update({f"sampler.{k}": _hashable(v) for k, v in sorted(r.params.items())})
    # Unknown degradation settings (an old record) add no key: such a record is kept apart only
    # from records whose known settings differ among themselves, as before the field existed.
    params = r.degradation_params or {}
    out.update({f"degradation.{k}": _hashable(v) for k, v in sorted(params.items())})
    kernel = r.raw.get("kernel") or {}
    if kernel:
        out["kernel.assumed"], out["kernel.estimator"] = (
            kernel.get("assumed"),
            kernel.get("estimator"),
        )
    temporal: dict[str, Any] = dict(r.raw.get("temporal") or {})
    out.update({f"temporal.{k}": temporal.get(k) for k in _TEMPORAL_SETTINGS if k in temporal})
    return out


def _hashable(value: Any) -> Any:
    if isinstance(value, list):
        return tuple(_hashable(v) for v in value)
    if isinstance(value, dict):
        return tuple(sorted((k, _hashable(v)) for k, v in value.items()))
    return value


def setting_label(key: str, value: Any) -> str:
    # A column is already named by its degradation: "deblur_uniform official_compat=True".
    name = SETTING_LABELS.get(key, key.removeprefix("sampler.").removeprefix("degradation."))
    return f"{name}={value:g}" if isinstance(value, float) else f"{name}={value}"


class MixedSettingsError(ValueError):
    """A table cell would pool runs made with different settings."""


@dataclass
class Cell:
    """Statistics of one (method, column) group: runs of one setting only."""

    method: str
    column: str
    stats: dict[str, Stat]
    records: list[Record]

    def mean(self, metric: str = "psnr") -> float:
        m = self.stats.get(metric, {}).get("mean")
        return -float("inf") if m is None else float(m)


EMPTY_CELL = Cell("", "", {}, [])


@dataclass
class Grouping:
    """How :func:`group` kept cells to one setting: what it split on and what it dropped."""

    split_keys: tuple[str, ...] = ()
    duplicates: int = 0

    def notes(self) -> list[str]:
        out = []
        if self.split_keys:
            names = ", ".join(SETTING_LABELS.get(k, k) for k in self.split_keys)
            out.append(
                f"These runs sweep {names} besides the compared settings, so each column is "
                "split by it (never pooled); paired differences match image, seed and every "
                "other setting."
            )
        if self.duplicates:
            out.append(
                f"{self.duplicates} record(s) repeat an image already restored with the same "
                "settings in another run directory; each image is counted once."
            )
        return out


def mixed_keys(records: list[Record]) -> dict[str, list[Any]]:
    """The settings that take more than one value among ``records``, with their values."""
    values: dict[str, set[Any]] = defaultdict(set)
    for r in records:
        for k, v in settings(r).items():
            values[k].add(v)
    return {k: sorted(v, key=repr) for k, v in values.items() if len(v) > 1}


def _independent(keys: list[str], records: list[Record]) -> list[str]:
    """``keys`` less those fixed by the ones before them (the assumed σ_y that follows σ_y)."""
    kept: list[str] = []
    all_settings = [settings(r) for r in records]
    for key in keys:
        seen: dict[tuple[Any, ...], set[Any]] = defaultdict(set)
        for st in all_settings:
            seen[tuple(st.get(k) for k in kept)].add(st.get(key))
        if any(len(v) > 1 for v in seen.values()):
            kept.append(key)
    return kept


def _refuse_mixed(buckets: dict[tuple[str, str], list[Record]]) -> None:
    (method, column), recs = next((key, recs) for key, recs in buckets.items() if mixed_keys(recs))
    detail = "; ".join(
        f"{SETTING_LABELS.get(k, k)} ∈ {{{', '.join(map(str, v))}}}"
        for k, v in mixed_keys(recs).items()
    )
    raise MixedSettingsError(
        f"The cell ({method}, {column}) would pool runs made with different settings "
        f"({detail}); its mean would mix experiments. Pass only the run directories of one "
        "setting, or use --table runs, which splits columns by every swept setting."
    )


def group(
    records: list[Record],
    method_of: Callable[[Record], str],
    column_of: Callable[[Record], str],
    split: bool = True,
    grouping: Grouping | None = None,
) -> dict[tuple[str, str], Cell]:
    """Cells of records by (method, column), each made of runs with one setting only.

    A cell whose records differ in a setting (e.g. a σ_y sweep under one degradation) is split:
    every column gets that setting's value appended (``inpaint_lorem σ_y=0.05``), the same for
    all methods so their cells still line up. With ``split=False`` (the tables with a fixed
    layout) such a cell raises :class:`MixedSettingsError` with a message instead.
    """
    grouping = grouping if grouping is not None else Grouping()
    buckets: dict[tuple[str, str], list[Record]] = defaultdict(list)
    for r in records:
        buckets[(method_of(r), column_of(r))].append(r)
    found = {k for recs in buckets.values() for k in mixed_keys(recs)}
    # In settings() order, so a label names σ_y before the assumed σ_y that follows it.
    mixed = [k for k in settings(records[0]) if k in found] + sorted(
        found - set(settings(records[0]))
    )
    if mixed and not split:
        _refuse_mixed(buckets)
    mixed = _independent(mixed, records)
    grouping.split_keys = tuple(mixed)
    if mixed:
        buckets = defaultdict(list)
        for r in records:
            st = settings(r)
            # A record without a swept key (colorize beside a deblur_uniform official_compat
            # sweep) is not labelled by it; it still lands apart from the records that have it.
            labels = [setting_label(k, st[k]) for k in mixed if k in st]
            column = " ".join([column_of(r), *labels])
            buckets[(method_of(r), column)].append(r)
    cells = {}
    for (method, column), recs in buckets.items():
        unique: dict[tuple[int, int], Record] = {}
        for r in recs:
            unique.setdefault(r.key, r)
        grouping.duplicates += len(recs) - len(unique)
        recs = list(unique.values())
        keys = sorted({k for r in recs for k in r.values})
        stats = {k: mean_ci(r.values.get(k) for r in recs) for k in keys}
        stats["seconds"] = mean_ci(r.seconds for r in recs)
        cells[(method, column)] = Cell(method, column, stats, recs)
    return cells


def paired_difference(a: Cell, b: Cell, metric: str = "psnr") -> Stat:
    """Mean and CI of a − b over the images (index, seed) both cells restored.

    Cells from :func:`group` hold one setting each and cells of one column share every setting
    outside the compared one, so matching on (index, seed) pairs the same measurement.
    """
    bv = {r.key: r.values.get(metric) for r in b.records}
    diffs = [
        float(r.values[metric]) - float(bv[r.key])  # type: ignore[arg-type]
        for r in a.records
        if r.values.get(metric) is not None and bv.get(r.key) is not None
    ]
    return mean_ci(diffs)


def unique_mean(records: list[Record], metric: str) -> Stat:
    """Mean over distinct images: the measurement is the same in every cell of a row."""
    by_key = {r.key: r.values.get(metric) for r in records}
    return mean_ci(by_key.values())


def mean_nfe(records: list[Record]) -> float | None:
    """Network evaluations per image of a cell: their mean, since a blind run's frames kept
    unrestored (the no-harm rule, ``keep_sharp``) record 0. An int when whole (as the runner's
    summary writes it)."""
    if not records:
        return None
    nfe = sum(r.nfe for r in records) / len(records)
    return int(nfe) if nfe == int(nfe) else nfe


def images_per_cell(cells: Iterable[Cell]) -> str:
    """The number of images behind each cell, as a footer states it: "n = 2" or "n = 2–10"."""
    counts = sorted({len({r.key for r in cell.records}) for cell in cells})
    if not counts:
        return "n = 0"
    return f"n = {counts[0]}" if len(counts) == 1 else f"n = {counts[0]}–{counts[-1]} per cell"
