"""The sequences of a frame dataset, each as its dataset indices in frame order."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from ddrm_exp.errors import ConfigError


@dataclass(frozen=True)
class VideoSequence:
    """One sequence: its name and the dataset indices of its frames, in frame order."""

    name: str
    indices: tuple[int, ...]
    frames: tuple[int, ...]

    def __len__(self) -> int:
        return len(self.indices)


def group_sequences(dataset: Any, data_name: str = "this dataset") -> list[VideoSequence]:
    """Group a dataset's items by sequence (order of first appearance), frames sorted.

    The dataset must say which sequence and frame each item is without reading images
    (``frame_at(index)`` with ``.sequence`` and ``.frame``, as the BSD datasets do).
    """
    frame_at = getattr(dataset, "frame_at", None)
    if not callable(frame_at):
        raise ConfigError(
            f"task=video needs a dataset of video sequences, and {data_name} has none; use "
            "dataset=bsd (real blur) or dataset=bsd_synthetic (README, 'Video')."
        )
    by_sequence: dict[str, list[tuple[int, int]]] = {}
    for index in range(len(dataset)):
        f = frame_at(index)
        by_sequence.setdefault(str(f.sequence), []).append((int(f.frame), index))
    out = []
    for name, frames in by_sequence.items():
        frames.sort()
        out.append(
            VideoSequence(
                name=name,
                indices=tuple(i for _, i in frames),
                frames=tuple(f for f, _ in frames),
            )
        )
    return out
