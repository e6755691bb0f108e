"""Blind and real-blur deblurring in the runner (report §5, Table 2, Figure 8).

Two things differ from an ordinary run, where one operator ``H`` serves the whole dataset and
the runner measures ``y = H x + σ_y z`` itself:

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
  per batch from ``(B, kh, kw)`` kernels (:meth:`AssumedBlur.for_kernels`); the sampler, the
  ``H⁺y`` baseline and the residual metrics all use that operator.
* **Datasets without blurry frames** (``samples``, ``folder``, ...) under a blind degradation
  are blurred by its ``true_kernel`` (circularly, as ``bsd_synthetic`` does), which is then
  their true kernel, so blind deblurring runs on the bundled photos too.

:class:`MeasurementPlan` is the runner's single entry point: built before the model (every bad
combination is a :class:`ConfigError` then), it turns a batch into ``(operator, y)`` and adds
the per-image kernel and measurement-PSNR fields to the records.
"""

from __future__ import annotations

import importlib.util
import logging
import math
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from omegaconf import DictConfig, ListConfig, OmegaConf
from torch import Tensor

from ddrm_exp.config import instantiate_config
from ddrm_exp.degradations._checks import as_float, as_shape
from ddrm_exp.degradations.base import HFunctions
from ddrm_exp.degradations.blur2d import METHODS, operator_for_kernel
from ddrm_exp.degradations.fft_blur import ZERO_THRESHOLD, FFTBlur, blur_circular
from ddrm_exp.degradations.kernels2d import (
    ddrm_kernel2d,
    kernel2d_from_spec,
    normalized_cross_correlation,
    rank1_approximation,
)
from ddrm_exp.errors import ConfigError
from ddrm_exp.metrics.image import psnr, ssim
from ddrm_exp.samplers.ddrm import draw_noise
from ddrm_exp.tracking.files import atomic_write

__all__ = [
    "ASSUMED_KERNELS",
    "FIXED_KERNELS",
    "AssumedBlur",
    "BatchMeasurement",
    "MeasurementPlan",
    "PerImageOperators",
    "kernel_path",
    "summary_extras",
]

log = logging.getLogger(__name__)

# The report's "wrong" kernels are DDRM's own blurs (Table 2: "DDRM 2D deblurring", "DDRM 1D
# (Gaussian) deblurring"; Figure 8: Gaussian, uniform, 2D): deblur_gauss (5 taps, σ 10),
# deblur_uni (9x9 box), deblur_aniso (9 taps, σ 20 x σ 1).
FIXED_KERNELS: dict[str, str] = {
    "gauss": "deblur_gauss",
    "uniform": "deblur_uniform",
    "aniso2d": "deblur_aniso",
}
DATA_KERNELS: tuple[str, ...] = ("gt", "estimated")
ASSUMED_KERNELS: tuple[str, ...] = (*DATA_KERNELS, *FIXED_KERNELS)


# ---- operators -----------------------------------------------------------------------------------
class PerImageOperators(HFunctions):
    """One operator per image of a batch of exactly ``B``, seen as one operator.

    ``singulars()`` is ``(B, m)`` (each image its own spectrum), which DDRM and MCG broadcast
    over, as they do for :class:`FFTBlur` with per-image kernels. Used when the images of a
    batch need operators of different kinds (a separable one here, an FFT one there).
    """

    def __init__(self, operators: Sequence[HFunctions]) -> None:
        if not operators:
            raise ValueError("PerImageOperators needs at least one operator")
        shapes = {tuple(op.shape) for op in operators}
        sizes = {op.m for op in operators}
        if len(shapes) != 1 or len(sizes) != 1:
            raise ValueError(f"operators of different shapes {shapes} or sizes {sizes}")
        self.operators = list(operators)
        self.shape = operators[0].shape

    def _apply(self, name: str, vec: Tensor) -> Tensor:
        if vec.shape[0] != len(self.operators):
            raise ValueError(
                f"These per-image operators hold {len(self.operators)} images but were given "
                f"a batch of {vec.shape[0]}."
            )
        flat = vec.reshape(vec.shape[0], -1)
        parts = [getattr(op, name)(flat[i : i + 1]) for i, op in enumerate(self.operators)]
        return torch.cat(parts)

    def V(self, vec: Tensor) -> Tensor:
        return self._apply("V", vec)

    def Vt(self, vec: Tensor) -> Tensor:
        return self._apply("Vt", vec)

    def U(self, vec: Tensor) -> Tensor:
        return self._apply("U", vec)

    def Ut(self, vec: Tensor) -> Tensor:
        return self._apply("Ut", vec)

    def singulars(self) -> Tensor:
        return torch.stack([op.singulars().reshape(-1) for op in self.operators])

    # Each operator's own H/Ht/H_pinv (FFTBlur's work in the Fourier domain directly).
    def H(self, vec: Tensor) -> Tensor:
        return self._apply("H", vec)

    def Ht(self, vec: Tensor) -> Tensor:
        return self._apply("Ht", vec)

    def H_pinv(self, vec: Tensor) -> Tensor:
        return self._apply("H_pinv", vec)

    def to(self, device: torch.device | str) -> HFunctions:
        for op in self.operators:
            op.to(device)
        return self


def operator_name(op: HFunctions) -> str:
    """``fft`` / ``separable`` / ``mixed``: how a batch's blur was modelled, for the records."""
    if isinstance(op, PerImageOperators):
        names = {operator_name(o) for o in op.operators}
        return names.pop() if len(names) == 1 else "mixed"
    return "fft" if isinstance(op, FFTBlur) else "separable"


class AssumedBlur(HFunctions):
    """The ``_target_`` of ``conf/degradation/blur_{given,estimated}.yaml``.

    ``assumed_kernel``: ``gauss`` / ``uniform`` / ``aniso2d`` are DDRM's fixed blurs (see
    :data:`FIXED_KERNELS`); this object is then that operator for every image. ``gt`` (the
    true kernel: the dataset's, or ``true_kernel``) and ``estimated`` (the kernel estimator's)
    differ per image: the runner calls :meth:`for_kernels` on every batch. Until then such an
    operator acts as the identity (a 1x1 delta kernel), so it can be built and inspected
    without data; measuring with it directly would be meaningless, and the runner never does.

    ``method`` (``auto`` | ``fft`` | ``separable``) is :func:`operator_for_kernel`'s, decided
    per image: ``auto`` takes DDRM's zero-padded separable operator for a rank-1 kernel and the
    circular FFT operator otherwise. ``rank1=true`` replaces each *estimated* kernel by its best
    rank-1 approximation (report §5.3), so ``auto`` then runs DDRM's separable deblurring on it,
    as the report did; the true and the fixed kernels are used as they are (the fixed ones are
    separable already). ``min_coverage`` is the report's 2.5 % rule for local estimates.
    """

    def __init__(
        self,
        shape: tuple[int, int, int],
        *,
        assumed_kernel: str = "gt",
        method: str = "auto",
        rank1: bool = False,
        min_coverage: float = 0.025,
        zero_threshold: float = ZERO_THRESHOLD,
        true_kernel: Any = None,
        device: str | torch.device = "cpu",
        dtype: torch.dtype = torch.float32,
    ) -> None:
        if assumed_kernel not in ASSUMED_KERNELS:
            raise ConfigError(
                f"degradation.assumed_kernel={assumed_kernel!r} is not supported; use one of "
                f"{', '.join(ASSUMED_KERNELS)}."
            )
        if method not in METHODS:
            raise ConfigError(
                f"degradation.method={method!r} is not supported; use one of {', '.join(METHODS)}."
            )
        if not isinstance(rank1, bool):
            raise ConfigError(f"degradation.rank1 must be true or false, got {rank1!r}.")
        self.assumed_kernel = str(assumed_kernel)
        self.method = str(method)
        self.rank1 = rank1
        self.min_coverage = as_float(
            min_coverage, "degradation.min_coverage", low=0.0, high=1.0, high_open=True
        )
        self.zero_threshold = as_float(zero_threshold, "degradation.zero_threshold", low=0.0)
        self.device = torch.device(device)
        self.dtype = dtype
        self.shape = as_shape(shape)
        name = FIXED_KERNELS.get(self.assumed_kernel)
        self.fixed_kernel: Tensor | None = None if name is None else ddrm_kernel2d(name)
        placeholder = self.fixed_kernel if self.fixed_kernel is not None else torch.ones(1, 1)
        self.default = self._single(placeholder)
        # The blur of datasets that have no blurry measurement of their own (samples, folder,
        # ...): the runner blurs them with it (circularly, as bsd_synthetic does), and it is
        # their true kernel. None: such datasets are measured with the assumed kernel itself.
        self.true_kernel: Tensor | None = None
        if true_kernel is not None:
            if isinstance(true_kernel, DictConfig | ListConfig):
                true_kernel = OmegaConf.to_container(true_kernel, resolve=True)
            self.true_kernel = kernel2d_from_spec(true_kernel, what="degradation.true_kernel")
            if (
                self.true_kernel.shape[0] > self.shape[1]
                or self.true_kernel.shape[1] > self.shape[2]
            ):
                raise ConfigError(
                    f"degradation.true_kernel is {tuple(self.true_kernel.shape)}, larger than the "
                    f"{self.shape[1]}x{self.shape[2]} image; use a smaller size."
                )

    @property
    def per_image(self) -> bool:
        """Whether the kernel comes from the data (gt, estimated), i.e. per batch."""
        return self.fixed_kernel is None

    def _single(self, kernel: Tensor) -> HFunctions:
        return operator_for_kernel(
            kernel,
            self.shape,
            device=self.device,
            method=self.method,
            zero_threshold=self.zero_threshold,
            dtype=self.dtype,
        )

    def for_kernels(self, kernels: Tensor) -> HFunctions:
        """The operator of a batch whose image ``i`` is blurred by ``kernels[i]`` (kh, kw).

        Each image gets what ``method`` picks for its own kernel, so an image's result does not
        depend on the batch it is in. A batch of FFT choices becomes one batched
        :class:`FFTBlur`; a batch needing different kinds, :class:`PerImageOperators`.
        """
        if kernels.dim() != 3:
            raise ValueError(f"kernels must be (B, kh, kw), got {tuple(kernels.shape)}")
        ops = [self._single(k) for k in kernels]
        if len(ops) == 1:
            return ops[0]
        if all(isinstance(op, FFTBlur) for op in ops):
            batched = FFTBlur(
                self.shape,
                kernel=kernels,
                zero_threshold=self.zero_threshold,
                device=self.device,
                dtype=self.dtype,
            )
            setattr(batched, "kernel2d", kernels.to(device=self.device, dtype=self.dtype))  # noqa: B010
            return batched
        return PerImageOperators(ops)

    def prepare_kernels(self, kernels: Tensor) -> tuple[Tensor, list[float | None]]:
        """The kernels the operator will use, and each one's rank-1 error (None: unchanged)."""
        if not (self.rank1 and self.assumed_kernel == "estimated"):
            return kernels, [None] * len(kernels)
        out, errors = [], []
        for k in kernels:
            k_rows, k_cols, err = rank1_approximation(k)
            out.append(torch.outer(k_rows, k_cols))
            errors.append(err)
        return torch.stack(out), errors

    # The protocol: the fixed operator, or the identity placeholder (see the class docstring).
    def V(self, vec: Tensor) -> Tensor:
        return self.default.V(vec)

    def Vt(self, vec: Tensor) -> Tensor:
        return self.default.Vt(vec)

    def U(self, vec: Tensor) -> Tensor:
        return self.default.U(vec)

    def Ut(self, vec: Tensor) -> Tensor:
        return self.default.Ut(vec)

    def singulars(self) -> Tensor:
        return self.default.singulars()

    def add_zeros(self, vec: Tensor) -> Tensor:
        return self.default.add_zeros(vec)

    def H(self, vec: Tensor) -> Tensor:
        return self.default.H(vec)

    def Ht(self, vec: Tensor) -> Tensor:
        return self.default.Ht(vec)

    def H_pinv(self, vec: Tensor) -> Tensor:
        return self.default.H_pinv(vec)

    def to(self, device: torch.device | str) -> HFunctions:
        self.device = torch.device(device)
        self.default.to(device)
        return self


# ---- the runner's side ---------------------------------------------------------------------------
def kernel_path(out_dir: Path, index: int, name: str) -> Path:
    """Where an image's kernel goes, beside its PNGs: ``images/<index>_<name>_kernel.npy``."""
    return out_dir / "images" / f"{index:05d}_{name}_kernel.npy"


def measurement_png_path(out_dir: Path, index: int, name: str) -> Path:
    return out_dir / "images" / f"{index:05d}_{name}_measurement.png"


def _save_npy(array: Tensor, path: Path) -> None:
    with atomic_write(path, "wb", fsync=False) as f:
        np.save(f, array.detach().cpu().to(torch.float64).numpy())


IN_LOOP_MODULE = "ddrm_exp.samplers.blind"
IN_LOOP_CLASS = "InLoopKernelDDRM"


def _estimator_choice(node: Any, choice: str | None) -> str:
    """``none``, ``in_loop`` or the name of the estimator config (``classical``...)."""
    if node is None or (isinstance(node, DictConfig) and len(node) == 0):
        return "none"
    target = node.get("_target_")
    if target is None:
        return "none"
    if str(target).endswith(IN_LOOP_CLASS):
        return "in_loop"
    return choice or str(target).rsplit(".", 1)[-1]


@dataclass
class BatchMeasurement:
    """One batch's operator and measurement, and what the records say about them."""

    operator: HFunctions
    y: Tensor
    # (B, kh, kw) float64 on the CPU: what the operator blurs each image with (None: not a blur
    # with a known kernel, e.g. dataset=bsd with degradation=deblur_gauss).
    kernels: Tensor | None
    estimates: Tensor | None  # reduced estimates, before the rank-1 step
    true_kernels: Tensor | None
    estimation_seconds: list[float] | None
    rank1_errors: list[float | None]
    measurement_metrics: list[dict[str, float | None]]


class MeasurementPlan:
    """How the runner gets ``(operator, y)`` for a batch when the dataset or the degradation
    asks for it (see the module docstring); :meth:`build` returns None for ordinary runs."""

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
    ) -> None:
        self.operator = operator
        self.assumed = operator if isinstance(operator, AssumedBlur) else None
        self.from_dataset = from_dataset
        self.synthetic = synthetic
        self.has_true_kernel = has_true_kernel
        self.estimator = estimator
        self.estimator_name = estimator_name
        self.use_ssim = use_ssim
        # kernel_estimator=in_loop: the sampler estimates the kernel (set by build()).
        self.in_loop = False

    @classmethod
    def build(
        cls,
        cfg: DictConfig,
        dataset: Any,
        operator: HFunctions,
        shape: tuple[int, int, int],
        choices: dict[str, str] | None = None,
    ) -> MeasurementPlan | None:
        """Check the combination of dataset, degradation and kernel estimator; cheap (it reads
        the first item only and builds the estimator, not the model)."""
        choices = choices or {}
        data_name = f"dataset={choices['dataset']}" if "dataset" in choices else "this dataset"
        est_name = _estimator_choice(cfg.get("kernel_estimator"), choices.get("kernel_estimator"))
        if est_name == "in_loop" and importlib.util.find_spec(IN_LOOP_MODULE) is None:
            raise ConfigError(
                "kernel_estimator=in_loop is not available yet (it needs the in-loop kernel "
                f"sampler {IN_LOOP_MODULE}.{IN_LOOP_CLASS}). Use kernel_estimator=classical, "
                "classical_local or learned with degradation=blur_estimated."
            )
        first = dataset[0]
        from_dataset = "measurement" in first
        has_true = "kernel" in first
        assumed = operator if isinstance(operator, AssumedBlur) else None
        wants_estimate = assumed is not None and assumed.assumed_kernel == "estimated"
        if est_name != "none" and not wants_estimate:
            log.info(
                "kernel_estimator=%s is not used: the degradation does not assume an estimated "
                "kernel (degradation.assumed_kernel=estimated does)",
                est_name,
            )
        if not from_dataset and assumed is None:
            return None
        # A blind degradation on a dataset without blurry frames blurs them itself.
        synthetic = not from_dataset and assumed is not None and assumed.true_kernel is not None
        has_true = has_true or synthetic

        if from_dataset:
            m = first["measurement"]
            if tuple(m.shape) != tuple(shape) or operator.m != math.prod(shape):
                raise ConfigError(
                    f"{data_name} provides its own measurement (an image of shape "
                    f"{tuple(m.shape)}), but the degradation measures {operator.m} values of "
                    f"a {tuple(shape)} image. Use a blur degradation whose measurement is the "
                    "blurred image: blur_given, blur_estimated, blur2d or deblur_*."
                )
        if assumed is not None and assumed.per_image:
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
                assumed.for_kernels(k.unsqueeze(0))
            if wants_estimate and est_name == "none":
                raise ConfigError(
                    f"{what} needs a kernel estimator, and kernel_estimator=none; add "
                    "kernel_estimator=classical (or classical_local, in_loop, or learned with "
                    "its path)."
                )
            if wants_estimate and est_name == "in_loop" and assumed.method == "separable":
                raise ConfigError(
                    "kernel_estimator=in_loop refines the kernel of a circular FFT blur while "
                    "sampling; it cannot use degradation.method=separable (use auto or fft)."
                )
            if wants_estimate and est_name == "in_loop" and assumed.rank1:
                log.info("kernel_estimator=in_loop: degradation.rank1 is not applied (FFT blur)")
        estimator = None
        if wants_estimate and est_name != "in_loop":
            estimator = instantiate_config("kernel estimator", cfg.kernel_estimator)
            if not callable(getattr(estimator, "estimate", None)):
                raise ConfigError(
                    f"kernel_estimator builds a {type(estimator).__name__}, which has no "
                    "estimate(blurry) method."
                )
            check_size = getattr(estimator, "check_size", None)
            if callable(check_size):
                check_size(shape[1], shape[2])
        metrics_cfg = cfg.get("metrics") or {}
        plan = cls(
            operator,
            from_dataset=from_dataset,
            synthetic=synthetic,
            has_true_kernel=has_true,
            estimator=estimator,
            estimator_name=est_name if wants_estimate else "none",
            use_ssim=bool(metrics_cfg.get("ssim", True)),
        )
        plan.in_loop = wants_estimate and est_name == "in_loop"
        return plan

    def sampler_for(self, cfg: DictConfig, sampler: Any) -> Any:
        """The sampler to run: ``sampler`` itself, or, for ``kernel_estimator=in_loop``, the
        in-loop kernel sampler with the configured sampler's steps and η's."""
        if not self.in_loop:
            return sampler
        if getattr(sampler, "name", None) != "ddrm":
            raise ConfigError(
                f"kernel_estimator=in_loop runs its own DDRM loop; it cannot be combined with "
                f"sampler={getattr(sampler, 'name', type(sampler).__name__)} (use sampler=ddrm)."
            )
        shared = {
            k: cfg.sampler[k] for k in ("timesteps", "eta", "eta_b", "clip_x0") if k in cfg.sampler
        }
        return instantiate_config("kernel estimator (in_loop)", cfg.kernel_estimator, **shared)

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
        true: Tensor | None = None
        if self.from_dataset:
            y = batch["measurement"].to(device=x.device, dtype=x.dtype).reshape(b, -1)
        elif self.synthetic:
            assert self.assumed is not None and self.assumed.true_kernel is not None
            true = self.assumed.true_kernel.unsqueeze(0).expand(b, -1, -1)
            y = blur_circular(x, true).to(x.dtype).reshape(b, -1)
        else:
            y = self.operator.H(x.reshape(b, -1))
        if sigma_y > 0:
            # The runner's noise, drawn the same way, so y = Hx + σ_y z and y = frame + σ_y z
            # see identical z for an image.
            y = y + 2.0 * sigma_y * draw_noise(tuple(y.shape), generators, y.device, y.dtype)

        if self.from_dataset and self.has_true_kernel:
            true = batch["kernel"].to(torch.float64).cpu()
        operator, kernels, estimates = self.operator, None, None
        seconds: list[float] | None = None
        errors: list[float | None] = [None] * b
        assumed = self.assumed
        if assumed is not None and self.in_loop:
            # The in-loop sampler takes the shape, threshold, dtype and device from this
            # operator and starts from its own initial kernel (kernel_estimator.init).
            operator = FFTBlur(
                assumed.shape,
                kernel=torch.ones(1, 1),
                zero_threshold=assumed.zero_threshold,
                device=assumed.device,
                dtype=assumed.dtype,
            )
        elif assumed is not None and assumed.per_image:
            if assumed.assumed_kernel == "gt":
                assert true is not None  # checked by build()
                raw = true
            else:
                start = time.perf_counter()
                if init_kernels is None:
                    estimate = self.estimator.estimate(y.reshape(x.shape))
                else:
                    estimate = self.estimator.estimate(y.reshape(x.shape), init=init_kernels)
                elapsed = time.perf_counter() - start
                reduce = getattr(estimate, "reduce", None)
                raw = reduce(assumed.min_coverage) if callable(reduce) else estimate.kernels
                raw = raw.to(torch.float64).cpu().reshape(b, *raw.shape[-2:])
                got = getattr(estimate, "seconds", None)
                seconds = [float(s) for s in got] if got else [elapsed / b] * b
                estimates = raw
            kernels, errors = assumed.prepare_kernels(raw)
            operator = assumed.for_kernels(kernels)
        elif assumed is not None:
            assert assumed.fixed_kernel is not None
            kernels = assumed.fixed_kernel.unsqueeze(0).expand(b, -1, -1)
        elif isinstance(kernel2d := getattr(self.operator, "kernel2d", None), Tensor):
            k = kernel2d.to(torch.float64).cpu()
            kernels = k if k.dim() == 3 else k.unsqueeze(0).expand(b, -1, -1)

        # The trivial baseline: the measurement itself as the restoration (the blurry frame).
        as_image = y.reshape(x.shape)
        values: dict[str, list[float | None]] = {"psnr": list(psnr(as_image, x))}
        values["ssim"] = list(ssim(as_image, x)) if self.use_ssim else [None] * b
        metrics = [{k: v[i] for k, v in values.items()} for i in range(b)]
        return BatchMeasurement(
            operator=operator,
            y=y,
            kernels=kernels,
            estimates=estimates,
            true_kernels=true,
            estimation_seconds=seconds,
            rank1_errors=errors,
            measurement_metrics=metrics,
        )

    def after_sampling(self, bm: BatchMeasurement, result: Any) -> HFunctions:
        """The operator the baseline and the residuals use: the batch's, or, for a sampler that
        refines the kernel while it samples (``result.kernel``), that of its final kernels."""
        kernel = getattr(result, "kernel", None)
        if isinstance(kernel, Tensor) and self.assumed is not None:
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
            from ddrm_exp.tracking.files import save_png

            save_png(
                bm.y[j].reshape(self.operator.shape), measurement_png_path(out_dir, index, name)
            )
        if bm.kernels is None:
            return out
        k = bm.kernels[j]
        true = bm.true_kernels[j] if bm.true_kernels is not None else None
        op = bm.operator
        if isinstance(op, PerImageOperators):
            op = op.operators[j]
        info: dict[str, Any] = {
            "assumed": self.assumed.assumed_kernel if self.assumed is not None else "operator",
            "estimator": self.estimator_name if self.estimator_name != "none" else None,
            "operator": operator_name(op) if self.assumed is not None else None,
            "size": [int(k.shape[0]), int(k.shape[1])],
            "rank1_error": bm.rank1_errors[j],
            "ncc": normalized_cross_correlation(k, true) if true is not None else None,
            "ncc_estimate": None,
            "estimation_seconds": (
                bm.estimation_seconds[j] if bm.estimation_seconds is not None else None
            ),
            "file": None,
        }
        if bm.estimates is not None and true is not None and bm.rank1_errors[j] is not None:
            info["ncc_estimate"] = normalized_cross_correlation(bm.estimates[j], true)
        if save:
            path = kernel_path(out_dir, index, name)
            _save_npy(k, path)
            info["file"] = str(path.relative_to(out_dir))
        out["kernel"] = info
        return out


def summary_extras(records: list[dict[str, Any]]) -> dict[str, Any]:
    """Summary fields of a blind or real-blur run: the measurement's own metrics, and the
    kernels' NCC and estimation time (empty for an ordinary run)."""
    from ddrm_exp.metrics.summary import mean_ci

    out: dict[str, Any] = {}
    with_m = [r["measurement"] for r in records if isinstance(r.get("measurement"), dict)]
    if with_m:
        keys = sorted({k for m in with_m for k in m})
        out["measurement"] = {k: mean_ci(m.get(k) for m in with_m) for k in keys}
    kernels = [r["kernel"] for r in records if isinstance(r.get("kernel"), dict)]
    if kernels:
        out["kernel"] = {
            "assumed": kernels[0].get("assumed"),
            "estimator": kernels[0].get("estimator"),
            "ncc": mean_ci(k.get("ncc") for k in kernels),
            "estimation_seconds": mean_ci(k.get("estimation_seconds") for k in kernels),
        }
    return out
