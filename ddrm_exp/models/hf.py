"""Priors from 🤗 diffusers: an unconditional ``UNet2DModel`` and its DDPM β schedule.

``model=hf`` loads the UNet of a diffusers pipeline (for example ``google/ddpm-ema-bedroom-256``)
from a directory written by ``save_pretrained`` or from the local Hugging Face cache, together
with the training schedule read from the scheduler's config. diffusers is an optional extra
(``pip install -e '.[hf]'``) and is imported only when a prior is built.

Accepted layouts, for a local directory or a hub id alike:

* a pipeline: ``unet/config.json`` (+ weights) and ``scheduler/scheduler_config.json``;
* a bare model: ``config.json`` (+ weights), optionally with a ``scheduler_config.json`` beside it;
* any of these inside ``subfolder``.

The β schedule (``linear``, ``scaled_linear``, ``squaredcos_cap_v2`` or ``trained_betas``) is
recomputed here in float64. Networks trained to predict ``v`` or the clean ``sample`` are turned
into ε-predictors exactly, using x_t and ᾱ_t:
``ε = √(1-ᾱ_t)·x_t + √ᾱ_t·v`` and ``ε = (x_t - √ᾱ_t·x̂_0) / √(1-ᾱ_t)``.
"""

from __future__ import annotations

import importlib.util
import json
import logging
import math
import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from ddrm_exp.errors import ConfigError
from ddrm_exp.models.base import DiffusionPrior
from ddrm_exp.models.schedule import Schedule

log = logging.getLogger(__name__)

OFFLINE_ENV_VARS = ("HF_HUB_OFFLINE", "DDRM_EXP_OFFLINE")
BETA_SCHEDULES = ("linear", "scaled_linear", "squaredcos_cap_v2")
PREDICTION_TYPES = ("epsilon", "v_prediction", "sample")
# DDPMScheduler's defaults, used for fields a scheduler config leaves out.
DEFAULT_SCHEDULER: dict[str, Any] = {
    "num_train_timesteps": 1000,
    "beta_start": 0.0001,
    "beta_end": 0.02,
    "beta_schedule": "linear",
    "trained_betas": None,
    "prediction_type": "epsilon",
}
# Schedulers of variance-exploding (score-SDE / Karras) models: no DDPM β schedule to read.
VE_SCHEDULERS = ("ScoreSdeVeScheduler", "KarrasVeScheduler", "ScoreSdeVpScheduler")

_HOW_TO_PROVIDE = (
    "Nothing can be downloaded here. On a machine with internet access, load it with diffusers "
    "(e.g. DDPMPipeline.from_pretrained('{repo}')) and call .save_pretrained(DIR), copy DIR "
    "here and pass model.repo_or_path=/path/saved/by/save_pretrained (or copy a Hugging Face "
    "cache holding it here and set model.cache_dir=/path/to/that/cache)."
)


# --------------------------------------------------------------------------------------------
# β schedules (float64)
# --------------------------------------------------------------------------------------------


def _cosine_alpha_bar(s: float) -> float:
    return math.cos((s + 0.008) / 1.008 * math.pi / 2) ** 2


def betas_from_scheduler_config(config: dict[str, Any]) -> Tensor:
    """The training β_1..β_T of a diffusers scheduler config, as a float64 tensor."""
    cfg = {**DEFAULT_SCHEDULER, **{k: v for k, v in config.items() if v is not None}}
    if config.get("trained_betas") is not None:
        betas = torch.as_tensor(config["trained_betas"], dtype=torch.float64).flatten()
    else:
        try:
            n = int(cfg["num_train_timesteps"])
            start, end = float(cfg["beta_start"]), float(cfg["beta_end"])
        except (TypeError, ValueError) as exc:
            raise ConfigError(
                f"The scheduler config has a malformed num_train_timesteps/beta_start/beta_end "
                f"({exc}); fix scheduler_config.json."
            ) from exc
        if n < 1:
            raise ConfigError(f"The scheduler config has num_train_timesteps={n}; it must be >= 1.")
        kind = cfg["beta_schedule"]
        if kind == "linear":
            betas = torch.linspace(start, end, n, dtype=torch.float64)
        elif kind == "scaled_linear":
            betas = torch.linspace(start**0.5, end**0.5, n, dtype=torch.float64) ** 2
        elif kind == "squaredcos_cap_v2":
            betas = torch.tensor(
                [
                    min(1.0 - _cosine_alpha_bar((i + 1) / n) / _cosine_alpha_bar(i / n), 0.999)
                    for i in range(n)
                ],
                dtype=torch.float64,
            )
        else:
            raise ConfigError(
                f"The scheduler config has beta_schedule={kind!r}, which is not supported; "
                f"supported: {', '.join(BETA_SCHEDULES)} (or trained_betas)."
            )
    if betas.numel() == 0 or not bool(((betas > 0) & (betas < 1)).all()):
        raise ConfigError(
            "The scheduler config gives β values outside (0, 1); fix scheduler_config.json."
        )
    return betas


# --------------------------------------------------------------------------------------------
# The network wrapper
# --------------------------------------------------------------------------------------------


class HFUNetEps(nn.Module):
    """``forward(x_t, t)`` = the ε prediction of a diffusers ``UNet2DModel``.

    For ``prediction_type == "epsilon"`` this is ``unet(x_t, t).sample`` unchanged (2C channels
    for a learned variance; :class:`DiffusionPrior` keeps the first C). ``v_prediction`` and
    ``sample`` outputs are converted to ε with ᾱ_t of the training schedule.
    """

    def __init__(
        self,
        unet: nn.Module,
        alphas_cumprod: Tensor,
        prediction_type: str = "epsilon",
        center_input_sample: bool = False,
    ) -> None:
        super().__init__()
        if prediction_type not in PREDICTION_TYPES:
            raise ConfigError(
                f"prediction_type={prediction_type!r} is not supported; "
                f"supported: {', '.join(PREDICTION_TYPES)}."
            )
        self.unet = unet
        self.prediction_type = prediction_type
        self.center_input_sample = center_input_sample
        ac = alphas_cumprod.to(torch.float64)
        self.register_buffer("sqrt_alpha_bar", ac.sqrt(), persistent=False)
        self.register_buffer("sqrt_one_minus_alpha_bar", (1.0 - ac).sqrt(), persistent=False)

    def _coef(self, buf: Tensor, t: Tensor, like: Tensor) -> Tensor:
        idx = t.round().long().clamp(0, buf.shape[0] - 1).to(buf.device)
        return buf[idx].to(like.dtype).view(-1, *([1] * (like.ndim - 1)))

    def forward(self, x: Tensor, t: Tensor) -> Tensor:
        if t.ndim == 0:
            t = t.expand(x.shape[0])
        dtype = next(self.unet.parameters()).dtype
        # A UNet with center_input_sample maps [0, 1] to [-1, 1] itself; ours are in [-1, 1].
        inp = (x + 1) / 2 if self.center_input_sample else x
        out: Tensor = self.unet(inp.to(dtype), t).sample.to(x.dtype)
        if self.prediction_type == "epsilon":
            return out
        pred = out[:, : x.shape[1]]
        a = self._coef(self.sqrt_alpha_bar, t, x)
        s = self._coef(self.sqrt_one_minus_alpha_bar, t, x)
        if self.prediction_type == "v_prediction":
            return s * x + a * pred
        return (x - a * pred) / s  # "sample": the network predicts x_0


# --------------------------------------------------------------------------------------------
# Locating files (local directory or Hugging Face cache/hub)
# --------------------------------------------------------------------------------------------


def _env_offline() -> bool:
    return any(
        os.environ.get(v, "").strip().lower() in ("1", "true", "yes", "on")
        for v in OFFLINE_ENV_VARS
    )


def _looks_like_path(s: str) -> bool:
    """Hub ids are ``name`` or ``owner/name``; anything else is meant as a directory."""
    return s.startswith(("/", ".", "~")) or s.count("/") > 1 or "\\" in s


class _Source:
    """Reads small JSON files of a model from a local directory or via the hub cache."""

    def __init__(self, repo_or_path: str, cache_dir: str | None, local_files_only: bool) -> None:
        self.spec = repo_or_path
        self.cache_dir = None if cache_dir is None else str(Path(cache_dir).expanduser())
        self.local_files_only = local_files_only
        path = Path(repo_or_path).expanduser()
        self.root: Path | None = path if path.is_dir() else None
        self.missing_locally = False  # a hub file was neither cached nor downloadable
        if self.root is None:
            if path.exists():
                raise ConfigError(
                    f"model.repo_or_path={repo_or_path!r} is a file; give the directory written "
                    "by save_pretrained (with config.json or unet/config.json) or a hub id."
                )
            if _looks_like_path(repo_or_path):
                raise ConfigError(
                    f"model.repo_or_path={repo_or_path!r}: no such directory. Give a directory "
                    "written by save_pretrained (with config.json or unet/config.json) or a hub "
                    "id such as google/ddpm-ema-bedroom-256."
                )

    @property
    def is_local(self) -> bool:
        return self.root is not None

    @property
    def load_from(self) -> str:
        return str(self.root) if self.root is not None else self.spec

    def offline_error(self) -> ConfigError:
        how = _HOW_TO_PROVIDE.format(repo=self.spec)
        where = f" (cache_dir={self.cache_dir})" if self.cache_dir else ""
        fast = (
            ""
            if _env_offline()
            else " Set HF_HUB_OFFLINE=1 or DDRM_EXP_OFFLINE=1 to skip the attempt to reach the hub."
        )
        return ConfigError(
            f"The Hugging Face model {self.spec!r} is not a local directory and is not in the "
            f"local Hugging Face cache{where}. {how}{fast}"
        )

    def file(self, rel: str) -> Path | None:
        """The local path of ``rel`` (e.g. ``unet/config.json``), or None if it does not exist."""
        if self.root is not None:
            p = self.root / rel
            return p if p.is_file() else None
        from huggingface_hub import hf_hub_download
        from huggingface_hub.utils import (
            EntryNotFoundError,
            HFValidationError,
            LocalEntryNotFoundError,
            RepositoryNotFoundError,
        )

        try:
            return Path(
                hf_hub_download(
                    self.spec,
                    rel,
                    cache_dir=self.cache_dir,
                    local_files_only=self.local_files_only,
                )
            )
        except LocalEntryNotFoundError:
            # Not cached, and offline or unreachable: ask nothing more of the network.
            self.missing_locally = True
            self.local_files_only = True
            return None
        except EntryNotFoundError:
            return None
        except HFValidationError as exc:
            raise ConfigError(
                f"model.repo_or_path={self.spec!r} is neither an existing directory nor a valid "
                f"Hugging Face hub id ({exc}). Give a directory written by save_pretrained."
            ) from exc
        except RepositoryNotFoundError as exc:
            raise ConfigError(
                f"The Hugging Face repository {self.spec!r} does not exist or is gated/private; "
                "check model.repo_or_path or give a local directory written by save_pretrained."
            ) from exc
        except OSError as exc:
            raise ConfigError(
                f"Could not fetch {rel} of the Hugging Face model {self.spec!r}: {exc}. "
                + _HOW_TO_PROVIDE.format(repo=self.spec)
            ) from exc

    def first(self, candidates: Sequence[str]) -> tuple[str, Path] | None:
        for rel in candidates:
            p = self.file(rel)
            if p is not None:
                return rel, p
        return None


def _read_json(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise ConfigError(f"Could not read {path}: {exc}; fix or re-save that file.") from exc
    if not isinstance(data, dict):
        raise ConfigError(f"{path} does not hold a JSON object; fix or re-save that file.")
    return data


def _size_hw(size: Any, what: str) -> tuple[int, int] | None:
    if size is None:
        return None
    if isinstance(size, int) and not isinstance(size, bool):
        vals: list[Any] = [size, size]
    elif isinstance(size, Sequence) and not isinstance(size, str):
        vals = list(size)
    else:
        vals = []
    if len(vals) != 2 or not all(
        isinstance(v, int) and not isinstance(v, bool) and v > 0 for v in vals
    ):
        raise ConfigError(f"{what} must be a positive integer or [height, width], got {size!r}.")
    return (int(vals[0]), int(vals[1]))


def _subfolder_join(subfolder: str | None, name: str) -> str:
    return f"{subfolder.strip('/')}/{name}" if subfolder else name


# --------------------------------------------------------------------------------------------
# The builder
# --------------------------------------------------------------------------------------------


def build_hf_prior(
    repo_or_path: str,
    image_size: int | None = None,
    subfolder: str | None = None,
    variant: str | None = None,
    local_files_only: bool | None = None,
    cache_dir: str | None = None,
    **_: Any,
) -> DiffusionPrior:
    """A :class:`DiffusionPrior` from a diffusers ``UNet2DModel`` and its scheduler config.

    Args:
        repo_or_path: a directory written by ``save_pretrained`` (a pipeline with ``unet/`` and
            ``scheduler/``, or a bare model), or a hub id already in the local HF cache.
        image_size: must equal the UNet's ``sample_size`` when given (an int or [H, W]).
        subfolder: the model's folder inside ``repo_or_path``; ``unet`` is picked automatically
            for a pipeline.
        variant: weights variant, e.g. ``fp16`` (weights are loaded as float32 either way).
        local_files_only: never touch the network; forced on by ``HF_HUB_OFFLINE=1`` or
            ``DDRM_EXP_OFFLINE=1``.
        cache_dir: the Hugging Face cache to read hub ids from (default: the standard one).
    """
    try:
        from diffusers import UNet2DModel
    except ImportError as exc:
        raise ConfigError(
            f"model=hf needs the optional dependency diffusers, which could not be imported "
            f"({exc}); install it with pip install -e '.[hf]'."
        ) from exc

    if not isinstance(repo_or_path, str) or not repo_or_path.strip():
        raise ConfigError(
            f"model.repo_or_path must be a directory written by save_pretrained or a hub id, "
            f"got {repo_or_path!r}."
        )
    offline = bool(local_files_only) or _env_offline()
    src = _Source(repo_or_path.strip(), cache_dir, offline)

    # 1. The UNet's config: pick the subfolder.
    if subfolder:
        candidates = [_subfolder_join(subfolder, "config.json")]
    else:
        candidates = ["unet/config.json", "config.json"]
    found = src.first(candidates)
    if found is None:
        if src.missing_locally:
            raise src.offline_error()
        raise ConfigError(
            f"model.repo_or_path={repo_or_path!r} has no {' or '.join(candidates)}: it is not a "
            "diffusers model or pipeline saved with save_pretrained (set model.subfolder if the "
            "UNet lies elsewhere)."
        )
    config_rel, config_path = found
    model_sub = config_rel.rpartition("/")[0] or None
    unet_cfg = _read_json(config_path)

    class_name = unet_cfg.get("_class_name", "UNet2DModel")
    if class_name != "UNet2DModel":
        raise ConfigError(
            f"{config_rel} of {repo_or_path!r} describes a {class_name}; model=hf supports only "
            "unconditional diffusers UNet2DModel priors (e.g. google/ddpm-ema-bedroom-256)."
        )
    if unet_cfg.get("time_embedding_type", "positional") == "fourier":
        raise ConfigError(
            f"The UNet of {repo_or_path!r} uses Fourier (σ) time embeddings of a "
            "variance-exploding score model; model=hf needs a DDPM (ε-prediction) UNet."
        )
    if unet_cfg.get("num_class_embeds") is not None or unet_cfg.get("class_embed_type"):
        raise ConfigError(
            f"The UNet of {repo_or_path!r} is class-conditional; model=hf supports only "
            "unconditional UNet2DModel priors."
        )

    # 2. Geometry.
    in_channels = int(unet_cfg.get("in_channels", 3))
    out_channels = int(unet_cfg.get("out_channels", in_channels))
    if out_channels not in (in_channels, 2 * in_channels):
        raise ConfigError(
            f"The UNet of {repo_or_path!r} has in_channels={in_channels} and "
            f"out_channels={out_channels}; an ε-prediction prior needs out_channels equal to "
            "in_channels (or twice that, with a learned variance)."
        )
    native = _size_hw(unet_cfg.get("sample_size"), f"sample_size in {config_rel}")
    asked = _size_hw(image_size, "model.image_size")
    if native is not None and asked is not None and native != asked:
        raise ConfigError(
            f"model.image_size={image_size} does not match the UNet's sample_size "
            f"{unet_cfg.get('sample_size')} ({repo_or_path!r}); set "
            f"model.image_size={native[0] if native[0] == native[1] else list(native)}."
        )
    size = native or asked
    if size is None:
        raise ConfigError(
            f"The UNet config of {repo_or_path!r} has no sample_size; set model.image_size."
        )

    # 3. The scheduler config and β schedule.
    if model_sub is None:
        sched_candidates = ["scheduler_config.json", "scheduler/scheduler_config.json"]
    else:
        sched_candidates = [
            "scheduler/scheduler_config.json",
            _subfolder_join(model_sub, "scheduler_config.json"),
            "scheduler_config.json",
        ]
    sched_found = src.first(sched_candidates)
    if sched_found is None:
        log.warning(
            "No scheduler config (%s) found for %r; assuming the DDPM linear schedule "
            "β = 1e-4..0.02 over 1000 steps, ε-prediction.",
            " or ".join(sched_candidates),
            repo_or_path,
        )
        sched_cfg: dict[str, Any] = {}
    else:
        sched_cfg = _read_json(sched_found[1])
    sched_class = sched_cfg.get("_class_name", "")
    if sched_class in VE_SCHEDULERS:
        raise ConfigError(
            f"{repo_or_path!r} comes with a {sched_class}, not a DDPM (variance-preserving "
            "β schedule) scheduler; model=hf cannot use it."
        )
    if sched_cfg.get("rescale_betas_zero_snr"):
        raise ConfigError(
            f"The scheduler of {repo_or_path!r} sets rescale_betas_zero_snr=true (ᾱ_T = 0), "
            "which DDRM cannot sample from; use a model trained with the standard schedule."
        )
    prediction_type = sched_cfg.get("prediction_type") or "epsilon"
    if prediction_type not in PREDICTION_TYPES:
        raise ConfigError(
            f"The scheduler of {repo_or_path!r} has prediction_type={prediction_type!r}; "
            f"supported: {', '.join(PREDICTION_TYPES)}."
        )
    schedule = Schedule(betas_from_scheduler_config(sched_cfg))

    # 4. The weights.
    unet = _load_unet(
        UNet2DModel.from_pretrained,
        src,
        subfolder=model_sub,
        variant=variant,
    )
    unet.eval()
    unet.requires_grad_(False)
    network = HFUNetEps(
        unet,
        schedule.alphas_cumprod,
        prediction_type=prediction_type,
        center_input_sample=bool(unet_cfg.get("center_input_sample", False)),
    )
    name = "hf:" + (src.root.name if src.root is not None else repo_or_path)
    return DiffusionPrior(network, schedule, size, channels=in_channels, name=name)


def _load_unet(
    from_pretrained: Callable[..., Any],
    src: _Source,
    subfolder: str | None,
    variant: str | None,
) -> nn.Module:
    kwargs: dict[str, Any] = {"torch_dtype": torch.float32}
    if importlib.util.find_spec("accelerate") is None:
        kwargs["low_cpu_mem_usage"] = False  # diffusers' default needs accelerate; skip its warning
    if subfolder:
        kwargs["subfolder"] = subfolder
    if variant:
        kwargs["variant"] = variant
    if not src.is_local:
        kwargs["local_files_only"] = src.local_files_only
        if src.cache_dir is not None:
            kwargs["cache_dir"] = src.cache_dir
    try:
        unet = from_pretrained(src.load_from, **kwargs)
    except (OSError, ValueError, RuntimeError) as exc:
        hint = (
            f" (variant={variant!r}: is there a diffusion_pytorch_model.{variant}.* file?)"
            if variant
            else ""
        )
        extra = "" if src.is_local else " " + _HOW_TO_PROVIDE.format(repo=src.spec)
        raise ConfigError(
            f"Could not load the UNet weights of {src.spec!r}{hint}: {exc}.{extra}"
        ) from exc
    if not isinstance(unet, nn.Module):
        raise ConfigError(f"{src.spec!r} did not load as a torch module.")
    return unet
