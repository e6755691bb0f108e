"""A training-free, coarse-to-fine blind estimator of one uniform blur kernel.

The method follows the family of Xu & Jia (two-phase kernel estimation, ECCV 2010), Krishnan
et al. (normalized sparsity, CVPR 2011) and Pan et al. (L0-regularised gradient prior, CVPR
2014): on a pyramid of the image's luma, from the coarsest scale to the finest, alternate

a. a *latent image* update ``min_x ||k * x - b||^2 + lambda ||grad x||_0``, solved by
   half-quadratic splitting -- hard-thresholding the gradients, then a closed-form FFT solve
   with an increasing penalty ``beta``. The L0 prior keeps only salient edges, which is what
   makes the kernel identifiable;
b. a *kernel* update ``min_k sum_d ||d_x * k - d_b||^2 + gamma ||k||^2`` over the horizontal and
   vertical gradients of that latent image (``d_x``) and of the blurry one (``d_b``), closed
   form in the FFT domain, refined by projected gradient under ``k >= 0`` on the kernel's
   support, then small taps (< ``threshold`` of the peak) and small isolated blobs set to zero,
   normalised to sum 1 and re-centred. When the image is noisy the fit is weighted towards low
   frequencies in proportion to the noise measured in it;

and lower ``lambda`` a little after each alternation so finer edges join in. The kernel of one
scale, upsampled, starts the next. Everything is deterministic (no random initialisation).

Convolutions are circular. The image is first extended with a smooth band that wraps its
right/bottom edges onto its left/top ones, so a non-periodic photo has no false edge at the
seam. Kernels are point-spread functions: the blurry image is ``y = k (*) x``, a true
convolution with the centre tap at ``(k // 2, k // 2)``.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

from ddrm_exp.degradations._checks import as_float, as_int
from ddrm_exp.errors import ConfigError
from ddrm_exp.kernel_estimation.base import (
    KernelEstimate,
    KernelEstimator,
    as_device,
    as_image_batch,
    as_init_kernels,
    luminance,
)
from ddrm_exp.kernel_estimation.motion import best_line

__all__ = ["ClassicalEstimator", "kernel_spread", "psf2otf", "snap_to_delta"]

# Each pyramid level is this factor smaller than the next, as in Pan et al. and Xu & Jia: a
# factor 2 loses kernels whose structure lives between the two scales.
SCALE_STEP = 1 / math.sqrt(2)
# The coarsest level's kernel is about this many pixels wide: small enough that a delta start
# is already close, big enough to hold a shape.
COARSEST_KERNEL = 5
# Noise estimates (luma std, [0, 1] units) below this are treated as texture, not noise.
NOISE_FLOOR = 1e-3
# Where the kernel step fits the blurry gradients: "all" of the (wrap-padded) canvas in the
# Fourier domain, or only the "valid" pixels whose blur reads inside the image (real blur
# is a valid convolution of a larger scene, so the border pixels do not fit a circular model).
FIT_REGIONS = ("all", "valid")
# What the kernel step may return: any non-negative ``kernel_size²`` taps ("free"), or the
# uniform straight segment that fits best ("line", :mod:`~ddrm_exp.kernel_estimation.motion`).
MOTION_MODELS = ("free", "line")


def _odd(value: float) -> int:
    n = max(3, int(math.floor(value + 0.5)))
    return n if n % 2 else n + 1


def _fast_len(n: int) -> int:
    """The smallest 5-smooth integer >= ``n``: FFT lengths that pocketfft/cuFFT do fastest."""
    m = n
    while True:
        r = m
        for p in (2, 3, 5):
            while r % p == 0:
                r //= p
        if r == 1:
            return m
        m += 1


def psf2otf(kernel: Tensor, shape: tuple[int, int]) -> Tensor:
    """Half-spectrum (``rfft2``) of ``kernel`` zero-padded to ``shape``, centre tap at (0, 0)."""
    kh, kw = kernel.shape[-2:]
    padded = kernel.new_zeros((*kernel.shape[:-2], *shape))
    padded[..., :kh, :kw] = kernel
    padded = torch.roll(padded, shifts=(-(kh // 2), -(kw // 2)), dims=(-2, -1))
    return torch.fft.rfft2(padded)


def _wrap_pad(img: Tensor, shape: tuple[int, int]) -> Tensor:
    """Extend ``img`` to ``shape`` with linear blends from its last row/column to its first.

    The result is continuous when read periodically, so circular FFT convolutions see no jump
    at the border (the blends have small gradients, which the L0 step zeroes).
    """
    h, w = img.shape[-2:]
    ph, pw = shape[0] - h, shape[1] - w
    if ph:
        t = torch.arange(1, ph + 1, dtype=img.dtype, device=img.device) / (ph + 1)
        band = img[..., -1:, :] * (1 - t)[:, None] + img[..., :1, :] * t[:, None]
        img = torch.cat([img, band], dim=-2)
    if pw:
        t = torch.arange(1, pw + 1, dtype=img.dtype, device=img.device) / (pw + 1)
        band = img[..., :, -1:] * (1 - t)[None, :] + img[..., :, :1] * t[None, :]
        img = torch.cat([img, band], dim=-1)
    return img


def _grad(x: Tensor) -> tuple[Tensor, Tensor]:
    return torch.roll(x, -1, dims=-1) - x, torch.roll(x, -1, dims=-2) - x


def _grad_adjoint(gx: Tensor, gy: Tensor) -> Tensor:
    return (torch.roll(gx, 1, dims=-1) - gx) + (torch.roll(gy, 1, dims=-2) - gy)


def _shift_kernel(k: Tensor, dy: int, dx: int) -> Tensor:
    """``k`` moved by ``(dy, dx)`` taps; what leaves the support is dropped, not wrapped."""
    kh, kw = k.shape
    out = torch.zeros_like(k)
    if abs(dy) >= kh or abs(dx) >= kw:
        return out
    out[max(0, dy) : kh + min(0, dy), max(0, dx) : kw + min(0, dx)] = k[
        max(0, -dy) : kh + min(0, -dy), max(0, -dx) : kw + min(0, -dx)
    ]
    return out


def _components(support: Tensor) -> Tensor:
    """8-connected component labels of a boolean map (0 = background), by max propagation."""
    n = support.numel()
    labels = torch.arange(1, n + 1, device=support.device, dtype=torch.float32).reshape(
        support.shape
    )
    labels = labels * support
    for _ in range(n):
        grown = F.max_pool2d(labels[None, None], 3, stride=1, padding=1)[0, 0] * support
        if torch.equal(grown, labels):
            break
        labels = grown
    return labels


def _drop_small_components(k: Tensor, min_mass: float) -> Tensor:
    """Zero the connected blobs of ``k`` holding less than ``min_mass`` of its total.

    A real blur is one connected trace; isolated islands are noise or ghost edges that the
    least squares fit, and thresholding alone keeps them when they are strong.
    """
    labels = _components(k > 0)
    ids, inverse = torch.unique(labels, return_inverse=True)
    mass = torch.zeros(len(ids), dtype=k.dtype, device=k.device).index_add_(
        0, inverse.flatten(), k.flatten()
    )
    keep = (mass >= min_mass * k.sum()) & (ids > 0)
    if not bool(keep.any()):
        keep = mass == mass[ids > 0].max()
    return k * keep[inverse]


def _clean_kernel(k: Tensor, threshold: float, center: bool, min_component: float = 0.0) -> Tensor:
    """Non-negative, small taps removed, centred on its centre of mass, summing to 1."""
    k = k.clamp(min=0)
    peak = k.max()
    if float(peak) <= 0:
        return _delta(k.shape, k)
    k = torch.where(k < threshold * peak, torch.zeros_like(k), k)
    if min_component > 0:
        k = _drop_small_components(k, min_component)
    k = k / k.sum()
    if center:
        kh, kw = k.shape
        iy = torch.arange(kh, dtype=k.dtype, device=k.device)
        ix = torch.arange(kw, dtype=k.dtype, device=k.device)
        cy = float((k.sum(1) * iy).sum())
        cx = float((k.sum(0) * ix).sum())
        dy, dx = int(round(kh // 2 - cy)), int(round(kw // 2 - cx))
        if dy or dx:
            moved = _shift_kernel(k, dy, dx)
            if float(moved.sum()) > 0:
                k = moved / moved.sum()
    return k


def kernel_spread(kernel: Tensor) -> float:
    """The blur's extent in pixels: the root of the kernel's second central moment (both axes
    together). 0 for a delta; a uniform ``L``-pixel line has ``L / √12``-ish."""
    k = kernel.to(torch.float64).clamp(min=0)
    k = k / k.sum()
    iy = torch.arange(k.shape[0], dtype=k.dtype)
    ix = torch.arange(k.shape[1], dtype=k.dtype)
    py, px = k.sum(1), k.sum(0)
    cy, cx = (py * iy).sum(), (px * ix).sum()
    return float(((py * (iy - cy) ** 2).sum() + (px * (ix - cx) ** 2).sum()).sqrt())


def snap_to_delta(kernel: Tensor, max_spread: float) -> Tensor:
    """``kernel``, or the delta of its size when its :func:`kernel_spread` is below
    ``max_spread`` px: an estimate that small on a sharp or barely blurred frame is the
    estimator's own bias (on sharp 64-px photos it returns 0.4-1.8 px blobs), and deblurring
    with it invents detail; a delta leaves the frame as it is."""
    if max_spread <= 0 or kernel_spread(kernel) >= max_spread:
        return kernel
    return _delta(kernel.shape, kernel)


def noise_std(image: Tensor, block: int = 8, quantile: float = 0.1) -> float:
    """Robust estimate of the white-noise std of an ``(H, W)`` image.

    Donoho's MAD estimator (median absolute diagonal Haar detail / 0.6745) taken per
    ``block x block`` tile of details, and the ``quantile`` of the tiles kept: noise is the same
    everywhere, while texture and edges, which also have diagonal detail, are not, so the
    flattest tiles measure the noise and a sharp but noise-free photo reads close to 0.
    """
    h, w = image.shape[-2:]
    x = image[..., : h - h % 2, : w - w % 2]
    hh = (x[..., 0::2, 0::2] - x[..., 0::2, 1::2] - x[..., 1::2, 0::2] + x[..., 1::2, 1::2]) / 2
    th, tw = hh.shape[-2] // block, hh.shape[-1] // block
    if th * tw < 4:
        return float(hh.abs().median()) / 0.6745
    tiles = hh[..., : th * block, : tw * block].reshape(th, block, tw, block)
    mad = tiles.abs().permute(0, 2, 1, 3).reshape(th * tw, -1).median(dim=1).values
    return float(torch.quantile(mad.float(), quantile)) / 0.6745


def _circular_normal_equations(
    num: Tensor, den: Tensor, ks: int, shape: tuple[int, int]
) -> tuple[Tensor, Tensor]:
    """``(gram, rhs)`` over the ``ks²`` taps (row-major) of the circular least squares whose
    spectra are ``num = conj(L) B`` and ``den = |L|²``: tap ``u`` (an offset from the centre)
    meets tap ``v`` through the autocorrelation of the latent at ``u - v``, and the blurry
    image through the cross-correlation at ``u``."""
    auto = torch.fft.irfft2(den, s=shape)
    cross = torch.fft.irfft2(num, s=shape)
    r = ks // 2
    off = torch.arange(-r, r + 1, device=num.device)
    oy = off[:, None].expand(ks, ks).reshape(-1)
    ox = off[None, :].expand(ks, ks).reshape(-1)
    gram = auto[(oy[:, None] - oy[None, :]) % shape[0], (ox[:, None] - ox[None, :]) % shape[1]]
    return gram, cross[oy % shape[0], ox % shape[1]]


def _delta(shape: tuple[int, ...] | torch.Size, like: Tensor) -> Tensor:
    k = torch.zeros(tuple(shape), dtype=like.dtype, device=like.device)
    k[shape[0] // 2, shape[1] // 2] = 1
    return k


def _resize_kernel(k: Tensor, size: int) -> Tensor:
    if k.shape[-1] == size:
        return k
    out = F.interpolate(k[None, None], size=(size, size), mode="bilinear", align_corners=True)
    out = out[0, 0].clamp(min=0)
    return out / out.sum() if float(out.sum()) > 0 else _delta((size, size), k)


@dataclass(frozen=True)
class _Level:
    kernel_size: int
    height: int
    width: int


class ClassicalEstimator(KernelEstimator):
    """Multi-scale L0-gradient blind kernel estimation (one global kernel per image).

    Args:
        kernel_size: odd side of the square kernel to estimate; it must hold the whole blur
            (a motion blur of length ``L`` needs ``kernel_size >= L``). Larger is slower and,
            far beyond the blur, noisier.
        num_scales: pyramid levels; ``None`` picks enough ``1/sqrt(2)`` steps for the coarsest
            kernel to be about 5 pixels wide.
        iterations: latent/kernel alternations per level.
        lambda_grad: initial weight of the L0 gradient prior (images in [0, 1]); larger keeps
            fewer, stronger edges. It is divided by ``lambda_decay`` after each alternation,
            down to ``lambda_min``, and reset at every level.
        kernel_reg: Tikhonov weight of the kernel update, relative to the mean power of the
            latent gradients (so it does not depend on the image size).
        threshold: kernel taps below this fraction of the peak are set to 0.
        beta_max, kappa: the half-quadratic penalty grows from ``2 * lambda`` by ``kappa`` until
            it exceeds ``beta_max``.
        nnls_steps: projected-gradient steps that refine each kernel update under ``k >= 0``
            on its support (0 keeps the plain Tikhonov solution); they matter under noise.
        min_component: connected blobs of the kernel holding less than this share of its mass
            are removed.
        kernel_smoothing: std (pixels) of a Gaussian low-pass weighting of the kernel's least
            squares, which keeps noise out of the kernel at the cost of its finest detail.
            ``None`` (default) sets it per image and pyramid level from the measured noise, as
            ``smoothing_per_noise * kernel size * (noise std - 0.001)`` (the kernel size and
            the noise std of the luma, in [0, 1] units, at that level), so a noise-free image
            gets none. The default 4 gives about 0.6 px for a 15-tap kernel and 1.2 px for 31
            taps at sigma_y = 0.02.
        smoothing_per_noise: see ``kernel_smoothing``.
        dtype: ``"float32"`` (fast, enough) or ``"float64"`` for the FFT work.
        device: where to compute; ``None`` uses the device of the images given.
        num_threads: CPU threads while estimating (restored afterwards); ``None`` leaves torch's
            setting. The FFTs are small, so one thread loses little and avoids the large
            slowdowns of oversubscribed threads on a busy machine.
        fit_region: ``"all"`` fits the kernel step on the whole wrap-padded canvas in the
            Fourier domain; ``"valid"`` only on the frame's pixels whose blur reads inside it
            (a real blurry frame is a valid convolution of a larger scene, so its border does
            not fit a circular model), by the ``kernel_size²`` normal equations. On 64-px
            validation frames of real (valid) blur, 5 taps: NCC 0.709 -> 0.745 (and 0.787
            with ``kernel_reg`` 0.003), see scripts/border_models.py.
        delta_spread: an estimate whose spread (:func:`kernel_spread`, px) is below this is
            replaced by a delta (:func:`snap_to_delta`): on sharp frames the estimator returns
            small blobs of its own, and deblurring with them invents detail. 0 disables it.
        motion_model: ``"free"``: the kernel step solves for every tap (any blur shape);
            ``"line"``: it returns the uniform straight segment (length and angle on a 0.25-px
            x 3-degree grid) that fits the same least squares best -- the blur of a short
            exposure of steady motion, two numbers where a small frame cannot pin down
            ``kernel_size²`` taps.
        delta_mix: the returned kernel is ``(1 - delta_mix) * estimate + delta_mix * delta``,
            a milder blur than the estimate: deblurring with a kernel a little too small costs
            far less than with a wrong one (64-px validation frames of real blur, Wiener: 0
            -> 0.5 turns +0.10 into +0.42 dB over the blurry frame; DDRM: see
            conf/kernel_estimator/classical_valid.yaml). 0: the estimate as it is.
        warm_scales: with an initial kernel (``estimate(blurry, init=...)``, e.g. the previous
            video frame's kernel), only the ``warm_scales`` finest pyramid levels are run,
            starting from ``init`` (brought to the coarsest of them by the same resampling as
            between levels) instead of from a delta at the coarsest level. ``None``: all
            levels (still starting from ``init``).
        warm_iters: alternations per level of a warm start; ``None``: ``iterations``.

    Warm start: with ``init`` close to the blur (a slowly varying video blur), the coarse
    levels, whose job is to find the kernel's rough shape from scratch, are skipped and the
    finest level refines ``init``. More alternations do not help there: they pull the kernel
    from ``init`` to the estimator's own (biased) fixed point. The defaults (1 level, 2
    alternations, 0.2x the work of a cold start) were measured on the 9 sample photos with
    three camera-shake motion blurs and a Gaussian, 15 taps at 128 px (``sigma_y`` 0, 0.01,
    0.02) and 31 taps at 256 px (0.01, 0.02): from the true kernel or it rotated by 10
    degrees the mean NCC with the true kernel is above a cold start's in every setting (e.g.
    31 taps, ``sigma_y`` 0.02: 0.798 and 0.795 against 0.784) in 0.21 s against 1.30 s per
    image on one core. From a kernel rotated by 45 degrees it is a little below (0.756
    against 0.784): far from the blur -- a scene cut, another kernel -- a cold start
    (``init=None``) is better.
    """

    method = "classical"

    def __init__(
        self,
        kernel_size: int = 31,
        num_scales: int | None = None,
        iterations: int = 5,
        lambda_grad: float = 3e-3,
        lambda_min: float = 1e-4,
        lambda_decay: float = 1.1,
        kernel_reg: float = 0.05,
        threshold: float = 0.05,
        beta_max: float = 1e5,
        kappa: float = 2.0,
        nnls_steps: int = 30,
        min_component: float = 0.1,
        kernel_smoothing: float | None = None,
        smoothing_per_noise: float = 4.0,
        dtype: str = "float32",
        device: str | None = None,
        num_threads: int | None = None,
        warm_scales: int | None = 1,
        warm_iters: int | None = 2,
        fit_region: str = "all",
        delta_spread: float = 0.0,
        delta_mix: float = 0.0,
        motion_model: str = "free",
    ) -> None:
        self.kernel_size = as_int(kernel_size, "kernel_estimator.kernel_size", minimum=1)
        if self.kernel_size % 2 == 0:
            raise ConfigError(
                f"kernel_estimator.kernel_size must be odd so the kernel has a centre tap, got "
                f"{self.kernel_size}; use {self.kernel_size + 1}."
            )
        if num_scales is None:
            ratio = max(self.kernel_size / COARSEST_KERNEL, 1.0)
            num_scales = 1 + int(math.ceil(math.log(ratio) / -math.log(SCALE_STEP) - 1e-9))
        self.num_scales = as_int(num_scales, "kernel_estimator.num_scales", minimum=1)
        self.iterations = as_int(iterations, "kernel_estimator.iterations", minimum=1)
        self.lambda_grad = as_float(
            lambda_grad, "kernel_estimator.lambda_grad", low=0.0, low_open=True
        )
        self.lambda_min = as_float(
            lambda_min, "kernel_estimator.lambda_min", low=0.0, low_open=True
        )
        self.lambda_decay = as_float(lambda_decay, "kernel_estimator.lambda_decay", low=1.0)
        self.kernel_reg = as_float(kernel_reg, "kernel_estimator.kernel_reg", low=0.0)
        self.threshold = as_float(
            threshold, "kernel_estimator.threshold", low=0.0, high=1.0, high_open=True
        )
        self.beta_max = as_float(beta_max, "kernel_estimator.beta_max", low=0.0, low_open=True)
        self.kappa = as_float(kappa, "kernel_estimator.kappa", low=1.0, low_open=True)
        self.nnls_steps = as_int(nnls_steps, "kernel_estimator.nnls_steps", minimum=0)
        self.min_component = as_float(
            min_component, "kernel_estimator.min_component", low=0.0, high=1.0, high_open=True
        )
        self.kernel_smoothing = (
            None
            if kernel_smoothing is None
            else as_float(kernel_smoothing, "kernel_estimator.kernel_smoothing", low=0.0)
        )
        self.smoothing_per_noise = as_float(
            smoothing_per_noise, "kernel_estimator.smoothing_per_noise", low=0.0
        )
        dtypes = {"float32": torch.float32, "float64": torch.float64}
        if str(dtype) not in dtypes:
            raise ConfigError(
                f"kernel_estimator.dtype must be 'float32' or 'float64', got {dtype!r}."
            )
        self.dtype = dtypes[str(dtype)]
        self.device = as_device(device)
        self.num_threads = (
            None
            if num_threads is None
            else as_int(num_threads, "kernel_estimator.num_threads", minimum=1)
        )
        self.warm_scales = (
            None
            if warm_scales is None
            else as_int(warm_scales, "kernel_estimator.warm_scales", minimum=1)
        )
        self.warm_iters = (
            self.iterations
            if warm_iters is None
            else as_int(warm_iters, "kernel_estimator.warm_iters", minimum=1)
        )
        if fit_region not in FIT_REGIONS:
            raise ConfigError(
                f"kernel_estimator.fit_region must be one of {', '.join(FIT_REGIONS)}, got "
                f"{fit_region!r}."
            )
        self.fit_region = str(fit_region)
        if motion_model not in MOTION_MODELS:
            raise ConfigError(
                f"kernel_estimator.motion_model must be one of {', '.join(MOTION_MODELS)}, got "
                f"{motion_model!r}."
            )
        self.motion_model = str(motion_model)
        self.delta_spread = as_float(delta_spread, "kernel_estimator.delta_spread", low=0.0)
        self.delta_mix = as_float(
            delta_mix, "kernel_estimator.delta_mix", low=0.0, high=1.0, high_open=True
        )

    def params(self) -> dict[str, Any]:
        return {
            "kernel_size": self.kernel_size,
            "num_scales": self.num_scales,
            "iterations": self.iterations,
            "lambda_grad": self.lambda_grad,
            "lambda_min": self.lambda_min,
            "lambda_decay": self.lambda_decay,
            "kernel_reg": self.kernel_reg,
            "threshold": self.threshold,
            "min_component": self.min_component,
            "nnls_steps": self.nnls_steps,
            "kernel_smoothing": self.kernel_smoothing,
            "smoothing_per_noise": self.smoothing_per_noise,
            "warm_scales": self.warm_scales,
            "warm_iters": self.warm_iters,
            "fit_region": self.fit_region,
            "delta_spread": self.delta_spread,
            "delta_mix": self.delta_mix,
            "motion_model": self.motion_model,
        }

    def check_size(self, height: int, width: int) -> None:
        """ConfigError unless an image of ``height x width`` can hold the kernel."""
        if min(height, width) < self.kernel_size:
            raise ConfigError(
                f"The image ({height}x{width}) is smaller than the kernel to estimate "
                f"(kernel_estimator.kernel_size={self.kernel_size}); use a smaller kernel_size "
                f"or a larger image (at least 2-3 times the kernel size gives usable estimates)."
            )

    def estimate(self, blurry: Tensor, init: Tensor | None = None) -> KernelEstimate:
        """One kernel per image of ``blurry``; ``init`` (``(B, kh, kw)``, optional) warm-starts.

        ``init`` is checked and sized by :func:`~ddrm_exp.kernel_estimation.base.as_init_kernels`
        (odd sides, padded or cropped about the centre to ``kernel_size``; any positive sum).
        With it, each image's estimate runs the ``warm_scales`` finest levels for
        ``warm_iters`` alternations from its kernel (see the class notes); ``info`` then
        records ``warm_start=True``. ``seconds`` is each image's own time either way.
        """
        x = as_image_batch(blurry)
        h, w = x.shape[-2:]
        self.check_size(h, w)
        starts = as_init_kernels(init, x.shape[0], self.kernel_size)
        device = torch.device(self.device) if self.device else x.device
        gray = luminance(x.to(device=device, dtype=self.dtype))
        kernels, seconds = [], []
        threads = torch.get_num_threads()
        if self.num_threads is not None and device.type == "cpu":
            torch.set_num_threads(self.num_threads)
        try:
            for i, img in enumerate(gray):
                if device.type == "cuda":
                    torch.cuda.synchronize(device)
                start = time.perf_counter()
                k = self.estimate_gray(img, None if starts is None else starts[i])
                seconds.append(time.perf_counter() - start)
                kernels.append(k)
        finally:
            torch.set_num_threads(threads)
        return KernelEstimate(
            kernels=torch.stack(kernels)[:, None],
            masks=torch.ones(x.shape[0], 1, h, w),
            seconds=tuple(seconds),
            method=self.method,
            info={**self.params(), "warm_start": starts is not None},
        )

    def levels(self, height: int, width: int) -> list[_Level]:
        """The pyramid, coarsest first; the last level is the image itself."""
        out = []
        for s in range(self.num_scales):
            ratio = SCALE_STEP ** (self.num_scales - 1 - s)
            ks = self.kernel_size if s == self.num_scales - 1 else _odd(self.kernel_size * ratio)
            hs = max(int(round(height * ratio)), ks)
            ws = max(int(round(width * ratio)), ks)
            out.append(_Level(ks, hs, ws))
        return out

    def schedule(self, height: int, width: int, warm: bool = False) -> list[tuple[_Level, int]]:
        """The levels an estimate runs, coarsest first, each with its number of alternations.

        A cold start runs every level of :meth:`levels` for ``iterations``; a warm start (an
        initial kernel) the ``warm_scales`` finest for ``warm_iters``. The work of an estimate
        is about the sum of ``iterations x height x width`` over this list.
        """
        levels = self.levels(height, width)
        if not warm:
            return [(level, self.iterations) for level in levels]
        if self.warm_scales is not None:
            levels = levels[-self.warm_scales :]
        return [(level, self.warm_iters) for level in levels]

    def estimate_gray(self, image: Tensor, init: Tensor | None = None) -> Tensor:
        """The ``(k, k)`` float64 kernel (on the CPU) of one ``(H, W)`` luma image in [0, 1].

        ``init``: an optional ``(kernel_size, kernel_size)`` non-negative kernel summing to 1
        (as :func:`~ddrm_exp.kernel_estimation.base.as_init_kernels` makes them) to warm-start
        from, as :meth:`schedule` says.
        """
        self.check_size(*image.shape[-2:])
        image = image.to(self.dtype)
        h, w = image.shape[-2:]
        k: Tensor | None = None
        noise = noise_std(image) if self.kernel_smoothing is None else 0.0
        if init is not None and tuple(init.shape) != (self.kernel_size, self.kernel_size):
            raise ConfigError(
                f"estimate_gray's init must be {self.kernel_size}x{self.kernel_size}, got "
                f"{tuple(init.shape)}; estimate() pads or crops other sizes."
            )
        for level, iterations in self.schedule(h, w, warm=init is not None):
            if (level.height, level.width) == (h, w):
                b = image
            else:
                b = F.interpolate(
                    image[None, None],
                    size=(level.height, level.width),
                    mode="bilinear",
                    antialias=True,
                    align_corners=False,
                )[0, 0]
            if k is not None:
                k = _resize_kernel(k, level.kernel_size)
            elif init is not None:
                k = _resize_kernel(init.to(b), level.kernel_size)
            else:
                k = _delta((level.kernel_size, level.kernel_size), b)
            k = self._estimate_level(b, k, noise, level.height / h, iterations)
        assert k is not None
        k = k.to("cpu", torch.float64)
        k = snap_to_delta(k / k.sum(), self.delta_spread)
        if self.delta_mix > 0:
            k = (1 - self.delta_mix) * k + self.delta_mix * _delta(k.shape, k)
        return k

    def _estimate_level(
        self, b: Tensor, k: Tensor, noise: float, level_ratio: float, iterations: int
    ) -> Tensor:
        ks = k.shape[-1]
        h, w = b.shape
        shape = (_fast_len(h + ks), _fast_len(w + ks))
        b = _wrap_pad(b, shape)
        b_hat = torch.fft.rfft2(b)
        bx, by = _grad(b)
        bx_hat, by_hat = torch.fft.rfft2(bx), torch.fft.rfft2(by)
        # |D_x|^2 + |D_y|^2 of circular forward differences, in closed form.
        fy = torch.fft.fftfreq(shape[0], dtype=b.dtype, device=b.device)
        fx = torch.fft.rfftfreq(shape[1], dtype=b.dtype, device=b.device)
        d2 = (2 - 2 * torch.cos(2 * math.pi * fy))[:, None] + (2 - 2 * torch.cos(2 * math.pi * fx))
        weight = None
        smoothing = self.kernel_smoothing
        if smoothing is None:
            # More taps to fit from the same data need more damping, hence the kernel size.
            excess = max(0.0, noise * level_ratio - NOISE_FLOOR)
            smoothing = self.smoothing_per_noise * ks * excess
        if smoothing > 0:
            # Weighting the fit by |G|^2 is fitting the kernel between Gaussian-smoothed
            # gradients: g * b = k * (g * x) + g * n still holds exactly, with less noise.
            f2 = fy.square()[:, None] + fx.square()
            weight = torch.exp(-((2 * math.pi * smoothing) ** 2) * f2)
        lam = self.lambda_grad
        for _ in range(iterations):
            latent = self._latent(b_hat, psf2otf(k, shape), d2, b, lam, shape)
            if self.fit_region == "valid":
                k = self._kernel_valid(latent, bx, by, ks, (h, w), weight)
            else:
                k = self._kernel(latent, bx_hat, by_hat, ks, shape, weight)
            lam = max(lam / self.lambda_decay, self.lambda_min)
        return k

    def _latent(
        self,
        b_hat: Tensor,
        k_hat: Tensor,
        d2: Tensor,
        x: Tensor,
        lam: float,
        shape: tuple[int, int],
    ) -> Tensor:
        """Half-quadratic splitting for ``min_x ||k * x - b||^2 + lam ||grad x||_0``."""
        ktb = k_hat.conj() * b_hat
        k2 = k_hat.abs().square()
        beta = 2 * lam
        while beta < self.beta_max:
            gx, gy = _grad(x)
            # L0 proximal step on the joint gradient: keep it only where it pays for itself.
            keep = (gx.square() + gy.square()) >= lam / beta
            gx, gy = gx * keep, gy * keep
            rhs = ktb + beta * torch.fft.rfft2(_grad_adjoint(gx, gy))
            x = torch.fft.irfft2(rhs / (k2 + beta * d2), s=shape)
            beta *= self.kappa
        return x

    def _kernel(
        self,
        latent: Tensor,
        bx_hat: Tensor,
        by_hat: Tensor,
        ks: int,
        shape: tuple[int, int],
        weight: Tensor | None = None,
    ) -> Tensor:
        """Gradient-domain Tikhonov least squares for the kernel, then cleaned up."""
        lx, ly = _grad(latent)
        lx_hat, ly_hat = torch.fft.rfft2(lx), torch.fft.rfft2(ly)
        num = lx_hat.conj() * bx_hat + ly_hat.conj() * by_hat
        den = lx_hat.abs().square() + ly_hat.abs().square()
        if weight is not None:
            num, den = num * weight, den * weight
        if self.motion_model == "line":
            return best_line(*_circular_normal_equations(num, den, ks, shape), ks)
        gamma = self.kernel_reg * den.mean() + torch.finfo(den.dtype).tiny
        full = torch.fft.irfft2(num / (den + gamma), s=shape)
        if self.nnls_steps:
            full = self._nnls(full, num, den, float(gamma), ks, shape)
        full = torch.roll(full, shifts=(ks // 2, ks // 2), dims=(-2, -1))
        return _clean_kernel(
            full[:ks, :ks], self.threshold, center=True, min_component=self.min_component
        )

    def _kernel_valid(
        self,
        latent: Tensor,
        bx: Tensor,
        by: Tensor,
        ks: int,
        size: tuple[int, int],
        weight: Tensor | None = None,
    ) -> Tensor:
        """The kernel step fitted on the valid pixels only: ``min_k Σ_d ||d_x * k - d_b||²``
        over the pixels of the image (not the padding) whose blur and gradient read inside it,
        plus the Tikhonov term, under ``k >= 0`` (projected gradient on the ``ks²`` normal
        equations, which are small). ``weight`` (the noise low-pass) is applied to the
        gradients first, as the Fourier fit weights its equations."""
        r = ks // 2
        h, w = size
        if weight is not None:
            latent = torch.fft.irfft2(torch.fft.rfft2(latent) * weight, s=latent.shape)
            bx = torch.fft.irfft2(torch.fft.rfft2(bx) * weight, s=bx.shape)
            by = torch.fft.irfft2(torch.fft.rfft2(by) * weight, s=by.shape)
        lx, ly = _grad(latent)
        rows, cols = slice(r, h - 1 - r), slice(r, w - 1 - r)
        if rows.stop <= rows.start or cols.stop <= cols.start:
            raise ConfigError(
                f"The image ({h}x{w}) has no pixel whose {ks}x{ks} blur lies inside it; use a "
                "smaller kernel_size or fit_region=all."
            )
        gram = latent.new_zeros(ks * ks, ks * ks)
        rhs = latent.new_zeros(ks * ks)
        for lat, blur in ((lx, bx), (ly, by)):
            # Patch t of pixel p is lat[p + t - r]; the blur reads k[q] at lat[p - q + r], so
            # the patch holds the kernel flipped.
            region = lat[rows.start - r : rows.stop + r, cols.start - r : cols.stop + r]
            patches = F.unfold(region[None, None], ks).squeeze(0).flip(0)  # (ks², N)
            target = blur[rows, cols].reshape(-1)
            gram = gram + patches @ patches.T
            rhs = rhs + patches @ target
        if self.motion_model == "line":
            return best_line(gram, rhs, ks)
        gamma = self.kernel_reg * float(torch.diagonal(gram).mean()) + torch.finfo(gram.dtype).tiny
        gram = gram + gamma * torch.eye(ks * ks, dtype=gram.dtype, device=gram.device)
        k = torch.linalg.solve(gram, rhs).clamp(min=0)
        step = 1.0 / float(torch.linalg.eigvalsh(gram)[-1])
        z, t = k, 1.0
        for _ in range(max(self.nnls_steps, 1) * 3):
            k_next = (z - step * (gram @ z - rhs)).clamp(min=0)
            t_next = (1 + math.sqrt(1 + 4 * t * t)) / 2
            z = k_next + ((t - 1) / t_next) * (k_next - k)
            k, t = k_next, t_next
        return _clean_kernel(
            k.reshape(ks, ks), self.threshold, center=True, min_component=self.min_component
        )

    def _nnls(
        self, k: Tensor, num: Tensor, den: Tensor, gamma: float, ks: int, shape: tuple[int, int]
    ) -> Tensor:
        """Refine the Tikhonov kernel by FISTA under support and non-negativity constraints.

        The unconstrained FFT solution spreads noise over the whole support; projecting every
        step onto ``k >= 0`` inside the ``ks x ks`` window zeroes most of those taps exactly.
        The layout is the FFT's (centre tap at index (0, 0)).
        """
        r = ks // 2
        iy = torch.arange(shape[0], device=k.device)
        ix = torch.arange(shape[1], device=k.device)
        inside = (torch.minimum(iy, shape[0] - iy) <= r)[:, None] & (
            torch.minimum(ix, shape[1] - ix) <= r
        )[None, :]
        step = 1.0 / (float(den.max()) + gamma)
        k = (k * inside).clamp(min=0)
        z, t = k, 1.0
        for _ in range(self.nnls_steps):
            grad = torch.fft.irfft2(den * torch.fft.rfft2(z) - num, s=shape) + gamma * z
            k_next = ((z - step * grad) * inside).clamp(min=0)
            t_next = (1 + math.sqrt(1 + 4 * t * t)) / 2
            z = k_next + ((t - 1) / t_next) * (k_next - k)
            k, t = k_next, t_next
        return k
