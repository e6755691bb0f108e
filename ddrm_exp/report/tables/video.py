"""Video deblurring on BSD (§6, §9): each temporal setting against independent frame-by-frame
DDRM (PSNR, paired differences by frame and by sequence, what restored each frame, flicker,
warping error, NFE and seconds per frame)."""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Callable
from functools import lru_cache
from pathlib import Path
from typing import Any

from ddrm_exp.metrics.summary import CI_NOTE, WORSE_THAN_DB, format_stat, mean_ci
from ddrm_exp.report.cells import (
    Cell,
    Grouping,
    group,
    images_per_cell,
    mean_nfe,
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
    "Δflicker vs independent",
    "− blurry",
    f"frames > {WORSE_THAN_DB:g} dB below blurry",
    "restored by",
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
    "ΔPSNR, Δflicker and − blurry (restored − blurry frame): paired over the same frames, "
    "[in brackets] "
    "over the sequences' mean differences. Restored by: what each frame returned (the sampler, "
    "or the blind plan's fallback for a frame it kept: records' kernel.returned). Blurry: the "
    "measured frame itself; Wiener, RL (Richardson–Lucy): classical deconvolution of it with "
    "the kernel DDRM takes for that frame (a kept frame's too; its fallback may mix that "
    "kernel with a delta) (ddrm_exp.restoration). Flicker: mean "
    "|(x̂_k − x̂_{{k−1}}) − (x_k − x_{{k−1}})| over consecutive frames ([0, 1] units). "
    "Warping error: mean squared difference between x̂_k and x̂_{{k−1}} warped by the sharp "
    "frames' Farnebäck flow, non-occluded pixels (Lai et al. 2018); the sharp frames' own: "
    "{floor} (the flow's floor). Blurry frames' PSNR: {blurry}. NFE and seconds per frame: the "
    "sampler's network evaluations and the sampling plus kernel-estimation time; frames the "
    "blind plan keeps unrestored (records' kernel.kept) are not sampled and count 0 NFE."
)


# Run settings the records do not carry, read from each run's config_resolved.yaml: rows whose
# runs differ in them are labelled by them (kernel_estimator.warm_iters=40), never pooled.
RUN_GROUPS = ("dataset", "kernel_estimator")
# Settings that change no result: where results run, and the estimator's warm start when no
# kernel is propagated (nothing starts it warm then).
NEUTRAL = ("device", "num_threads")
WARM_ONLY = ("warm_scales", "warm_iters")
# A frame's kernel.returned, as the table names what restored it (None: the sampler;
# denoised: the sampler with a delta kernel, the no-harm rule's noisy frames).
RETURNED = {
    "richardson_lucy": "RL",
    "wiener": "Wiener",
    "blurry": "blurry",
    "denoised": "ddrm δ-kernel",
}


def _flatten(node: Any, prefix: str) -> dict[str, Any]:
    if isinstance(node, dict):
        out: dict[str, Any] = {}
        for k, v in node.items():
            if not str(k).startswith("_"):
                out.update(_flatten(v, f"{prefix}.{k}"))
        return out
    return {prefix: tuple(node) if isinstance(node, list) else node}


@lru_cache(maxsize=256)
def _run_settings(run_dir: Path) -> tuple[tuple[str, Any], ...]:
    """RUN_GROUPS' settings of the run in ``run_dir``; empty without a readable config."""
    from omegaconf import DictConfig, OmegaConf

    try:
        cfg = OmegaConf.load(run_dir / "config_resolved.yaml")
    except Exception:  # noqa: BLE001 - no config (hand-written records): nothing to tell apart
        return ()
    if not isinstance(cfg, DictConfig):
        return ()
    out: dict[str, Any] = {}
    for name in RUN_GROUPS:
        node = cfg.get(name)
        if isinstance(node, DictConfig):
            out.update(_flatten(OmegaConf.to_container(node, resolve=True), name))
    return tuple(sorted((k, v) for k, v in out.items() if k.rsplit(".", 1)[-1] not in NEUTRAL))


def _effective(r: Record) -> dict[str, Any]:
    settings = dict(_run_settings(r.run_dir))
    if not temporal_field(r, "kernel_propagation"):
        settings = {k: v for k, v in settings.items() if k.rsplit(".", 1)[-1] not in WARM_ONLY}
    return settings


def run_labels(records: list[Record]) -> dict[Path, tuple[str, ...]]:
    """Per run directory, the settings (``key=value``) that differ among ``records``' runs."""
    per_run = {r.run_dir: _effective(r) for r in records}
    keys = sorted({k for s in per_run.values() for k in s})
    # Among the runs the setting matters to (warm_* only where kernels propagate).
    varying = [k for k in keys if len({repr(s[k]) for s in per_run.values() if k in s}) > 1]
    return {run: tuple(f"{k}={s[k]}" for k in varying if k in s) for run, s in per_run.items()}


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


def _sequence(r: Record) -> str:
    return str(r.raw.get("sequence", r.index))


def _differences(pairs: list[tuple[Record, float]]) -> tuple[Stat, Stat]:
    """Mean and CI of per-frame differences, over frames and over sequences' means."""
    by_sequence: dict[str, list[float]] = defaultdict(list)
    for r, d in pairs:
        by_sequence[_sequence(r)].append(d)
    per_sequence = (sum(v) / len(v) for v in by_sequence.values())
    return mean_ci(d for _, d in pairs), mean_ci(per_sequence)


def _psnr(r: Record) -> float | None:
    return r.values.get("psnr")


def _flicker(r: Record) -> float | None:
    return temporal_field(r, "flicker")


def _vs_reference(
    cell: Cell, reference: Cell, value: Callable[[Record], float | None]
) -> tuple[Stat, Stat]:
    """``value`` of each frame minus the reference run's for the same frame."""
    ref = {r.key: value(r) for r in reference.records}
    pairs = [
        (r, float(v) - float(ref[r.key]))  # type: ignore[arg-type]
        for r in cell.records
        if (v := value(r)) is not None and ref.get(r.key) is not None
    ]
    return _differences(pairs)


def _vs_blurry(cell: Cell) -> tuple[tuple[Stat, Stat], int]:
    """Restored − blurry frame (by frame, by sequence), and how many frames lose > WORSE_THAN_DB."""
    pairs = [
        (r, float(r.values["psnr"]) - float(r.values["measurement_psnr"]))  # type: ignore[arg-type]
        for r in cell.records
        if r.values.get("psnr") is not None and r.values.get("measurement_psnr") is not None
    ]
    return _differences(pairs), sum(d < -WORSE_THAN_DB for _, d in pairs)


def _format_pair(frames: Stat, sequences: Stat, digits: int = 2) -> str:
    if not frames:
        return "–"
    return f"{format_stat(frames, digits)} [{format_stat(sequences, digits)}]"


def restored_by(records: list[Record]) -> str:
    """How many frames each restoration returned: "ddrm 30, RL 18" (of all the cell's)."""
    counts = Counter(RETURNED.get(str(kernel_field(r, "returned")), r.sampler) for r in records)
    return ", ".join(f"{name} {n}" for name, n in counts.most_common())


def _row(
    spec: TableSpec,
    mode: str,
    cell: Cell,
    diff: tuple[Stat, Stat],
    flicker_diff: tuple[Stat, Stat],
) -> tuple[str, dict[str, Any]]:
    """One temporal setting: its markdown line and its CSV row."""
    recs = cell.records
    blurry, worse = _vs_blurry(cell)
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
            _format_pair(*diff),
            _format_pair(*flicker_diff, digits=5),
            _format_pair(*blurry),
            str(worse),
            restored_by(recs),
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
        "psnr_diff_vs_independent": diff[0].get("mean"),
        "psnr_diff_vs_independent_ci95": diff[0].get("ci95"),
        "psnr_diff_vs_independent_by_sequence_ci95": diff[1].get("ci95"),
        "flicker_diff_vs_independent": flicker_diff[0].get("mean"),
        "flicker_diff_vs_independent_ci95": flicker_diff[0].get("ci95"),
        "psnr_diff_vs_blurry": blurry[0].get("mean"),
        "psnr_diff_vs_blurry_ci95": blurry[0].get("ci95"),
        "psnr_diff_vs_blurry_by_sequence_ci95": blurry[1].get("ci95"),
        "frames_below_blurry": worse,
        "restored_by": restored_by(recs),
        "measurement_psnr_mean": cell.stats.get("measurement_psnr", {}).get("mean"),
        "wiener_psnr_mean": cell.stats.get("wiener_psnr", {}).get("mean"),
        "rl_psnr_mean": cell.stats.get("rl_psnr", {}).get("mean"),
        "flicker_mean": flick.get("mean"),
        "warping_error_mean": warp_err.get("mean"),
        "nfe_per_frame": nfe,
        "seconds_per_frame": seconds,
    }
    return line, row


def _comparable(labels: tuple[str, ...]) -> tuple[str, ...]:
    """The labels an independent run can share: all but the warm-start settings."""
    return tuple(x for x in labels if x.split("=", 1)[0].rsplit(".", 1)[-1] not in WARM_ONLY)


def _per_frame(
    records: list[Record], labels: dict[Path, tuple[str, ...]], value: Callable[[Record], Any]
) -> Stat:
    """Mean and CI of ``value`` over distinct frames (a frame's key repeats across datasets)."""
    frames = {
        (tuple(x for x in labels[r.run_dir] if x.startswith("dataset.")), r.key): value(r)
        for r in records
    }
    return mean_ci(frames.values())


def render(spec: TableSpec, records: list[Record]) -> TableResult:
    labels = run_labels(records)
    rows_of: dict[str, tuple[str, tuple[str, ...]]] = {}

    def method(r: Record) -> str:
        mode, extra = temporal_mode(r), labels[r.run_dir]
        name = " ".join([mode, *extra])
        rows_of[name] = (mode, extra)
        return name

    grouping = Grouping()
    cells = group(records, method, lambda r: "all", split=False, grouping=grouping)
    # Rows of one dataset and estimator together, independent first.
    modes = sorted(
        {m for m, _ in cells},
        key=lambda m: (_comparable(rows_of[m][1]), _rank(rows_of[m][0]), m),
    )
    references = {
        extra: cells[(m, "all")] for m, (mode, extra) in rows_of.items() if mode == REFERENCE
    }
    lines = md_table(spec.title, HEADER)
    rows: list[dict[str, Any]] = []
    for name in modes:
        cell = cells[(name, "all")]
        mode, extra = rows_of[name]
        reference = references.get(_comparable(extra))
        compared = reference is not None and mode != REFERENCE
        diff = _vs_reference(cell, reference, _psnr) if compared else ({}, {})
        flicker_diff = _vs_reference(cell, reference, _flicker) if compared else ({}, {})
        line, row = _row(spec, name, cell, diff, flicker_diff)
        lines.append(line)
        rows.append(row)
    # The sharp and blurry frames are the same in every row of a dataset: each frame once.
    floor = _per_frame(records, labels, lambda r: temporal_field(r, "warping_error_sharp"))
    measured = _per_frame(records, labels, lambda r: r.values.get("measurement_psnr"))
    lines += [
        "",
        f"PSNR/SSIM: mean over frames ({images_per_cell(cells.values())}); {CI_NOTE}. "
        + COLUMNS.format(floor=format_stat(floor, 5), blurry=format_stat(measured)),
        *grouping.notes(),
    ]
    return TableResult("\n".join(lines), rows, {})


SPEC = TableSpec(
    name="video",
    title="Video deblurring on BSD sequences: temporal help against frame-by-frame DDRM",
    render=render,
    detect=lambda records: any(r.raw.get("task") == "video" for r in records),
    auto_rank=10,
)
