"""Classical non-blind deconvolution given a kernel: Wiener and Richardson-Lucy (scikit-image).

The blind and video tables show them beside DDRM *with the same kernel*, so a reader sees what
the diffusion prior adds over a linear filter and over the classical iterative method.

Images are the project's ``(B, C, H, W)`` tensors in [-1, 1]; scikit-image works on [0, 1]
(Richardson-Lucy needs non-negative data). The kernel follows the project's convention (a
convolution with its origin at ``(kh // 2, kw // 2)``, as :func:`~ddrm_exp.degradations.fft_blur
.blur_circular`), which is scikit-image's for odd sides; an even side is padded with a trailing
zero row/column, which keeps the origin where the project puts it.

Borders (``border``) must match how the measurement was made:

* ``circular``: the blur wrapped around (``bsd_synthetic``'s default, ``blur_circular``).
  Wiener, an FFT filter, is then exact with no padding; Richardson-Lucy convolves with zero
  padding, so the image is first extended periodically by the kernel's size.
* ``reflect``: real (valid) blur of a larger scene, or anything else. The image is extended
  symmetrically by the kernel's size, which keeps the periodic FFT (Wiener) and the zero padding
  (Richardson-Lucy) away from the frame's content, and cropped back afterwards.

The defaults (:data:`WIENER_BALANCE`, :data:`RL_ITERATIONS`) were chosen on validation data only
(``scripts/blind_diagnose.py tune``: BSD-layout trees of the corpus *val* photos and synthetic
motion blur of ``data/corpus/eval/val``); see the README's blind-deblurring section.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np
import torch
from skimage import restoration
from torch import Tensor

from ddrm_exp.errors import ConfigError

BORDERS: tuple[str, ...] = ("circular", "reflect")

# Chosen on validation data (see the module notes), the best mean PSNR over {true, estimated
# kernel} x {bsd_mini tree of val photos (valid blur, 8 bit), val views with 15-tap circular
# motion blur and σ_y 0.02}: balance 0.01 / 0.03 / 0.1 gave 25.53 / 25.74 / 25.48 dB, 5 / 10 /
# 20 iterations 25.70 / 25.75 / 24.92 dB. The balance weighs scikit-image's Laplacian
# regulariser against the data term; Richardson-Lucy starts from a flat image and sharpens with
# every iteration until noise and ringing win (an estimated kernel wants fewer).
WIENER_BALANCE = 0.03
RL_ITERATIONS = 10


def _kernels(kernel: Tensor, batch: int, height: int, width: int) -> np.ndarray:
    """``(B, kh, kw)`` float64 kernels, odd-sided, each summing to 1, checked against the image."""
    k = torch.as_tensor(kernel).detach().to("cpu", torch.float64)
    if k.dim() == 2:
        k = k.unsqueeze(0).expand(batch, -1, -1)
    if k.dim() != 3 or k.shape[0] != batch or k.shape[1] < 1 or k.shape[2] < 1:
        raise ConfigError(
            f"The deconvolution kernel must be (kh, kw) or ({batch}, kh, kw) for a batch of "
            f"{batch}, got shape {tuple(torch.as_tensor(kernel).shape)}."
        )
    if k.shape[1] > height or k.shape[2] > width:
        raise ConfigError(
            f"The deconvolution kernel is {k.shape[1]}x{k.shape[2]}, larger than the "
            f"{height}x{width} image."
        )
    if not bool(torch.isfinite(k).all()):
        raise ConfigError("The deconvolution kernel has non-finite values.")
    sums = k.sum(dim=(1, 2))
    if bool((sums <= 0).any()):
        raise ConfigError("The deconvolution kernel must have a positive sum (a blur).")
    k = k / sums[:, None, None]
    # Even sides: a trailing zero keeps the origin at kh // 2 (the project's convention), which
    # is the centre scikit-image and scipy use for an odd side.
    pad_h, pad_w = 1 - k.shape[1] % 2, 1 - k.shape[2] % 2
    if pad_h or pad_w:
        k = torch.nn.functional.pad(k, (0, pad_w, 0, pad_h))
    return k.numpy()


def _check(y: Tensor, border: str) -> None:
    if y.dim() != 4:
        raise ConfigError(f"Deconvolution takes (B, C, H, W) images, got {tuple(y.shape)}.")
    if border not in BORDERS:
        raise ConfigError(f"border={border!r} is not supported; use one of {', '.join(BORDERS)}.")


def _deconvolve(
    y: Tensor,
    kernel: Tensor,
    border: str,
    restore_plane: Callable[[np.ndarray, np.ndarray], np.ndarray],
    pad_circular: bool,
) -> Tensor:
    _check(y, border)
    b, c, h, w = y.shape
    kernels = _kernels(kernel, b, h, w)
    # [-1, 1] -> [0, 1]: scikit-image's range (Richardson-Lucy needs non-negative data).
    images = ((y.detach().to("cpu", torch.float64) + 1.0) / 2.0).clamp(0.0, 1.0).numpy()
    out = np.empty_like(images)
    for i in range(b):
        kh, kw = kernels[i].shape
        if border == "reflect":
            mode, ph, pw = "symmetric", kh, kw
        elif pad_circular:
            mode, ph, pw = "wrap", kh, kw
        else:
            mode, ph, pw = "wrap", 0, 0
        for ch in range(c):
            plane = np.pad(images[i, ch], ((ph, ph), (pw, pw)), mode=mode)
            restored = restore_plane(plane, kernels[i])
            out[i, ch] = restored[ph : ph + h, pw : pw + w]
    result = torch.from_numpy(np.clip(out, 0.0, 1.0) * 2.0 - 1.0)
    return result.to(device=y.device, dtype=y.dtype)


def wiener_deconvolve(
    y: Tensor, kernel: Tensor, *, balance: float = WIENER_BALANCE, border: str = "reflect"
) -> Tensor:
    """Wiener-Hunt deconvolution (``skimage.restoration.wiener``, Laplacian regulariser).

    ``y``: ``(B, C, H, W)`` in [-1, 1]; ``kernel``: ``(kh, kw)`` or ``(B, kh, kw)`` (normalised
    here). Returns the restoration in [-1, 1], same shape, device and dtype as ``y``.
    """
    if isinstance(balance, bool) or not isinstance(balance, int | float) or not balance >= 0:
        raise ConfigError(f"Wiener balance must be a number >= 0, got {balance!r}.")
    if not math.isfinite(balance):
        raise ConfigError(f"Wiener balance must be finite, got {balance!r}.")

    def plane(image: np.ndarray, psf: np.ndarray) -> np.ndarray:
        return restoration.wiener(image, psf, float(balance), clip=False)

    return _deconvolve(y, kernel, border, plane, pad_circular=False)


def richardson_lucy_deconvolve(
    y: Tensor, kernel: Tensor, *, iterations: int = RL_ITERATIONS, border: str = "reflect"
) -> Tensor:
    """Richardson-Lucy deconvolution (``skimage.restoration.richardson_lucy``).

    ``y``: ``(B, C, H, W)`` in [-1, 1]; ``kernel``: ``(kh, kw)`` or ``(B, kh, kw)`` (normalised
    here); ``iterations`` >= 1. Returns the restoration in [-1, 1], like ``y``.
    """
    if isinstance(iterations, bool) or not isinstance(iterations, int) or iterations < 1:
        raise ConfigError(
            f"Richardson-Lucy iterations must be an integer >= 1, got {iterations!r}."
        )

    def plane(image: np.ndarray, psf: np.ndarray) -> np.ndarray:
        return restoration.richardson_lucy(image, psf, num_iter=iterations, clip=False)

    return _deconvolve(y, kernel, border, plane, pad_circular=True)


def classical_metrics(
    y: Tensor, x: Tensor, kernels: Tensor, border: str, use_ssim: bool = True
) -> list[dict[str, dict[str, float | None]]]:
    """Each image's ``wiener`` and ``richardson_lucy`` restoration scored against ``x``.

    ``y``: the measurement as the blurry frame (``(B, C, H, W)`` or flattened, [-1, 1]);
    ``kernels``: ``(B, kh, kw)``, the kernel DDRM uses for each image, so the records compare
    methods given the same kernel. The defaults :data:`WIENER_BALANCE` and
    :data:`RL_ITERATIONS` are used.
    """
    from ddrm_exp.metrics.image import psnr, ssim

    images = y.reshape(x.shape)
    out: list[dict[str, dict[str, float | None]]] = [{} for _ in range(x.shape[0])]
    for key, restored in (
        ("wiener", wiener_deconvolve(images, kernels, border=border)),
        ("richardson_lucy", richardson_lucy_deconvolve(images, kernels, border=border)),
    ):
        ps = psnr(restored, x)
        ss = ssim(restored, x) if use_ssim else [None] * x.shape[0]
        for j in range(x.shape[0]):
            out[j][key] = {"psnr": ps[j], "ssim": ss[j]}
    return out
