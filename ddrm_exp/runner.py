"""One experiment run: ``task=image`` (:mod:`ddrm_exp.run.image`) or ``task=video``
(:mod:`ddrm_exp.video.runner`), with the faults both share turned into the user's messages.

The parts live in :mod:`ddrm_exp.run`; this module only dispatches (and nothing below it
imports it back).
"""

from __future__ import annotations

import sys
from typing import Any

from omegaconf import DictConfig

from ddrm_exp import faults
from ddrm_exp.errors import ConfigError
from ddrm_exp.run.image import count_done, run_images
from ddrm_exp.run.setup import RunContext, Setup, setup
from ddrm_exp.run.summary import format_summary
from ddrm_exp.tracking.lock import RunLock
from ddrm_exp.tracking.resume import config_hash
from ddrm_exp.video.runner import run_video

__all__ = ["RunContext", "Setup", "format_summary", "run", "setup"]

TASKS = ("image", "video")


def run(cfg: DictConfig, ctx: RunContext) -> dict[str, Any]:
    """Run one experiment and return its summary (also written to ``summary.json``).

    Under torchrun every rank calls this with its own ``ctx.shard``: each computes its share of
    the images and rank 0 merges, summarises and logs; every rank returns the summary.
    """
    task = str(cfg.get("task", "image"))
    if task not in TASKS:
        raise ConfigError(f"task must be 'image' or 'video', got {cfg.get('task')!r}.")
    out_dir = ctx.output_dir
    try:
        # The last reader of the config: below it, the run works with the checked objects.
        s = setup(cfg, ctx)
        if task == "video":
            with RunLock.acquire(out_dir, ctx.shard) as lock:
                if ctx.shard.is_main:
                    s.reporting.preflight(out_dir, can_write=lock.held)
                return run_video(s, ctx)
        return run_images(s, ctx)
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
