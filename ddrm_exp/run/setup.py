"""A run's composed config turned into checked objects, before the model is built.

Everything cheap and checkable (config values, dataset root and image sizes, the operator's
compatibility with the image size, the sampler, the blind plan) is built here, so a bad input
fails in seconds. Below this module the run works with these objects, not with the config.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

import torch
from omegaconf import DictConfig, OmegaConf

from ddrm_exp import distributed
from ddrm_exp.config import image_size_of, instantiate_config, resolve_device, validate
from ddrm_exp.degradations.base import HFunctions
from ddrm_exp.distributed import Shard
from ddrm_exp.errors import ConfigError
from ddrm_exp.models.acceleration import Acceleration, accelerate, check_supported
from ddrm_exp.models.base import DiffusionPrior
from ddrm_exp.run.measurement import MeasurementPlan, estimator_choice
from ddrm_exp.samplers.base import Sampler
from ddrm_exp.samplers.blind import InLoopKernelDDRM
from ddrm_exp.tracking import figures, wandb_check
from ddrm_exp.tracking.identity import check_same_inputs, dataset_names
from ddrm_exp.tracking.identity import input_ids as dataset_input_ids
from ddrm_exp.tracking.resume import config_hash, neutral_keys
from ddrm_exp.tracking.trackers import NullTracker, Tracker, WandbTracker
from ddrm_exp.video.temporal import TemporalSettings


@dataclass
class RunContext:
    """Names the run for logs and trackers; filled from Hydra by the CLI."""

    output_dir: Path
    job_name: str = "run"
    group: str | None = None
    choices: dict[str, str] | None = None
    # Which share of the dataset this process computes (torchrun); one process does it all.
    shard: Shard = distributed.SINGLE


@dataclass(frozen=True)
class RunOptions:
    """The run-wide switches the batch loop and the outputs need."""

    seed: int
    batch_size: int
    overwrite: bool
    save_images: bool
    grid_max_images: int
    use_ssim: bool
    use_lpips: bool
    # How images/*_measurement.png shows y (``measurement_style``); see measurement_style().
    style: str

    @classmethod
    def of(cls, cfg: DictConfig, plan: MeasurementPlan | None) -> RunOptions:
        return cls(
            seed=int(cfg.seed),
            batch_size=int(cfg.batch_size),
            overwrite=bool(cfg.overwrite),
            save_images=bool(cfg.save_images),
            grid_max_images=int(cfg.grid_max_images),
            use_ssim=bool(cfg.metrics.ssim),
            use_lpips=bool(cfg.metrics.lpips),
            style=measurement_style(cfg, plan),
        )


def degradation_params(degradation: DictConfig) -> dict[str, Any]:
    """The degradation's own settings as recorded with every result (``official_compat``,
    ``source``, ``mask_path``, kernels, ...), so tables never pool runs that differ in them.

    ``_target_`` and the keys that never change a result (where a mask file is cached) are left
    out: a cache directory differs between machines, not between experiments. The top-level
    ``lorem_source`` reaches results only as inpaint_lorem's resolved ``source``, recorded here.
    """
    values = OmegaConf.to_container(degradation, resolve=True)
    neutral = neutral_keys("degradation")
    return {
        str(k): v
        for k, v in values.items()  # type: ignore[union-attr]
        if not str(k).startswith("_") and str(k) not in neutral
    }


def measurement_style(cfg: DictConfig, plan: MeasurementPlan | None) -> str:
    """How images/*_measurement.png shows y (``measurement_style``). A blind or real-blur plan
    saves its own picture, the measurement itself: the official code has no such runs."""
    return "labelled" if plan is not None else figures.style_of(cfg)


@dataclass(frozen=True)
class VideoOptions:
    """``task=video``'s own settings: how a frame uses the one before it, and the videos' rate."""

    temporal: TemporalSettings
    fps: int

    @classmethod
    def of(cls, cfg: DictConfig) -> VideoOptions:
        fps = (cfg.get("video") or {}).get("fps", 10)
        if isinstance(fps, bool) or not isinstance(fps, int) or fps < 1:
            raise ConfigError(f"video.fps must be an integer >= 1, got {fps!r}.")
        return cls(TemporalSettings.from_config(cfg.get("temporal")), fps)


@dataclass(frozen=True)
class Reporting:
    """Where a run reports besides its results: the tracker (``logger``) and the resolved
    config written beside them. The whole config stays in here because wandb logs all of it,
    and its preflight may switch ``logger.mode`` to offline before the config is written."""

    logger: DictConfig | None
    config: DictConfig

    def preflight(self, out_dir: Path, can_write: bool = True) -> None:
        """Check wandb's key, network and directory, before the model (rank 0 logs the run)."""
        if self.logger is not None:
            wandb_check.preflight(self.logger, out_dir, can_write=can_write)

    def tracker(self, ctx: RunContext) -> Tracker:
        # The run is logged once, by rank 0, with every rank's images.
        logger = self.logger
        if not ctx.shard.is_main or logger is None or logger.get("name") in (None, "none"):
            return NullTracker()
        if logger.get("name") == "wandb":
            return WandbTracker(logger, self.config, ctx.output_dir, ctx.group, ctx.job_name)
        raise ConfigError(f"logger.name must be 'wandb' or 'none', got {logger.get('name')!r}.")

    def resolved_config(self) -> str:
        """``config_resolved.yaml``: the run's config with every interpolation resolved."""
        return OmegaConf.to_yaml(self.config, resolve=True)


@dataclass
class Setup:
    """What a run builds before its model: each part checked, so bad input fails in seconds."""

    device: torch.device
    shape: tuple[int, int, int]
    dataset: Any
    operator: HFunctions
    # Dataset measurements (real blur) and per-image kernels (blind deblurring); None otherwise.
    plan: MeasurementPlan | None
    sampler: Sampler
    acceleration: Acceleration
    sigma_y: float  # noise added to the measurement
    sigma_assumed: float  # noise level the sampler assumes
    fingerprint: str  # config_hash: which results belong to these settings
    # Per image, a hash of its file(s): which input a stored result was computed from.
    input_ids: list[str | None]
    options: RunOptions
    choices: dict[str, str]
    degradation_params: dict[str, Any]
    task: str  # image | video
    threads: int | None  # the ``threads`` asked for (None: torch's choice), for the header
    build_model: Callable[[], DiffusionPrior]  # the configured model, not yet on the device
    reporting: Reporting
    video: VideoOptions | None  # task=video's settings; None for task=image

    def record_fields(self) -> dict[str, Any]:
        """The settings every per-image record repeats, so each line stands on its own."""
        return {
            "degradation": self.choices.get("degradation"),
            "sampler": self.sampler.name,
            "sampler_params": self.sampler.params(),
            "degradation_params": self.degradation_params,
            "model": self.choices.get("model"),
            "sigma_y": self.sigma_y,
            "assumed_sigma_y": self.sigma_assumed,
            "seed": self.options.seed,
        }

    def load_prior(self) -> DiffusionPrior:
        """The model on the device with the speed options, checked against the run."""
        prior = accelerate(self.build_model().to(self.device).eval(), self.acceleration)
        if tuple(prior.shape) != self.shape:
            raise ConfigError(
                f"The model takes images of shape {tuple(prior.shape)}, but the run is "
                f"configured for {self.shape}; set model.image_size to the model's size."
            )
        self.sampler.check_prior(prior)
        return prior


def build_sampler(cfg: DictConfig, estimator_name: str) -> Sampler:
    target = str(cfg.sampler.get("_target_", ""))
    if estimator_name == "in_loop" and not target.endswith(InLoopKernelDDRM.__name__):
        raise ConfigError(
            "kernel_estimator=in_loop estimates the kernel inside the in-loop DDRM sampler "
            f"(sampler=ddrm_blind); it cannot be combined with the sampler {target}."
        )
    sampler = instantiate_config("sampler", cfg.sampler)
    if not isinstance(sampler, Sampler):
        raise ConfigError(
            f"sampler._target_ builds a {type(sampler).__name__}, which is not a sampler "
            "(ddrm_exp.samplers.base.Sampler: name, params(), nfe, sample(...))."
        )
    return sampler


def video_options(cfg: DictConfig, ctx: RunContext) -> VideoOptions:
    if ctx.shard.is_distributed:
        raise ConfigError(
            "task=video runs in one process (a frame waits for the one before it); to use "
            "several GPUs, run a multirun over dataset.sequences, one job per GPU."
        )
    return VideoOptions.of(cfg)


def build_data(
    cfg: DictConfig, shape: tuple[int, int, int], device: torch.device
) -> tuple[Any, HFunctions]:
    """The dataset (not empty) and the degradation operator for images of ``shape``."""
    dataset = instantiate_config("dataset", cfg.dataset, image_size=shape[1:])
    if len(dataset) == 0:
        raise ConfigError("The dataset has no images (check dataset.limit / dataset.start).")
    operator = instantiate_config("degradation", cfg.degradation, shape=shape, device=device)
    if not isinstance(operator, HFunctions):
        raise ConfigError(
            f"degradation._target_ builds a {type(operator).__name__}, not an HFunctions operator."
        )
    return dataset, operator


def setup(cfg: DictConfig, ctx: RunContext) -> Setup:
    """Everything cheap and checkable, in order; each raises ConfigError on bad input."""
    validate(cfg)
    task = str(cfg.get("task", "image"))
    video = video_options(cfg, ctx) if task == "video" else None
    device = distributed.device_for(resolve_device(cfg.device), ctx.shard)
    height, width = image_size_of(cfg)
    shape = (3, height, width)
    choices = ctx.choices or {}
    dataset, operator = build_data(cfg, shape, device)
    node = cfg.get("kernel_estimator")
    estimator_name = estimator_choice(node, choices.get("kernel_estimator"))
    sampler = build_sampler(cfg, estimator_name)
    sigma_y = float(cfg.noise.sigma_y)
    assumed = cfg.noise.get("assumed_sigma_y")
    sigma_assumed = sigma_y if assumed is None else float(assumed)
    plan = MeasurementPlan.build(
        dataset,
        operator,
        shape,
        sampler,
        node,
        estimator_name=estimator_name,
        data_name=f"dataset={choices['dataset']}" if "dataset" in choices else "this dataset",
        use_ssim=bool((cfg.get("metrics") or {}).get("ssim", True)),
        sigma_assumed=sigma_assumed,
    )
    acceleration = Acceleration(
        str(cfg.get("precision", "fp32")),
        bool(cfg.get("channels_last", False)),
        bool(cfg.get("compile", False)),
    )
    check_supported(acceleration, device)
    fingerprint, ids = config_hash(cfg), dataset_input_ids(dataset)
    if not cfg.overwrite:
        # Results of other input images at the same indices are refused here, for both tasks.
        check_same_inputs(ctx.output_dir, dataset_names(dataset), ids, fingerprint)
    return Setup(
        device=device,
        shape=shape,
        dataset=dataset,
        operator=operator,
        plan=plan,
        sampler=sampler,
        acceleration=acceleration,
        sigma_y=sigma_y,
        sigma_assumed=sigma_assumed,
        fingerprint=fingerprint,
        input_ids=ids,
        options=RunOptions.of(cfg, plan),
        choices=choices,
        degradation_params=degradation_params(cfg.degradation),
        task=task,
        threads=cfg.get("threads"),
        build_model=partial(instantiate_config, "model", cfg.model),
        reporting=Reporting(cfg.get("logger"), cfg),
        video=video,
    )
