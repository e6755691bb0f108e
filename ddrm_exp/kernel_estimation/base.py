"""What every blur-kernel estimator returns, and the report's reduction to one uniform kernel.

A blind-deblurring run estimates the blur of each measurement before DDRM builds its operator.
Estimators may be *global* (one kernel for the whole image) or *local* (several kernels, each
with a mask saying where in the image it applies, as in the non-uniform estimator of Carbajal
et al. that the report uses). Both are returned as a :class:`KernelEstimate`, and
:func:`reduce_kernels` turns either into the single kernel the report feeds DDRM (§5.2), which
:func:`ddrm_exp.degradations.kernels2d.rank1_approximation` then makes separable (§5.3).

:class:`LearnedEstimator` wraps a user's trained network (TorchScript, or a factory plus a
weights file) behind the same interface, so a learned estimator needs no code elsewhere.
"""

from __future__ import annotations

import abc
import importlib
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

from ddrm_exp.degradations._checks import as_float
from ddrm_exp.errors import ConfigError

__all__ = [
    "KernelEstimate",
    "KernelEstimator",
    "LearnedEstimator",
    "as_image_batch",
    "as_init_kernels",
    "luminance",
    "reduce_kernels",
]

# ITU-R BT.601 luma weights: the blur is the same in every channel, and luma keeps the most
# edge contrast of any fixed channel mix for ordinary photos.
LUMA_WEIGHTS = (0.299, 0.587, 0.114)


@dataclass
class KernelEstimate:
    """Blur kernels estimated for a batch of images, with where each one applies.

    Attributes:
        kernels: ``(B, K, kh, kw)`` float64; ``K = 1`` for a global estimator. Kernel ``k`` of
            image ``b`` blurs the pixels where ``masks[b, k]`` is non-zero. The centre tap is
            at ``(kh // 2, kw // 2)``.
        masks: ``(B, K, H, W)`` float32 weights in ``[0, 1]``. For every pixel they sum to 1
            over ``K`` (hard 0/1 masks are the special case of one kernel per pixel), so the
            blur at a pixel is ``sum_k masks[b, k, i, j] * kernels[b, k]``.
        seconds: wall-clock estimation time of each image (a batched call is split evenly).
        method: short name of the estimator (``"classical"``, ``"local(classical)"``...).
        info: free-form details (parameters, per-image diagnostics) for logs.
    """

    kernels: Tensor
    masks: Tensor
    seconds: tuple[float, ...]
    method: str
    info: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.kernels.dim() != 4:
            raise ConfigError(
                f"KernelEstimate.kernels must be (B, K, kh, kw), got shape "
                f"{tuple(self.kernels.shape)}."
            )
        if self.masks.dim() != 4 or self.masks.shape[:2] != self.kernels.shape[:2]:
            raise ConfigError(
                f"KernelEstimate.masks must be (B, K, H, W) with the same B and K as the kernels "
                f"{tuple(self.kernels.shape[:2])}, got shape {tuple(self.masks.shape)}."
            )
        if len(self.seconds) != self.kernels.shape[0]:
            raise ConfigError(
                f"KernelEstimate.seconds needs one time per image ({self.kernels.shape[0]}), "
                f"got {len(self.seconds)}."
            )
        self.kernels = self.kernels.to(torch.float64)
        self.masks = self.masks.to(torch.float32)
        self.seconds = tuple(float(s) for s in self.seconds)

    @property
    def batch_size(self) -> int:
        return int(self.kernels.shape[0])

    @property
    def num_kernels(self) -> int:
        return int(self.kernels.shape[1])

    @property
    def kernel_size(self) -> tuple[int, int]:
        return int(self.kernels.shape[2]), int(self.kernels.shape[3])

    @property
    def image_size(self) -> tuple[int, int]:
        return int(self.masks.shape[2]), int(self.masks.shape[3])

    def coverage(self) -> Tensor:
        """``(B, K)`` float64: the fraction of each image that each kernel covers.

        This is the report's ``sum(alpha_l) / (H * W)``; with soft masks a pixel counts for the
        weight it gives the kernel.
        """
        return self.masks.to(torch.float64).mean(dim=(-2, -1))

    def reduce(self, min_coverage: float = 0.025, weighted: bool = False) -> Tensor:
        """:func:`reduce_kernels` of this estimate."""
        return reduce_kernels(self, min_coverage=min_coverage, weighted=weighted)


def reduce_kernels(
    estimate: KernelEstimate, min_coverage: float = 0.025, weighted: bool = False
) -> Tensor:
    """One uniform kernel per image, ``(B, kh, kw)`` float64 summing to 1 (report §5.2).

    The report keeps every kernel whose masks cover *more than* ``min_coverage`` of the image
    (2.5 %, the value it found best), adds them **unweighted** -- its formula is
    ``k = sum_l 1(coverage_l > 2.5 %) k_l``; weighting is named there as future work -- and the
    sum is normalised to 1. ``weighted=True`` weights each kept kernel by its coverage instead
    (the average blur over the kept area), for those who want to try that variant.

    Negative taps are clipped to 0 before summing (a physical blur is non-negative; learned
    estimators may leave small negative ringing). If no kernel passes the threshold, the one
    with the largest coverage is used alone, so every image gets a kernel.
    """
    min_coverage = as_float(min_coverage, "Kernel reduction min_coverage", low=0.0, high=1.0)
    kernels = estimate.kernels.clamp(min=0)
    coverage = estimate.coverage().to(kernels.device)
    keep = coverage > min_coverage
    fallback = F.one_hot(coverage.argmax(dim=1), coverage.shape[1]).bool()
    keep = torch.where(keep.any(dim=1, keepdim=True), keep, fallback)
    weights = keep.to(torch.float64) * (coverage if weighted else 1.0)
    summed = torch.einsum("bk,bkij->bij", weights, kernels)
    total = summed.sum(dim=(-2, -1), keepdim=True)
    if bool((total <= 0).any()):
        bad = [int(b) for b in torch.nonzero(total.flatten() <= 0).flatten()]
        raise ConfigError(
            f"The kept kernels of image(s) {bad} sum to zero after clipping negative taps, so no "
            "blur kernel can be made from them; check the estimator's output (its kernels "
            "should be non-negative and sum to 1)."
        )
    return summed / total


def as_image_batch(blurry: Tensor, what: str = "The blurry image") -> Tensor:
    """``blurry`` as a ``(B, C, H, W)`` floating tensor with C in {1, 3}, or a ConfigError."""
    if not isinstance(blurry, Tensor):
        raise ConfigError(f"{what} must be a torch tensor, got {type(blurry).__name__}.")
    x = blurry.unsqueeze(0) if blurry.dim() == 3 else blurry
    if x.dim() != 4 or x.shape[1] not in (1, 3) or x.shape[0] == 0:
        raise ConfigError(
            f"{what} must be (B, 3, H, W) or (3, H, W) (one channel also accepted), got shape "
            f"{tuple(blurry.shape)}."
        )
    if not x.is_floating_point():
        raise ConfigError(
            f"{what} must be a floating tensor in [-1, 1], got dtype {x.dtype}; convert uint8 "
            "images with x.float() / 127.5 - 1."
        )
    if not bool(torch.isfinite(x).all()):
        raise ConfigError(f"{what} contains NaN or infinite values.")
    return x


def as_init_kernels(
    init: Any,
    batch: int,
    kernel_size: int | None = None,
    what: str = "The initial kernel (init)",
) -> Tensor | None:
    """``init`` checked and made ``(B, kh, kw)`` float64 on the CPU, each kernel summing to 1.

    ``init`` is ``None`` (returned as is), a ``(B, kh, kw)`` tensor (one kernel per image) or a
    ``(kh, kw)`` one (the same kernel for every image). Its taps must be finite and
    non-negative, with a positive sum per kernel; any sum is accepted and normalised to 1.

    With ``kernel_size`` given, a kernel of another size is brought to ``kernel_size x
    kernel_size`` **without rescaling** -- a blur is a size in pixels -- by zero-padding or
    cropping it symmetrically about its centre tap, so its sides must be odd. Mass cropped away
    is dropped (the rest renormalised); a kernel with nothing left inside the window is refused.
    Every problem is a :class:`~ddrm_exp.errors.ConfigError` saying what was wrong.
    """
    if init is None:
        return None
    if not isinstance(init, Tensor):
        raise ConfigError(
            f"{what} must be a torch tensor (B, kh, kw) or None, got {type(init).__name__}."
        )
    k = init.unsqueeze(0).expand(batch, -1, -1) if init.dim() == 2 else init
    if k.dim() != 3 or k.shape[0] != batch or k.shape[-1] == 0 or k.shape[-2] == 0:
        raise ConfigError(
            f"{what} must be one kernel per image, ({batch}, kh, kw) for this batch of {batch}, "
            f"or a single (kh, kw) kernel; got shape {tuple(init.shape)}."
        )
    if k.is_complex() or k.dtype == torch.bool:
        raise ConfigError(f"{what} must be a real tensor, got dtype {k.dtype}.")
    k = k.detach().to("cpu", torch.float64)
    if not bool(torch.isfinite(k).all()):
        raise ConfigError(f"{what} contains NaN or infinite taps.")
    if bool((k < 0).any()):
        raise ConfigError(
            f"{what} has negative taps (min {float(k.min()):.3g}); a blur kernel is "
            "non-negative: clip it (k.clamp(min=0)) before passing it."
        )
    if bool((k.sum(dim=(-2, -1)) <= 0).any()):
        bad = [int(i) for i in torch.nonzero(k.sum(dim=(-2, -1)) <= 0).flatten()]
        raise ConfigError(f"{what} of image(s) {bad} is all zero; it cannot start an estimate.")
    if kernel_size is not None:
        kh, kw = k.shape[-2:]
        if kh % 2 == 0 or kw % 2 == 0:
            raise ConfigError(
                f"{what} is {kh}x{kw}, not {kernel_size}x{kernel_size} like the estimator's "
                "kernel; a kernel of another size is padded or cropped about its centre tap, "
                "so its sides must be odd."
            )
        k = _centre_to(k, kernel_size)
        if bool((k.sum(dim=(-2, -1)) <= 0).any()):
            raise ConfigError(
                f"{what} ({kh}x{kw}) has no mass in the central {kernel_size}x{kernel_size} "
                "window it is cropped to; use a larger kernel_size."
            )
    return k / k.sum(dim=(-2, -1), keepdim=True)


def _centre_to(k: Tensor, size: int) -> Tensor:
    """``(B, kh, kw)`` odd-sided kernels zero-padded or cropped about the centre to ``size``."""
    for dim in (-2, -1):
        n = k.shape[dim]
        if n < size:
            pad = [0, 0, 0, 0]
            pad[0 if dim == -1 else 2] = pad[1 if dim == -1 else 3] = (size - n) // 2
            k = F.pad(k, pad)
        elif n > size:
            k = k.narrow(dim, (n - size) // 2, size)
    return k.contiguous()


def as_device(device: Any, what: str = "kernel_estimator.device") -> str | None:
    """``device`` checked to name a torch device (``None``: follow the images)."""
    if device is None:
        return None
    try:
        torch.device(str(device))
    except (RuntimeError, ValueError):
        raise ConfigError(
            f"{what} must be null (the device of the images), 'cpu', 'cuda' or 'cuda:N', got "
            f"{device!r}."
        ) from None
    return str(device)


def luminance(batch: Tensor) -> Tensor:
    """``(B, H, W)`` luma in ``[0, 1]`` of a ``(B, C, H, W)`` batch in ``[-1, 1]``."""
    x = (batch.clamp(-1, 1) + 1) / 2
    if x.shape[1] == 1:
        return x[:, 0]
    # Elementwise, not a matmul: the result for an image must not depend on its batch.
    r, g, b = LUMA_WEIGHTS
    return r * x[:, 0] + g * x[:, 1] + b * x[:, 2]


class KernelEstimator(abc.ABC):
    """Estimates blur kernels from blurry images alone.

    ``estimate(blurry, init=None)`` takes ``(B, 3, H, W)`` (or ``(3, H, W)``, treated as
    ``B = 1``) images in ``[-1, 1]`` on any device and returns a :class:`KernelEstimate`
    (kernels on the CPU). ``init``, optional, is a ``(B, kh, kw)`` non-negative kernel per image
    to start from -- e.g. the kernel found for the previous frame of a video -- checked with
    :func:`as_init_kernels`; what an estimator does with it is its own (a warm start for
    :class:`~ddrm_exp.kernel_estimation.ClassicalEstimator`, nothing for
    :class:`LearnedEstimator`). ``init=None`` is the estimate from the image alone.
    """

    method: str = "estimator"

    @abc.abstractmethod
    def estimate(self, blurry: Tensor, init: Tensor | None = None) -> KernelEstimate: ...

    def __call__(self, blurry: Tensor, init: Tensor | None = None) -> KernelEstimate:
        return self.estimate(blurry) if init is None else self.estimate(blurry, init=init)


def _import_factory(spec: str) -> Callable[..., Any]:
    module_name, sep, attr = spec.partition(":")
    if not sep or not module_name or not attr:
        raise ConfigError(
            f"kernel_estimator.factory must look like 'package.module:function', got {spec!r}."
        )
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise ConfigError(
            f"kernel_estimator.factory {spec!r}: cannot import {module_name!r} ({exc}). Is the "
            "package installed in this environment, or on PYTHONPATH?"
        ) from exc
    obj: Any = module
    for part in attr.split("."):
        if not hasattr(obj, part):
            raise ConfigError(
                f"kernel_estimator.factory {spec!r}: {module_name!r} has no attribute {attr!r}."
            )
        obj = getattr(obj, part)
    if not callable(obj):
        raise ConfigError(f"kernel_estimator.factory {spec!r} is not callable.")
    return obj


class LearnedEstimator(KernelEstimator):
    """A trained kernel-estimation network (e.g. a NUKE-style non-uniform estimator).

    Two ways to supply it:

    * ``path`` to a TorchScript file (``torch.jit.save``), ``factory=None``. TorchScript holds
      the model's own program, so only load files you trust.
    * ``factory='package.module:function'`` that builds the ``nn.Module`` (called with
      ``factory_kwargs``), and ``path`` to its weights: a ``.safetensors`` file or a state dict
      saved with ``torch.save``, read with ``torch.load(weights_only=True)`` so the file itself
      can never run code.

    The module is called on ``(B, 3, H, W)`` images, in ``[-1, 1]`` or, with
    ``input_range='0,1'``, in ``[0, 1]``. It must return kernels, or kernels and masks, as a
    tuple ``(kernels, masks)``, a dict with keys ``kernels`` and ``masks``, or a tensor of
    kernels alone. Kernels are ``(B, K, kh, kw)`` (or ``(B, kh, kw)`` for ``K = 1``); masks are
    ``(B, K, h, w)`` weights, resized to the image size if ``(h, w)`` differs and renormalised
    to sum to 1 per pixel. Without masks each of the ``K`` kernels gets weight ``1 / K``
    everywhere.

    ``estimate(blurry, init)`` accepts an initial kernel for the same interface as the other
    estimators, checks it (:func:`as_init_kernels`, any size) and otherwise **ignores** it: a
    feed-forward network has no warm start, so the result does not depend on ``init``.
    """

    method = "learned"

    def __init__(
        self,
        path: str | Path,
        factory: str | None = None,
        factory_kwargs: Mapping[str, Any] | None = None,
        input_range: str = "-1,1",
        device: str | None = None,
        strict: bool = True,
    ) -> None:
        if path is None or str(path) in ("", "???"):
            raise ConfigError(
                "kernel_estimator.path is not set: give the TorchScript file of the learned "
                "estimator (or its weights file together with kernel_estimator.factory)."
            )
        self.path = Path(str(path)).expanduser()
        if not self.path.is_file():
            raise ConfigError(f"The learned kernel estimator file {self.path} does not exist.")
        ranges = {"-1,1": False, "0,1": True}
        key = str(input_range).replace(" ", "").strip("[]()")
        if key not in ranges:
            raise ConfigError(
                f"kernel_estimator.input_range must be '-1,1' or '0,1', got {input_range!r}."
            )
        self.input_range = key
        self._to_unit = ranges[key]
        self.device = as_device(device)
        self.factory = factory
        self.module = self._load(factory, dict(factory_kwargs or {}), strict)
        self.module.eval()

    def _load(self, factory: str | None, kwargs: dict[str, Any], strict: bool) -> torch.nn.Module:
        if factory is None:
            try:
                return torch.jit.load(str(self.path), map_location="cpu")
            except (RuntimeError, ValueError) as exc:
                raise ConfigError(
                    f"{self.path} is not a TorchScript file ({str(exc).splitlines()[0]}). Save "
                    "the estimator with torch.jit.save(torch.jit.script(model), path), or give "
                    "kernel_estimator.factory='module:function' and a weights file."
                ) from exc
        from ddrm_exp.models.checkpoints import load_state_dict

        build = _import_factory(factory)
        module = build(**kwargs)
        if not isinstance(module, torch.nn.Module):
            raise ConfigError(
                f"kernel_estimator.factory {factory!r} returned {type(module).__name__}, not a "
                "torch.nn.Module."
            )
        state = load_state_dict(self.path)
        try:
            module.load_state_dict(state, strict=strict)
        except RuntimeError as exc:
            raise ConfigError(
                f"The weights in {self.path} do not fit the module built by {factory!r}: "
                f"{str(exc).splitlines()[0]} (set kernel_estimator.strict=false to load the "
                "matching entries only)."
            ) from exc
        return module

    def estimate(self, blurry: Tensor, init: Tensor | None = None) -> KernelEstimate:
        x = as_image_batch(blurry)
        # Checked so a caller's mistake surfaces here too, then unused (no warm start).
        as_init_kernels(init, x.shape[0])
        if x.shape[1] != 3:
            x = x.expand(-1, 3, -1, -1)
        device = torch.device(self.device) if self.device else x.device
        self.module.to(device)
        inp = x.to(device=device, dtype=torch.float32)
        if self._to_unit:
            inp = (inp + 1) / 2
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        start = time.perf_counter()
        with torch.no_grad():
            out = self.module(inp)
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        elapsed = time.perf_counter() - start
        kernels, masks = self._unpack(out, x.shape[0], tuple(x.shape[-2:]))
        b = x.shape[0]
        return KernelEstimate(
            kernels=kernels,
            masks=masks,
            seconds=(elapsed / b,) * b,
            method=self.method,
            info={"path": str(self.path), "factory": self.factory},
        )

    def _unpack(self, out: Any, b: int, size: tuple[int, int]) -> tuple[Tensor, Tensor]:
        masks: Tensor | None
        if isinstance(out, Mapping):
            if "kernels" not in out:
                raise ConfigError(
                    f"The learned estimator returned a dict without 'kernels' (keys: "
                    f"{sorted(out)})."
                )
            kernels, masks = out["kernels"], out.get("masks")
        elif isinstance(out, Sequence) and len(out) == 2:
            kernels, masks = out
        elif isinstance(out, Tensor):
            kernels, masks = out, None
        else:
            raise ConfigError(
                "The learned estimator must return kernels, (kernels, masks) or "
                f"{{'kernels': ..., 'masks': ...}}; it returned {type(out).__name__}."
            )
        if not isinstance(kernels, Tensor) or kernels.dim() not in (3, 4):
            raise ConfigError(
                "The learned estimator's kernels must be a (B, K, kh, kw) or (B, kh, kw) tensor, "
                f"got {getattr(kernels, 'shape', type(kernels).__name__)}."
            )
        kernels = kernels.detach().to("cpu", torch.float64)
        if kernels.dim() == 3:
            kernels = kernels.unsqueeze(1)
        if kernels.shape[0] != b:
            raise ConfigError(
                f"The learned estimator returned kernels for {kernels.shape[0]} images, the "
                f"batch has {b}."
            )
        k = kernels.shape[1]
        if masks is None:
            masks = torch.full((b, k, *size), 1.0 / k)
        else:
            if not isinstance(masks, Tensor) or masks.dim() != 4 or masks.shape[:2] != (b, k):
                raise ConfigError(
                    f"The learned estimator's masks must be (B, K, h, w) = ({b}, {k}, h, w) to "
                    f"match its kernels, got {getattr(masks, 'shape', type(masks).__name__)}."
                )
            masks = masks.detach().to("cpu", torch.float32).clamp(min=0)
            if tuple(masks.shape[-2:]) != size:
                masks = F.interpolate(masks, size=size, mode="bilinear", align_corners=False)
            total = masks.sum(dim=1, keepdim=True)
            # A pixel no kernel claims gets equal shares, so it still counts towards coverage.
            masks = torch.where(total > 0, masks / total.clamp(min=1e-12), 1.0 / k)
        if not bool(torch.isfinite(kernels).all()):
            raise ConfigError("The learned estimator returned NaN or infinite kernels.")
        return kernels, masks
