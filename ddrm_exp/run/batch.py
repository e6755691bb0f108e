"""One batch restored: measure -> sample -> H⁺y baseline -> metrics; then its PNGs and records.

The one batch step of both tasks: ``task=image`` (:mod:`ddrm_exp.run.image`) and ``task=video``
(:mod:`ddrm_exp.video.runner`, which adds the per-sequence noise, warm start and kernels).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from ddrm_exp import faults
from ddrm_exp.degradations.base import HFunctions
from ddrm_exp.errors import RunError
from ddrm_exp.metrics.image import LPIPSMetric, psnr, ssim
from ddrm_exp.models.base import DiffusionPrior
from ddrm_exp.report.records import ResultLine, encode
from ddrm_exp.run.measurement import BatchMeasurement
from ddrm_exp.run.outputs import IMAGE_KINDS, image_paths, measurement_png_path
from ddrm_exp.run.seeding import STREAM_MEASUREMENT, STREAM_SAMPLER, image_generators
from ddrm_exp.run.setup import Setup
from ddrm_exp.samplers.base import SampleResult, WarmStart
from ddrm_exp.samplers.blind import InLoopKernelDDRM
from ddrm_exp.tracking import figures
from ddrm_exp.tracking.files import save_png
from ddrm_exp.tracking.identity import INPUT_KEY

# Makes a batch's warm start from its measurement (operator, y): video aligns the previous frames.
WarmStartFrom = Callable[[HFunctions, Tensor], WarmStart]

# At most this much x̂₀ trajectory is kept on the host to find the step a restoration failed at.
TRAJECTORY_BUDGET_BYTES = 2 << 30


def residual(operator: HFunctions, x: Tensor, y: Tensor) -> tuple[list[float], list[float]]:
    """‖Hx - y‖ / ‖y‖ and the RMS of Hx - y in [0, 1] pixel units, per image."""
    r = operator.H(x.reshape(x.shape[0], -1)) - y
    rel = (r.norm(dim=1) / y.norm(dim=1).clamp_min(1e-12)).tolist()
    rms = (r.pow(2).mean(dim=1).sqrt() / 2.0).tolist()
    return rel, rms


class Metrics:
    """Per-image metrics of a restoration and of the H⁺y baseline; the residuals only of the
    frames that have an operator (``part``: the sampled ones; a kept frame's are None)."""

    def __init__(self, use_ssim: bool, use_lpips: bool, device: torch.device) -> None:
        self.use_ssim = use_ssim
        self.lpips = LPIPSMetric(device, enabled=use_lpips)

    def __call__(
        self, part: SampledPart, x_hat: Tensor, x: Tensor
    ) -> list[dict[str, float | None]]:
        values: dict[str, list[Any]] = {"psnr": psnr(x_hat, x)}
        values["ssim"] = ssim(x_hat, x) if self.use_ssim else [None] * len(x)
        values["lpips"] = self.lpips(x_hat, x)
        rel: list[float | None] = [None] * len(x)
        rms: list[float | None] = [None] * len(x)
        if part.frames:
            assert part.operator is not None  # sampled frames have theirs
            got = residual(part.operator, part.rows(x_hat), part.y)
            for i, j in enumerate(part.frames):
                rel[j], rms[j] = got[0][i], got[1][i]
        values["residual_rel"], values["residual_rms"] = rel, rms
        return [{k: v[i] for k, v in values.items()} for i in range(len(x))]


@dataclass
class BatchOutcome:
    """A restored batch: everything its images' files and records are made of."""

    indices: list[int]
    names: list[str]
    x: Tensor
    y: Tensor
    x_hat: Tensor
    baseline: Tensor  # H⁺y of the sampled frames; zeros at the kept ones (they have none)
    # The sampled frames' operator (its final one for an in-loop kernel sampler; None: every
    # frame kept), and the one y was measured and sampling began with.
    operator: HFunctions | None
    measurement_operator: HFunctions | None
    measured: BatchMeasurement | None  # the blind plan's view of the batch; None otherwise
    result: SampleResult  # x0 of the whole batch; nfe of each sampled frame
    seconds: float  # sampling time of the whole batch
    sampled: list[int]  # the frames the sampler restored (the others were kept: no NFE)
    restored_metrics: list[dict[str, float | None]]
    baseline_metrics: list[dict[str, float | None]]  # {} for a kept frame: no H⁺y

    def save_images(self, s: Setup, out_dir: Path, j: int) -> dict[str, Path]:
        """Image ``j``'s PNGs (none unless ``save_images``; no H⁺y of a kept frame); a blind
        plan saves its own y."""
        if not s.options.save_images:
            return {}
        index, name = self.indices[j], self.names[j]
        paths = image_paths(out_dir, index, name)
        for kind, img in zip(
            IMAGE_KINDS, (self.x[j], self.baseline[j], self.x_hat[j]), strict=True
        ):
            if kind == "pinv" and j not in self.sampled:
                del paths[kind]
                continue
            save_png(img, paths[kind])
        if s.plan is None:
            where = measurement_png_path(out_dir, index, name)
            figures.save_measurement(
                self.operator, self.y[j], self.x.shape[1:], where, s.options.style
            )
        return paths

    def grid_row(self, s: Setup, j: int) -> figures.GridRow:
        psnrs = {
            "pinv": self.baseline_metrics[j].get("psnr"),  # None: a kept frame, no H⁺y
            "restored": self.restored_metrics[j]["psnr"],
        }
        row = figures.grid_row(
            self.names[j],
            self.operator,
            self.y[j],
            self.x[j],
            self.baseline[j],
            self.x_hat[j],
            psnrs,
            s.options.style,
        )
        if j not in self.sampled:
            del row.tiles["pinv"]  # a kept frame has no H⁺y (as on disk: no PNG)
        return row

    def cost(self, j: int) -> dict[str, Any]:
        """Image ``j``'s share of the sampling: NFE, seconds and the size of the batch the
        sampler ran (a kept frame: none of it; its batch as loaded)."""
        if j not in self.sampled:
            return {"nfe": 0, "seconds": 0.0, "batch_size": len(self.indices)}
        n = len(self.sampled)
        return {"nfe": self.result.nfe, "seconds": self.seconds / n, "batch_size": n}

    def record(
        self,
        s: Setup,
        out_dir: Path,
        j: int,
        head: dict[str, Any],
        tail: dict[str, Any],
    ) -> ResultLine:
        """Image ``j``'s results line: ``head`` after its name, ``tail`` before the hash."""
        index, name = self.indices[j], self.names[j]
        record: dict[str, Any] = {
            "index": index,
            "name": name,
            **head,
            **s.record_fields(),
            **self.cost(j),
            "restored": self.restored_metrics[j],
            "baseline": self.baseline_metrics[j],
            **tail,
            "config_hash": s.fingerprint,
        }
        if s.plan is not None and self.measured is not None:
            record.update(
                s.plan.record(self.measured, j, out_dir, index, name, s.options.save_images)
            )
        return encode(ResultLine, record)


def input_record(s: Setup, index: int) -> dict[str, Any]:
    """The record field naming the input file(s) an image's result was computed from."""
    return {INPUT_KEY: s.input_ids[index]}


def restore_batch(
    s: Setup,
    prior: DiffusionPrior,
    metrics: Metrics,
    batch: dict[str, Any],
    out_dir: Path,
    *,
    sampler_seeds: list[int] | None = None,
    warm_start_from: WarmStartFrom | None = None,
    init_kernels: Tensor | None = None,
) -> BatchOutcome:
    """Measure, sample and score one batch.

    ``sampler_seeds``: the dataset indices whose sampler streams the images use (default: their
    own; video's shared noise passes each sequence's first frame). ``warm_start_from``: makes
    the sampler's warm start from the batch's measurement ``(operator, y)``. ``init_kernels``
    (B, kh, kw): where the kernel estimate starts (the estimator's, or the in-loop sampler's).
    """
    plan = s.plan
    x = batch["image"].to(s.device)
    indices = [int(i) for i in batch["index"]]
    names = list(batch["name"])
    operator, y, measured = measure_batch(s, batch, x, indices, init_kernels)
    seeds = indices if sampler_seeds is None else sampler_seeds
    todo = measured.sampled if measured is not None else list(range(len(indices)))
    warm = None
    if warm_start_from is not None and operator is not None and todo:  # None: every frame kept
        warm = warm_start_from(operator, y)
    part = SampledPart(todo, len(indices), operator, y, [seeds[j] for j in todo])
    result, seconds = part.sample(s, prior, x, warm, init_kernels)
    # One check of the batch's output, not one per step: NaN and inf propagate to x̂₀.
    bad = faults.nonfinite_images(part.rows(result.x0)) if todo else []
    if bad:
        failed = [names[todo[j]] for j in bad]
        assert part.operator is not None  # frames were sampled
        raise nonfinite(
            s, out_dir, prior, part.operator, part.y, gens_seeds=part.seeds, bad_names=failed
        )
    measurement_operator = operator
    if plan is not None and measured is not None:
        part.operator = operator = plan.after_sampling(measured, result)
    restored_metrics = metrics(part, result.x0, x)
    # Kept frames have no H⁺y (no operator was built for them): zeros, and no metrics.
    baseline = torch.zeros_like(x)
    baseline_metrics: list[dict[str, float | None]] = [{} for _ in indices]
    if todo:
        assert operator is not None
        pinv = operator.H_pinv(part.y).reshape(-1, *x.shape[1:])
        if part.whole:
            baseline = pinv
        else:
            baseline[todo] = pinv
        scored = metrics(part, baseline, x)
        for j in todo:
            baseline_metrics[j] = scored[j]
    return BatchOutcome(
        indices=indices,
        names=names,
        x=x,
        y=y,
        x_hat=result.x0,
        baseline=baseline,
        operator=operator,
        measurement_operator=measurement_operator,
        measured=measured,
        result=result,
        seconds=seconds,
        sampled=todo,
        restored_metrics=restored_metrics,
        baseline_metrics=baseline_metrics,
    )


class SampledPart:
    """The frames of a batch the sampler restores (all but the blind plan's kept ones), with
    their operator (built for them alone: :class:`BatchMeasurement`), measurement and sampler
    seeds."""

    def __init__(
        self,
        frames: list[int],
        batch_size: int,
        operator: HFunctions | None,
        batch_y: Tensor,
        seeds: list[int],
    ) -> None:
        """``batch_y``: the whole batch's measurement; ``seeds``: the frames' own."""
        self.frames = frames
        self.batch_size = batch_size
        self.operator = operator
        self.y = batch_y if self.whole else batch_y[frames]
        self.seeds = seeds

    @property
    def whole(self) -> bool:
        return len(self.frames) == self.batch_size

    def rows(self, t: Tensor) -> Tensor:
        """The rows of a whole-batch tensor that belong to these frames."""
        return t if self.whole else t[self.frames]

    def sample(
        self,
        s: Setup,
        prior: DiffusionPrior,
        x: Tensor,
        warm: WarmStart | None,
        init_kernels: Tensor | None,
    ) -> tuple[SampleResult, float]:
        """The sampler's result with x0 of the whole batch (zeros at the frames not sampled,
        which the plan fills), and its time; no sampler call when no frame is left. Each image
        has its own generators, so a frame's restoration does not depend on the others."""
        if not self.frames:
            return SampleResult(x0=torch.zeros_like(x), nfe=0), 0.0
        gens = image_generators(s.options.seed, self.seeds, STREAM_SAMPLER)
        kwargs: dict[str, Any] = {}
        if warm is not None:
            kwargs["warm_start"] = warm if self.whole else replace(warm, x0=self.rows(warm.x0))
        if isinstance(s.sampler, InLoopKernelDDRM) and init_kernels is not None:
            kwargs["init_kernel"] = self.rows(init_kernels)
        assert self.operator is not None  # built for the sampled frames
        result, seconds = timed_sample(s, prior, self.operator, self.y, gens, kwargs)
        if self.whole:
            return result, seconds
        # Only estimated kernels known before sampling keep frames, never an in-loop sampler's.
        assert result.kernel is None
        x0 = result.x0.new_zeros((self.batch_size, *result.x0.shape[1:]))
        x0[self.frames] = result.x0
        return SampleResult(x0=x0, nfe=result.nfe), seconds


def timed_sample(
    s: Setup,
    prior: DiffusionPrior,
    operator: HFunctions,
    y: Tensor,
    gens: list[torch.Generator],
    kwargs: dict[str, Any],
) -> tuple[SampleResult, float]:
    """The sampler's result and its wall time (a GPU's queued work included)."""
    if s.device.type == "cuda":
        torch.cuda.synchronize(s.device)
    start = time.perf_counter()
    result = s.sampler.sample(prior, operator, y, s.sigma_assumed, generator=gens, **kwargs)
    if s.device.type == "cuda":
        torch.cuda.synchronize(s.device)
    return result, time.perf_counter() - start


def measure_batch(
    s: Setup, batch: dict[str, Any], x: Tensor, indices: list[int], init_kernels: Tensor | None
) -> tuple[HFunctions | None, Tensor, BatchMeasurement | None]:
    """The operator of the frames to sample (None: the blind plan keeps every frame) and the
    batch's ``y``: ``Hx + σ_y z``, or what the blind plan makes of it."""
    gens = image_generators(s.options.seed, indices, STREAM_MEASUREMENT)
    if s.plan is None:
        return s.operator, s.operator.measure(x, s.sigma_y, gens), None
    estimator_init = None if s.plan.in_loop else init_kernels
    measured = s.plan.measure(batch, x, s.sigma_y, gens, init_kernels=estimator_init)
    return measured.operator, measured.y, measured


def nonfinite(
    s: Setup,
    out_dir: Path,
    prior: DiffusionPrior,
    operator: HFunctions,
    y: Tensor,
    *,
    gens_seeds: list[int],
    bad_names: list[str],
) -> RunError:
    """The error for restorations that are not finite, naming the step where x̂₀ first was.

    The step is found by sampling the batch again with its trajectory (the same seeds give the
    same steps), only once it has failed, so working runs pay nothing for it.
    """
    step: int | None = None
    params = s.sampler.params()
    timesteps = int(params.get("timesteps", s.sampler.nfe))
    per_image = 4 * int(np.prod(prior.shape))
    if timesteps * len(gens_seeds) * per_image <= TRAJECTORY_BUDGET_BYTES:
        try:
            gens = image_generators(s.options.seed, gens_seeds, STREAM_SAMPLER)
            rerun = s.sampler.sample(
                prior, operator, y, s.sigma_assumed, generator=gens, return_trajectory=True
            )
            step = faults.first_nonfinite_step(rerun.trajectory)
        except Exception:  # noqa: BLE001 - only a diagnosis: the error below stands without it
            step = None
    grad_scale = params.get("grad_scale")
    return faults.nonfinite_error(
        bad_names,
        step,
        timesteps,
        s.sampler.name,
        float(grad_scale) if grad_scale is not None else None,
        out_dir,
    )
