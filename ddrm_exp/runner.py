"""One experiment run: dataset -> degradation -> y -> sampler -> metrics -> outputs.

Everything cheap and checkable (config values, dataset root and image sizes, the operator's
compatibility with the image size) is built before the model, so a bad input fails in seconds.
"""

from __future__ import annotations

import itertools
import logging
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from omegaconf import DictConfig, OmegaConf
from torch import Tensor
from torch.utils.data import DataLoader, Subset
from tqdm import tqdm

from ddrm_exp import blind, distributed, faults
from ddrm_exp.config import image_size_of, instantiate_config, resolve_device, validate
from ddrm_exp.degradations.base import HFunctions
from ddrm_exp.distributed import RunResults, Shard
from ddrm_exp.errors import ConfigError, RunError
from ddrm_exp.metrics.image import LPIPSMetric, psnr, ssim
from ddrm_exp.metrics.summary import CI_NOTE, format_stat, mean_ci
from ddrm_exp.models.acceleration import Acceleration, accelerate, check_supported
from ddrm_exp.models.base import DiffusionPrior
from ddrm_exp.run_header import log_header
from ddrm_exp.samplers.ddrm import draw_noise
from ddrm_exp.samplers.progress import StepProgress
from ddrm_exp.tracking import figures, wandb_check
from ddrm_exp.tracking.files import (
    read_records,
    save_png,
    write_json_atomic,
    write_text_atomic,
)
from ddrm_exp.tracking.identity import INPUT_KEY, check_same_inputs, dataset_names
from ddrm_exp.tracking.identity import input_ids as dataset_input_ids
from ddrm_exp.tracking.lock import RunLock
from ddrm_exp.tracking.resume import (
    GRID_NAME,
    SUMMARY_NAME,
    complete_summary,
    config_hash,
    matches,
    neutral_keys,
    results_files,
)
from ddrm_exp.tracking.trackers import NullTracker, Tracker, WandbTracker

log = logging.getLogger(__name__)

# Streams of per-image randomness, kept apart so that e.g. changing the sampler's step count
# does not change the measurement noise.
STREAM_SAMPLER, STREAM_MEASUREMENT = 0, 1


def image_generator(seed: int, index: int, stream: int) -> torch.Generator:
    """A CPU generator for one image, seeded by (seed, dataset index, stream)."""
    state = np.random.SeedSequence([seed, index, stream]).generate_state(2, dtype=np.uint32)
    return torch.Generator().manual_seed(int(state[0]) << 32 | int(state[1]))


@dataclass
class RunContext:
    """Names the run for logs and trackers; filled from Hydra by the CLI."""

    output_dir: Path
    job_name: str = "run"
    group: str | None = None
    choices: dict[str, str] | None = None
    # Which share of the dataset this process computes (torchrun); one process does it all.
    shard: Shard = distributed.SINGLE


def measure(
    operator: HFunctions, x: Tensor, sigma_y: float, generators: list[torch.Generator]
) -> Tensor:
    """y = Hx + σ_y z on images in [-1, 1], so the noise std there is 2σ_y."""
    y = operator.H(x.reshape(x.shape[0], -1))
    if sigma_y > 0:
        y = y + 2.0 * sigma_y * draw_noise(tuple(y.shape), generators, y.device, y.dtype)
    return y


def residual(operator: HFunctions, x: Tensor, y: Tensor) -> tuple[list[float], list[float]]:
    """‖Hx - y‖ / ‖y‖ and the RMS of Hx - y in [0, 1] pixel units, per image."""
    r = operator.H(x.reshape(x.shape[0], -1)) - y
    rel = (r.norm(dim=1) / y.norm(dim=1).clamp_min(1e-12)).tolist()
    rms = (r.pow(2).mean(dim=1).sqrt() / 2.0).tolist()
    return rel, rms


def sampler_params(cfg: DictConfig) -> dict[str, Any]:
    """The sampler's settings as recorded with every result (``_target_`` left out)."""
    values = OmegaConf.to_container(cfg.sampler, resolve=True)
    return {k: v for k, v in values.items() if not str(k).startswith("_")}  # type: ignore[union-attr]


def degradation_params(cfg: DictConfig) -> dict[str, Any]:
    """The degradation's own settings as recorded with every result (``official_compat``,
    ``source``, ``mask_path``, kernels, ...), so tables never pool runs that differ in them.

    ``_target_`` and the keys that never change a result (where a mask file is cached) are left
    out: a cache directory differs between machines, not between experiments. The top-level
    ``lorem_source`` reaches results only as inpaint_lorem's resolved ``source``, recorded here.
    """
    values = OmegaConf.to_container(cfg.degradation, resolve=True)
    neutral = neutral_keys("degradation")
    return {
        str(k): v
        for k, v in values.items()  # type: ignore[union-attr]
        if not str(k).startswith("_") and str(k) not in neutral
    }


def measurement_style(cfg: DictConfig, plan: object | None) -> str:
    """How images/*_measurement.png shows y (``measurement_style``). A blind or real-blur plan
    saves its own picture, the measurement itself: the official code has no such runs."""
    return "labelled" if plan is not None else figures.style_of(cfg)


def image_paths(out_dir: Path, index: int, name: str) -> dict[str, Path]:
    """Where an image's PNGs go: ``images/<index>_<name>_{original,pinv,restored}.png``."""
    stem = f"{index:05d}_{name}"
    return {kind: out_dir / "images" / f"{stem}_{kind}.png" for kind in IMAGE_KINDS}


IMAGE_KINDS = ("original", "pinv", "restored")


def build_tracker(cfg: DictConfig, ctx: RunContext) -> Tracker:
    # The run is logged once, by rank 0, with every rank's images.
    if not ctx.shard.is_main:
        return NullTracker()
    logger = cfg.get("logger")
    if logger is None or logger.get("name") in (None, "none"):
        return NullTracker()
    if logger.get("name") == "wandb":
        return WandbTracker(logger, cfg, ctx.output_dir, ctx.group, ctx.job_name)
    raise ConfigError(f"logger.name must be 'wandb' or 'none', got {logger.get('name')!r}.")


class Metrics:
    """Per-image metrics of a restoration and of the H⁺y baseline."""

    def __init__(self, cfg: DictConfig, device: torch.device) -> None:
        self.use_ssim = bool(cfg.metrics.ssim)
        self.lpips = LPIPSMetric(device, enabled=bool(cfg.metrics.lpips))

    def __call__(
        self, operator: HFunctions, x_hat: Tensor, x: Tensor, y: Tensor
    ) -> list[dict[str, float | None]]:
        values: dict[str, list[Any]] = {"psnr": psnr(x_hat, x)}
        values["ssim"] = ssim(x_hat, x) if self.use_ssim else [None] * len(x)
        values["lpips"] = self.lpips(x_hat, x)
        values["residual_rel"], values["residual_rms"] = residual(operator, x_hat, y)
        return [{k: v[i] for k, v in values.items()} for i in range(len(x))]


def summarize(records: list[dict[str, Any]]) -> dict[str, Any]:
    """Means with 95 % CIs of every metric, for the restoration and the baseline."""
    out: dict[str, Any] = {}
    for part in ("restored", "baseline"):
        keys = sorted({k for r in records for k in r.get(part, {})})
        out[part] = {k: mean_ci(r[part].get(k) for r in records) for k in keys}
    return out


@dataclass
class Setup:
    """What a run builds before its model: each part checked, so bad input fails in seconds."""

    device: torch.device
    shape: tuple[int, int, int]
    dataset: Any
    operator: HFunctions
    # Dataset measurements (real blur) and per-image kernels (blind deblurring); None otherwise.
    plan: blind.MeasurementPlan | None
    sampler: Any
    acceleration: Acceleration
    sigma_y: float  # noise added to the measurement
    sigma_assumed: float  # noise level the sampler assumes
    fingerprint: str  # config_hash: which results belong to these settings
    # Per image, a hash of its file(s): which input a stored result was computed from.
    input_ids: list[str | None]

    def record_fields(self, cfg: DictConfig, choices: dict[str, str]) -> dict[str, Any]:
        """The settings every per-image record repeats, so each line stands on its own."""
        return {
            "degradation": choices.get("degradation"),
            "sampler": self.sampler.name,
            "sampler_params": sampler_params(cfg),
            "degradation_params": degradation_params(cfg),
            "model": choices.get("model"),
            "sigma_y": self.sigma_y,
            "assumed_sigma_y": self.sigma_assumed,
            "seed": int(cfg.seed),
        }

    def load_prior(self, cfg: DictConfig) -> DiffusionPrior:
        """The model on the device with the speed options, checked against the run."""
        prior: DiffusionPrior = instantiate_config("model", cfg.model)
        prior = accelerate(prior.to(self.device).eval(), self.acceleration)
        if tuple(prior.shape) != self.shape:
            raise ConfigError(
                f"The model takes images of shape {tuple(prior.shape)}, but the run is "
                f"configured for {self.shape}; set model.image_size to the model's size."
            )
        steps = prior.schedule.num_timesteps
        if not 1 <= self.sampler.timesteps <= steps:
            raise ConfigError(
                f"sampler.timesteps={self.sampler.timesteps} is outside 1..{steps}, the model's "
                "number of diffusion steps."
            )
        return prior


def setup(cfg: DictConfig, ctx: RunContext) -> Setup:
    """Everything cheap and checkable, in order; each raises ConfigError on bad input."""
    validate(cfg)
    device = distributed.device_for(resolve_device(cfg.device), ctx.shard)
    height, width = image_size_of(cfg)
    shape = (3, height, width)
    choices = ctx.choices or {}
    dataset = instantiate_config("dataset", cfg.dataset, image_size=(height, width))
    if len(dataset) == 0:
        raise ConfigError("The dataset has no images (check dataset.limit / dataset.start).")
    operator = instantiate_config("degradation", cfg.degradation, shape=shape, device=device)
    if not isinstance(operator, HFunctions):
        raise ConfigError(
            f"degradation._target_ builds a {type(operator).__name__}, not an HFunctions operator."
        )
    plan = blind.MeasurementPlan.build(cfg, dataset, operator, shape, choices)
    sampler = instantiate_config("sampler", cfg.sampler)
    if plan is not None:
        sampler = plan.sampler_for(cfg, sampler)
    acceleration = Acceleration(
        str(cfg.get("precision", "fp32")),
        bool(cfg.get("channels_last", False)),
        bool(cfg.get("compile", False)),
    )
    check_supported(acceleration, device)
    sigma_y = float(cfg.noise.sigma_y)
    assumed = cfg.noise.get("assumed_sigma_y")
    fingerprint, ids = config_hash(cfg), dataset_input_ids(dataset)
    if not cfg.overwrite:
        # Results of other input images at the same indices are refused here, for both tasks.
        check_same_inputs(ctx.output_dir, dataset_names(dataset), ids, fingerprint)
    return Setup(
        device=device,
        shape=shape,
        dataset=dataset,
        operator=operator,
        plan=plan,
        sampler=sampler,
        acceleration=acceleration,
        sigma_y=sigma_y,
        sigma_assumed=sigma_y if assumed is None else float(assumed),
        fingerprint=fingerprint,
        input_ids=ids,
    )


def run(cfg: DictConfig, ctx: RunContext) -> dict[str, Any]:
    """Run one experiment and return its summary (also written to ``summary.json``).

    Under torchrun every rank calls this with its own ``ctx.shard``: each computes its share of
    the images and rank 0 merges, summarises and logs; every rank returns the summary.
    ``task=video`` runs :func:`ddrm_exp.video.runner.run_video` instead.
    """
    task = str(cfg.get("task", "image"))
    if task not in ("image", "video"):
        raise ConfigError(f"task must be 'image' or 'video', got {cfg.get('task')!r}.")
    out_dir = ctx.output_dir
    try:
        if task == "video":
            from ddrm_exp.video.runner import run_video

            with RunLock.acquire(out_dir, ctx.shard) as lock:
                if ctx.shard.is_main and cfg.get("logger") is not None:
                    wandb_check.preflight(cfg.logger, out_dir, can_write=lock.held)
                return run_video(cfg, ctx)
        return run_images(cfg, ctx)
    except KeyboardInterrupt:
        if ctx.shard.is_main:
            done = count_done(out_dir, config_hash(cfg))
            print(f"ddrm_exp: {faults.interrupted(out_dir, done)}", file=sys.stderr)
        raise SystemExit(faults.EXIT_INTERRUPTED) from None
    except OSError as exc:
        known = faults.os_error(exc, out_dir)
        if known is None:
            raise
        raise known from exc


def count_done(out_dir: Path, fingerprint: str) -> int:
    """How many images of this configuration have results on disk (for the Ctrl-C message)."""
    done: set[int] = set()
    for path in results_files(out_dir):
        done.update(int(r["index"]) for r in read_records(path)[0] if matches(r, fingerprint))
    return len(done)


def run_images(cfg: DictConfig, ctx: RunContext) -> dict[str, Any]:
    """``task=image``: check, lock the run directory, skip a complete job or compute the rest."""
    s = setup(cfg, ctx)
    out_dir = ctx.output_dir
    with RunLock.acquire(out_dir, ctx.shard) as lock:
        if not cfg.overwrite:
            # Before the model (setup() has refused a changed dataset): skip a complete job.
            done = complete_summary(out_dir, len(s.dataset), s.fingerprint)
            if done is not None:
                log.info(
                    "skipping job: summary.json complete (%d images, config_hash %s) in %s",
                    len(s.dataset),
                    s.fingerprint,
                    out_dir,
                )
                return done
        if not lock.held:
            raise RunError(
                f"The output directory {out_dir} cannot be written (read-only or not yours), and "
                "the job in it is not complete. Point the run at a writable directory with "
                "hydra.run.dir=... (or paths.output_root=...)."
            )
        if ctx.shard.is_main and cfg.get("logger") is not None:
            # wandb's key, network and directory, before the model (rank 0 logs the run).
            wandb_check.preflight(cfg.logger, out_dir)
        return compute(cfg, ctx, s)


def compute(cfg: DictConfig, ctx: RunContext, s: Setup) -> dict[str, Any]:
    """Restore the images the run directory lacks, then merge and summarise (rank 0)."""
    shard = ctx.shard
    device, dataset, operator, plan, sampler = s.device, s.dataset, s.operator, s.plan, s.sampler
    sigma_y, sigma_assumed, fingerprint = s.sigma_y, s.sigma_assumed, s.fingerprint
    out_dir = ctx.output_dir
    choices = ctx.choices or {}

    if shard.is_main:
        log_header(cfg, choices, device, s)
        sampler.progress = StepProgress(f"{ctx.job_name} {sampler.name}")
    prior = s.load_prior(cfg)
    # Weights full of NaN would give NaN images: say so before sampling, for one host sync.
    weights = itertools.chain(prior.parameters(), prior.buffers())
    faults.check_finite_weights(weights, f"model={choices.get('model', 'the model')}")

    out_dir.mkdir(parents=True, exist_ok=True)
    if shard.is_main:
        write_text_atomic(out_dir / "config_resolved.yaml", OmegaConf.to_yaml(cfg, resolve=True))
    results = RunResults.open(out_dir, shard, fingerprint, overwrite=bool(cfg.overwrite))
    todo = [i for i in shard.indices(len(dataset)) if i not in results.done]
    log_plan(shard, len(dataset), len(todo), results)

    metrics = Metrics(cfg, device)
    tracker = build_tracker(cfg, ctx)
    seed = int(cfg.seed)
    grid_max = int(cfg.grid_max_images)
    grid_rows: dict[int, figures.GridRow] = {}
    style = measurement_style(cfg, plan)
    computed: list[int] = []
    loader = DataLoader(Subset(dataset, todo), batch_size=int(cfg.batch_size), shuffle=False)
    desc = f"{ctx.job_name} {sampler.name}"
    # One progress line per rank, stacked, rather than all ranks redrawing the same line.
    position = shard.rank if shard.is_distributed else None
    if shard.is_distributed:
        desc += f" [{shard}]"
    try:
        for batch in tqdm(loader, desc=desc, unit="batch", disable=None, position=position):
            x = batch["image"].to(device)
            indices = [int(i) for i in batch["index"]]
            names = list(batch["name"])
            meas_gens = [image_generator(seed, i, STREAM_MEASUREMENT) for i in indices]
            batch_op, measured = operator, None
            if plan is None:
                y = measure(operator, x, sigma_y, meas_gens)
            else:
                measured = plan.measure(batch, x, sigma_y, meas_gens)
                batch_op, y = measured.operator, measured.y
            gens = [image_generator(seed, i, STREAM_SAMPLER) for i in indices]
            if device.type == "cuda":
                torch.cuda.synchronize(device)
            start = time.perf_counter()
            result = sampler.sample(prior, batch_op, y, sigma_assumed, generator=gens)
            x_hat = result.x0
            if device.type == "cuda":
                torch.cuda.synchronize(device)
            seconds = time.perf_counter() - start
            # One check of the batch's output, not one per step: NaN and inf propagate to x̂₀.
            bad = faults.nonfinite_images(x_hat)
            if bad:
                failed = [names[j] for j in bad]
                raise nonfinite(
                    cfg, out_dir, sampler, prior, batch_op, y, sigma_assumed, indices, failed, seed
                )
            if plan is not None and measured is not None:
                batch_op = plan.after_sampling(measured, result)
            baseline = batch_op.H_pinv(y).reshape(x.shape)
            restored_m = metrics(batch_op, x_hat, x, y)
            baseline_m = metrics(batch_op, baseline, x, y)
            for j, (index, name) in enumerate(zip(indices, names, strict=True)):
                paths: dict[str, Path] = {}
                if cfg.save_images:
                    paths = image_paths(out_dir, index, name)
                    for kind, img in zip(IMAGE_KINDS, (x[j], baseline[j], x_hat[j]), strict=True):
                        save_png(img, paths[kind])
                if cfg.save_images and plan is None:  # a blind plan saves its own
                    where = blind.measurement_png_path(out_dir, index, name)
                    figures.save_measurement(batch_op, y[j], x.shape[1:], where, style)
                # Indices arrive in increasing order, so these are this shard's first images.
                if len(grid_rows) < grid_max:
                    psnrs = {"pinv": baseline_m[j]["psnr"], "restored": restored_m[j]["psnr"]}
                    grid_rows[index] = figures.grid_row(
                        name, batch_op, y[j], x[j], baseline[j], x_hat[j], psnrs, style
                    )
                record = {
                    "index": index,
                    "name": name,
                    INPUT_KEY: s.input_ids[index],
                    **s.record_fields(cfg, choices),
                    "nfe": result.nfe,
                    "seconds": seconds / len(indices),
                    "batch_size": len(indices),
                    "restored": restored_m[j],
                    "baseline": baseline_m[j],
                    "config_hash": fingerprint,
                }
                if plan is not None and measured is not None:
                    record.update(
                        plan.record(measured, j, out_dir, index, name, bool(cfg.save_images))
                    )
                results.append(record)
                computed.append(index)
                tracker.log_result(record, paths)

        # Gathering waits for every rank: after it, all per-rank files are complete on disk.
        shares = distributed.gather((computed, grid_rows), shard)
        summary: dict[str, Any] | None = None
        if shares is not None:
            summary = finish(
                cfg,
                ctx,
                results,
                shares,
                len(dataset),
                tracker,
                sampler.name,
                lpips_note=metrics.lpips.reason,
                style=style,
            )
    finally:
        tracker.finish()
    summary = distributed.broadcast(summary, shard)
    assert summary is not None
    return summary


def nonfinite(
    cfg: DictConfig,
    out_dir: Path,
    sampler: Any,
    prior: DiffusionPrior,
    operator: HFunctions,
    y: Tensor,
    sigma_assumed: float,
    indices: list[int],
    bad_names: list[str],
    seed: int,
) -> RunError:
    """The error for restorations that are not finite, naming the step where x̂₀ first was.

    The step is found by sampling the batch (``indices``) again with its trajectory (the same
    seeds give the same steps), only once it has failed, so working runs pay nothing for it.
    """
    step: int | None = None
    timesteps = int(cfg.sampler.timesteps)
    per_image = 4 * int(np.prod(prior.shape))
    if timesteps * len(indices) * per_image <= TRAJECTORY_BUDGET_BYTES:
        try:
            gens = [image_generator(seed, i, STREAM_SAMPLER) for i in indices]
            rerun = sampler.sample(
                prior, operator, y, sigma_assumed, generator=gens, return_trajectory=True
            )
            step = faults.first_nonfinite_step(rerun.trajectory)
        except Exception:  # noqa: BLE001 - only a diagnosis: the error below stands without it
            step = None
    grad_scale = cfg.sampler.get("grad_scale")
    return faults.nonfinite_error(
        bad_names,
        step,
        timesteps,
        str(sampler.name),
        float(grad_scale) if grad_scale is not None else None,
        out_dir,
    )


# At most this much x̂₀ trajectory is kept on the host to find the step a restoration failed at.
TRAJECTORY_BUDGET_BYTES = 2 << 30


def log_plan(shard: Shard, num_images: int, num_todo: int, results: RunResults) -> None:
    mine = len(shard.indices(num_images))
    if results.stale:
        log.warning(
            "%d image(s) in %s were computed with other settings (config_hash differs); "
            "recomputing them",
            len(results.stale),
            results.out_dir,
        )
    where = f"{shard}: " if shard.is_distributed else ""
    if num_todo < mine:
        log.info(
            "%sresuming: %d of %d images already done, %d to compute",
            where,
            mine - num_todo,
            mine,
            num_todo,
        )
    elif shard.is_distributed:
        log.info("%s%d image%s", where, num_todo, "" if num_todo == 1 else "s")


def finish(
    cfg: DictConfig,
    ctx: RunContext,
    results: RunResults,
    shares: list[tuple[list[int], dict[int, figures.GridRow]]],
    num_images: int,
    tracker: Tracker,
    sampler_name: str,
    lpips_note: str | None,
    style: str = "labelled",
) -> dict[str, Any]:
    """Rank 0 (or the only process): merge the results, write the grid and summary, log once.

    ``style``: the run's measurement style, which titles the grid's measurement column."""
    out_dir = ctx.output_dir
    merged = results.merge()
    # The tracker saw rank 0's images as they came; the other ranks' arrive here.
    for computed, _ in shares[1:]:
        for index in computed:
            record = merged[index]
            paths = image_paths(out_dir, index, record["name"]) if cfg.save_images else {}
            tracker.log_result(record, paths)
    rows = {i: row for _, grid_rows in shares for i, row in grid_rows.items()}
    grid_path = out_dir / GRID_NAME
    grid_max = int(cfg.grid_max_images)
    grid = figures.write_run_grid(out_dir, merged, rows, grid_max, grid_path, style)
    records = [merged[i] for i in range(num_images) if i in merged]
    missing = num_images - len(records)
    if missing:
        raise RuntimeError(f"{missing} of {num_images} images have no result in {out_dir}.")
    summary = build_summary(cfg, records, ctx.choices or {}, sampler_name, lpips_note=lpips_note)
    summary["config_hash"] = results.fingerprint
    write_json_atomic(out_dir / SUMMARY_NAME, summary)
    tracker.log_summary(summary, grid_path if grid else None)
    return summary


def build_summary(
    cfg: DictConfig,
    records: list[dict[str, Any]],
    choices: dict[str, str],
    sampler_name: str,
    lpips_note: str | None,
) -> dict[str, Any]:
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
    summary: dict[str, Any] = {
        "count": len(records),
        "nfe": nfe,
        "seconds_per_image": sum(seconds) / len(seconds) if seconds else None,
        "nfe_per_s": (batch_nfe / batch_seconds) if batch_seconds > 0 else None,
        "degradation": choices.get("degradation"),
        "model": choices.get("model"),
        "dataset": choices.get("dataset"),
        "sampler": sampler_name,
        "sampler_params": sampler_params(cfg),
        "degradation_params": degradation_params(cfg),
        "sigma_y": float(cfg.noise.sigma_y),
        "timesteps": int(cfg.sampler.timesteps),
        "eta": cfg.sampler.get("eta"),
        "eta_b": cfg.sampler.get("eta_b"),
        "seed": int(cfg.seed),
        **summarize(records),
        **blind.summary_extras(records),
    }
    if lpips_note:
        summary["lpips_note"] = lpips_note
    note = infinite_psnr_note(records, float(cfg.noise.sigma_y))
    if note:
        summary["psnr_note"] = note
    return summary


def infinite_psnr_note(records: list[dict[str, Any]], sigma_y: float) -> str | None:
    """Why a PSNR reads n/a: an exact reconstruction has an infinite PSNR, which JSON stores as
    null and the means leave out (restorations are checked finite, so null means infinite)."""
    parts = []
    for part, label in (("baseline", "H⁺y"), ("restored", "the restoration")):
        exact = sum(1 for r in records if r.get(part, {}).get("psnr", 0.0) is None)
        if exact:
            parts.append(f"{label} equals the original exactly for {exact} of {len(records)}")
    if not parts:
        return None
    why = (
        "with σ_y=0 and an invertible H (denoise) the measurement is the image itself, so H⁺y "
        "recovers it without error"
        if sigma_y == 0
        else "its error is zero"
    )
    return (
        f"PSNR is infinite where {' and '.join(parts)} image(s): {why}. Infinite values are "
        "stored as null and left out of the PSNR mean and n."
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
    lines = [
        f"{summary['count']} {unit}{'' if summary['count'] == 1 else 's'}, {nfe_text}, "
        f"{summary['seconds_per_image']:.3f} s/{unit}, {summary['nfe_per_s']:.2f} NFE/s",
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
    kernel = summary.get("kernel") or {}
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
