"""Faults met while a run works, turned into one paragraph that says what is kept and what to do.

A disk that fills up, an output directory that cannot be written, Ctrl-C, a restoration that
turns NaN: none is a bug in the user's command, and a traceback from deep inside hides the one
thing they need to know, which is that every image already in ``results.jsonl`` is kept and the
same command resumes.
"""

from __future__ import annotations

import errno
import math
import os
from collections.abc import Iterable, Sequence
from pathlib import Path

import torch
from torch import Tensor

from ddrm_exp.errors import RunError

# The exit status of a process ended by SIGINT, as shells report it.
EXIT_INTERRUPTED = 130

_NO_SPACE = frozenset({errno.ENOSPC, errno.EDQUOT})
_NOT_WRITABLE = frozenset({errno.EROFS, errno.EACCES, errno.EPERM})


def _resume_hint(out_dir: Path) -> str:
    return (
        f"Every image already in {os.fspath(out_dir / 'results.jsonl')} is kept; rerun the same "
        f"command with hydra.run.dir={os.fspath(out_dir)} (the same hydra.sweep.dir for a "
        "multirun) to compute only the rest"
    )


def os_error(exc: OSError, out_dir: Path) -> RunError | None:
    """A :class:`RunError` for an OSError that the user can fix, or None for any other."""
    where = exc.filename or out_dir
    if exc.errno in _NO_SPACE:
        return RunError(
            f"No space left to write {os.fspath(where)} ({exc.strerror}). {_resume_hint(out_dir)}"
            " once there is room (each image takes its PNGs and one line of results.jsonl; "
            "save_images=false writes no PNGs)."
        )
    # The other errors mean something only for the run directory's own files (a dataset file
    # that cannot be read is reported where it is read).
    if exc.filename is None or not _inside(Path(os.fsdecode(exc.filename)), out_dir):
        return None
    if exc.errno in _NOT_WRITABLE:
        return RunError(
            f"Cannot write {os.fspath(where)} ({exc.strerror}): the output directory is "
            "read-only or not yours. A complete job in it is still skipped without writing; to "
            "compute, point the run at a writable directory with hydra.run.dir=... (or "
            "paths.output_root=...)."
        )
    if exc.errno in (errno.ENOTDIR, errno.EEXIST, errno.EISDIR):
        return RunError(
            f"Cannot use {os.fspath(where)} in the output directory {os.fspath(out_dir)} "
            f"({exc.strerror}): a file stands where a directory is needed, or the other way "
            "round. Move it away or choose another hydra.run.dir=...."
        )
    return None


def _inside(path: Path, directory: Path) -> bool:
    path, directory = Path(os.path.abspath(path)), Path(os.path.abspath(directory))
    return path == directory or directory in path.parents


def interrupted(out_dir: Path, done: int) -> str:
    """What Ctrl-C leaves behind, for the message printed before the run exits."""
    return (
        f"Interrupted: {done} image(s) of this job have results on disk. "
        f"{_resume_hint(out_dir)}. No summary.json was written for this run, and the image in "
        "progress is recomputed."
    )


def check_finite_weights(parameters: Iterable[Tensor], what: str) -> None:
    """Stop before sampling when the network's weights hold NaN or inf.

    One reduction per tensor, combined on the device, so the host waits once.
    """
    flags = [torch.isfinite(p).all() for p in parameters if p.is_floating_point()]
    if flags and not bool(torch.stack(flags).all()):
        bad = sum(not bool(f) for f in flags)
        raise RunError(
            f"The weights of {what} hold NaN or inf values ({bad} of {len(flags)} tensors), so "
            "every restoration would be NaN. Check the checkpoint: re-download or re-export it, "
            "or train it again with a lower learning rate."
        )


def nonfinite_images(x: Tensor) -> list[int]:
    """Positions in the batch of the images with a NaN or inf pixel (one host sync)."""
    bad = ~torch.isfinite(x.reshape(x.shape[0], -1)).all(dim=1)
    return [int(i) for i in bad.nonzero().flatten().tolist()]


def first_nonfinite_step(trajectory: Sequence[Tensor]) -> int | None:
    """The first step whose x̂₀ has a NaN or inf, from a sampler's trajectory."""
    for step, x0 in enumerate(trajectory):
        if not bool(torch.isfinite(x0).all()):
            return step
    return None


def nonfinite_error(
    names: Sequence[str],
    step: int | None,
    num_steps: int,
    sampler: str,
    grad_scale: float | None,
    out_dir: Path,
) -> RunError:
    shown = ", ".join(repr(n) for n in names[:3]) + (
        f" and {len(names) - 3} more" if len(names) > 3 else ""
    )
    when = (
        f"x̂₀ first became NaN or inf at step {step + 1} of {num_steps}"
        if step is not None
        else "the restoration is NaN or inf"
    )
    tries = []
    if grad_scale is not None and math.isfinite(grad_scale) and grad_scale > 0:
        tries.append(f"a lower sampler.grad_scale (now {grad_scale:g}; the report uses 1 to 3.5)")
    tries.append("checking the checkpoint (weights that overflow, or the wrong model.* variant)")
    tries.append("precision=fp32 where a lower precision is set")
    return RunError(
        f"The {sampler} restoration of {shown} is not finite: {when}. These images were not "
        "saved and no summary.json was written, so the job does not look complete. Try "
        f"{'; '.join(tries)}. {_resume_hint(out_dir)}."
    )
