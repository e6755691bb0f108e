"""Priors built from weight files: the published DDPM/ADM checkpoints and the bundled ``tiny``.

One builder serves every ``conf/model/*.yaml`` that names an architecture and a weights file:
the architecture is built, the file is found (explicit path, bundled asset, cache, or download
through the registry entry), loaded without running code, and loaded into the network with
``strict=True`` so a wrong file is an error, not a silently half-initialised model.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf
from torch import nn

from ddrm_exp.errors import ConfigError
from ddrm_exp.models.base import PREDICTIONS, DiffusionPrior
from ddrm_exp.models.schedule import Schedule
from ddrm_exp.paths import PACKAGE_DIR

log = logging.getLogger(__name__)

ASSETS_DIR = PACKAGE_DIR / "assets"
ARCHES = ("ddpm", "adm")


def _plain(value: Any) -> Any:
    if isinstance(value, DictConfig):
        return OmegaConf.to_container(value, resolve=True)
    return value


def build_network(arch: str, image_size: int, network: Mapping[str, Any]) -> nn.Module:
    """The architecture ``arch`` with the config's constructor arguments."""
    kwargs = dict(_plain(network) or {})
    if arch == "ddpm":
        from ddrm_exp.models.ddpm_unet import ddpm_unet

        return ddpm_unet(image_size, **kwargs)
    if arch == "adm":
        from ddrm_exp.models.adm_unet import adm_unet

        kwargs.setdefault("image_size", image_size)
        if kwargs["image_size"] != image_size:
            raise ConfigError(
                f"model.network.image_size={kwargs['image_size']} differs from "
                f"model.image_size={image_size}."
            )
        return adm_unet(**kwargs)
    raise ConfigError(f"model.arch must be one of {', '.join(ARCHES)}, got {arch!r}.")


def locate_weights(
    name: str,
    weights: Mapping[str, Any] | None,
    bundled: str | None,
    checkpoint: str | None,
    cache_dir: str | Path,
    download: bool,
    bundled_md5: str | None = None,
) -> Path:
    """An explicit checkpoint, else the bundled asset, else the registry (cache or download).

    ``bundled_md5`` pins which bundled weights the config describes: it is part of the run's
    config hash, so results of earlier weights are never resumed as if they were these.
    """
    from ddrm_exp.models.checkpoints import resolve_checkpoint

    if checkpoint is None and bundled:
        path = ASSETS_DIR / bundled
        if not path.is_file():
            raise ConfigError(
                f"The bundled weights of model={name} are missing ({path}); reinstall the "
                "package or retrain them with scripts/train_prior.py (see its model card)."
            )
        if bundled_md5 is not None:
            digest = hashlib.md5(path.read_bytes()).hexdigest()
            if digest != bundled_md5:
                raise ConfigError(
                    f"The bundled weights {path} have md5 {digest}, but model={name} expects "
                    f"{bundled_md5} (model.bundled_md5): the file was replaced or damaged. "
                    "Reinstall the package, or pass other weights with model.checkpoint=PATH."
                )
        return path
    if checkpoint is None and weights is None:
        raise ConfigError(f"model={name} names no weights: set model.checkpoint=/path/to/file.")
    return resolve_checkpoint(name, _plain(weights), checkpoint, cache_dir, download=download)


def build_pretrained_prior(
    name: str,
    arch: str,
    image_size: int,
    network: Mapping[str, Any] | None = None,
    weights: Mapping[str, Any] | None = None,
    checkpoint: str | None = None,
    cache_dir: str | Path = ".",
    download: bool = True,
    fp16: bool = False,
    bundled: str | None = None,
    bundled_md5: str | None = None,
    schedule: Mapping[str, Any] | None = None,
    trained_image_size: int | None = None,
    prediction: str = "eps",
) -> DiffusionPrior:
    """Build ``arch`` from ``network``, load its weights strictly, wrap it as a prior.

    ``schedule``: keyword arguments of :meth:`Schedule.linear` (default: DDPM's linear β from
    1e-4 to 0.02 over 1000 steps, which every published model here was trained with).
    ``prediction``: what the network outputs, ``eps`` (every published model) or ``v``.
    """
    from ddrm_exp.models.checkpoints import load_state_dict

    if trained_image_size is not None and int(trained_image_size) != int(image_size):
        raise ConfigError(
            f"model={name} was trained at {trained_image_size}x{trained_image_size}; "
            f"image_size={image_size} is not supported."
        )
    if prediction not in PREDICTIONS:
        raise ConfigError(
            f"model.prediction={prediction!r} must be one of {', '.join(PREDICTIONS)}."
        )
    net = build_network(arch, int(image_size), network or {})
    path = locate_weights(name, weights, bundled, checkpoint, cache_dir, download, bundled_md5)
    state = load_state_dict(path)
    try:
        net.load_state_dict(state, strict=True)
    except RuntimeError as exc:
        first = str(exc).splitlines()[0:3]
        raise ConfigError(
            f"The weights in {path} do not fit model={name} (arch {arch}): "
            f"{' '.join(first)} ... Check model.checkpoint and model.network."
        ) from None
    if fp16:
        if not hasattr(net, "convert_to_fp16"):
            raise ConfigError(f"model.fp16=true is supported for arch=adm only, not {arch}.")
        net.convert_to_fp16()
    net.eval().requires_grad_(False)
    sched = Schedule.linear(**dict(_plain(schedule) or {}))
    log.info("model %s: %s weights from %s", name, arch, path)
    return DiffusionPrior(net, sched, int(image_size), 3, name, prediction)
