"""A weight-free diffusion prior: a stationary Gaussian image model with a closed-form denoiser.

Model: ``x = μ + P w``. ``μ`` (3,) is the mean colour, ``P`` (3, 3) an orthogonal colour
decorrelation (PCA of pixel colours) and each decorrelated channel ``w_c`` an independent
zero-mean Gaussian field with *circular* covariance, i.e. diagonal in the unitary 2-D DFT with
power ``S_c(u, v) > 0``. Everything is fitted to the ``train`` split of the scikit-image sample
photos (never the ``heldout`` evaluation photos) at the size the prior is used at.

Because the model is Gaussian, the MMSE denoiser is exact and cheap (one FFT pair per image),

    E[x_0 | x_t] = μ + P F⁻¹[ S / (S + σ_t²) · F(Pᵀ(x_t/√ᾱ_t - μ)) ],   σ_t² = (1 - ᾱ_t)/ᾱ_t,

so it serves both as the default prior (the tool runs end to end without downloading weights)
and as an oracle: a sampler driven by it can be checked against closed-form posteriors.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
from PIL import Image
from torch import Tensor, nn

from ddrm_exp.datasets.samples import load_sample_photos, split_names
from ddrm_exp.datasets.transforms import Size, as_size, resize_center_crop
from ddrm_exp.errors import ConfigError
from ddrm_exp.models.base import DiffusionPrior
from ddrm_exp.models.schedule import Schedule

log = logging.getLogger(__name__)

DEFAULT_NUM_CROPS = 24
DEFAULT_CROP_SCALES: tuple[float, ...] = (0.7, 0.5, 0.35)
DEFAULT_SMOOTHING = 1.0
DEFAULT_SPECTRUM_FLOOR = 1e-6


@dataclass(frozen=True)
class GaussianImageModel:
    """Fitted parameters, float64, read-only (shared by the in-process cache)."""

    mean: np.ndarray  # (3,)
    colour_basis: np.ndarray  # (3, 3), orthogonal; column c is the colour axis of channel c
    spectrum: np.ndarray  # (3, H, W), power per unitary-DFT frequency, > 0
    image_size: Size
    split: str
    num_images: int  # number of crops the periodograms were averaged over


def _training_crops(
    photos: Sequence[np.ndarray],
    size: Size,
    rng: np.random.Generator,
    num_crops: int,
    crop_scales: Sequence[float],
) -> np.ndarray:
    """(N, H, W, 3) uint8: per photo its centre crop plus ``num_crops`` random
    crops at several scales, all resized to ``size``.

    Several scales matter because the prior is used at one size while the photos are far
    larger; natural-image statistics are roughly scale invariant, so mixing scales gives a
    spectrum that is not tied to one arbitrary framing of each photo.
    """
    th, tw = size
    out: list[np.ndarray] = []
    for photo in photos:
        img = Image.fromarray(np.asarray(photo, dtype=np.uint8))
        out.append(np.asarray(resize_center_crop(img, size)))
        h, w = photo.shape[:2]
        largest = min(h / th, w / tw)  # largest box of the target aspect inside the photo
        for k in range(num_crops):
            scale = float(crop_scales[k % len(crop_scales)])
            # Never crop below the target size when the photo allows it: upsampled crops would
            # put spuriously little power at high frequencies.
            factor = min(largest, max(1.0, largest * scale))
            ch, cw = th * factor, tw * factor
            y0 = rng.uniform(0.0, h - ch)
            x0 = rng.uniform(0.0, w - cw)
            crop = img.resize((tw, th), Image.Resampling.BILINEAR, box=(x0, y0, x0 + cw, y0 + ch))
            out.append(np.asarray(crop))
    return np.stack(out)


def _reflect(s: np.ndarray, axis: int) -> np.ndarray:
    """``s`` at frequency ``-k`` along ``axis`` (DFT index reflection ``k -> -k mod N``)."""
    return np.roll(np.flip(s, axis=axis), 1, axis=axis)


def _smooth_spectrum(s: np.ndarray, strength: float) -> np.ndarray:
    """Average each frequency with its 3x3 neighbours, more so the higher the frequency.

    Near DC the spectrum of natural images falls off like 1/f², so averaging neighbours there
    would move power by large factors; far from DC it is flat and noisy, so that is where the
    variance reduction is worth having. DC itself is neither smoothed nor used as a neighbour.
    """
    if strength <= 0.0:
        return s
    h, w = s.shape[-2:]
    dc = np.zeros((h, w))
    dc[0, 0] = 1.0
    keep = 1.0 - dc
    num = np.zeros_like(s)
    den = np.zeros((h, w))
    for dy, wy in ((-1, 1.0), (0, 2.0), (1, 1.0)):
        for dx, wx in ((-1, 1.0), (0, 2.0), (1, 1.0)):
            shifted_mask = np.roll(keep, (dy, dx), axis=(0, 1))
            num += wy * wx * np.roll(s * keep, (dy, dx), axis=(-2, -1))
            den += wy * wx * shifted_mask
    avg = num / den
    fy = np.fft.fftfreq(h) * h
    fx = np.fft.fftfreq(w) * w
    radius = np.sqrt(fy[:, None] ** 2 + fx[None, :] ** 2)
    blend = strength * np.clip((radius - 1.5) / 3.0, 0.0, 1.0)
    out = (1.0 - blend) * s + blend * avg
    out[..., 0, 0] = s[..., 0, 0]
    return out


@functools.lru_cache(maxsize=32)
def _fit_cached(
    size: Size,
    split: str,
    seed: int,
    num_crops: int,
    crop_scales: tuple[float, ...],
    smoothing: float,
    spectrum_floor: float,
) -> GaussianImageModel:
    photos = [arr for _, arr in load_sample_photos(split)]
    rng = np.random.default_rng(seed)
    crops = _training_crops(photos, size, rng, num_crops, crop_scales)  # (N, H, W, 3) uint8
    h, w = size
    # Chunked so that fitting at 256x256 stays at tens of MB and a couple of seconds.
    chunk = max(1, (1 << 20) // (h * w))

    def pixels(i: int) -> Tensor:
        return torch.from_numpy(crops[i : i + chunk]).to(torch.float64) / 127.5 - 1.0

    total = torch.zeros(3, dtype=torch.float64)
    second = torch.zeros(3, 3, dtype=torch.float64)
    for i in range(0, len(crops), chunk):
        flat = pixels(i).reshape(-1, 3)
        total += flat.sum(dim=0)
        second += flat.T @ flat
    count = float(len(crops) * h * w)
    mean_t = total / count
    cov = (second / count - torch.outer(mean_t, mean_t)).numpy()
    mean = mean_t.numpy()
    evals, evecs = np.linalg.eigh(cov)
    basis = evecs[:, np.argsort(evals)[::-1]]
    # eigh fixes each axis only up to sign; pin it so the fit is reproducible across LAPACKs.
    signs = np.sign(basis[np.argmax(np.abs(basis), axis=0), np.arange(3)])
    basis = np.ascontiguousarray(basis * signs[None, :])

    basis_t = torch.from_numpy(basis)
    power = torch.zeros(3, h, w // 2 + 1, dtype=torch.float64)
    for i in range(0, len(crops), chunk):
        coeff = torch.einsum("nhwj,jc->nchw", pixels(i) - mean_t, basis_t)
        power += (torch.fft.rfft2(coeff, norm="ortho").abs() ** 2).sum(dim=0)
    half = (power / len(crops)).numpy()
    # Rebuild the full grid from the half one by S(u, v) = S(-u, -v) (real crops).
    spectrum = np.empty((3, h, w))
    spectrum[..., : w // 2 + 1] = half
    rest = np.arange(w // 2 + 1, w)
    spectrum[..., rest] = half[:, (-np.arange(h)) % h][..., w - rest]
    # Flip augmentation, done exactly: a flipped crop's periodogram is the reflected one.
    # Averaging all four reflections also enforces S(-k) = S(k), which keeps the circular
    # covariance real so that taking the real part after the inverse FFT is exact.
    spectrum = 0.25 * (
        spectrum
        + _reflect(spectrum, -1)
        + _reflect(spectrum, -2)
        + _reflect(_reflect(spectrum, -1), -2)
    )
    spectrum = _smooth_spectrum(spectrum, smoothing)
    spectrum = np.maximum(spectrum, spectrum_floor)

    for arr in (mean, basis, spectrum):
        arr.setflags(write=False)
    return GaussianImageModel(
        mean=mean,
        colour_basis=basis,
        spectrum=spectrum,
        image_size=size,
        split=split,
        num_images=int(crops.shape[0]),
    )


def fit_gaussian_image_model(
    image_size: int | Sequence[int] = 64,
    split: str = "train",
    seed: int = 0,
    num_crops: int = DEFAULT_NUM_CROPS,
    crop_scales: Sequence[float] = DEFAULT_CROP_SCALES,
    smoothing: float = DEFAULT_SMOOTHING,
    spectrum_floor: float = DEFAULT_SPECTRUM_FLOOR,
) -> GaussianImageModel:
    """Fit (μ, P, S) to the sample photos of ``split`` at ``image_size``; deterministic in
    ``seed`` and cached per argument set for the life of the process."""
    size = as_size(image_size)
    split_names(split)  # a ConfigError listing the splits, before any work
    if split != "train":
        log.warning(
            "Fitting the Gaussian prior on split %r: results on the heldout sample photos are "
            "no longer held out.",
            split,
        )
    if int(num_crops) < 0:
        raise ConfigError(f"model.num_crops={num_crops} must be >= 0.")
    scales = tuple(float(s) for s in crop_scales)
    if not scales or any(not 0.0 < s <= 1.0 for s in scales):
        raise ConfigError(
            f"model.crop_scales={list(scales)} must be a non-empty list of numbers in (0, 1]."
        )
    if not 0.0 <= float(smoothing) <= 1.0:
        raise ConfigError(f"model.smoothing={smoothing} must be in [0, 1].")
    if not float(spectrum_floor) > 0.0:
        raise ConfigError(f"model.spectrum_floor={spectrum_floor} must be > 0.")
    return _fit_cached(
        size, split, int(seed), int(num_crops), scales, float(smoothing), float(spectrum_floor)
    )


def _float64(value: Tensor | np.ndarray) -> Tensor:
    """A private float64 CPU copy (the fitted arrays are read-only and shared)."""
    if isinstance(value, Tensor):
        return value.detach().to(device="cpu", dtype=torch.float64).clone()
    return torch.tensor(np.array(value, dtype=np.float64))


class GaussianEpsNet(nn.Module):
    """ε-prediction network whose denoiser is the exact posterior mean of the Gaussian model.

    Buffers are float32 and the computation runs in float32 on the input's device; the
    result is returned in the input's dtype.
    """

    def __init__(
        self,
        mean: Tensor | np.ndarray,
        colour_basis: Tensor | np.ndarray,
        spectrum: Tensor | np.ndarray,
        alphas_cumprod: Tensor | np.ndarray,
    ) -> None:
        super().__init__()
        spec = _float64(spectrum)
        if spec.ndim != 3 or spec.shape[0] != 3:
            raise ValueError(f"spectrum must have shape (3, H, W), got {tuple(spec.shape)}")
        if not bool((spec > 0).all()):
            raise ValueError("spectrum must be strictly positive")
        ab = _float64(alphas_cumprod)
        f32 = torch.float32
        self.register_buffer("mean", _float64(mean).to(f32).reshape(3))
        self.register_buffer("colour_basis", _float64(colour_basis).to(f32).reshape(3, 3))
        self.register_buffer("spectrum", spec.to(f32))
        self.register_buffer("alphas_cumprod", ab.to(f32))
        # Derived in float64: 1 - ᾱ_t at t = 0 is ~1e-4, where float32 subtraction would
        # already cost three or four significant digits of σ_t.
        self.register_buffer("sqrt_alphas_cumprod", ab.sqrt().to(f32))
        self.register_buffer("sqrt_one_minus_alphas_cumprod", (1.0 - ab).sqrt().to(f32))
        self.mean: Tensor
        self.colour_basis: Tensor
        self.spectrum: Tensor
        self.alphas_cumprod: Tensor
        self.sqrt_alphas_cumprod: Tensor
        self.sqrt_one_minus_alphas_cumprod: Tensor

    @property
    def image_size(self) -> Size:
        return (int(self.spectrum.shape[-2]), int(self.spectrum.shape[-1]))

    def _check(self, x_t: Tensor) -> None:
        if x_t.ndim != 4 or x_t.shape[1] != 3 or tuple(x_t.shape[-2:]) != self.image_size:
            h, w = self.image_size
            raise ValueError(
                f"GaussianEpsNet was fitted for images (B, 3, {h}, {w}) but got "
                f"{tuple(x_t.shape)}; build the prior with image_size matching the data."
            )

    def _coefficients(
        self, t: Tensor | float | int, batch: int, device: torch.device
    ) -> tuple[Tensor, Tensor]:
        """(√ᾱ_t, √(1-ᾱ_t)), each (B, 1, 1, 1) on ``device``, for integer-valued ``t``."""
        tt = torch.as_tensor(t, device=self.alphas_cumprod.device)
        if tt.ndim == 0:
            tt = tt.expand(batch)
        tt = tt.reshape(-1)
        if tt.shape[0] != batch:
            raise ValueError(f"t has {tt.shape[0]} entries for a batch of {batch}")
        idx = tt.long()
        n = self.alphas_cumprod.shape[0]
        if bool((idx < 0).any()) or bool((idx >= n).any()):
            raise ValueError(f"timesteps must lie in [0, {n - 1}], got {tt.tolist()}")
        a = self.sqrt_alphas_cumprod[idx].reshape(-1, 1, 1, 1)
        b = self.sqrt_one_minus_alphas_cumprod[idx].reshape(-1, 1, 1, 1)
        return a.to(device), b.to(device)

    def _posterior_mean(self, x: Tensor, sa: Tensor, sb: Tensor) -> Tensor:
        h, w = self.image_size
        # No-ops when the module already sits on the input's device (the normal case).
        mean = self.mean.to(x.device).reshape(1, 3, 1, 1)
        basis = self.colour_basis.to(x.device)
        spec = self.spectrum[..., : w // 2 + 1].to(x.device)
        sigma2 = (sb / sa) ** 2  # (B, 1, 1, 1)
        coeff = torch.einsum("bjhw,jc->bchw", x / sa - mean, basis)
        gain = spec / (spec + sigma2)  # (B, 3, H, W//2+1), real and even in frequency
        coeff = torch.fft.irfft2(gain * torch.fft.rfft2(coeff), s=(h, w))
        return torch.einsum("bchw,jc->bjhw", coeff, basis) + mean

    def posterior_mean(self, x_t: Tensor, t: Tensor | float | int) -> Tensor:
        """E[x_0 | x_t] under the model, (B, 3, H, W), in ``x_t``'s dtype."""
        self._check(x_t)
        x = x_t.to(torch.float32)
        sa, sb = self._coefficients(t, x.shape[0], x.device)
        return self._posterior_mean(x, sa, sb).to(x_t.dtype)

    def forward(self, x_t: Tensor, t: Tensor | float | int) -> Tensor:
        """ε̂ = (x_t - √ᾱ_t E[x_0|x_t]) / √(1-ᾱ_t), the ε that makes the sampler's x̂_0 exact."""
        self._check(x_t)
        x = x_t.to(torch.float32)
        sa, sb = self._coefficients(t, x.shape[0], x.device)
        x0 = self._posterior_mean(x, sa, sb)
        return ((x - sa * x0) / sb).to(x_t.dtype)

    def sample_prior(self, n: int, generator: torch.Generator | None = None) -> Tensor:
        """``n`` exact draws from the Gaussian model, (n, 3, H, W) float32 (not clipped)."""
        h, w = self.image_size
        dev = self.spectrum.device
        z = torch.randn((n, 3, h, w), generator=generator, device=dev, dtype=torch.float32)
        # Unitary FFT of white noise is white; colouring by √S gives covariance F^H diag(S) F.
        amplitude = self.spectrum[..., : w // 2 + 1].sqrt()
        coeff = torch.fft.irfft2(amplitude * torch.fft.rfft2(z), s=(h, w))
        x = torch.einsum("bchw,jc->bjhw", coeff, self.colour_basis)
        return x + self.mean.reshape(1, 3, 1, 1)


def build_gaussian_prior(
    image_size: int | Sequence[int] = 64,
    fit_split: str = "train",
    seed: int = 0,
    num_crops: int = DEFAULT_NUM_CROPS,
    crop_scales: Sequence[float] = DEFAULT_CROP_SCALES,
    smoothing: float = DEFAULT_SMOOTHING,
    spectrum_floor: float = DEFAULT_SPECTRUM_FLOOR,
    **_: object,
) -> DiffusionPrior:
    """The Gaussian prior as a :class:`DiffusionPrior` with the linear DDPM schedule.

    Extra keyword arguments (other model keys a runner may pass) are ignored.
    """
    size = as_size(image_size)
    model = fit_gaussian_image_model(
        size, fit_split, seed, num_crops, crop_scales, smoothing, spectrum_floor
    )
    schedule = Schedule.linear()
    net = GaussianEpsNet(model.mean, model.colour_basis, model.spectrum, schedule.alphas_cumprod)
    return DiffusionPrior(net, schedule, size, channels=3, name="gaussian")
