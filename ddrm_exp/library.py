"""One-line library entries: a prior or an operator by the name the CLI uses.

    prior = ddrm_exp.load_prior("tiny")
    H = ddrm_exp.load_operator("sr4", image_size=64)

Both read the same files as ``python -m ddrm_exp model=tiny degradation=sr4`` (``conf/model``,
``conf/degradation``), so a setting means the same thing in both; keyword arguments override the
file's keys and a misspelt one is refused.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import ConfigAttributeError, ConfigKeyError

from ddrm_exp.degradations.base import HFunctions
from ddrm_exp.errors import ConfigError
from ddrm_exp.models.base import DiffusionPrior


def _compose(group: str, name: str, options: dict[str, Any]) -> DictConfig:
    from hydra import compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra
    from hydra.errors import MissingConfigException

    from ddrm_exp.cli_check import group_options
    from ddrm_exp.paths import CONF_DIR

    if name not in group_options(group):
        raise ConfigError(
            f"{group} {name!r} does not exist; choose one of {', '.join(group_options(group))}."
        )
    # Hydra keeps one global config search path; a caller inside a Hydra app owns it.
    if GlobalHydra.instance().is_initialized():
        raise ConfigError(
            f"load_{'prior' if group == 'model' else 'operator'} cannot run inside a Hydra app "
            "(Hydra is initialised); use hydra.utils.instantiate on your config instead."
        )
    try:
        with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
            cfg = compose(config_name="config", overrides=[f"{group}={name}"])
    except MissingConfigException as exc:  # pragma: no cover - checked above
        raise ConfigError(str(exc)) from exc
    finally:
        GlobalHydra.instance().clear()
    node = cfg[group]
    for key, value in options.items():
        try:
            OmegaConf.update(node, key, value, merge=False, force_add=False)
        except (ConfigAttributeError, ConfigKeyError):
            keys = ", ".join(str(k) for k in node.keys() if not str(k).startswith("_"))
            raise ConfigError(f"{group}={name} has no key {key!r}; its keys: {keys}.") from None
    return cfg


def load_prior(name: str = "tiny", device: str | torch.device = "cpu", **options: Any) -> Any:
    """The diffusion prior ``model=<name>`` on ``device``, in eval mode.

    ``options`` override keys of ``conf/model/<name>.yaml``, e.g. ``image_size=32`` for
    ``"gaussian"`` or ``checkpoint="weights.pt"``.
    """
    from ddrm_exp.config import instantiate_config

    cfg = _compose("model", name, options)
    prior: DiffusionPrior = instantiate_config("model", cfg.model)
    return prior.to(device).eval()


def load_operator(
    name: str,
    image_size: int | Sequence[int] = 64,
    channels: int = 3,
    device: str | torch.device = "cpu",
    **options: Any,
) -> HFunctions:
    """The degradation ``degradation=<name>`` for ``channels`` × ``image_size`` images.

    ``options`` override keys of ``conf/degradation/<name>.yaml`` (e.g. ``fraction=0.8`` for
    ``"inpaint_random"``).
    """
    from ddrm_exp.config import instantiate_config

    if isinstance(image_size, int):
        size = (image_size, image_size)
    else:
        size = (int(image_size[0]), int(image_size[1]))
    cfg = _compose("degradation", name, options)
    operator = instantiate_config(
        "degradation", cfg.degradation, shape=(channels, *size), device=torch.device(device)
    )
    if not isinstance(operator, HFunctions):
        raise ConfigError(f"degradation={name} does not build an operator on its own.")
    return operator
