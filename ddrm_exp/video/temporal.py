"""How a frame may use the frame before it, without retraining the prior (report §9.2).

* ``warm_start``: noise the previous restoration, aligned to this frame by optical flow, to the
  timestep ``t_star`` and run DDRM from there (:class:`ddrm_exp.samplers.WarmStart`): fewer NFE.
* ``shared_noise``: every frame of a sequence uses the same noise (its first frame's
  generator), so differences between restored frames come from the frames, not the noise.
* ``kernel_propagation``: a frame's kernel estimate starts from the previous frame's kernel.

All off is independent frame-by-frame restoration, which gives each frame exactly the result
of ``task=image``.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

from torch import Tensor

from ddrm_exp.errors import ConfigError

ALIGN_MODES = ("flow", "none")


@dataclass(frozen=True)
class TemporalSettings:
    """The ``temporal`` config group."""

    name: str = "independent"
    warm_start: bool = False
    t_star: int = 150  # conf/temporal/independent.yaml's, chosen on validation trees
    align: str = "flow"
    shared_noise: bool = False
    kernel_propagation: bool = False

    @classmethod
    def from_config(cls, node: Any) -> TemporalSettings:
        values = dict(node) if node is not None else {}
        known = set(cls.__dataclass_fields__)
        unknown = sorted(set(values) - known)
        if unknown:
            raise ConfigError(
                f"temporal has unknown key(s) {', '.join(unknown)}; known: "
                f"{', '.join(sorted(known))}."
            )
        problems = []
        for key in ("warm_start", "shared_noise", "kernel_propagation"):
            if key in values and not isinstance(values[key], bool):
                problems.append(f"temporal.{key} must be true or false, got {values[key]!r}")
        t_star = values.get("t_star", cls.t_star)
        if isinstance(t_star, bool) or not isinstance(t_star, int) or not 0 <= t_star <= 999:
            problems.append(f"temporal.t_star must be a timestep in 0..999, got {t_star!r}")
        align = values.get("align", cls.align)
        if align not in ALIGN_MODES:
            problems.append(
                f"temporal.align must be one of {', '.join(ALIGN_MODES)}, got {align!r}"
            )
        if problems:
            raise ConfigError("Invalid configuration: " + "; ".join(problems) + ".")
        return cls(**{k: v for k, v in values.items() if k in known})

    def as_record(self) -> dict[str, Any]:
        return asdict(self)


def align_previous(previous: Tensor, guide_previous: Tensor, guide: Tensor) -> Tensor:
    """The previous restoration (C, H, W) moved to this frame by the flow between the guides.

    The guides are what both frames' measurements show (the blurry frames themselves, or
    ``H⁺y``): the sharp frames are not available to the method. The flow is estimated from this
    frame to the previous one, so every pixel here looks up where it was.
    """
    from ddrm_exp.metrics.temporal import optical_flow, warp

    flow = optical_flow(guide, guide_previous)
    return warp(previous.detach().cpu().float(), flow).to(previous)
