"""What a run directory holds for the tables, and how it is read back.

The runner writes one :class:`ResultLine` per restored image to ``results.jsonl`` (beside
``config_resolved.yaml``) and one :class:`RunSummary` to ``summary.json``; these TypedDicts are
the schema both sides use. Every record the runner writes passes :func:`encode`, which refuses a
field its schema does not declare, and :func:`load_records` reads lines back through
:func:`decode`, which keeps the declared fields: a field declared here is written and read, one
that is not can be neither. The loader flattens the lines of every run directory under some
paths into :class:`Record` objects, filling in the degradation settings of records older than
the field so an old run never pools with a differently-set new one.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any, TypedDict, TypeVar

Stat = dict[str, Any]  # mean_ci's output: mean, std, ci95, n (, min, max, values)


class KernelInfo(TypedDict, total=False):
    """A blind run's kernel, per image."""

    assumed: str
    estimator: str | None
    operator: str
    size: list[int]
    rank1_error: float | None
    ncc: float | None
    ncc_estimate: float | None
    estimation_seconds: float | None
    kept: str | None  # why the frame was returned as it is (no-harm rule, delta kernel); None
    agreement: float | None  # the no-harm rule's crop agreement of the estimate
    noise_sigma: float | None  # the no-harm rule's noise estimate of the frame ([0, 1] units)
    # restored | denoised (the sampler with a delta kernel) | blurry | wiener | richardson_lucy
    returned: str | None
    file: str | None


class TemporalInfo(TypedDict, total=False):
    """A video frame's temporal setting (``name``, switches) and outcomes (flicker, ...)."""

    name: str
    warm_start: bool
    t_star: int
    align: str
    shared_noise: bool
    kernel_propagation: bool
    warm_started: bool
    kernel_propagated: bool
    flicker: float | None
    warping_error: float | None
    warping_error_sharp: float | None


class ResultLine(TypedDict, total=False):
    """One line of ``results.jsonl``: one restored image (or video frame)."""

    index: int
    name: str
    input_sha256: str
    task: str  # "image" (absent in older lines) or "video"
    degradation: str
    degradation_params: dict[str, Any]
    sampler: str
    sampler_params: dict[str, Any]
    model: str
    sigma_y: float
    assumed_sigma_y: float
    seed: int
    nfe: int  # 0 for a frame the blind plan kept (never sampled)
    seconds: float  # its share of the sampling time (0 for a kept frame)
    batch_size: int  # how many frames the sampler ran together (a kept frame: its batch's)
    config_hash: str
    restored: dict[str, float | None]  # psnr, ssim, lpips, residual_rel, residual_rms
    baseline: dict[str, float | None]  # H⁺y, same metrics
    measurement: dict[str, float | None]  # the measurement's own PSNR/SSIM, where comparable
    measurement_source: str
    # Classical deconvolution of the measurement with the kernel DDRM used (psnr, ssim)
    wiener: dict[str, float | None]
    richardson_lucy: dict[str, float | None]
    kernel: KernelInfo
    temporal: TemporalInfo
    sequence: str
    frame: int
    position: int


class RunSummary(TypedDict, total=False):
    """``summary.json``: a run's settings and the statistics of its per-image results."""

    count: int
    task: str
    dataset: str
    degradation: str
    degradation_params: dict[str, Any]
    model: str
    sampler: str
    sampler_params: dict[str, Any]
    sigma_y: float
    seed: int
    timesteps: int
    eta: float
    eta_b: float
    nfe: int
    nfe_per_s: float
    seconds_per_image: float
    config_hash: str
    restored: dict[str, Stat]
    baseline: dict[str, Stat]
    measurement: dict[str, Stat]
    # restored - measurement PSNR paired by image, and how many images end below their
    # measurement by more than worse_than_db (blind and real-blur runs: the blurry frame)
    vs_measurement: dict[str, Any]
    kernel: dict[str, Any]
    temporal: dict[str, Any]
    sequences: Any
    psnr_note: str
    lpips_note: str


# ---- the one way records are written and read back ------------------------------------------
Schema = TypeVar("Schema", ResultLine, RunSummary)
# Fields whose values have a schema of their own, checked the same way.
_NESTED: dict[type, dict[str, type]] = {
    ResultLine: {"kernel": KernelInfo, "temporal": TemporalInfo},
    RunSummary: {},
}


class SchemaError(ValueError):
    """A writer gave a record a field its schema does not declare."""


def _undeclared(schema: type, fields: Mapping[str, Any], where: str) -> list[str]:
    declared = schema.__annotations__
    bad = [f"{where}{k}" for k in fields if k not in declared]
    for key, sub in _NESTED.get(schema, {}).items():
        value = fields.get(key)
        if isinstance(value, Mapping):
            bad += _undeclared(sub, value, f"{where}{key}.")
    return bad


def encode(schema: type[Schema], fields: Mapping[str, Any]) -> Schema:
    """``fields`` as a ``schema`` record (:class:`ResultLine` or :class:`RunSummary`), in the
    writer's order: what the runner writes to ``results.jsonl`` / ``summary.json``.

    A field ``schema`` does not declare raises :class:`SchemaError`, so a new field is declared
    here, where :func:`decode` (and so every table) sees it, before any run can write it."""
    bad = _undeclared(schema, fields, "")
    if bad:
        raise SchemaError(
            f"{', '.join(bad)}: not declared in ddrm_exp.report.records.{schema.__name__}; "
            "declare a field there before a run writes it."
        )
    return dict(fields)  # type: ignore[return-value]


def decode(schema: type[Schema], value: Any) -> Schema | None:
    """A record read back (parsed JSON) as a ``schema`` record: its declared top-level fields;
    None for what is not one (not an object, or a results line without ``index``)."""
    if not isinstance(value, dict) or (schema is ResultLine and "index" not in value):
        return None
    declared = schema.__annotations__
    return {k: v for k, v in value.items() if k in declared}  # type: ignore[return-value]


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
    raw: ResultLine = field(repr=False, default_factory=lambda: ResultLine())
    # The degradation's own settings (official_compat, source, mask_path, kernels, ...); None
    # where they are unknown (a record older than the field, with no config to read them from).
    degradation_params: dict[str, Any] | None = None

    @property
    def key(self) -> tuple[int, int]:
        """Identifies the same image and measurement across runs, for paired differences."""
        return (self.index, self.seed)


# ---- what a record says, read the same way by every table ----------------------------------
def assumed_kernel(r: Record) -> str:
    """The kernel a blind run assumed (``degradation.assumed_kernel``), else the degradation."""
    return str((r.raw.get("kernel") or {}).get("assumed") or r.degradation)


def assumed_sigma(r: Record) -> float:
    """The σ_y the sampler assumed (Figure 8's axis); the true one when not set apart."""
    value = r.raw.get("assumed_sigma_y")
    return r.sigma_y if value is None else float(value)


def kernel_field(r: Record, key: str) -> Any:
    return (r.raw.get("kernel") or {}).get(key)


def temporal_field(r: Record, key: str) -> Any:
    return (r.raw.get("temporal") or {}).get(key)


# ---- loading -------------------------------------------------------------------------------
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
    r: ResultLine, run_dir: Path, configs: dict[Path, Any]
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


_PARTS = (
    ("restored", ""),
    ("baseline", "baseline_"),
    ("measurement", "measurement_"),
    ("wiener", "wiener_"),
    ("richardson_lucy", "rl_"),
)


def _record(r: ResultLine, run_dir: Path, configs: dict[Path, Any]) -> Record:
    values: dict[str, float | None] = {}
    for part, prefix in _PARTS:
        for k, v in (r.get(part) or {}).items():  # type: ignore[attr-defined]
            values[prefix + k] = v
    return Record(
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


def load_records(paths: Iterable[Path]) -> list[Record]:
    """Every record of every run directory (any directory with results.jsonl) under ``paths``."""
    records = []
    configs: dict[Path, Any] = {}
    for run_dir in find_run_dirs(paths):
        for line in (run_dir / "results.jsonl").read_text().splitlines():
            try:
                r = decode(ResultLine, json.loads(line))
            except json.JSONDecodeError:
                continue  # a torn last line of a killed run
            if r is not None:
                records.append(_record(r, run_dir, configs))
    return records
