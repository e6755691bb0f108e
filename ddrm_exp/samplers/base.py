"""The sampler contract: what the run layer may ask of any sampler, and what it gets back.

A sampler is a module (the algorithm), a config in ``conf/sampler/`` (its ``_target_`` and
parameters) and an export in :mod:`ddrm_exp.samplers`; the run layer knows it only through
:class:`Sampler`. ``params()`` is what every result records about it, so the runner never reads
the sampler's config.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable

from torch import Tensor

from ddrm_exp.degradations.base import HFunctions
from ddrm_exp.degradations.noise import GeneratorArg
from ddrm_exp.errors import ConfigError
from ddrm_exp.models.base import DiffusionPrior


@dataclass(frozen=True)
class WarmStart:
    """Start the reverse diffusion at timestep ``t_star`` from an estimate ``x0`` of the image.

    Video restoration (report §9.2): the previous frame's restoration, aligned to this frame, is
    a good guess of it, so the noisiest steps can be skipped, as SDEdit does for editing. The
    state at ``t_star`` is eq. (8)'s initialisation with its mean moved from 0 to ``Vᵀx0`` where
    the measurement says nothing reliable (null space and components noisier than ``σ_{t*}``);
    where the measurement is reliable it keeps ``ȳ``. Only the steps at or below ``t_star``
    run, so NFE drops to ``#{t in the schedule : t <= t_star}``.
    """

    x0: Tensor  # (B, C, H, W) in [-1, 1]
    t_star: int


@dataclass
class SampleResult:
    """What a sampler returns: the restoration, its NFE and optionally the x̂_0 trajectory.

    ``kernel``: the blur kernels (B, kh, kw) a blind sampler estimated; None for the others.
    """

    x0: Tensor
    nfe: int
    trajectory: list[Tensor] = field(default_factory=list)
    kernel: Tensor | None = None


class SettingsByName:
    """``params()`` from the class's ``PARAMS``: the constructor's settings, each kept as the
    attribute of its name, so a sampler lists what it records once."""

    PARAMS: tuple[str, ...] = ()

    def params(self) -> dict[str, Any]:
        return {key: getattr(self, key) for key in self.PARAMS}


def check_timesteps(timesteps: int, prior: DiffusionPrior) -> None:
    """A step count the prior's schedule can walk, else a ConfigError (``check_prior``)."""
    steps = prior.schedule.num_timesteps
    if not 1 <= timesteps <= steps:
        raise ConfigError(
            f"sampler.timesteps={timesteps} is outside 1..{steps}, the model's number of "
            "diffusion steps."
        )


@runtime_checkable
class Sampler(Protocol):
    """What the run layer uses of a sampler (DDRM, MCG, the in-loop blind DDRM, ...)."""

    name: str  # recorded with every result (``sampler``)
    # Whether sample() honours ``warm_start`` (task=video with temporal.warm_start needs it).
    supports_warm_start: bool
    # Set by the runner: called as progress(steps_done, num_steps) after every step.
    progress: Callable[[int, int], None] | None

    @property
    def nfe(self) -> int:
        """Network evaluations of one full (cold) sample."""
        ...

    def params(self) -> dict[str, Any]:
        """The settings recorded with every result (``sampler_params``)."""
        ...

    def check_prior(self, prior: DiffusionPrior) -> None:
        """Raise ConfigError if the sampler cannot run with this prior (e.g. its step count)."""
        ...

    def sample(
        self,
        prior: DiffusionPrior,
        operator: HFunctions,
        y: Tensor,
        sigma_y: float,
        *,
        generator: GeneratorArg = None,
        warm_start: WarmStart | None = None,
        return_trajectory: bool = False,
    ) -> SampleResult: ...
