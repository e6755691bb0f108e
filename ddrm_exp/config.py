"""Checks of a composed config, run before anything is built.

Hydra itself rejects unknown group options and misspelt keys (the config is in struct mode); the
checks here catch values of the right key but the wrong type or range. All problems are reported
together, as one :class:`ConfigError`.
"""

from __future__ import annotations

import math
import re
from typing import Any

import torch
from hydra.errors import InstantiationException
from hydra.utils import instantiate
from omegaconf import DictConfig, ListConfig

from ddrm_exp.errors import ConfigError
from ddrm_exp.samplers.ddrm import NUM_TRAIN_TIMESTEPS

LOGGER_MODES = ("offline", "online", "disabled")
# What images/*_measurement.png shows: y as the picture it is (labelled) or the official code's
# y0 picture (official; ddrm_exp.tracking.figures.official_y0).
MEASUREMENT_STYLES = ("labelled", "official")


def _is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _is_number(v: Any) -> bool:
    return (isinstance(v, int | float)) and not isinstance(v, bool) and math.isfinite(v)


def image_size_of(cfg: DictConfig) -> tuple[int, int]:
    """``model.image_size`` as (H, W); an int means a square image."""
    size = cfg.model.get("image_size")
    if _is_int(size) and size > 0:
        return (size, size)
    if (
        isinstance(size, ListConfig | list | tuple)
        and len(size) == 2
        and all(_is_int(s) and s > 0 for s in size)
    ):
        return (int(size[0]), int(size[1]))
    raise ConfigError(
        f"model.image_size must be a positive integer or [height, width], got {size!r}."
    )


def resolve_device(name: str) -> torch.device:
    """``auto`` picks CUDA when present; asking for CUDA on a machine without it is an error."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise ConfigError(
            f"device={name} was asked for but no CUDA device is available here; "
            "use device=cpu or device=auto."
        )
    return torch.device(name)


def validate(cfg: DictConfig) -> None:
    """Raise :class:`ConfigError` listing every out-of-range or mistyped value in ``cfg``."""
    problems: list[str] = []

    def check(ok: bool, message: str) -> None:
        if not ok:
            problems.append(message)

    seed = cfg.get("seed")
    # Per-image noise is seeded by numpy's SeedSequence, which takes non-negative integers only.
    check(
        _is_int(seed) and 0 <= seed < 2**63,
        f"seed must be an integer in 0..2**63-1, got {seed!r}",
    )
    grid_max = cfg.get("grid_max_images")
    check(
        _is_int(grid_max) and grid_max >= 0,
        f"grid_max_images must be an integer >= 0 (0: no grid), got {grid_max!r}",
    )
    device = cfg.get("device")
    check(
        isinstance(device, str) and re.fullmatch(r"auto|cpu|cuda(:\d+)?", device) is not None,
        f"device must be one of auto, cpu, cuda, cuda:N, got {device!r}",
    )
    bs = cfg.get("batch_size")
    check(_is_int(bs) and bs >= 1, f"batch_size must be an integer >= 1, got {bs!r}")

    sigma_y = cfg.noise.get("sigma_y")
    check(
        _is_number(sigma_y) and 0 <= sigma_y <= 1,
        f"noise.sigma_y must be a number in [0, 1] (pixel units), got {sigma_y!r}",
    )
    assumed = cfg.noise.get("assumed_sigma_y")
    check(
        assumed is None or (_is_number(assumed) and 0 <= assumed <= 1),
        f"noise.assumed_sigma_y must be null or a number in [0, 1], got {assumed!r}",
    )

    # The shared keys' types and ranges where a sampler has them (none is required: a sampler
    # checks its own settings as it is built), reported together with the rest.
    sampler = cfg.sampler
    if "timesteps" in sampler:
        steps = sampler.get("timesteps")
        check(
            _is_int(steps) and 1 <= steps <= NUM_TRAIN_TIMESTEPS,
            f"sampler.timesteps must be an integer in 1..{NUM_TRAIN_TIMESTEPS}, got {steps!r}",
        )
    if "clip_x0" in sampler:
        v = sampler.get("clip_x0")
        check(isinstance(v, bool), f"sampler.clip_x0 must be true or false, got {v!r}")
    if "grad_scale" in sampler:
        v = sampler.get("grad_scale")
        check(_is_number(v) and v >= 0, f"sampler.grad_scale must be a number >= 0, got {v!r}")
    for key in ("eta", "eta_b"):
        if key in sampler:
            v = sampler.get(key)
            check(
                _is_number(v) and 0 <= v <= 1,
                f"sampler.{key} must be a number in [0, 1], got {v!r}",
            )

    try:
        size = image_size_of(cfg)
        trained = cfg.model.get("trained_image_size")
        if trained is not None and size != (int(trained), int(trained)):
            problems.append(
                f"model.image_size={size[0]}x{size[1]} but the weights of this model fit "
                f"{trained}x{trained} images only; leave model.image_size at {trained}"
            )
    except ConfigError as exc:
        problems.append(str(exc).rstrip("."))

    logger = cfg.get("logger")
    if logger is not None and logger.get("name") == "wandb":
        mode = logger.get("mode")
        check(
            mode in LOGGER_MODES,
            f"logger.mode must be one of {', '.join(LOGGER_MODES)}, got {mode!r}",
        )
    for key in ("ssim", "lpips"):
        v = cfg.metrics.get(key)
        check(isinstance(v, bool), f"metrics.{key} must be true or false, got {v!r}")
    check(isinstance(cfg.get("overwrite"), bool), "overwrite must be true or false")
    check(isinstance(cfg.get("save_images"), bool), "save_images must be true or false")
    style = cfg.get("measurement_style", "labelled")
    check(
        style in MEASUREMENT_STYLES,
        f"measurement_style must be one of {', '.join(MEASUREMENT_STYLES)}, got {style!r}",
    )

    if problems:
        raise ConfigError("Invalid configuration: " + "; ".join(problems) + ".")


def instantiate_config(what: str, node: Any, **kwargs: Any) -> Any:
    """``hydra.utils.instantiate`` with its errors turned into the user's ConfigError.

    Hydra wraps what a constructor raises in an InstantiationException; our constructors raise
    ConfigError for bad input, which is unwrapped so its message reaches the user as written.
    """
    try:
        return instantiate(node, **kwargs)
    except InstantiationException as exc:
        cause = exc.__cause__
        if isinstance(cause, ConfigError):
            raise cause from None
        raise ConfigError(f"Could not build the {what} from its config: {exc}") from exc
