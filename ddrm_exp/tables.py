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
from dataclasses import dataclass, field, replace
from functools import lru_cache
from pathlib import Path
from typing import Any

from ddrm_exp.metrics.summary import CI_NOTE, error_bar, format_stat, mean_ci

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
    # The degradation's own settings (official_compat, source, mask_path, kernels, ...); None
    # where they are unknown (a record older than the field, with no config to read them from).
    degradation_params: dict[str, Any] | None = None

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


def _config_degradation(run_dir: Path) -> tuple[str | None, dict[str, Any]] | None:
    """The config_hash and degradation settings of ``config_resolved.yaml`` in ``run_dir``."""
    from omegaconf import DictConfig, OmegaConf

    from ddrm_exp.tracking.resume import config_hash, neutral_keys

    path = run_dir / "config_resolved.yaml"
    try:
        cfg = OmegaConf.load(path)
        if not isinstance(cfg, DictConfig) or not isinstance(cfg.get("degradation"), DictConfig):
            return None
        fingerprint = config_hash(cfg)
        values = OmegaConf.to_container(cfg.degradation, resolve=True)
    except Exception:  # noqa: BLE001 - a missing or unreadable file: the settings stay unknown
        return None
    neutral = neutral_keys("degradation")
    params = {
        str(k): v
        for k, v in values.items()  # type: ignore[union-attr]
        if not str(k).startswith("_") and str(k) not in neutral
    }
    return fingerprint, params


@lru_cache(maxsize=64)
def _group_keys(group: str, option: str) -> frozenset[str]:
    """The keys ``conf/<group>/<option>.yaml`` has today; empty for an option not there.
    Cached: it is asked once per record of a degradation without some later-added key."""
    from omegaconf import DictConfig, OmegaConf

    from ddrm_exp.paths import CONF_DIR

    try:
        node = OmegaConf.load(CONF_DIR / group / f"{option}.yaml")
    except Exception:  # noqa: BLE001 - not one of the project's options (or not a file)
        return frozenset()
    return frozenset(str(k) for k in node.keys()) if isinstance(node, DictConfig) else frozenset()


def degradation_settings(
    r: dict[str, Any], run_dir: Path, configs: dict[Path, Any]
) -> dict[str, Any] | None:
    """A record's degradation settings, as complete as can be known, or None where unknown.

    Records written before ``degradation_params`` existed take them from their run directory's
    ``config_resolved.yaml`` when its config_hash is the record's (``configs`` caches the file
    per directory). Keys added to a degradation after results existed (``official_compat``,
    ``mask_path``, ``source``) are filled with the value that computed those results, where the
    degradation has the key today, so an old run pairs with a new one at that value and never
    with one that sets it otherwise.
    """
    from ddrm_exp.tracking.resume import later_defaults

    params = r.get("degradation_params")
    if not isinstance(params, dict):
        if run_dir not in configs:
            configs[run_dir] = _config_degradation(run_dir)
        found = configs[run_dir]
        stored = r.get("config_hash")
        if found is None or (stored is not None and stored != found[0]):
            return None  # no config, or one of other settings than this record's
        params = found[1]
    params = dict(params)
    later = later_defaults("degradation")
    missing = [k for k in later if k not in params]
    if missing:
        has = _group_keys("degradation", str(r.get("degradation")))
        params.update({k: later[k] for k in missing if k in has})
    return params


def load_records(paths: Iterable[Path]) -> list[Record]:
    records = []
    configs: dict[Path, Any] = {}
    for run_dir in find_run_dirs(paths):
        for line in (run_dir / "results.jsonl").read_text().splitlines():
            try:
                r = json.loads(line)
            except json.JSONDecodeError:
                continue  # a torn last line of a killed run
            values: dict[str, float | None] = {}
            parts = (("restored", ""), ("baseline", "baseline_"), ("measurement", "measurement_"))
            for part, prefix in parts:
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
                    degradation_params=degradation_settings(r, run_dir, configs),
                )
            )
    return records


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
    temporal = r.raw.get("temporal") or {}
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
    stats: dict[str, dict[str, Any]]
    records: list[Record]

    def mean(self, metric: str = "psnr") -> float:
        m = self.stats.get(metric, {}).get("mean")
        return -math.inf if m is None else float(m)


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
        (method, column), recs = next(
            (key, recs) for key, recs in buckets.items() if mixed_keys(recs)
        )
        detail = "; ".join(
            f"{SETTING_LABELS.get(k, k)} ∈ {{{', '.join(map(str, v))}}}"
            for k, v in mixed_keys(recs).items()
        )
        raise MixedSettingsError(
            f"The cell ({method}, {column}) would pool runs made with different settings "
            f"({detail}); its mean would mix experiments. Pass only the run directories of one "
            "setting, or use --table runs, which splits columns by every swept setting."
        )
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


def paired_difference(a: Cell, b: Cell, metric: str = "psnr") -> dict[str, Any]:
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


def images_per_cell(cells: Iterable[Cell]) -> str:
    """The number of images behind each cell, as a footer states it: "n = 2" or "n = 2–10"."""
    counts = sorted({len({r.key for r in cell.records}) for cell in cells})
    if not counts:
        return "n = 0"
    return f"n = {counts[0]}" if len(counts) == 1 else f"n = {counts[0]}–{counts[-1]} per cell"


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
    # A table with its own layout (Table 2, Figure 8) renders itself instead of build_table's.
    render: Callable[[TableSpec, list[Record]], TableResult] | None = None


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


def sampler_setting(r: Record) -> str:
    """The sampler and every one of its settings, e.g. ``mcg eta=0.85 grad_scale=1.0 ...``."""
    return r.sampler + "".join(
        f" {k}={v}" for k, v in sorted(r.params.items()) if k not in ("timesteps",)
    )


GENERIC = TableSpec(
    name="runs",
    title="Mean metrics per sampler setting and degradation",
    # σ_y is not part of the method: a σ_y sweep splits the columns instead, so each column's
    # H⁺y baseline is that of its own noise level. build_table shortens the label to the
    # settings that differ between the runs.
    method_of=sampler_setting,
    column_of=lambda r: r.degradation,
    reference_method="",
)


def _differing_setting(records: list[Record]) -> Callable[[Record], str]:
    """A method label naming the sampler and only those of its settings the runs vary."""
    varying = {
        k
        for k in {k for r in records for k in r.params}
        if k != "timesteps" and len({repr(r.params.get(k)) for r in records}) > 1
    }

    def label(r: Record) -> str:
        return r.sampler + "".join(f" {k}={v}" for k, v in sorted(r.params.items()) if k in varying)

    return label


# ---- blind deblurring: Table 2 and Figure 8 ----------------------------------------------------
def assumed_kernel(r: Record) -> str:
    """The kernel a blind run assumed (``degradation.assumed_kernel``), else the degradation."""
    return str((r.raw.get("kernel") or {}).get("assumed") or r.degradation)


def assumed_sigma(r: Record) -> float:
    """The σ_y the sampler assumed (Figure 8's axis); the true one when not set apart."""
    value = r.raw.get("assumed_sigma_y")
    return r.sigma_y if value is None else float(value)


def _kernel_field(r: Record, key: str) -> Any:
    return (r.raw.get("kernel") or {}).get(key)


def _unique_mean(records: list[Record], metric: str) -> dict[str, Any]:
    """Mean over distinct images: the measurement is the same in every cell of a row."""
    by_key = {r.key: r.values.get(metric) for r in records}
    return mean_ci(by_key.values())


def nfe_per_second(records: list[Record]) -> float | None:
    """NFE/s of a cell, counting a batched network call once (as the runner's summary does)
    and including the kernel estimation time, which the report's estimated row pays."""
    if not records:
        return None
    batches = sum(1.0 / max(int(r.raw.get("batch_size", 1)), 1) for r in records)
    seconds = sum(r.seconds for r in records if math.isfinite(r.seconds))
    seconds += sum(float(_kernel_field(r, "estimation_seconds") or 0.0) for r in records)
    return records[0].nfe * batches / seconds if seconds > 0 else None


KERNEL_LABELS = {
    "gt": "Ground truth",
    "aniso2d": "2D deblurring",
    "gauss": "Gaussian deblurring",
    "uniform": "Uniform deblurring",
    "estimated": "Kernel estimation",
}
NOISE_YES, NOISE_NO = "✓", "✗"

# Report Table 2: (assumed kernel, noise) -> (PSNR, NFE/s); noise ✓ is σ_y = 0.02.
TABLE2_REPORT: dict[tuple[str, str], tuple[float, float]] = {
    ("gt", NOISE_YES): (30.98, 1.03),
    ("gt", NOISE_NO): (42.74, 1.05),
    ("aniso2d", NOISE_YES): (7.98, 1.03),
    ("aniso2d", NOISE_NO): (6.63, 1.06),
    ("gauss", NOISE_YES): (8.55, 1.05),
    ("gauss", NOISE_NO): (8.10, 1.06),
    ("estimated", NOISE_YES): (10.14, 0.92),
    ("estimated", NOISE_NO): (7.43, 0.93),
}

# Report Figure 8: assumed σ_y -> PSNR per assumed kernel ("total average PSNR").
FIGURE8_KERNELS = ("estimated", "gauss", "uniform", "aniso2d")
FIGURE8_REPORT: dict[float, tuple[float, float, float, float]] = {
    0.05: (12.9, 12.3, 7.1, 11.9),
    0.04: (10.3, 11.5, 6.9, 11.2),
    0.03: (9.4, 10.1, 6.27, 10.6),
    0.02: (8.0, 8.9, 6.0, 9.34),
    0.01: (7.21, 6.8, 5.3, 7.5),
    0.0: (6.2, 6.0, 4.9, 6.14),
}


def _order(keys: Iterable[str], preferred: Iterable[str]) -> list[str]:
    keys = set(keys)
    first = [k for k in preferred if k in keys]
    return first + sorted(keys - set(first))


def _num(value: float | None, digits: int = 2) -> str:
    return "–" if value is None else f"{value:.{digits}f}"


def render_table2(spec: TableSpec, records: list[Record]) -> TableResult:
    """Report Table 2: one row per (assumed kernel, noise), ours beside the report's."""
    sigma_of = {r.sigma_y for r in records}
    noisy = sorted(s for s in sigma_of if s > 0)

    def noise_of(r: Record) -> str:
        return NOISE_YES if r.sigma_y > 0 else NOISE_NO

    cells = group(records, assumed_kernel, noise_of, split=False)
    kernels = _order({k for k, _ in cells}, KERNEL_LABELS)
    noises = [n for n in (NOISE_YES, NOISE_NO) if any(k[1] == n for k in cells)]
    noise_text = {NOISE_YES: f"{NOISE_YES} (σ_y={','.join(f'{s:g}' for s in noisy)})"}
    noise_text[NOISE_NO] = NOISE_NO
    header = [
        "Degradation model",
        "Noise",
        "PSNR",
        "report PSNR",
        "NFE/s",
        "report NFE/s",
        "H⁺y PSNR",
        "kernel NCC",
        "estimation s/image",
    ]
    lines = [f"## {spec.title}", "", "| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    rows: list[dict[str, Any]] = []
    for kernel in kernels:
        for noise in noises:
            cell = cells.get((kernel, noise))
            if cell is None:
                continue
            report = TABLE2_REPORT.get((kernel, noise))
            nfe_s = nfe_per_second(cell.records)
            ncc = mean_ci(_kernel_field(r, "ncc") for r in cell.records)
            est = mean_ci(_kernel_field(r, "estimation_seconds") for r in cell.records)
            label = KERNEL_LABELS.get(kernel, kernel)
            lines.append(
                "| "
                + " | ".join(
                    [
                        label,
                        noise_text[noise],
                        format_stat(cell.stats.get("psnr")),
                        _num(report[0] if report else None),
                        _num(nfe_s),
                        _num(report[1] if report else None),
                        format_stat(cell.stats.get("baseline_psnr")),
                        format_stat(ncc, 3),
                        format_stat(est, 3),
                    ]
                )
                + " |"
            )
            rows.append(
                {
                    "table": spec.name,
                    "method": kernel,
                    "column": noise,
                    "psnr_mean": cell.stats.get("psnr", {}).get("mean"),
                    "psnr_ci95": cell.stats.get("psnr", {}).get("ci95"),
                    "n": cell.stats.get("psnr", {}).get("n"),
                    "report_psnr": report[0] if report else None,
                    "nfe": cell.records[0].nfe,
                    "nfe_per_s": nfe_s,
                    "report_nfe_per_s": report[1] if report else None,
                    "baseline_psnr_mean": cell.stats.get("baseline_psnr", {}).get("mean"),
                    "measurement_psnr_mean": cell.stats.get("measurement_psnr", {}).get("mean"),
                    "kernel_ncc_mean": ncc.get("mean"),
                    "estimation_seconds_mean": est.get("mean"),
                }
            )
    for noise in noises:
        recs = [r for r in records if noise_of(r) == noise]
        stat = _unique_mean(recs, "measurement_psnr")
        if stat.get("n"):
            blank = ["–"] * (len(header) - 3)
            lines.append(
                f"| Blurry measurement (no restoration) | {noise_text[noise]} | "
                f"{format_stat(stat)} | " + " | ".join(blank) + " |"
            )
            rows.append(
                {
                    "table": spec.name,
                    "method": "measurement",
                    "column": noise,
                    "psnr_mean": stat.get("mean"),
                    "psnr_ci95": stat.get("ci95"),
                    "n": stat.get("n"),
                }
            )
    lines += [
        "",
        f"PSNR in dB, mean over the images of each row ({images_per_cell(cells.values())}); "
        f"{CI_NOTE}. NFE/s counts a batched "
        "network call once and includes the kernel estimation time. H⁺y uses each row's "
        "operator. The report's numbers are from its Table 2 (σ_y = 0.02 for ✓).",
    ]
    return TableResult("\n".join(lines), rows, {})


def render_figure8(spec: TableSpec, records: list[Record]) -> TableResult:
    """Report Figure 8: PSNR per assumed σ_y (rows) and assumed kernel (columns)."""
    cells = group(records, assumed_kernel, lambda r: f"{assumed_sigma(r):g}", split=False)
    kernels = _order({k for k, _ in cells}, FIGURE8_KERNELS)
    sigmas = sorted({assumed_sigma(r) for r in records}, reverse=True)
    labels = {k: KERNEL_LABELS.get(k, k) for k in kernels}

    def report_value(kernel: str, sigma: float) -> float | None:
        row = next((v for s, v in FIGURE8_REPORT.items() if math.isclose(s, sigma)), None)
        if row is None or kernel not in FIGURE8_KERNELS:
            return None
        return row[FIGURE8_KERNELS.index(kernel)]

    header = ["σ_y (assumed)", *(labels[k] for k in kernels), "blurry measurement"]
    lines = [f"## {spec.title}", "", "| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    rows: list[dict[str, Any]] = []
    curves: dict[str, list[tuple[float, dict[str, Any]]]] = defaultdict(list)
    report_curves: dict[str, list[tuple[float, float]]] = defaultdict(list)
    for sigma in sigmas:
        texts = []
        for kernel in kernels:
            cell = cells.get((kernel, f"{sigma:g}"))
            rep = report_value(kernel, sigma)
            if rep is not None:
                report_curves[labels[kernel]].append((sigma, rep))
            if cell is None:
                texts.append("–" if rep is None else f"– (report {rep:g})")
                continue
            curves[labels[kernel]].append((sigma, cell.stats))
            text = format_stat(cell.stats.get("psnr"))
            texts.append(text + (f" (report {rep:g})" if rep is not None else ""))
            rows.append(
                {
                    "table": spec.name,
                    "method": kernel,
                    "column": f"{sigma:g}",
                    "psnr_mean": cell.stats.get("psnr", {}).get("mean"),
                    "psnr_ci95": cell.stats.get("psnr", {}).get("ci95"),
                    "n": cell.stats.get("psnr", {}).get("n"),
                    "report_psnr": rep,
                    "baseline_psnr_mean": cell.stats.get("baseline_psnr", {}).get("mean"),
                    "measurement_psnr_mean": cell.stats.get("measurement_psnr", {}).get("mean"),
                    "nfe_per_s": nfe_per_second(cell.records),
                    "estimation_seconds_mean": mean_ci(
                        _kernel_field(r, "estimation_seconds") for r in cell.records
                    ).get("mean"),
                }
            )
        in_row = [r for r in records if math.isclose(assumed_sigma(r), sigma)]
        measured = format_stat(_unique_mean(in_row, "measurement_psnr"))
        lines.append("| " + " | ".join([f"{sigma:g}", *texts, measured]) + " |")

    lines += ["", "### H⁺y baseline (each cell's own operator)", ""]
    lines += ["| σ_y (assumed) | " + " | ".join(labels[k] for k in kernels) + " |"]
    lines += ["|" + "---|" * (len(kernels) + 1)]
    for sigma in sigmas:
        texts = [
            format_stat(
                (cells.get((k, f"{sigma:g}")) or Cell("", "", {}, [])).stats.get("baseline_psnr")
            )
            for k in kernels
        ]
        lines.append("| " + " | ".join([f"{sigma:g}", *texts]) + " |")
    added = sorted({r.sigma_y for r in records})
    lines += [
        "",
        f"PSNR in dB, mean over the images of each cell ({images_per_cell(cells.values())}; "
        f'the report: "total average PSNR"); {CI_NOTE}. σ_y is the level DDRM assumes; '
        "noise added to the frames: "
        f"{', '.join(f'{s:g}' for s in added)}. The last column is the blurry frame's own PSNR.",
    ]
    measurement = _unique_mean(records, "measurement_psnr")
    hlines = {}
    if measurement.get("mean") is not None:
        hlines["blurry measurement"] = float(measurement["mean"])
    for curve in curves.values():
        curve.sort(key=lambda item: item[0])
    for rcurve in report_curves.values():
        rcurve.sort()
    return TableResult(
        "\n".join(lines), rows, dict(curves), report_curves=dict(report_curves), hlines=hlines
    )


TABLE2 = TableSpec(
    name="table2",
    title="Table 2 — blind deblurring on BSD with a synthetic uniform motion blur (PSNR, NFE/s)",
    method_of=assumed_kernel,
    column_of=lambda r: NOISE_YES if r.sigma_y > 0 else NOISE_NO,
    reference_method="gt",
    render=render_table2,
)

FIGURE8 = TableSpec(
    name="figure8",
    title="Figure 8 — naive DDRM on BSD real blur: total average PSNR",
    method_of=assumed_kernel,
    column_of=lambda r: f"{assumed_sigma(r):g}",
    reference_method="",
    sweep_label="assumed σ_y",
    render=render_figure8,
)


TEMPORAL_FLAGS = ("warm_start", "shared_noise", "kernel_propagation")
# What each conf/temporal preset switches on.
TEMPORAL_PRESETS: dict[str, tuple[str, ...]] = {
    "independent": (),
    "warm_start": ("warm_start",),
    "shared_noise": ("shared_noise",),
    "kernel_propagation": ("kernel_propagation",),
    "all": TEMPORAL_FLAGS,
}


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


def _temporal(records: list[Record], key: str) -> dict[str, Any]:
    return mean_ci((r.raw.get("temporal") or {}).get(key) for r in records)


def render_video(spec: TableSpec, records: list[Record]) -> TableResult:
    """Video restoration: each temporal setting against independent frame-by-frame DDRM."""
    cells = group(records, temporal_mode, lambda r: "all", split=False)
    modes = sorted({m for m, _ in cells}, key=lambda m: (_rank(m), m))
    reference = next((m for m in modes if m == "independent"), None)
    header = [
        "temporal",
        "frames",
        "PSNR",
        "SSIM",
        "ΔPSNR vs independent",
        "flicker ↓",
        "warping error ↓",
        "NFE / frame",
        "s / frame",
    ]
    lines = [f"## {spec.title}", "", "| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    rows: list[dict[str, Any]] = []
    for mode in modes:
        cell = cells[(mode, "all")]
        recs = cell.records
        diff = (
            paired_difference(cell, cells[(reference, "all")])
            if reference is not None and mode != reference
            else {}
        )
        flick, warp_err = _temporal(recs, "flicker"), _temporal(recs, "warping_error")
        nfe = sum(r.nfe for r in recs) / len(recs)
        seconds = sum(r.seconds for r in recs) / len(recs)
        lines.append(
            "| "
            + " | ".join(
                [
                    mode,
                    str(len(recs)),
                    format_stat(cell.stats.get("psnr")),
                    format_stat(cell.stats.get("ssim"), 3),
                    format_stat(diff) if diff else "–",
                    format_stat(flick, 4),
                    format_stat(warp_err, 5),
                    f"{nfe:.1f}",
                    f"{seconds:.3f}",
                ]
            )
            + " |"
        )
        rows.append(
            {
                "table": spec.name,
                "method": mode,
                "frames": len(recs),
                "psnr_mean": cell.stats.get("psnr", {}).get("mean"),
                "psnr_ci95": cell.stats.get("psnr", {}).get("ci95"),
                "ssim_mean": cell.stats.get("ssim", {}).get("mean"),
                "psnr_diff_vs_independent": diff.get("mean"),
                "flicker_mean": flick.get("mean"),
                "warping_error_mean": warp_err.get("mean"),
                "nfe_per_frame": nfe,
                "seconds_per_frame": seconds,
            }
        )
    floor = _temporal(records, "warping_error_sharp")
    measured = _unique_mean(records, "measurement_psnr")
    lines += [
        "",
        f"PSNR/SSIM: mean over frames ({images_per_cell(cells.values())}); {CI_NOTE}. ΔPSNR: "
        "paired over the same frames. Flicker: "
        "mean |(x̂_k − x̂_{k−1}) − (x_k − x_{k−1})| over consecutive frames ([0, 1] units). "
        "Warping error: mean squared difference between x̂_k and x̂_{k−1} warped by the sharp "
        "frames' Farnebäck flow, non-occluded pixels (Lai et al. 2018); the sharp frames' own: "
        f"{format_stat(floor, 5)} (the flow's floor). Blurry frames' PSNR: "
        f"{format_stat(measured)}.",
    ]
    return TableResult("\n".join(lines), rows, {})


def _rank(mode: str) -> int:
    base = mode.split(" ")[0]
    order = list(TEMPORAL_PRESETS)
    return order.index(base) if base in order else len(order)


VIDEO = TableSpec(
    name="video",
    title="Video deblurring on BSD sequences: temporal help against frame-by-frame DDRM",
    method_of=temporal_mode,
    column_of=lambda r: "all",
    reference_method="independent",
    render=render_video,
)

SPECS = {s.name: s for s in (TABLE1, TABLE2, FIGURE8, VIDEO, GENERIC)}


def auto_table(records: list[Record]) -> str:
    """The table a set of runs was made for: blind runs (with a kernel) are Table 2 when the
    true kernel was known (synthetic blur), Figure 8 otherwise; MCG runs Table 1."""
    if any(r.raw.get("task") == "video" for r in records):
        return "video"
    blind = [r for r in records if r.raw.get("kernel")]
    if blind:
        return "table2" if any(_kernel_field(r, "ncc") is not None for r in blind) else "figure8"
    return "table1" if any(r.sampler == "mcg" for r in records) else "runs"


@dataclass
class TableResult:
    markdown: str
    rows: list[dict[str, Any]]  # long format, for CSV and wandb
    curves: dict[str, list[tuple[float, dict[str, Any]]]]  # column -> [(sweep value, stats)]
    # For self-rendered tables: the report's curves (drawn dotted beside ours) and horizontal
    # reference lines (label -> PSNR), e.g. the blurry measurement's own PSNR.
    report_curves: dict[str, list[tuple[float, float]]] = field(default_factory=dict)
    hlines: dict[str, float] = field(default_factory=dict)


def build_table(spec: TableSpec, records: list[Record]) -> TableResult:
    if spec.render is not None:
        return spec.render(spec, records)
    if spec.method_of is sampler_setting:
        spec = replace(spec, method_of=_differing_setting(records))
    grouping = Grouping()
    cells = group(records, spec.method_of, spec.column_of, grouping=grouping)
    order = {c: i for i, c in enumerate(spec.column_order)}
    # A split column ("inpaint_lorem σ_y=0.05") sorts with the column it was split from.
    columns = sorted(
        {k[1] for k in cells},
        key=lambda c: (order.get(c.split(" ")[0], len(order)), c.split(" ")[0], c),
    )
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
        if column in curves:
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
    lines += [
        "",
        f"PSNR in dB, mean over the images of each cell ({images_per_cell(cells.values())}); "
        f"{CI_NOTE}.",
        *grouping.notes(),
    ]
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


BAR_LABEL = "PSNR (dB); bars: 95 % CI, cut at min/max"


def _bars(curve: list[tuple[float, dict[str, Any]]]) -> list[list[float]]:
    """Asymmetric error bars (a 2 × N list) for matplotlib, clipped to the data's range."""
    pairs = [error_bar(s["psnr"]) for _, s in curve]
    return [[lo for lo, _ in pairs], [hi for _, hi in pairs]]


def plot_curves(
    result: TableResult, spec: TableSpec, records: list[Record], path: Path
) -> Path | None:
    """PSNR against the swept value per column, the reference method as a dashed line.

    A self-rendered table (Figure 8) draws its curves, the report's as dotted lines of the same
    colour, and its horizontal reference lines (the measurement's own PSNR) dashed in black.
    """
    if not any(result.curves.values()) or (spec.render is None and not spec.swept_method):
        return None  # nothing was swept: no curve to draw
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    if spec.render is not None:
        fig, ax = plt.subplots(figsize=(6.4, 4.0))
        for i, (label, curve) in enumerate(sorted(result.curves.items())):
            xs = [v for v, _ in curve]
            ys = [s["psnr"]["mean"] for _, s in curve]
            es = _bars(curve)
            ax.errorbar(xs, ys, yerr=es, marker="o", capsize=3, color=f"C{i}", label=label)
            rep = result.report_curves.get(label)
            if rep:
                ax.plot(*zip(*rep, strict=True), linestyle=":", marker="x", color=f"C{i}")
        for label, value in result.hlines.items():
            ax.axhline(value, color="k", linestyle="--", linewidth=1, label=label)
        ax.set_xlabel(spec.sweep_label)
        ax.set_ylabel(BAR_LABEL)
        note = " (report: dotted)" if result.report_curves else ""
        ax.set_title(spec.title.split(" — ")[0] + note)
        ax.legend(fontsize="small")
        fig.tight_layout()
        fig.savefig(path, dpi=120)
        plt.close(fig)
        return path

    ref = group(records, spec.method_of, spec.column_of)
    fig, ax = plt.subplots(figsize=(6.4, 4.0))
    for i, (column, curve) in enumerate(sorted(result.curves.items())):
        xs = [v for v, _ in curve]
        ys = [s["psnr"]["mean"] for _, s in curve]
        es = _bars(curve)
        color = f"C{i}"
        ax.errorbar(xs, ys, yerr=es, marker="o", capsize=3, color=color, label=column)
        cell = ref.get((spec.reference_method, column))
        if cell is not None:
            ax.axhline(cell.mean(), color=color, linestyle="--", linewidth=1)
    ax.set_xlabel(spec.sweep_label)
    ax.set_ylabel(BAR_LABEL)
    ax.set_title(f"{spec.swept_method} vs {spec.reference_method} (dashed)")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path
