"""Progress inside a batch: how many network evaluations (steps) of it are done.

A batch of 20 NFE with a large network on a slow CPU takes minutes; the runner's per-batch bar
alone says nothing meanwhile. On a terminal a second tqdm bar counts the steps of the current
batch; elsewhere (a log file, a cluster job) a log line says how far the batch is, at most one
every ``interval`` seconds so that fast runs do not flood the log.

The sampler calls the reporter with Python ints after each step, so it costs no device sync.
"""

from __future__ import annotations

import logging
import sys
import time
from typing import IO, Any

from tqdm import tqdm

log = logging.getLogger("ddrm_exp")


class StepProgress:
    """``progress(steps_done, num_steps)`` for :attr:`ddrm_exp.samplers.DDRM.progress`."""

    def __init__(
        self,
        desc: str = "steps",
        interval: float = 10.0,
        stream: IO[str] | None = None,
        position: int | None = None,
    ) -> None:
        self.desc = desc
        self.interval = float(interval)
        self.stream = stream if stream is not None else sys.stderr
        self.position = position
        self.batches = 0  # batches finished
        self._bar: Any = None
        self._last = time.monotonic()
        self._started = self._last

    @property
    def on_terminal(self) -> bool:
        isatty = getattr(self.stream, "isatty", None)
        return bool(isatty and isatty())

    def __call__(self, done: int, total: int) -> None:
        if self.on_terminal:
            self._bar_update(done, total)
        else:
            self._log_update(done, total)
        if done >= total:
            self.batches += 1

    def _bar_update(self, done: int, total: int) -> None:
        if self._bar is None:
            # Below the run's batch bar; removed when the batch ends.
            offset = 1 if self.position is None else self.position + 1
            self._bar = tqdm(total=total, desc=self.desc, unit="NFE", leave=False, position=offset)
        self._bar.update(done - self._bar.n)
        if done >= total:
            self._bar.close()
            self._bar = None

    def _log_update(self, done: int, total: int) -> None:
        now = time.monotonic()
        if done == 1:
            self._started = now
        if now - self._last >= self.interval:
            # Off a terminal the runner's batch bar is hidden too: the end of a batch is told here.
            # The rate counts the steps after the first, whose end is the only start seen
            # (a rate at step 1 divided by no time at all).
            rate = (
                f"{(done - 1) / max(now - self._started, 1e-9):.2f} NFE/s"
                if done > 1
                else "first step"
            )
            log.info(
                "%s: batch %d, %d of %d NFE done (%s)",
                self.desc,
                self.batches + 1,
                done,
                total,
                rate,
            )
            self._last = now
