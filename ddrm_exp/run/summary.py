"""A run's summary: per-metric means with 95 % CIs over its records, and its terminal lines."""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping
from typing import Any

from ddrm_exp.metrics.summary import CI_NOTE, WORSE_THAN_DB, format_stat, mean_ci
from ddrm_exp.report.records import RunSummary, encode
from ddrm_exp.run.setup import Setup


def summarize(records: list[dict[str, Any]]) -> dict[str, Any]:
    """Means with 95 % CIs of every metric, for the restoration and the baseline."""
    out: dict[str, Any] = {}
    for part in ("restored", "baseline"):
        keys = sorted({k for r in records for k in r.get(part, {})})
        out[part] = {k: mean_ci(r[part].get(k) for r in records) for k in keys}
    return out


def build_summary(
    s: Setup,
    records: list[dict[str, Any]],
    lpips_note: str | None,
    tail: Mapping[str, Any],
) -> RunSummary:
    """The run's summary.json: means with CIs of every metric, speed and the run's settings,
    then the task's own fields (``tail``: the video's temporal ones, the config hash)."""
    seconds = [float(r["seconds"]) for r in records]
    # The mean NFE per image: a warm-started video frame takes fewer steps than the first one.
    nfes = [int(r["nfe"]) for r in records]
    nfe: float = sum(nfes) / len(nfes) if nfes else 0
    if nfe == int(nfe):
        nfe = int(nfe)
    # NFE/s counts one batched network call as one evaluation, as the report's tables do; each
    # record holds its batch's time divided by the batch size.
    batch_seconds = sum(seconds)
    batch_nfe = sum(int(r["nfe"]) / r["batch_size"] for r in records)
    params = s.sampler.params()
    summary: dict[str, Any] = {
        "count": len(records),
        "nfe": nfe,
        "seconds_per_image": sum(seconds) / len(seconds) if seconds else None,
        "nfe_per_s": (batch_nfe / batch_seconds) if batch_seconds > 0 else None,
        "degradation": s.choices.get("degradation"),
        "model": s.choices.get("model"),
        "dataset": s.choices.get("dataset"),
        "sampler": s.sampler.name,
        "sampler_params": params,
        "degradation_params": s.degradation_params,
        "sigma_y": s.sigma_y,
        "timesteps": params.get("timesteps"),
        "eta": params.get("eta"),
        "eta_b": params.get("eta_b"),
        "seed": s.options.seed,
        **summarize(records),
        **summary_extras(records),
    }
    if lpips_note:
        summary["lpips_note"] = lpips_note
    note = infinite_psnr_note(records, s.sigma_y)
    if note:
        summary["psnr_note"] = note
    return encode(RunSummary, {**summary, **tail})


def infinite_psnr_note(records: list[dict[str, Any]], sigma_y: float) -> str | None:
    """Why a PSNR reads n/a: an exact reconstruction has an infinite PSNR, which JSON stores as
    null and the means leave out (restorations are checked finite, so null means infinite)."""
    parts, exact_records = [], []
    for part, label in (("baseline", "H⁺y"), ("restored", "the restoration")):
        exact = [r for r in records if r.get(part, {}).get("psnr", 0.0) is None]
        if exact:
            parts.append(f"{label} equals the original exactly for {len(exact)} of {len(records)}")
            exact_records += exact
    if not parts:
        return None
    if all(_unblurred_frame_returned(r) for r in exact_records):
        why = (
            "the measured frame is the original itself (no blur), and the blind plan returned "
            "it as it is"
        )
    elif sigma_y == 0:
        why = (
            "with σ_y=0 and an invertible H (denoise) the measurement is the image itself, so "
            "H⁺y recovers it without error"
        )
    else:
        why = "its error is zero"
    return (
        f"PSNR is infinite where {' and '.join(parts)} image(s): {why}. Infinite values are "
        "stored as null and left out of the PSNR mean and n."
    )


def _unblurred_frame_returned(record: dict[str, Any]) -> bool:
    """A frame whose measurement equals the original (infinite PSNR: a sharp frame) and which
    the blind plan returned unrestored."""
    measurement = record.get("measurement")
    kernel = record.get("kernel")
    return (
        isinstance(measurement, dict)
        and "psnr" in measurement
        and measurement["psnr"] is None
        and isinstance(kernel, dict)
        and kernel.get("returned") == "blurry"
    )


def format_summary(summary: dict[str, Any]) -> str:
    """A few human-readable lines for the terminal."""
    nfe = summary["nfe"]
    unit = "frame" if summary.get("task") == "video" else "image"
    # A video's frames may take different NFE (warm starts): always its mean, said as such.
    if isinstance(nfe, int) and unit == "image":
        nfe_text = f"{nfe} NFE"
    else:
        nfe_text = f"{nfe:.2f} NFE per {unit} (mean)"
    # No NFE/s where nothing was sampled (every frame kept by the blind plan).
    speed = summary["nfe_per_s"]
    speed_text = f"{speed:.2f} NFE/s" if speed is not None else "no sampling"
    lines = [
        f"{summary['count']} {unit}{'' if summary['count'] == 1 else 's'}, {nfe_text}, "
        f"{summary['seconds_per_image']:.3f} s/{unit}, {speed_text}",
    ]
    for key in ("psnr", "ssim", "lpips"):
        r = summary["restored"].get(key)
        b = summary["baseline"].get(key)
        if r and r.get("mean") is not None:
            restored, baseline = format_stat(r, 3, "n/a"), format_stat(b, 3, "n/a")
            lines.append(f"  {key:6s} restored {restored:>18s}   H⁺y baseline {baseline:>18s}")
    if summary.get("psnr_note"):
        lines.append(f"  note: {summary['psnr_note']}")
    measured = (summary.get("measurement") or {}).get("psnr")
    if measured and measured.get("mean") is not None:
        lines.append(f"  psnr   of the measurement itself {format_stat(measured, 3):>18s}")
    paired = summary.get("vs_measurement") or {}
    if paired.get("psnr") and paired["psnr"].get("mean") is not None:
        lines.append(
            f"  psnr   restored − measurement, paired {format_stat(paired['psnr'], 3)}; "
            f"{paired['worse']} of {paired['psnr']['n']} below it by > "
            f"{paired['worse_than_db']:g} dB (worst {paired['worst']:+.2f})"
        )
    kernel = summary.get("kernel") or {}
    if kernel.get("returned") and set(kernel["returned"]) != {"restored"}:
        counts = ", ".join(f"{k} {v}" for k, v in kernel["returned"].items())
        lines.append(f"  returned: {counts} (records' kernel.returned; restored = by the sampler)")
    for key, label, digits in (("ncc", "kernel NCC", 3), ("estimation_seconds", "kernel s", 3)):
        stat = kernel.get(key)
        if stat and stat.get("mean") is not None:
            lines.append(f"  {label} ({kernel.get('assumed')}) {format_stat(stat, digits)}")
    temporal = summary.get("temporal") or {}
    for key, label, digits in (
        ("flicker", "flicker ↓ (consecutive frames)", 4),
        ("warping_error", "warping error ↓", 5),
        ("warping_error_sharp", "warping error of the sharp frames (the flow's floor)", 5),
    ):
        stat = temporal.get(key)
        if stat and stat.get("mean") is not None:
            lines.append(f"  {label} {format_stat(stat, digits)}")
    lines.append(f"  ({CI_NOTE})")
    return "\n".join(lines)


def summary_extras(records: list[dict[str, Any]]) -> dict[str, Any]:
    """Summary fields of a blind or real-blur run: the measurement's own metrics, and the
    kernels' NCC and estimation time (empty for an ordinary run)."""
    out: dict[str, Any] = {}
    with_m = [r["measurement"] for r in records if isinstance(r.get("measurement"), dict)]
    if with_m:
        keys = sorted({k for m in with_m for k in m})
        out["measurement"] = {k: mean_ci(m.get(k) for m in with_m) for k in keys}
        # Paired by image: whether restoring beat doing nothing, and where it did not.
        gains = [
            r["restored"]["psnr"] - r["measurement"]["psnr"]
            for r in records
            if isinstance(r.get("measurement"), dict)
            and r["measurement"].get("psnr") is not None
            and r.get("restored", {}).get("psnr") is not None
        ]
        if gains:
            out["vs_measurement"] = {
                "psnr": mean_ci(gains),
                "worse_than_db": WORSE_THAN_DB,
                "worse": sum(g < -WORSE_THAN_DB for g in gains),
                "worst": min(gains),
            }
    kernels = [r["kernel"] for r in records if isinstance(r.get("kernel"), dict)]
    if kernels:
        returned = Counter(str(k["returned"]) for k in kernels if k.get("returned"))
        out["kernel"] = {
            "assumed": kernels[0].get("assumed"),
            "estimator": kernels[0].get("estimator"),
            "ncc": mean_ci(k.get("ncc") for k in kernels),
            "estimation_seconds": mean_ci(k.get("estimation_seconds") for k in kernels),
            # What the images are: the sampler's ("restored") or the blind plan's fallbacks.
            "returned": dict(sorted(returned.items())),
        }
    return out
