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
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image
from torch import Tensor
from torch.utils.data import default_collate

from ddrm_exp import distributed
from ddrm_exp.degradations.base import HFunctions
from ddrm_exp.errors import ConfigError
from ddrm_exp.metrics.summary import mean_ci
from ddrm_exp.metrics.temporal import flicker, sequence_flows, warping_error
from ddrm_exp.models.base import DiffusionPrior
from ddrm_exp.run.batch import BatchOutcome, Metrics, restore_batch
from ddrm_exp.run.measurement import BatchMeasurement
from ddrm_exp.run.setup import RunContext, Setup
from ddrm_exp.run.summary import build_summary
from ddrm_exp.run_header import log_header
from ddrm_exp.samplers.base import WarmStart
from ddrm_exp.samplers.ddrm import timestep_sequence, warm_schedule
from ddrm_exp.samplers.progress import StepProgress
from ddrm_exp.tracking import figures
from ddrm_exp.tracking.files import write_json_atomic, write_text_atomic
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
        if not s.sampler.supports_warm_start:
            raise ConfigError(
                "temporal.warm_start needs a sampler that can start from a guess, and "
                f"sampler={choices.get('sampler', s.sampler.name)} cannot; use "
                "temporal=independent or shared_noise, or a DDRM-family sampler (ddrm, mcg, "
                "ddrm_blind)."
            )
        if not warm_schedule(timestep_sequence(s.sampler.params()["timesteps"]), temporal.t_star):
            raise ConfigError(f"temporal.t_star={temporal.t_star} leaves no sampling step.")


class VideoRun:
    """The state of one ``task=video`` job while its sequences are restored."""

    def __init__(
        self,
        ctx: RunContext,
        s: Setup,
        prior: DiffusionPrior,
        temporal: TemporalSettings,
        fps: int,
    ) -> None:
        self.s, self.prior = s, prior
        self.out_dir = ctx.output_dir
        self.temporal = temporal
        self.fps = fps
        self.metrics = Metrics(s.options.use_ssim, s.options.use_lpips, s.device)
        self.grid_rows: dict[int, figures.GridRow] = {}

    # ---- one batch of frames (one per sequence) -------------------------------------------
    def restore(
        self,
        seqs: list[VideoSequence],
        positions: list[int],
        states: list[FrameState | None],
        results: distributed.RunResults,
        tracker: Tracker,
    ) -> None:
        s, temporal = self.s, self.temporal
        items = [s.dataset[seq.indices[p]] for seq, p in zip(seqs, positions, strict=True)]
        batch = default_collate(items)
        indices = [int(i) for i in batch["index"]]
        prev_kernels = [st.kernel if st is not None else None for st in states]
        propagate = temporal.kernel_propagation and all(k is not None for k in prev_kernels)
        init_kernels = torch.stack(prev_kernels) if propagate else None  # type: ignore[arg-type]
        # Shared noise: every frame draws what its sequence's first frame draws.
        seeds = [
            seq.indices[0] if temporal.shared_noise else i
            for seq, i in zip(seqs, indices, strict=True)
        ]
        warm = temporal.warm_start and all(st is not None for st in states)
        done = restore_batch(
            s,
            self.prior,
            self.metrics,
            batch,
            self.out_dir,
            sampler_seeds=seeds,
            warm_start_from=partial(self.warm_start, states) if warm else None,
            init_kernels=init_kernels,
        )
        guide = self.guide(done.measurement_operator, done.y, done.x.shape)
        flags = {"warm_started": warm, "kernel_propagated": propagate}
        for j, seq in enumerate(seqs):
            self.frame(done, guide, j, seq, positions[j], states[j], flags, results, tracker)

    def warm_start(
        self, states: list[FrameState | None], operator: HFunctions, y: Tensor
    ) -> WarmStart:
        """The previous restorations, aligned to these frames by the flow between the guides."""
        guide = self.guide(operator, y, torch.Size((y.shape[0], *self.s.shape)))
        previous = [
            align_previous(st.restored, st.guide, guide[j].cpu())
            if self.temporal.align == "flow"
            else st.restored
            for j, st in enumerate(states)
            if st is not None
        ]
        return WarmStart(torch.stack(previous).to(self.s.device), self.temporal.t_star)

    def frame(
        self,
        done: BatchOutcome,
        guide: Tensor,
        j: int,
        seq: VideoSequence,
        pos: int,
        st: FrameState | None,
        flags: dict[str, bool],
        results: distributed.RunResults,
        tracker: Tracker,
    ) -> None:
        """Frame ``j`` of the batch: its files, its state for the next frame, its record."""
        s = self.s
        index = done.indices[j]
        sharp = done.x[j].detach().cpu().float()
        restored = done.x_hat[j].detach().cpu().float()
        paths = done.save_images(s, self.out_dir, j)
        blurry = guide[j].detach().cpu().float()
        shown = figures.GridRow(
            f"{seq.name} frame {seq.frames[pos]}",
            {"measurement": blurry, "restored": restored, "original": sharp},
            {"restored": done.restored_metrics[j]["psnr"]},
        )
        path = panel_path(self.out_dir, seq.name, pos)
        path.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(figures.panel(shown)).save(path)
        if len(self.grid_rows) < s.options.grid_max_images:
            self.grid_rows[index] = done.grid_row(s, j)
        pair = temporal_pair(st, restored, sharp)
        kernel = self.next_kernel(done.measured, j)
        # Before the results line: the next frame's start is on disk once this one counts.
        save_state(
            self.out_dir, seq.name, FrameState(pos, restored, blurry, sharp, kernel, s.fingerprint)
        )
        head = {"task": "video", "sequence": seq.name, "frame": seq.frames[pos], "position": pos}
        # A frame the blind plan kept was not sampled, so nothing of it was warm-started.
        warm = flags["warm_started"] and j in done.sampled
        tail = {"temporal": {**self.temporal.as_record(), **flags, "warm_started": warm, **pair}}
        record = done.record(s, self.out_dir, j, head, tail)
        results.append(record)
        tracker.log_result(record, paths)

    @staticmethod
    def guide(operator: HFunctions, y: Tensor, shape: torch.Size) -> Tensor:
        """The measurement as an image (the blurry frame), or ``H⁺y`` when it is not one."""
        if y.shape[1] == int(np.prod(shape[1:])):
            return y.reshape(shape)
        return operator.H_pinv(y).reshape(shape)

    @staticmethod
    def next_kernel(measured: BatchMeasurement | None, j: int) -> Tensor | None:
        """The kernel a frame hands on: the estimate before any rank-1 step, else the one used."""
        if measured is None:
            return None
        for kernels in (measured.estimates, measured.kernels):
            if kernels is not None:
                return kernels[j].detach().to("cpu", torch.float64).clone()
        return None

    # ---- per group of sequences ------------------------------------------------------------
    def restore_group(
        self, group: list[VideoSequence], results: distributed.RunResults, tracker: Tracker
    ) -> None:
        """The unfinished frames of up to ``batch_size`` sequences, frame k of each together."""
        cursor = {seq.name: _first_unfinished(seq, results.done) for seq in group}
        while True:
            active = [seq for seq in group if cursor[seq.name] < len(seq)]
            if not active:
                return
            states = [self.previous_state(seq, cursor[seq.name]) for seq in active]
            # A batch is all warm or all cold (a warm start shortens the schedule).
            has_prev = [st is not None for st in states]
            for want in (False, True):
                part = [j for j, h in enumerate(has_prev) if h == want]
                if part:
                    self.restore(
                        [active[j] for j in part],
                        [cursor[active[j].name] for j in part],
                        [states[j] for j in part],
                        results,
                        tracker,
                    )
            for seq in active:
                cursor[seq.name] += 1

    def previous_state(self, seq: VideoSequence, p: int) -> FrameState | None:
        """What frame ``p - 1`` left for frame ``p`` (None for the first frame)."""
        if p == 0:
            return None
        st = load_state(self.out_dir, seq.name, p - 1, self.s.fingerprint)
        if st is None:
            log.warning(
                "%s: no state for frame position %d; frame %d starts afresh", seq.name, p - 1, p
            )
        return st

    def summarize(
        self,
        sequences: list[VideoSequence],
        results: distributed.RunResults,
        tracker: Tracker,
    ) -> dict[str, Any]:
        """Videos, per-sequence summaries, the grid and summary.json."""
        s, out_dir = self.s, self.out_dir
        merged = results.merge()
        missing = len(s.dataset) - len(merged)
        if missing:
            raise RuntimeError(f"{missing} of {len(s.dataset)} frames have no result in {out_dir}.")
        seq_summaries = [self.finish_sequence(seq, merged, tracker) for seq in sequences]
        write_json_atomic(out_dir / SEQUENCES_NAME, seq_summaries)
        grid_path = out_dir / GRID_NAME
        grid = figures.write_run_grid(
            out_dir, merged, self.grid_rows, s.options.grid_max_images, grid_path, s.options.style
        )
        records = [merged[i] for i in sorted(merged)]
        tail = {
            "task": "video",
            "temporal": temporal_summary(records, self.temporal),
            "sequences": seq_summaries,
            "config_hash": s.fingerprint,
        }
        summary = build_summary(s, records, self.metrics.lpips.reason, tail)
        write_json_atomic(out_dir / SUMMARY_NAME, summary)
        tracker.log_summary(summary, grid_path if grid else None)
        return summary

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


def temporal_pair(
    st: FrameState | None, restored: Tensor, sharp: Tensor
) -> dict[str, float | None]:
    """Flicker and warping errors between a frame and the previous one (None for the first)."""
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
    return pair


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


def run_video(s: Setup, ctx: RunContext) -> dict[str, Any]:
    """Restore every sequence of the dataset in frame order; return the summary."""
    if s.video is None:
        raise ValueError("run_video needs the setup of a task=video run (its video options).")
    data_name = f"dataset={s.choices['dataset']}" if "dataset" in s.choices else "this dataset"
    sequences = group_sequences(s.dataset, data_name)
    temporal = s.video.temporal
    check_temporal(temporal, s, s.choices)
    out_dir = ctx.output_dir
    if not s.options.overwrite:
        done = complete_summary(out_dir, len(s.dataset), s.fingerprint)
        if done is not None:
            log.info("skipping job: summary.json complete in %s", out_dir)
            return done
    prior = start(ctx, s)
    job = VideoRun(ctx, s, prior, temporal, s.video.fps)
    tracker = s.reporting.tracker(ctx)
    try:
        results = distributed.RunResults.open(
            out_dir, ctx.shard, s.fingerprint, overwrite=s.options.overwrite
        )
        todo = sum(1 for seq in sequences for i in seq.indices if i not in results.done)
        if todo < len(s.dataset):
            log.info("resuming: %d of %d frames to compute", todo, len(s.dataset))
        for g in range(0, len(sequences), s.options.batch_size):
            job.restore_group(sequences[g : g + s.options.batch_size], results, tracker)
        return job.summarize(sequences, results, tracker)
    finally:
        tracker.finish()


def start(ctx: RunContext, s: Setup) -> DiffusionPrior:
    """The header, the checked model, a clean output directory and the resolved config."""
    out_dir = ctx.output_dir
    log_header(s)
    s.sampler.progress = StepProgress(f"{ctx.job_name} {s.sampler.name}")
    prior = s.load_prior()
    out_dir.mkdir(parents=True, exist_ok=True)
    if s.options.overwrite:
        for folder in (STATE_DIR, VIDEOS_DIR, FRAMES_DIR):
            shutil.rmtree(out_dir / folder, ignore_errors=True)
    write_text_atomic(out_dir / "config_resolved.yaml", s.reporting.resolved_config())
    return prior
