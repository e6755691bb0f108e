"""One run over several processes: ``torchrun --nproc_per_node=N -m ddrm_exp ...``.

Sharding is strided: rank r of N takes the dataset indices i with ``i % N == r``, so the shards
differ by at most one image and a partly done run has covered the dataset evenly. Each image is
seeded by its dataset index, so its result depends neither on N nor on the rank that computed it.

Each rank appends to its own ``results.rank{r}.jsonl`` in the shared run directory; when every
rank is done, rank 0 merges them into ``results.jsonl`` (deleting the per-rank files) and writes
the summary, the grid and the tracker run, once. A single process writes ``results.jsonl``
directly and merges the same way, so it can finish a distributed run that was killed, and the
other way round.

The collectives carry a few small Python objects (a timestamp, a path, grid tiles, the summary),
never the computation's tensors, so they use gloo on CPU and GPU alike.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from datetime import datetime, timedelta, tzinfo
from pathlib import Path
from typing import Any, TypeVar

import torch
import torch.distributed as dist

from ddrm_exp.tracking.files import (
    ResultsFile,
    read_records,
    record_line,
    remove_stale_temps,
    write_text_atomic,
)
from ddrm_exp.tracking.resume import (
    RESULTS_NAME,
    clear_outputs,
    matches,
    purge_other_settings,
    rank_results_name,
    results_files,
)

log = logging.getLogger(__name__)

T = TypeVar("T")

# Ranks wait for each other at the end of a run, for as long as the slowest shard takes; torchrun
# ends every rank as soon as one fails, so a long timeout cannot leave them hanging.
TIMEOUT_ENV = "DDRM_EXP_DIST_TIMEOUT_MIN"
DEFAULT_TIMEOUT_MIN = 7 * 24 * 60


@dataclass(frozen=True)
class Shard:
    """This process's place in the run."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def is_distributed(self) -> bool:
        return self.world_size > 1

    def indices(self, num_images: int) -> list[int]:
        """The dataset indices this rank computes."""
        return list(range(self.rank, num_images, self.world_size))

    def __str__(self) -> str:
        return f"rank {self.rank}/{self.world_size}"


SINGLE = Shard()


def current() -> Shard:
    """The shard of this process: rank 0 of 1 unless a process group is up."""
    if dist.is_available() and dist.is_initialized():
        return Shard(
            rank=dist.get_rank(),
            world_size=dist.get_world_size(),
            local_rank=int(os.environ.get("LOCAL_RANK", "0")),
        )
    return SINGLE


def init_from_env() -> Shard:
    """Join the process group torchrun describes in the environment, before Hydra starts.

    Also makes every rank's Hydra see rank 0's clock, so ``${now:...}`` in the run and sweep
    directories gives one directory even when the ranks start seconds apart.
    """
    world = int(os.environ.get("WORLD_SIZE", "1") or "1")
    if world <= 1 or not dist.is_available():
        return SINGLE
    if not dist.is_initialized():
        minutes = float(os.environ.get(TIMEOUT_ENV, DEFAULT_TIMEOUT_MIN))
        dist.init_process_group("gloo", timeout=timedelta(minutes=minutes))
    shard = current()
    pin_hydra_clock(broadcast(datetime.now(), shard))
    return shard


def shutdown() -> None:
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def barrier(shard: Shard) -> None:
    if shard.is_distributed:
        dist.barrier()


def broadcast(obj: T, shard: Shard) -> T:
    """Rank 0's ``obj`` on every rank."""
    if not shard.is_distributed:
        return obj
    box: list[Any] = [obj]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def gather(obj: T, shard: Shard) -> list[T] | None:
    """Every rank's ``obj``, by rank, on rank 0 (None elsewhere). Waits for all ranks."""
    if not shard.is_distributed:
        return [obj]
    out: list[Any] | None = [None] * shard.world_size if shard.is_main else None
    dist.gather_object(obj, out, dst=0)
    return out


def pin_hydra_clock(stamp: datetime) -> None:
    """Make Hydra's ``${now:...}`` resolver return ``stamp`` from now on.

    Hydra re-registers that resolver (``hydra.core.utils.setup_globals``) each time it starts a
    run or a sweep, so registering our own would not stick; the resolver reads the module's
    ``datetime`` when it is called, which is what is replaced here. Should a Hydra release change
    this, :func:`agree_output_dir` still puts every rank in rank 0's directory.
    """
    import hydra.core.utils as hydra_utils

    if getattr(hydra_utils, "datetime", None) is not datetime:
        log.warning("Cannot pin Hydra's clock in this Hydra version; ranks agree on dirs later.")
        return

    class _Pinned(datetime):
        @classmethod
        def now(cls, tz: tzinfo | None = None) -> datetime:  # type: ignore[override]
            return stamp if tz is None else stamp.astimezone(tz)

    hydra_utils.datetime = _Pinned  # type: ignore[attr-defined,misc]


def agree_output_dir(path: Path, shard: Shard) -> Path:
    """Rank 0's output directory, which every rank uses."""
    root = Path(broadcast(str(path), shard))
    if root != path:
        log.warning("%s: Hydra chose %s, using rank 0's %s", shard, path, root)
    return root


def device_for(device: torch.device, shard: Shard) -> torch.device:
    """``cuda`` without an index means this rank's GPU, ``cuda:LOCAL_RANK``.

    With more ranks on a node than GPUs, ranks share them round-robin: several small jobs per
    GPU can be what keeps it busy, so this is allowed rather than an error.
    """
    if device.type == "cuda" and shard.is_distributed and device.index is None:
        count = torch.cuda.device_count()
        device = torch.device("cuda", shard.local_rank % count)
        if shard.local_rank >= count:
            log.info("%s shares %s: %d GPU(s) on this node", shard, device, count)
    if device.type == "cuda" and device.index is not None:
        torch.cuda.set_device(device)
    return device


class RunResults:
    """The results of one run directory as one rank sees and writes them.

    :meth:`open` reads every results file of the directory (``results.jsonl`` and the per-rank
    files a killed run left, with whatever number of processes it had) to know which images are
    done; the rank then appends only to its own file.
    """

    def __init__(self, out_dir: Path, shard: Shard, fingerprint: str) -> None:
        self.out_dir = out_dir
        self.shard = shard
        self.fingerprint = fingerprint
        name = rank_results_name(shard.rank) if shard.is_distributed else RESULTS_NAME
        # Cuts this rank's own torn lines; the others' files are only read.
        self.file = ResultsFile(out_dir / name)
        self.done: set[int] = set()
        stale: set[int] = set()
        for path in results_files(out_dir):
            records = (
                self.file.records.values() if path == self.file.path else read_records(path)[0]
            )
            for rec in records:
                (self.done if matches(rec, fingerprint) else stale).add(int(rec["index"]))
        self.stale = stale - self.done

    @classmethod
    def open(cls, out_dir: Path, shard: Shard, fingerprint: str, overwrite: bool) -> RunResults:
        """Prepare the directory on rank 0, then read it on every rank.

        Preparing drops the files of other settings (:func:`purge_other_settings`), or, with
        ``overwrite``, all results. The caller holds the run directory's lock.

        The barriers keep any rank from reading a file rank 0 is deleting, or appending to its
        own file while another rank is still reading it.
        """
        purged: set[int] = set()
        if shard.is_main:
            if overwrite:
                for path in clear_outputs(out_dir):
                    log.info("overwrite=true: removed %s", path)
            else:
                purged = purge_other_settings(out_dir, fingerprint)
            for folder in (out_dir, out_dir / "images"):
                remove_stale_temps(folder)
        barrier(shard)
        results = cls(out_dir, shard, fingerprint)
        # Rank 0 purged them; every rank reports what it will recompute.
        results.stale |= set(broadcast(purged, shard)) - results.done
        barrier(shard)
        return results

    def append(self, record: dict[str, Any]) -> None:
        self.file.append(record)
        self.done.add(int(record["index"]))

    def merge(self) -> dict[int, dict[str, Any]]:
        """Rank 0, once every rank is done: one ``results.jsonl``, sorted by index, no duplicates.

        Records of other settings are dropped (their images were recomputed); the per-rank files
        are deleted only after ``results.jsonl`` is in place, so a kill in between loses nothing.
        """
        merged: dict[int, dict[str, Any]] = {}
        files = results_files(self.out_dir)
        for path in files:
            for rec in read_records(path)[0]:
                if matches(rec, self.fingerprint):
                    merged[int(rec["index"])] = rec
        ordered = {i: merged[i] for i in sorted(merged)}
        text = "".join(record_line(r) for r in ordered.values())
        write_text_atomic(self.out_dir / RESULTS_NAME, text)
        for path in files[1:]:
            path.unlink(missing_ok=True)
        return ordered
