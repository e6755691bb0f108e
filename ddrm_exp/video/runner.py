"""``task=video``: every sequence restored frame by frame, in order, with optional temporal help.

The frames of up to ``batch_size`` sequences are restored together (frame k of each), so a
frame can use its own sequence's previous frame while the batch keeps the GPU busy. Memory does
not grow with the sequence length: what a frame passes on lives in ``state/`` on disk, and the
video is encoded at the end of a sequence from the side-by-side frames saved as it went.

Outputs, beside the image runner's (``results.jsonl`` with one line per frame, ``summary.json``,
``images/``): ``frames/<sequence>/<position>.png`` (blurry | restored | sharp, titled, with
the frame's PSNR),
``videos/<sequence>.mp4`` (a GIF where no encoder is available) and, in the summary,
``temporal`` (flicker, warping error, NFE per frame) and ``sequences`` (one summary each).
"""

from __future__ import annotations

import logging
import math
import shutil
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from omegaconf import DictConfig, OmegaConf
from PIL import Image
from torch import Tensor
from torch.utils.data import default_collate

from ddrm_exp import distributed
from ddrm_exp.blind import measurement_png_path
from ddrm_exp.errors import ConfigError
from ddrm_exp.metrics.summary import mean_ci
from ddrm_exp.metrics.temporal import flicker, sequence_flows, warping_error
from ddrm_exp.models.base import DiffusionPrior
from ddrm_exp.run_header import log_header
from ddrm_exp.runner import (
    IMAGE_KINDS,
    STREAM_MEASUREMENT,
    STREAM_SAMPLER,
    Metrics,
    RunContext,
    Setup,
    build_summary,
    build_tracker,
    image_generator,
    image_paths,
    measure,
    measurement_style,
    setup,
)
from ddrm_exp.samplers.ddrm import WarmStart, timestep_sequence, warm_schedule
from ddrm_exp.samplers.progress import StepProgress
from ddrm_exp.tracking import figures
from ddrm_exp.tracking.files import save_png, write_json_atomic, write_text_atomic
from ddrm_exp.tracking.resume import GRID_NAME, SUMMARY_NAME, complete_summary
from ddrm_exp.tracking.trackers import Tracker
from ddrm_exp.tracking.video import write_video
from ddrm_exp.video.sequences import VideoSequence, group_sequences
from ddrm_exp.video.state import FrameState, load_state, save_state
from ddrm_exp.video.temporal import TemporalSettings, align_previous

log = logging.getLogger(__name__)

FRAMES_DIR, VIDEOS_DIR, STATE_DIR = "frames", "videos", "state"
SEQUENCES_NAME = "sequences.json"


def panel_path(out_dir: Path, sequence: str, position: int) -> Path:
    return out_dir / FRAMES_DIR / sequence / f"{position:06d}.png"


def video_path(out_dir: Path, sequence: str) -> Path:
    return out_dir / VIDEOS_DIR / f"{sequence}.mp4"


def check_temporal(temporal: TemporalSettings, s: Setup, choices: dict[str, str]) -> None:
    """Refuse combinations that cannot do what the settings say, before the model loads."""
    plan = s.plan
    if temporal.kernel_propagation:
        estimates = plan is not None and (plan.in_loop or plan.estimator is not None)
        if not estimates:
            raise ConfigError(
                "temporal.kernel_propagation=true starts each frame's kernel estimate from the "
                "previous frame's, but this run estimates no kernel; use "
                "degradation=blur_estimated (kernel_estimator=classical, classical_local or "
                "in_loop)."
            )
    if temporal.warm_start:
        if not warm_schedule(timestep_sequence(s.sampler.timesteps), temporal.t_star):
            raise ConfigError(f"temporal.t_star={temporal.t_star} leaves no sampling step.")
        if not hasattr(s.sampler, "_loop"):
            raise ConfigError(
                f"temporal.warm_start needs a DDRM-family sampler, got "
                f"{choices.get('sampler', type(s.sampler).__name__)}."
            )


class VideoRun:
    """The state of one ``task=video`` job while its sequences are restored."""

    def __init__(
        self,
        cfg: DictConfig,
        ctx: RunContext,
        s: Setup,
        prior: DiffusionPrior,
        temporal: TemporalSettings,
        fps: int,
    ) -> None:
        self.cfg, self.ctx, self.s, self.prior = cfg, ctx, s, prior
        self.out_dir = ctx.output_dir
        self.choices = ctx.choices or {}
        self.temporal = temporal
        self.fps = fps
        self.seed = int(cfg.seed)
        self.metrics = Metrics(cfg, s.device)
        self.grid_rows: dict[int, figures.GridRow] = {}
        self.style = measurement_style(cfg, s.plan)

    # ---- one batch of frames (one per sequence) -------------------------------------------
    def restore(
        self,
        seqs: list[VideoSequence],
        positions: list[int],
        states: list[FrameState | None],
        results: distributed.RunResults,
        tracker: Tracker,
    ) -> None:
        s, cfg, temporal = self.s, self.cfg, self.temporal
        device = s.device
        items = [s.dataset[seq.indices[p]] for seq, p in zip(seqs, positions, strict=True)]
        batch = default_collate(items)
        x = batch["image"].to(device)
        indices = [int(i) for i in batch["index"]]
        names = list(batch["name"])
        meas_gens = [image_generator(self.seed, i, STREAM_MEASUREMENT) for i in indices]
        prev_kernels = [st.kernel if st is not None else None for st in states]
        propagate = temporal.kernel_propagation and all(k is not None for k in prev_kernels)
        init_kernels = torch.stack(prev_kernels) if propagate else None  # type: ignore[arg-type]
        plan, measured = s.plan, None
        if plan is None:
            batch_op = s.operator
            y = measure(batch_op, x, s.sigma_y, meas_gens)
        else:
            measured = plan.measure(
                batch,
                x,
                s.sigma_y,
                meas_gens,
                init_kernels=None if plan.in_loop else init_kernels,
            )
            batch_op, y = measured.operator, measured.y
        guide = self.guide(batch_op, y, x.shape)

        # Shared noise: every frame draws what its sequence's first frame draws.
        seeds = [
            seq.indices[0] if temporal.shared_noise else i
            for seq, i in zip(seqs, indices, strict=True)
        ]
        gens = [image_generator(self.seed, i, STREAM_SAMPLER) for i in seeds]
        kwargs: dict[str, Any] = {}
        warm = temporal.warm_start and all(st is not None for st in states)
        if warm:
            previous = [
                align_previous(st.restored, st.guide, guide[j].cpu())
                if temporal.align == "flow"
                else st.restored
                for j, st in enumerate(states)
                if st is not None
            ]
            kwargs["warm_start"] = WarmStart(torch.stack(previous).to(device), temporal.t_star)
        if plan is not None and plan.in_loop and init_kernels is not None:
            kwargs["init_kernel"] = init_kernels
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        start = time.perf_counter()
        result = s.sampler.sample(
            self.prior, batch_op, y, s.sigma_assumed, generator=gens, **kwargs
        )
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        seconds = time.perf_counter() - start
        x_hat = result.x0
        if plan is not None and measured is not None:
            batch_op = plan.after_sampling(measured, result)
        baseline = batch_op.H_pinv(y).reshape(x.shape)
        restored_m = self.metrics(batch_op, x_hat, x, y)
        baseline_m = self.metrics(batch_op, baseline, x, y)

        for j, (seq, pos, index, name) in enumerate(
            zip(seqs, positions, indices, names, strict=True)
        ):
            st = states[j]
            sharp, restored = x[j].detach().cpu().float(), x_hat[j].detach().cpu().float()
            paths: dict[str, Path] = {}
            if cfg.save_images:
                paths = image_paths(self.out_dir, index, name)
                for kind, img in zip(IMAGE_KINDS, (x[j], baseline[j], x_hat[j]), strict=True):
                    save_png(img, paths[kind])
            blurry = guide[j].detach().cpu().float()
            shown = figures.GridRow(
                f"{seq.name} frame {seq.frames[pos]}",
                {"measurement": blurry, "restored": restored, "original": sharp},
                {"restored": restored_m[j]["psnr"]},
            )
            path = panel_path(self.out_dir, seq.name, pos)
            path.parent.mkdir(parents=True, exist_ok=True)
            Image.fromarray(figures.panel(shown)).save(path)
            if cfg.save_images and plan is None:  # a blind plan saves its own
                where = measurement_png_path(self.out_dir, index, name)
                figures.save_measurement(batch_op, y[j], x.shape[1:], where, self.style)
            if len(self.grid_rows) < int(cfg.grid_max_images):
                psnrs = {"pinv": baseline_m[j]["psnr"], "restored": restored_m[j]["psnr"]}
                self.grid_rows[index] = figures.grid_row(
                    name, batch_op, y[j], x[j], baseline[j], x_hat[j], psnrs, self.style
                )
            pair: dict[str, float | None] = {
                "flicker": None,
                "warping_error": None,
                "warping_error_sharp": None,
            }
            if st is not None:
                r2, s2 = torch.stack([st.restored, restored]), torch.stack([st.sharp, sharp])
                flows = sequence_flows(s2)  # the sharp pair's flow, shared by both errors
                pair["flicker"] = flicker(r2, s2)[0]
                pair["warping_error"] = _finite(warping_error(r2, s2, flows)[0])
                pair["warping_error_sharp"] = _finite(warping_error(s2, s2, flows)[0])
            kernel = self.next_kernel(measured, j)
            # Before the results line: the next frame's start is on disk once this one counts.
            save_state(
                self.out_dir,
                seq.name,
                FrameState(pos, restored, blurry, sharp, kernel, s.fingerprint),
            )
            record: dict[str, Any] = {
                "index": index,
                "name": name,
                "task": "video",
                "sequence": seq.name,
                "frame": seq.frames[pos],
                "position": pos,
                **s.record_fields(cfg, self.choices),
                "nfe": result.nfe,
                "seconds": seconds / len(indices),
                "batch_size": len(indices),
                "restored": restored_m[j],
                "baseline": baseline_m[j],
                "temporal": {
                    **temporal.as_record(),
                    "warm_started": warm,
                    "kernel_propagated": propagate,
                    **pair,
                },
                "config_hash": s.fingerprint,
            }
            if plan is not None and measured is not None:
                record.update(
                    plan.record(measured, j, self.out_dir, index, name, bool(cfg.save_images))
                )
            results.append(record)
            tracker.log_result(record, paths)

    def guide(self, operator: Any, y: Tensor, shape: torch.Size) -> Tensor:
        """The measurement as an image (the blurry frame), or ``H⁺y`` when it is not one."""
        if y.shape[1] == int(np.prod(shape[1:])):
            return y.reshape(shape)
        return operator.H_pinv(y).reshape(shape)

    @staticmethod
    def next_kernel(measured: Any, j: int) -> Tensor | None:
        """The kernel a frame hands on: the estimate before any rank-1 step, else the one used."""
        if measured is None:
            return None
        for kernels in (measured.estimates, measured.kernels):
            if kernels is not None:
                return kernels[j].detach().to("cpu", torch.float64).clone()
        return None

    # ---- per sequence ---------------------------------------------------------------------
    def finish_sequence(
        self, seq: VideoSequence, records: dict[int, dict[str, Any]], tracker: Tracker
    ) -> dict[str, Any]:
        """Encode the sequence's video (once) and summarise its frames."""
        path = video_path(self.out_dir, seq.name)
        written = next((p for p in (path, path.with_suffix(".gif")) if p.exists()), None)
        if written is None:
            frames = [
                np.asarray(Image.open(panel_path(self.out_dir, seq.name, p)).convert("RGB"))
                for p in range(len(seq))
            ]
            written = write_video(frames, path, fps=self.fps)
        summary = sequence_summary(seq, [records[i] for i in seq.indices])
        summary["video"] = str(written.relative_to(self.out_dir))
        tracker.log_video(summary, [records[i] for i in seq.indices], written)
        return summary


def _finite(value: float) -> float | None:
    """NaN (no visible pixel to compare) is recorded as null."""
    return value if math.isfinite(value) else None


def sequence_summary(seq: VideoSequence, records: list[dict[str, Any]]) -> dict[str, Any]:
    """Means over one sequence's frames (temporal ones over its consecutive pairs)."""

    def values(part: str, key: str) -> list[Any]:
        return [(r.get(part) or {}).get(key) for r in records]

    return {
        "sequence": seq.name,
        "frames": len(records),
        "psnr": mean_ci(values("restored", "psnr")),
        "ssim": mean_ci(values("restored", "ssim")),
        "flicker": mean_ci(values("temporal", "flicker")),
        "warping_error": mean_ci(values("temporal", "warping_error")),
        "warping_error_sharp": mean_ci(values("temporal", "warping_error_sharp")),
        "nfe_per_frame": float(np.mean([r["nfe"] for r in records])),
        "seconds_per_frame": float(np.mean([r["seconds"] for r in records])),
    }


def temporal_summary(records: list[dict[str, Any]], settings: TemporalSettings) -> dict[str, Any]:
    nfe = [float(r["nfe"]) for r in records]
    return {
        **settings.as_record(),
        "nfe_per_frame": float(np.mean(nfe)) if nfe else None,
        "warm_started_frames": sum(bool(r["temporal"].get("warm_started")) for r in records),
        **{
            key: mean_ci(r["temporal"].get(key) for r in records)
            for key in ("flicker", "warping_error", "warping_error_sharp")
        },
    }


def _first_unfinished(seq: VideoSequence, done: set[int]) -> int:
    for p, index in enumerate(seq.indices):
        if index not in done:
            return p
    return len(seq)


def run_video(cfg: DictConfig, ctx: RunContext) -> dict[str, Any]:
    """Restore every sequence of the dataset in frame order; return the summary."""
    if ctx.shard.is_distributed:
        raise ConfigError(
            "task=video runs in one process (a frame waits for the one before it); to use "
            "several GPUs, run a multirun over dataset.sequences, one job per GPU."
        )
    s = setup(cfg, ctx)
    choices = ctx.choices or {}
    data_name = f"dataset={choices['dataset']}" if "dataset" in choices else "this dataset"
    sequences = group_sequences(s.dataset, data_name)
    temporal = TemporalSettings.from_config(cfg.get("temporal"))
    check_temporal(temporal, s, choices)
    fps = (cfg.get("video") or {}).get("fps", 10)
    if isinstance(fps, bool) or not isinstance(fps, int) or fps < 1:
        raise ConfigError(f"video.fps must be an integer >= 1, got {fps!r}.")
    out_dir = ctx.output_dir
    if not cfg.overwrite:
        done = complete_summary(out_dir, len(s.dataset), s.fingerprint)
        if done is not None:
            log.info("skipping job: summary.json complete in %s", out_dir)
            return done

    log_header(cfg, choices, s.device, s)
    s.sampler.progress = StepProgress(f"{ctx.job_name} {s.sampler.name}")
    prior = s.load_prior(cfg)
    out_dir.mkdir(parents=True, exist_ok=True)
    if cfg.overwrite:
        for folder in (STATE_DIR, VIDEOS_DIR, FRAMES_DIR):
            shutil.rmtree(out_dir / folder, ignore_errors=True)
    write_text_atomic(out_dir / "config_resolved.yaml", OmegaConf.to_yaml(cfg, resolve=True))
    results = distributed.RunResults.open(
        out_dir, ctx.shard, s.fingerprint, overwrite=bool(cfg.overwrite)
    )
    job = VideoRun(cfg, ctx, s, prior, temporal, fps)
    tracker = build_tracker(cfg, ctx)
    todo = sum(1 for seq in sequences for i in seq.indices if i not in results.done)
    if todo < len(s.dataset):
        log.info("resuming: %d of %d frames to compute", todo, len(s.dataset))
    group_size = int(cfg.batch_size)
    try:
        for g in range(0, len(sequences), group_size):
            group = sequences[g : g + group_size]
            cursor = {seq.name: _first_unfinished(seq, results.done) for seq in group}
            while True:
                active = [seq for seq in group if cursor[seq.name] < len(seq)]
                if not active:
                    break
                states: list[FrameState | None] = []
                for seq in active:
                    p = cursor[seq.name]
                    st = load_state(out_dir, seq.name, p - 1, s.fingerprint) if p > 0 else None
                    if p > 0 and st is None:
                        log.warning(
                            "%s: no state for frame position %d; frame %d starts afresh",
                            seq.name,
                            p - 1,
                            p,
                        )
                    states.append(st)
                # A batch is all warm or all cold (a warm start shortens the schedule).
                has_prev = [st is not None for st in states]
                for want in (False, True):
                    part = [j for j, h in enumerate(has_prev) if h == want]
                    if part:
                        job.restore(
                            [active[j] for j in part],
                            [cursor[active[j].name] for j in part],
                            [states[j] for j in part],
                            results,
                            tracker,
                        )
                for seq in active:
                    cursor[seq.name] += 1
        merged = results.merge()
        missing = len(s.dataset) - len(merged)
        if missing:
            raise RuntimeError(f"{missing} of {len(s.dataset)} frames have no result in {out_dir}.")
        seq_summaries = [job.finish_sequence(seq, merged, tracker) for seq in sequences]
        write_json_atomic(out_dir / SEQUENCES_NAME, seq_summaries)
        grid = figures.write_run_grid(
            out_dir,
            merged,
            job.grid_rows,
            int(cfg.grid_max_images),
            out_dir / GRID_NAME,
            job.style,
        )
        records = [merged[i] for i in sorted(merged)]
        summary = build_summary(
            cfg, records, choices, s.sampler.name, lpips_note=job.metrics.lpips.reason
        )
        summary["task"] = "video"
        summary["temporal"] = temporal_summary(records, temporal)
        summary["sequences"] = seq_summaries
        summary["config_hash"] = s.fingerprint
        write_json_atomic(out_dir / SUMMARY_NAME, summary)
        tracker.log_summary(summary, out_dir / GRID_NAME if grid else None)
    finally:
        tracker.finish()
    return summary
