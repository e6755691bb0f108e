"""``task=image``: check, lock the run directory, skip a complete job or restore what it lacks.

Under torchrun every rank computes its share of the images; rank 0 merges, summarises and logs.
"""

from __future__ import annotations

import itertools
import logging
from pathlib import Path
from typing import Any

from torch.utils.data import DataLoader, Subset
from tqdm import tqdm

from ddrm_exp import distributed, faults
from ddrm_exp.distributed import RunResults, Shard
from ddrm_exp.errors import RunError
from ddrm_exp.models.base import DiffusionPrior
from ddrm_exp.run.batch import Metrics, input_record, restore_batch
from ddrm_exp.run.outputs import image_paths
from ddrm_exp.run.setup import RunContext, Setup
from ddrm_exp.run.summary import build_summary
from ddrm_exp.run_header import log_header
from ddrm_exp.samplers.progress import StepProgress
from ddrm_exp.tracking import figures
from ddrm_exp.tracking.files import read_records, write_json_atomic, write_text_atomic
from ddrm_exp.tracking.lock import RunLock
from ddrm_exp.tracking.resume import (
    GRID_NAME,
    SUMMARY_NAME,
    complete_summary,
    matches,
    results_files,
)
from ddrm_exp.tracking.trackers import Tracker

log = logging.getLogger(__name__)

GridShare = tuple[list[int], dict[int, figures.GridRow]]


def run_images(s: Setup, ctx: RunContext) -> dict[str, Any]:
    """Lock the run directory, skip a complete job or compute the rest."""
    out_dir = ctx.output_dir
    with RunLock.acquire(out_dir, ctx.shard) as lock:
        if not s.options.overwrite:
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
        if ctx.shard.is_main:
            s.reporting.preflight(out_dir)
        prior = start(ctx, s)
        return compute(ctx, s, prior, s.reporting.tracker(ctx))


def start(ctx: RunContext, s: Setup) -> DiffusionPrior:
    """The header, the checked model and the resolved config beside the results."""
    if ctx.shard.is_main:
        log_header(s)
        s.sampler.progress = StepProgress(f"{ctx.job_name} {s.sampler.name}")
    prior = s.load_prior()
    # Weights full of NaN would give NaN images: say so before sampling, for one host sync.
    weights = itertools.chain(prior.parameters(), prior.buffers())
    faults.check_finite_weights(weights, f"model={s.choices.get('model', 'the model')}")
    ctx.output_dir.mkdir(parents=True, exist_ok=True)
    if ctx.shard.is_main:
        write_text_atomic(ctx.output_dir / "config_resolved.yaml", s.reporting.resolved_config())
    return prior


def compute(ctx: RunContext, s: Setup, prior: DiffusionPrior, tracker: Tracker) -> dict[str, Any]:
    """Restore the images the run directory lacks, then merge and summarise (rank 0)."""
    shard, out_dir = ctx.shard, ctx.output_dir
    try:
        results = RunResults.open(out_dir, shard, s.fingerprint, overwrite=s.options.overwrite)
        todo = [i for i in shard.indices(len(s.dataset)) if i not in results.done]
        log_plan(shard, len(s.dataset), len(todo), results)
        metrics = Metrics(s.options.use_ssim, s.options.use_lpips, s.device)
        grid_rows: dict[int, figures.GridRow] = {}
        computed: list[int] = []
        subset = Subset(s.dataset, todo)
        loader = DataLoader(subset, batch_size=s.options.batch_size, shuffle=False)
        desc = f"{ctx.job_name} {s.sampler.name}"
        # One progress line per rank, stacked, rather than all ranks redrawing the same line.
        position = shard.rank if shard.is_distributed else None
        if shard.is_distributed:
            desc += f" [{shard}]"
        for batch in tqdm(loader, desc=desc, unit="batch", disable=None, position=position):
            done = restore_batch(s, prior, metrics, batch, out_dir)
            for j, index in enumerate(done.indices):
                paths = done.save_images(s, out_dir, j)
                # Indices arrive in increasing order, so these are this shard's first images.
                if len(grid_rows) < s.options.grid_max_images:
                    grid_rows[index] = done.grid_row(s, j)
                record = done.record(s, out_dir, j, input_record(s, index), {})
                results.append(record)
                computed.append(index)
                tracker.log_result(record, paths)
        # Gathering waits for every rank: after it, all per-rank files are complete on disk.
        shares = distributed.gather((computed, grid_rows), shard)
        summary: dict[str, Any] | None = None
        if shares is not None:
            summary = finish(ctx, s, results, shares, tracker, metrics.lpips.reason)
    finally:
        tracker.finish()
    summary = distributed.broadcast(summary, shard)
    assert summary is not None
    return summary


def count_done(out_dir: Path, fingerprint: str) -> int:
    """How many images of this configuration have results on disk (for the Ctrl-C message)."""
    done: set[int] = set()
    for path in results_files(out_dir):
        done.update(int(r["index"]) for r in read_records(path)[0] if matches(r, fingerprint))
    return len(done)


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
    ctx: RunContext,
    s: Setup,
    results: RunResults,
    shares: list[GridShare],
    tracker: Tracker,
    lpips_note: str | None,
) -> dict[str, Any]:
    """Rank 0 (or the only process): merge the results, write the grid and summary, log once."""
    out_dir, num_images = ctx.output_dir, len(s.dataset)
    merged = results.merge()
    # The tracker saw rank 0's images as they came; the other ranks' arrive here.
    for computed, _ in shares[1:]:
        for index in computed:
            record = merged[index]
            paths = image_paths(out_dir, index, record["name"]) if s.options.save_images else {}
            tracker.log_result(record, paths)
    rows = {i: row for _, grid_rows in shares for i, row in grid_rows.items()}
    grid_path = out_dir / GRID_NAME
    grid_max = s.options.grid_max_images
    grid = figures.write_run_grid(out_dir, merged, rows, grid_max, grid_path, s.options.style)
    records = [merged[i] for i in range(num_images) if i in merged]
    missing = num_images - len(records)
    if missing:
        raise RuntimeError(f"{missing} of {num_images} images have no result in {out_dir}.")
    summary = build_summary(s, records, lpips_note, {"config_hash": results.fingerprint})
    write_json_atomic(out_dir / SUMMARY_NAME, summary)
    tracker.log_summary(summary, grid_path if grid else None)
    return summary
