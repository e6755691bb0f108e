"""What a frame leaves for the next one, kept on disk so a killed run resumes exactly.

``state/<sequence>/<frame position>.pt`` holds the restoration (float, not the 8-bit PNG), the
guide image the flow is computed on, and the kernel used. It is written before the frame's
results line, so the first frame without a line always finds its predecessor's state; older
states are deleted as the sequence advances (the directory stays a few frames deep).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import Tensor

from ddrm_exp.tracking.files import atomic_write

KEEP = 2  # states kept per sequence: the last finished frame and the one being written


@dataclass
class FrameState:
    position: int  # the frame's position in its sequence (0 = first)
    restored: Tensor  # (C, H, W) float32 in [-1, 1], CPU
    guide: Tensor  # (C, H, W) float32, CPU: the measurement as an image, for the flow
    sharp: Tensor  # (C, H, W) float32, CPU: the ground truth, for the temporal metrics
    kernel: Tensor | None  # (kh, kw) float64, CPU, or None
    config_hash: str  # the settings it was computed with; another run's state is not used


def _dir(root: Path, sequence: str) -> Path:
    return root / "state" / sequence.replace(os.sep, "_")


def state_path(root: Path, sequence: str, position: int) -> Path:
    return _dir(root, sequence) / f"{position:06d}.pt"


def save_state(root: Path, sequence: str, state: FrameState) -> None:
    path = state_path(root, sequence, state.position)
    path.parent.mkdir(parents=True, exist_ok=True)
    payload = {
        "position": state.position,
        "restored": state.restored,
        "guide": state.guide,
        "sharp": state.sharp,
        "kernel": state.kernel,
        "config_hash": state.config_hash,
    }
    with atomic_write(path, "wb") as f:
        torch.save(payload, f)
    for old in _dir(root, sequence).glob("*.pt"):
        if old.stem.isdigit() and int(old.stem) <= state.position - KEEP:
            old.unlink(missing_ok=True)


def load_state(root: Path, sequence: str, position: int, config_hash: str) -> FrameState | None:
    """The state frame ``position`` left, if it was computed with these settings."""
    path = state_path(root, sequence, position)
    if not path.exists():
        return None
    data = torch.load(path, map_location="cpu", weights_only=True)
    if data.get("config_hash") != config_hash:
        return None
    return FrameState(
        position=int(data["position"]),
        restored=data["restored"],
        guide=data["guide"],
        sharp=data["sharp"],
        kernel=data["kernel"],
        config_hash=str(data["config_hash"]),
    )
