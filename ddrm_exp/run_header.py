"""What a run says about itself before it starts computing: one header, and a few warnings.

The header names what is run and on what (device, CPU threads), because a run's speed on a
shared CPU depends mostly on the thread count: on a 2-core machine shared with other work, one
thread can be several times faster than two that fight for the cores.
"""

from __future__ import annotations

import logging
from functools import lru_cache
from pathlib import Path
from typing import Any

import torch
from omegaconf import DictConfig

from ddrm_exp.errors import ConfigError

log = logging.getLogger("ddrm_exp")

# CPU flags of native bf16 arithmetic (AVX-512 BF16, AMX); without them bf16 is emulated.
_BF16_FLAGS = ("avx512_bf16", "amx_bf16")


def apply_threads(cfg: DictConfig) -> None:
    """``threads=N``: the CPU threads torch uses (intra-op); null keeps torch's own choice."""
    threads = cfg.get("threads")
    if threads is None:
        return
    if isinstance(threads, bool) or not isinstance(threads, int) or threads < 1:
        raise ConfigError(
            f"threads must be null (torch's choice) or an integer >= 1, got {threads!r}."
        )
    torch.set_num_threads(threads)


@lru_cache(maxsize=1)
def cpu_has_native_bf16() -> bool | None:
    """Whether the CPU does bf16 arithmetic natively; None where it cannot be told."""
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return None
    flags = next((line for line in text.splitlines() if line.startswith("flags")), "")
    return any(flag in flags.split() for flag in _BF16_FLAGS)


def warn_slow_precision(precision: str, device: torch.device) -> None:
    if precision == "bf16" and device.type == "cpu" and cpu_has_native_bf16() is False:
        log.warning(
            "precision=bf16 on a CPU without native bf16 (no %s flag): the network's bf16 "
            "arithmetic is emulated and usually slower than fp32 here; use precision=fp32.",
            " or ".join(_BF16_FLAGS),
        )


def resize_note(dataset: Any, size: tuple[int, int]) -> str | None:
    """E.g. "256×256 → 64×64" when the dataset's first image is resized to the model's size."""
    if not getattr(dataset, "resize", True):
        return None
    # Folder-like datasets list their files; the BSD ones their frames (Sharp and Blur alike).
    paths = getattr(dataset, "paths", None) or [
        f.sharp for f in getattr(dataset, "frames", None) or [] if hasattr(f, "sharp")
    ]
    if not paths:
        return None
    try:
        from PIL import Image

        with Image.open(paths[0]) as img:  # reads the header only
            width, height = img.size
    except (OSError, ValueError):
        return None
    if (height, width) == tuple(size):
        return None
    return f"{width}×{height} → {size[1]}×{size[0]}"


def log_header(s: Any) -> None:
    """One line naming the run (``s``: its :class:`~ddrm_exp.run.setup.Setup`) and its machine,
    then what is worth knowing once per run."""
    choices, device = s.choices, s.device
    height, width = s.shape[1:]
    threads = torch.get_num_threads()
    chosen = s.threads
    source = f"threads={chosen}" if chosen is not None else "torch's choice; set threads=N"
    where = str(device)
    if device.type == "cpu":
        where += f", {threads} CPU thread{'s' if threads != 1 else ''} ({source})"
    log.info(
        "%s: %d image%s of dataset=%s at %d×%d, degradation=%s, sampler=%s (%d NFE), "
        "model=%s, precision=%s, on %s",
        s.task,
        len(s.dataset),
        "" if len(s.dataset) == 1 else "s",
        choices.get("dataset", "?"),
        height,
        width,
        choices.get("degradation", "?"),
        s.sampler.name,
        s.sampler.nfe,
        choices.get("model", "?"),
        s.acceleration.precision,
        where,
    )
    note = resize_note(s.dataset, (height, width))
    if note is not None:
        log.info(
            "images are resized to the model's size (%s: short side resized, centre crop). To "
            "restore them at their own size, use a model that takes it (model.image_size=H or "
            "[H, W] where the model allows, e.g. model=gaussian) and dataset.resize=false.",
            note,
        )
    warn_slow_precision(s.acceleration.precision, device)
