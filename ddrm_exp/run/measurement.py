"""How a run gets each batch's ``(operator, y)`` (report §5, Table 2, Figure 8).

Two things differ from an ordinary run, where one operator ``H`` serves the whole dataset and
the run measures ``y = H x + σ_y z`` (``HFunctions.measure``):

* **The measurement comes from the dataset.** ``dataset=bsd`` yields the camera's real blurry
  frame and ``dataset=bsd_synthetic`` the sharp frame blurred by a known kernel, each as
  ``item["measurement"]``. Then ``y = measurement + σ_y z``, with ``z`` drawn exactly as the
  runner draws it for ``y = H x + σ_y z`` (same per-image stream), so ``noise.sigma_y`` is the
  noise *added* on top of the frame and ``noise.assumed_sigma_y`` (default: the same) the level
  the sampler *assumes*. Real frames already carry their sensor noise; Figure 8 sweeps the
  assumed level with nothing added (``conf/experiment/figure8.yaml``).
* **The operator can depend on the image.** :class:`AssumedBlur` (``degradation=blur_given`` or
  ``blur_estimated``) blurs with the kernel named by ``assumed_kernel``: DDRM's fixed ``gauss``,
  ``uniform`` or ``aniso2d`` kernels (one operator for the run), the dataset's true kernel
  (``gt``) or a kernel estimated from each measurement (``estimated``, by the
  ``kernel_estimator`` group, reduced as in report §5.2). For the last two an operator is built
  per batch from ``(B, kh, kw)`` kernels (:meth:`AssumedBlur.with_kernels`); the sampler, the
  ``H⁺y`` baseline and the residual metrics all use that operator. It is built for the frames
  the sampler restores only (a border model's costs a dense SVD per frame, :mod:`valid_blur`).
* **Frames left unrestored.** With ``degradation.keep_sharp`` a frame whose kernel is a delta
  is returned as measured; the estimator config's ``no_harm`` rule
  (:class:`~ddrm_exp.kernel_estimation.reliability.NoHarmRule`) returns its fallback (the
  frame, or Wiener with a milder kernel) for frames whose estimate it does not trust. Both
  need only the kernel and ``y``, so they are decided before sampling and the sampler runs on
  the other frames alone (:attr:`BatchMeasurement.sampled`): a kept frame costs no NFE and no
  operator (no dense SVD), so its record has no ``H⁺y`` baseline (``baseline: {}``) and no
  residual (``restored.residual_rel/rms`` null); its ``restored`` PSNR/SSIM/LPIPS are those of
  what it returns, and ``kernel.operator`` names the run's border model (null for
  ``border: null``, where the operator's kind depends on the kernel). The records'
  ``kernel.kept`` / ``kernel.returned`` say which frames are kept and why.
* **Datasets without blurry frames** (``samples``, ``folder``, ...) under a blind degradation
  are blurred by its ``true_kernel`` (circularly, as ``bsd_synthetic`` does), which is then
  their true kernel, so blind deblurring runs on the bundled photos too.


:class:`MeasurementPlan` is the run's single entry point for these: built before the model
(every bad combination is a :class:`ConfigError` then), it turns a batch into
``(operator, y)`` and adds the per-image kernel and measurement-PSNR fields to the records.
"""

from __future__ import annotations

import logging
import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from ddrm_exp.config import instantiate_config
from ddrm_exp.degradations.assumed_blur import (
    AssumedBlur,
    PerImageOperators,
    is_delta,
    operator_name,
)
from ddrm_exp.degradations.base import HFunctions
from ddrm_exp.degradations.fft_blur import FFTBlur, blur_circular
from ddrm_exp.degradations.kernels2d import normalized_cross_correlation
from ddrm_exp.degradations.noise import add_measurement_noise
from ddrm_exp.degradations.valid_blur import TaperedFFTBlur
from ddrm_exp.errors import ConfigError
from ddrm_exp.kernel_estimation.reliability import (
    NoHarmRule,
    crop_agreement,
    fallback_kernel,
    noise_sigma,
)
from ddrm_exp.metrics.image import psnr, ssim
from ddrm_exp.restoration.classical import (
    classical_metrics,
    richardson_lucy_deconvolve,
    wiener_deconvolve,
)
from ddrm_exp.run.outputs import kernel_path, measurement_png_path, save_npy
from ddrm_exp.samplers.base import Sampler, SampleResult
from ddrm_exp.samplers.blind import InLoopKernelDDRM
from ddrm_exp.tracking.files import save_png

log = logging.getLogger(__name__)


def estimator_choice(node: Any, choice: str | None) -> str:
    """``none``, ``in_loop`` or the name of the estimator config (``classical``...)."""
    if node is None or len(node) == 0:
        return "none"
    if node.get("in_loop") is True:
        return "in_loop"
    target = node.get("_target_")
    if target is None:
        return "none"
    return choice or str(target).rsplit(".", 1)[-1]


@dataclass
class BatchMeasurement:
    """One batch's operator and measurement, and what the records say about them."""

    # The operator of the frames the sampler restores (:attr:`sampled`: rows ``y[sampled]``),
    # or the run's one operator for any batch; None when every frame is kept (none was built).
    operator: HFunctions | None
    y: Tensor
    # (B, kh, kw) float64 on the CPU: what the operator blurs each image with (None: not a blur
    # with a known kernel, e.g. dataset=bsd with degradation=deblur_gauss).
    kernels: Tensor | None
    estimates: Tensor | None  # reduced estimates, before the rank-1 step
    true_kernels: Tensor | None
    estimation_seconds: list[float] | None
    rank1_errors: list[float | None]
    measurement_metrics: list[dict[str, float | None]]
    # Wiener and Richardson-Lucy with each image's kernel (the classical baselines beside DDRM);
    # None where the kernel is not known before sampling (in-loop estimation) or not a blur.
    classical: list[dict[str, Any]] | None = None
    # Why each image is returned as it is instead of restored (None: restored): "delta_kernel"
    # (keep_sharp), "mild_blur" or "unreliable_kernel" (the no-harm rule).
    kept: list[str | None] | None = None
    agreement: list[float] | None = None  # the no-harm rule's crop agreement of each estimate
    # The no-harm rule's noise level of each frame: min(its own estimate, the assumed σ_y).
    noise: list[float] | None = None
    # Frames the rule sends to the sampler for their noise (NoHarmRule.sample_sigma); those
    # with a delta kernel are denoised only (records' kernel.returned "denoised").
    noise_sampled: list[bool] | None = None
    # The measurement as it came, where the operator changed y (edge tapering): kept frames
    # are returned as they came, not tapered.
    untapered: Tensor | None = None

    def noise_of(self, j: int) -> float | None:
        """Frame ``j``'s noise level for the no-harm rule (None: the rule reads none)."""
        return self.noise[j] if self.noise is not None else None

    @property
    def sampled(self) -> list[int]:
        """The frames the sampler restores: all but the kept ones (decided before sampling)."""
        kept = self.kept or [None] * self.y.shape[0]
        return [j for j, why in enumerate(kept) if why is None]


class MeasurementPlan:
    """How the run gets ``(operator, y)`` for a batch when the dataset or the degradation
    asks for it (see the module docstring); :meth:`build` returns None for ordinary runs."""

    classical_border = "reflect"  # how Wiener/RL extend the frame (set by build)

    def __init__(
        self,
        operator: HFunctions,
        *,
        from_dataset: bool,
        synthetic: bool = False,
        has_true_kernel: bool,
        estimator: Any,
        estimator_name: str,
        use_ssim: bool,
        in_loop: bool = False,
        no_harm: NoHarmRule | None = None,
        sigma_assumed: float = 0.0,
    ) -> None:
        self.operator = operator
        self.assumed = operator if isinstance(operator, AssumedBlur) else None
        self.from_dataset = from_dataset
        self.synthetic = synthetic
        self.has_true_kernel = has_true_kernel
        self.estimator = estimator
        self.estimator_name = estimator_name
        self.use_ssim = use_ssim
        # The sampler estimates the kernel while it samples (sampler=ddrm_blind).
        self.in_loop = in_loop
        # Which estimated frames are returned blurry rather than restored (kernel_estimator's
        # no_harm node; None: all are restored, but keep_sharp's delta kernels).
        self.no_harm = no_harm
        # The noise level the sampler assumes: the no-harm rule's bound on a frame's noise.
        self.sigma_assumed = float(sigma_assumed)

    @classmethod
    def build(
        cls,
        dataset: Any,
        operator: HFunctions,
        shape: tuple[int, int, int],
        sampler: Sampler,
        estimator_node: Any,
        *,
        estimator_name: str,
        data_name: str,
        use_ssim: bool,
        sigma_assumed: float = 0.0,
    ) -> MeasurementPlan | None:
        """Check the combination of dataset, degradation, sampler and kernel estimator; cheap
        (it reads the first item only and builds the estimator, not the model)."""
        first = dataset[0]
        from_dataset = "measurement" in first
        assumed = operator if isinstance(operator, AssumedBlur) else None
        wants_estimate = assumed is not None and assumed.assumed_kernel == "estimated"
        in_loop = isinstance(sampler, InLoopKernelDDRM)
        estimator_name = _estimator_for_sampler(sampler, estimator_name, in_loop, wants_estimate)
        if not from_dataset and assumed is None:
            return None
        # A blind degradation on a dataset without blurry frames blurs them itself.
        synthetic = not from_dataset and assumed is not None and assumed.true_kernel is not None
        has_true = "kernel" in first or synthetic
        if assumed is not None:
            assumed.resolve_border(_data_border(dataset, first, from_dataset, synthetic))
        if from_dataset:
            _check_dataset_measurement(first["measurement"], operator, shape, data_name)
        no_harm, estimator_node = _split_no_harm(estimator_node)
        if assumed is not None and assumed.per_image:
            _check_per_image(assumed, first, from_dataset, synthetic, has_true, data_name)
            _check_estimator(assumed, estimator_name if wants_estimate else "none", in_loop)
        estimates = wants_estimate and not in_loop
        plan = cls(
            operator,
            from_dataset=from_dataset,
            synthetic=synthetic,
            has_true_kernel=has_true,
            estimator=_build_estimator(estimator_node, shape) if estimates else None,
            estimator_name=estimator_name if wants_estimate else "none",
            use_ssim=use_ssim,
            in_loop=wants_estimate and in_loop,
            no_harm=no_harm if estimates else None,
            sigma_assumed=sigma_assumed,
        )
        # Wiener/RL see the borders the data has: circular where it was blurred circularly
        # (this plan's true_kernel, bsd_synthetic's default), else a symmetric extension.
        circular = synthetic or getattr(dataset, "blur_mode", None) == "circular"
        plan.classical_border = "circular" if circular else "reflect"
        return plan

    # ---- per batch ---------------------------------------------------------------------------
    def measure(
        self,
        batch: dict[str, Any],
        x: Tensor,
        sigma_y: float,
        generators: list[torch.Generator],
        init_kernels: Tensor | None = None,
    ) -> BatchMeasurement:
        """The batch's measurement and operator. ``init_kernels`` (B, kh, kw): where the kernel
        estimator starts (video: the previous frame's kernel); None: its own start."""
        b = x.shape[0]
        y, true = self._clean_measurement(batch, x)
        # The ordinary run's noise, drawn the same way, so y = Hx + σ_y z and y = frame + σ_y z
        # see identical z for an image.
        y = add_measurement_noise(y, sigma_y, generators)
        if self.from_dataset and self.has_true_kernel:
            true = batch["kernel"].to(torch.float64).cpu()
        bm = BatchMeasurement(
            operator=self.operator,
            y=y,
            kernels=None,
            estimates=None,
            true_kernels=true,
            estimation_seconds=None,
            rank1_errors=[None] * b,
            measurement_metrics=self._measurement_metrics(y, x),
        )
        assumed = self.assumed
        if assumed is not None and self.in_loop:
            # The in-loop sampler takes the shape, threshold, dtype and device from this
            # operator and starts from its own initial kernel (sampler.init).
            bm.operator = FFTBlur(
                assumed.shape,
                kernel=torch.ones(1, 1),
                zero_threshold=assumed.zero_threshold,
                device=assumed.device,
                dtype=assumed.dtype,
            )
        elif assumed is not None and assumed.per_image:
            self._per_image_operator(bm, x.shape, init_kernels)  # decides the kept frames too
        elif assumed is not None:
            assert assumed.fixed_kernel is not None
            bm.kernels = assumed.fixed_kernel.unsqueeze(0).expand(b, -1, -1)
        elif self.operator.kernel2d is not None:
            k = self.operator.kernel2d.to(torch.float64).cpu()
            bm.kernels = k if k.dim() == 3 else k.unsqueeze(0).expand(b, -1, -1)
        if bm.kernels is not None:
            # On the measurement itself (before any edge tapering), with the data's borders.
            bm.classical = classical_metrics(y, x, bm.kernels, self.classical_border, self.use_ssim)
        return bm

    def _per_image_operator(
        self, bm: BatchMeasurement, shape: torch.Size, init_kernels: Tensor | None
    ) -> None:
        """The batch's kernels (true or estimated, then prepared), which frames are kept, and
        the operator of the others; tapers their y where the operator works on a tapered
        measurement."""
        assert self.assumed is not None
        if self.assumed.assumed_kernel == "gt":
            assert bm.true_kernels is not None  # checked by build()
            raw = bm.true_kernels
        else:
            raw = self._estimate(bm, shape, init_kernels)
        bm.kernels, bm.rank1_errors = self.assumed.prepare_kernels(raw)
        self.keep_delta_frames(bm)
        # Kept frames get no operator: theirs would serve only their H⁺y baseline and
        # residuals, and a border model's costs a dense SVD per frame.
        sampled = bm.sampled
        if not sampled:
            bm.operator = None
            return
        whole = len(sampled) == len(bm.kernels)
        bm.operator = self.assumed.with_kernels(bm.kernels if whole else bm.kernels[sampled])
        # Edge tapering works on the measurement (its blurry-frame metrics are taken before);
        # kept frames are returned as they came, so theirs stays untapered.
        if isinstance(bm.operator, TaperedFFTBlur):
            bm.untapered = bm.y
            if whole:
                bm.y = bm.operator.prepare_measurement(bm.y)
            else:
                bm.y = bm.y.clone()
                bm.y[sampled] = bm.operator.prepare_measurement(bm.y[sampled])

    def _clean_measurement(self, batch: dict[str, Any], x: Tensor) -> tuple[Tensor, Tensor | None]:
        """The batch's y before noise, and the true kernels when this plan blurred it."""
        b = x.shape[0]
        if self.from_dataset:
            return batch["measurement"].to(device=x.device, dtype=x.dtype).reshape(b, -1), None
        if self.synthetic:
            assert self.assumed is not None and self.assumed.true_kernel is not None
            true = self.assumed.true_kernel.unsqueeze(0).expand(b, -1, -1)
            return blur_circular(x, true).to(x.dtype).reshape(b, -1), true
        return self.operator.H(x.reshape(b, -1)), None

    def _estimate(
        self, bm: BatchMeasurement, shape: torch.Size, init_kernels: Tensor | None
    ) -> Tensor:
        """The estimator's reduced kernels (B, kh, kw) float64 on the CPU, and its time."""
        assert self.assumed is not None
        b = shape[0]
        start = time.perf_counter()
        if init_kernels is None:
            estimate = self.estimator.estimate(bm.y.reshape(shape))
        else:
            estimate = self.estimator.estimate(bm.y.reshape(shape), init=init_kernels)
        elapsed = time.perf_counter() - start
        reduce = getattr(estimate, "reduce", None)
        raw = reduce(self.assumed.min_coverage) if callable(reduce) else estimate.kernels
        raw = raw.to(torch.float64).cpu().reshape(b, *raw.shape[-2:])
        got = getattr(estimate, "seconds", None)
        seconds = [float(s) for s in got] if got else [elapsed / b] * b
        bm.estimates = raw
        rule = self.no_harm
        if rule is not None:
            if rule.needs_agreement:
                start = time.perf_counter()
                bm.agreement = crop_agreement(
                    self.estimator, bm.y.reshape(shape), raw, rule.crop, self.assumed.min_coverage
                )
                # Four more estimates a frame: the blind plan's cost, so the records count it.
                extra = (time.perf_counter() - start) / b
                seconds = [s + extra for s in seconds]
            bm.kept = [
                rule.decide(raw[j], bm.agreement[j] if bm.agreement is not None else None)
                for j in range(b)
            ]
            if rule.needs_noise:
                bm.noise = [min(n, self.sigma_assumed) for n in noise_sigma(bm.y.reshape(shape))]
                raw = self._sample_noisy(bm, raw)
        bm.estimation_seconds = seconds
        return raw

    def _sample_noisy(self, bm: BatchMeasurement, raw: Tensor) -> Tensor:
        """The rule's noisy frames go to the sampler, kept or not; an unreliable estimate is
        replaced by a delta there (the sampler denoises only). Returns the kernels to use."""
        assert self.no_harm is not None and bm.noise is not None and bm.kept is not None
        bm.noise_sampled = [self.no_harm.samples(n) for n in bm.noise]
        used = raw
        for j, noisy in enumerate(bm.noise_sampled):
            if not noisy:
                continue
            if bm.kept[j] == "unreliable_kernel":
                if used is raw:
                    used = raw.clone()
                used[j] = fallback_kernel(raw[j], 1.0)  # the delta of the same size
            bm.kept[j] = None
        return used

    def _measurement_metrics(self, y: Tensor, x: Tensor) -> list[dict[str, float | None]]:
        """The trivial baseline: the measurement itself as the restoration (the blurry frame)."""
        as_image = y.reshape(x.shape)
        values: dict[str, list[float | None]] = {"psnr": list(psnr(as_image, x))}
        values["ssim"] = list(ssim(as_image, x)) if self.use_ssim else [None] * x.shape[0]
        return [{k: v[i] for k, v in values.items()} for i in range(x.shape[0])]

    def keep_delta_frames(self, bm: BatchMeasurement) -> None:
        """With ``keep_sharp``, mark the frames whose kernel is a delta as kept (before
        sampling: the kernel is known then): a delta kernel says the frame is not blurred, and
        restoring it anyway only adds the prior's own errors (about 30 dB PSNR, tiny prior)."""
        if self.assumed is None or not self.assumed.keep_sharp or bm.kernels is None:
            return
        kept = bm.kept or [None] * len(bm.kernels)
        # A frame sent to the sampler for its noise is denoised, delta kernel or not.
        noisy = bm.noise_sampled or [False] * len(bm.kernels)
        bm.kept = [
            "delta_kernel" if is_delta(k) and not n else why
            for k, why, n in zip(bm.kernels, kept, noisy, strict=True)
        ]

    def after_sampling(self, bm: BatchMeasurement, result: SampleResult) -> HFunctions | None:
        """The operator the sampled frames' baseline and residuals use: theirs, or, for a
        sampler that refines the kernel while it samples (``result.kernel``), that of its final
        kernels. Kept frames (``bm.kept``, which the sampler did not see) get what they return
        here."""
        kernel = result.kernel
        if bm.kept is not None:
            # The no-harm rule's frames too: an estimate that is not the frame's blur, or blur
            # too mild for the prior to gain, leaves the frame better as it is.
            y = bm.y if bm.untapered is None else bm.untapered
            for j, why in enumerate(bm.kept):
                if why is not None:
                    result.x0[j] = self._kept_frame(bm, y, j, why).reshape(result.x0[j].shape)
        if kernel is not None and self.assumed is not None:
            k = kernel.detach().to("cpu", torch.float64)
            bm.kernels = k.reshape(bm.y.shape[0], *k.shape[-2:])
            bm.operator = FFTBlur(
                self.assumed.shape,
                kernel=bm.kernels,
                zero_threshold=self.assumed.zero_threshold,
                device=self.assumed.device,
                dtype=self.assumed.dtype,
            )
        return bm.operator

    def _kept_frame(self, bm: BatchMeasurement, y: Tensor, j: int, why: str) -> Tensor:
        """What image ``j``, kept by ``why``, returns: the measurement, or the no-harm rule's
        Wiener / Richardson-Lucy fallback with the milder kernel (:meth:`NoHarmRule.returns`:
        only for mild blur, not for a delta or an unreliable kernel)."""
        shape = self.operator.shape
        rule = self.no_harm
        noise = bm.noise_of(j)
        method = "blurry" if rule is None else rule.returns(why, noise)
        if method == "blurry":
            return y[j].reshape(shape)
        assert rule is not None and bm.estimates is not None  # the rule judges estimates only
        k = rule.fallback_kernel(bm.estimates[j], noise)
        image = y[j].reshape(1, *shape)
        deconvolve = wiener_deconvolve if method == "wiener" else richardson_lucy_deconvolve
        return deconvolve(image, k, border=self.classical_border)[0].to(y)

    def record(
        self, bm: BatchMeasurement, j: int, out_dir: Path, index: int, name: str, save: bool
    ) -> dict[str, Any]:
        """The fields this plan adds to image ``j``'s record (and its kernel file)."""
        out: dict[str, Any] = {
            "measurement": bm.measurement_metrics[j],
            "measurement_source": (
                "dataset" if self.from_dataset else "true_kernel" if self.synthetic else "operator"
            ),
        }
        if save:
            save_png(
                bm.y[j].reshape(self.operator.shape), measurement_png_path(out_dir, index, name)
            )
        if bm.classical is not None:
            out.update(bm.classical[j])
        if bm.kernels is None:
            return out
        k = bm.kernels[j]
        true = bm.true_kernels[j] if bm.true_kernels is not None else None
        info: dict[str, Any] = {
            "assumed": self.assumed.assumed_kernel if self.assumed is not None else "operator",
            "estimator": self.estimator_name if self.estimator_name != "none" else None,
            "operator": self._operator_name(bm, j),
            "size": [int(k.shape[0]), int(k.shape[1])],
            "rank1_error": bm.rank1_errors[j],
            "ncc": normalized_cross_correlation(k, true) if true is not None else None,
            "ncc_estimate": None,
            "estimation_seconds": (
                bm.estimation_seconds[j] if bm.estimation_seconds is not None else None
            ),
            # Returned as it is, and why (see BatchMeasurement.kept); None: restored.
            "kept": bm.kept[j] if bm.kept is not None else None,
            "returned": self._returned(bm, j),
            "agreement": bm.agreement[j] if bm.agreement is not None else None,
            "noise_sigma": bm.noise_of(j),
            "file": None,
        }
        if bm.estimates is not None and true is not None and bm.rank1_errors[j] is not None:
            info["ncc_estimate"] = normalized_cross_correlation(bm.estimates[j], true)
        if save:
            path = kernel_path(out_dir, index, name)
            save_npy(k, path)
            info["file"] = str(path.relative_to(out_dir))
        out["kernel"] = info
        return out

    def _operator_name(self, bm: BatchMeasurement, j: int) -> str | None:
        """How image ``j``'s blur is modelled (:func:`operator_name`). A kept frame has no
        operator: the run's border model names it, and nothing does where ``method`` would
        have picked one for its kernel (``border`` null)."""
        if self.assumed is None:
            return None
        op = _operator_of(bm, j)
        return operator_name(op) if op is not None else self.assumed.border_model

    def _returned(self, bm: BatchMeasurement, j: int) -> str:
        """``restored``, ``blurry``, ``wiener`` or ``richardson_lucy``: what image ``j``'s
        restoration is."""
        why = bm.kept[j] if bm.kept is not None else None
        if why is None:
            noisy = bm.noise_sampled is not None and bm.noise_sampled[j]
            delta = bm.kernels is not None and is_delta(bm.kernels[j])
            return "denoised" if noisy and delta else "restored"
        if self.no_harm is None:
            return "blurry"
        return self.no_harm.returns(why, bm.noise_of(j))


def _operator_of(bm: BatchMeasurement, j: int) -> HFunctions | None:
    """Image ``j``'s own operator (None for a kept frame, which has none)."""
    sampled = bm.sampled
    if bm.operator is None or j not in sampled:
        return None
    if isinstance(bm.operator, PerImageOperators):
        return bm.operator.operators[sampled.index(j)]
    return bm.operator


def _estimator_for_sampler(
    sampler: Sampler, estimator_name: str, in_loop: bool, wants_estimate: bool
) -> str:
    """The estimator's name once the sampler is known (``in_loop`` for the in-loop sampler),
    after checking that sampler, estimator and degradation go together."""
    if estimator_name == "in_loop" and not in_loop:
        raise ConfigError(
            "kernel_estimator=in_loop estimates the kernel inside the in-loop DDRM sampler "
            f"(sampler=ddrm_blind); it cannot be combined with sampler={sampler.name}."
        )
    if in_loop:
        estimator_name = "in_loop"
    if in_loop and not wants_estimate:
        raise ConfigError(
            f"sampler={sampler.name} estimates the blur kernel while it samples; it needs "
            "degradation=blur_estimated (degradation.assumed_kernel=estimated)."
        )
    if estimator_name != "none" and not wants_estimate:
        log.info(
            "kernel_estimator=%s is not used: the degradation does not assume an estimated "
            "kernel (degradation.assumed_kernel=estimated does)",
            estimator_name,
        )
    return estimator_name


def _data_border(
    dataset: Any, first: dict[str, Any], from_dataset: bool, synthetic: bool
) -> str | None:
    """The data's own border model: a camera's blurry frame is a valid blur of a larger scene;
    bsd_synthetic says how it blurs; the plan blurs the others circularly (None: no blur)."""
    if from_dataset:
        return getattr(dataset, "blur_mode", None) if "kernel" in first else "valid"
    return "circular" if synthetic else None


def _split_no_harm(estimator_node: Any) -> tuple[NoHarmRule | None, Any]:
    """The estimator node's no-harm rule, and the node without it: a measurement policy kept
    with the estimator it was chosen for, not one of its parameters."""
    if estimator_node is None or "no_harm" not in estimator_node:
        return None, estimator_node
    rule = NoHarmRule.from_config(estimator_node.get("no_harm"))
    return rule, {k: v for k, v in estimator_node.items() if k != "no_harm"}


def _check_dataset_measurement(
    m: Tensor, operator: HFunctions, shape: tuple[int, int, int], data_name: str
) -> None:
    if tuple(m.shape) != tuple(shape) or operator.m != math.prod(shape):
        raise ConfigError(
            f"{data_name} provides its own measurement (an image of shape "
            f"{tuple(m.shape)}), but the degradation measures {operator.m} values of "
            f"a {tuple(shape)} image. Use a blur degradation whose measurement is the "
            "blurred image: blur_given, blur_estimated, blur2d or deblur_*."
        )


def _check_per_image(
    assumed: AssumedBlur,
    first: dict[str, Any],
    from_dataset: bool,
    synthetic: bool,
    has_true: bool,
    data_name: str,
) -> None:
    """A kernel from the data (gt, estimated) needs data that has it."""
    what = f"degradation.assumed_kernel={assumed.assumed_kernel}"
    if not from_dataset and not synthetic:
        raise ConfigError(
            f"{what} needs each image's blurry measurement (the kernel belongs to it), "
            f"but {data_name} has none; use dataset=bsd (real blur) or "
            "dataset=bsd_synthetic, or a fixed kernel (assumed_kernel=gauss, uniform or "
            "aniso2d)."
        )
    if assumed.assumed_kernel == "gt" and not has_true:
        raise ConfigError(
            f"{what} needs the true blur kernel of every image, which {data_name} does "
            "not have (real blur has no known kernel). Use dataset=bsd_synthetic, or "
            "assumed_kernel=estimated (with kernel_estimator=classical), gauss, uniform "
            "or aniso2d."
        )
    if assumed.assumed_kernel == "gt":
        # A true kernel the method cannot model (method=separable with a kernel that is
        # not rank 1) fails here, before the model is loaded.
        k = first["kernel"] if from_dataset else assumed.true_kernel
        assumed.with_kernels(k.unsqueeze(0))


def _check_estimator(assumed: AssumedBlur, estimator_name: str, in_loop: bool) -> None:
    what = f"degradation.assumed_kernel={assumed.assumed_kernel}"
    if assumed.assumed_kernel != "estimated":
        return
    if estimator_name == "none":
        raise ConfigError(
            f"{what} needs a kernel estimator, and kernel_estimator=none; add "
            "kernel_estimator=classical (or classical_local, in_loop, or learned with "
            "its path)."
        )
    if in_loop and assumed.method == "separable":
        raise ConfigError(
            "kernel_estimator=in_loop refines the kernel of a circular FFT blur while "
            "sampling; it cannot use degradation.method=separable (use auto or fft)."
        )
    if in_loop and assumed.rank1:
        log.info("kernel_estimator=in_loop: degradation.rank1 is not applied (FFT blur)")


def _build_estimator(node: Any, shape: tuple[int, int, int]) -> Any:
    estimator = instantiate_config("kernel estimator", node)
    if not callable(getattr(estimator, "estimate", None)):
        raise ConfigError(
            f"kernel_estimator builds a {type(estimator).__name__}, which has no "
            "estimate(blurry) method."
        )
    check_size = getattr(estimator, "check_size", None)
    if callable(check_size):
        check_size(shape[1], shape[2])
    return estimator
