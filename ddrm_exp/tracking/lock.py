"""One writer per run directory: an advisory ``fcntl.flock`` on ``<run dir>/.ddrm_exp.lock``.

Two runs writing one directory at once delete and overwrite each other's results, so the second
is refused. The kernel drops a flock when its process dies, however it dies, so a SIGKILLed run
never leaves a stale lock behind (a pid file would, after the pid is reused). The lock file
itself is left in place: deleting it would let a third process lock a fresh file while the
second still holds the old one.

Under torchrun only rank 0 takes the lock, for the whole job, and tells the other ranks whether
it got it, so every rank of a refused job stops with the same message and none of a running
job's ranks is refused by its own rank 0.
"""

from __future__ import annotations

import errno
import fcntl
import os
from pathlib import Path
from types import TracebackType

from ddrm_exp import distributed
from ddrm_exp.distributed import Shard
from ddrm_exp.errors import ConfigError

LOCK_NAME = ".ddrm_exp.lock"

# Creating a file here fails with these when the directory cannot be written at all; the caller
# may still read a complete job from it.
UNWRITABLE = frozenset({errno.EROFS, errno.EACCES, errno.EPERM})


class RunDirLocked(ConfigError):
    """Another process is writing the run directory."""


class RunLock:
    """The run directory's lock, held from :meth:`acquire` until :meth:`release` (or exit).

    ``held`` is False when the directory cannot be written (read-only): nothing can then be
    written either, so there is nothing to protect, and a complete job can still be skipped.
    """

    def __init__(self, fd: int | None, held: bool) -> None:
        self._fd = fd
        self._held = held

    @property
    def held(self) -> bool:
        """Whether this job holds the lock (on rank 0, for every rank of a torchrun)."""
        return self._held

    @classmethod
    def acquire(cls, out_dir: Path, shard: Shard = distributed.SINGLE) -> RunLock:
        """Lock ``out_dir`` for this job, or raise :class:`RunDirLocked` naming the holder."""
        fd: int | None = None
        refusal: str | None = None
        if shard.is_main:
            try:
                fd = _lock(out_dir)
            except RunDirLocked as exc:
                refusal = str(exc)
        refusal, held = distributed.broadcast((refusal, fd is not None), shard)
        if refusal is not None:
            raise RunDirLocked(refusal)
        return cls(fd, held)

    def release(self) -> None:
        if self._fd is not None:
            fcntl.flock(self._fd, fcntl.LOCK_UN)
            os.close(self._fd)
            self._fd = None

    def __enter__(self) -> RunLock:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.release()


def _lock(out_dir: Path) -> int | None:
    path = out_dir / LOCK_NAME
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o666)
    except OSError as exc:
        if exc.errno in UNWRITABLE:
            return None
        raise
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        holder = _read_holder(fd)
        os.close(fd)
        raise RunDirLocked(
            f"Another run is writing {os.fspath(out_dir)} ({holder}), and two runs in one "
            "directory would overwrite each other's results. Wait for it to finish (a rerun "
            "then resumes or skips the job), stop it, or give this run its own directory "
            "with hydra.run.dir=... (hydra.sweep.dir=... for a multirun)."
        ) from None
    # Who holds it, for the message above; written after locking so it names the holder.
    try:
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"pid {os.getpid()} on {os.uname().nodename}\n".encode(), 0)
    except OSError:
        pass  # a full disk: the lock holds all the same
    return fd


def _read_holder(fd: int) -> str:
    try:
        text = os.pread(fd, 200, 0).decode(errors="replace").strip()
    except OSError:
        text = ""
    return text or "pid unknown"
