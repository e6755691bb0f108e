"""2-D blur kernels: camera-shake motion, Gaussian, box, DDRM's own blurs, files.

Every builder returns a float64 ``(kh, kw)`` tensor that is non-negative and sums to 1; bad
parameters raise :class:`~ddrm_exp.errors.ConfigError`. :func:`kernel2d_from_spec` turns the YAML
schema (``{type: motion, size: 31, intensity: 0.5, seed: 0}``, ...) into a kernel, as
:func:`~ddrm_exp.degradations.kernels.kernel_from_spec` does for 1-D kernels.

Centre conventions. The operators treat index ``(kh//2, kw//2)`` as the kernel's origin (a delta
there is the identity). Motion kernels put their centre of mass exactly at that origin, so they
blur without shifting the image. Gaussian and box kernels are sampled symmetrically about the
geometric centre ``((kh-1)/2, (kw-1)/2)``, like the 1-D builders; for an even side that is half
a pixel before the origin, so an even-sized Gaussian or box also shifts by half a pixel.

Two tools serve blind deblurring (report §5.2-5.3): :func:`rank1_approximation`, the best
separable approximation of an estimated kernel, and :func:`normalized_cross_correlation`, the
shift-invariant kernel similarity that BlindDPS reports.
"""

from __future__ import annotations

import cmath
import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from ddrm_exp.degradations._checks import as_float, as_int
from ddrm_exp.degradations.kernels import gaussian_1d, uniform_1d
from ddrm_exp.errors import ConfigError

__all__ = [
    "DDRM_KERNEL_NAMES",
    "KERNEL2D_TYPES",
    "box_kernel2d",
    "ddrm_kernel2d",
    "gaussian_kernel2d",
    "kernel2d_from_file",
    "kernel2d_from_spec",
    "kernel_center_of_mass",
    "motion_kernel",
    "normalize_kernel2d",
    "normalized_cross_correlation",
    "rank1_approximation",
]

Size2 = int | Sequence[int]
GeneratorLike = torch.Generator | int | None


# ---- helpers -------------------------------------------------------------------------------------
def _size2(size: Any, what: str, minimum: int = 1) -> tuple[int, int]:
    """An int ``s`` (square) or a pair ``(kh, kw)``."""
    if isinstance(size, Sequence) and not isinstance(size, str):
        if len(size) != 2:
            raise ConfigError(f"{what} must be an integer or a pair [kh, kw], got {size!r}.")
        kh, kw = (as_int(v, what, minimum=minimum) for v in size)
        return kh, kw
    s = as_int(size, what, minimum=minimum)
    return s, s


def _as_generator(generator: Any, what: str) -> torch.Generator | None:
    if generator is None or isinstance(generator, torch.Generator):
        return generator
    seed = as_int(generator, f"{what} seed", minimum=0)
    return torch.Generator().manual_seed(seed)


def _to_float64(values: Any) -> Tensor:
    if isinstance(values, Tensor):
        return values.detach().cpu().to(torch.float64)
    return torch.from_numpy(np.array(values, dtype=np.float64))


def normalize_kernel2d(kernel: Any, what: str = "kernel") -> Tensor:
    """``kernel`` as a float64 ``(kh, kw)`` tensor divided by its sum.

    It must be 2-D, finite, non-negative and not all zero; anything else is a ConfigError.
    """
    try:
        k = _to_float64(kernel)
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"{what} must be a 2-D array of numbers ({exc}).") from None
    if k.dim() != 2 or k.numel() == 0:
        raise ConfigError(f"{what} must be a non-empty 2-D array, got shape {tuple(k.shape)}.")
    if not bool(torch.isfinite(k).all()):
        raise ConfigError(f"{what} has non-finite values (NaN or inf).")
    if bool((k < 0).any()):
        raise ConfigError(
            f"{what} has negative values (min {float(k.min()):.3g}); a blur kernel must be "
            "non-negative."
        )
    total = float(k.sum())
    if total <= 0:
        raise ConfigError(f"{what} is all zero; a blur kernel needs some positive weight.")
    return k / total


def kernel_center_of_mass(kernel: Tensor) -> tuple[float, float]:
    """The (row, column) centre of mass of a non-negative kernel, in index units."""
    k = kernel.to(torch.float64)
    total = k.sum()
    rows = torch.arange(k.shape[0], dtype=torch.float64)
    cols = torch.arange(k.shape[1], dtype=torch.float64)
    return float((k.sum(1) * rows).sum() / total), float((k.sum(0) * cols).sum() / total)


# ---- motion blur ---------------------------------------------------------------------------------
# Boracchi & Foi's reference discretisation: 2000 samples along a path of 60 pixels (their
# 64-pixel canvas). Paths are generated in that frame and then scaled, so the kernel's shape
# statistics do not depend on the kernel size, and ``num_samples`` only refines the sampling.
_REF_SAMPLES = 2000
_REF_LENGTH = 60.0


def _camera_trajectory(
    num_samples: int, anxiety: float, generator: torch.Generator | None
) -> Tensor:
    """A 2-D camera path of ``num_samples`` points and arc length ``_REF_LENGTH``.

    After Boracchi & Foi (2012): a particle moves at constant speed; at each step its velocity
    is perturbed by Gaussian shake, pulled back towards the start (drift that keeps the path
    compact), and, rarely, jerked roughly backwards (impulsive shake), all scaled by
    ``anxiety``. The per-path constants (pull, jerk probability, shake strength, initial
    direction) are drawn too, so one generator gives a varied family of paths. Every random
    number is drawn up front, so the generator advances by the same amount for any parameters.

    The per-step terms are rescaled from the reference step count (drift and jerk probability
    in proportion, shake as a Brownian increment, with the square root), so that changing
    ``num_samples`` changes the discretisation, not the kind of path.

    Returns ``(num_samples, 2)`` positions as (row, column), in reference pixels.
    """
    steps = num_samples - 1
    ratio = (_REF_SAMPLES - 1) / steps
    consts = torch.rand(4, generator=generator, dtype=torch.float64).tolist()
    jerk_u = torch.rand(steps, generator=generator, dtype=torch.float64).tolist()
    turn_u = torch.rand(steps, generator=generator, dtype=torch.float64).tolist()
    shake_n = torch.randn(steps, 2, generator=generator, dtype=torch.float64).tolist()
    pull = 0.7 * consts[0] * anxiety * ratio
    jerk_prob = 0.2 * consts[1] * anxiety * ratio
    shake = 10.0 * consts[2] * anxiety * math.sqrt(ratio)
    speed = _REF_LENGTH / steps
    v = cmath.exp(2j * math.pi * consts[3]) * speed
    pos = 0j
    path = [pos]
    for t in range(steps):
        dv = 0j
        if jerk_u[t] < jerk_prob:
            dv = 2.0 * v * cmath.exp(1j * (math.pi + turn_u[t] - 0.5))
        # Relative to the speed, as in B&F: the drift pulls harder the further the camera is.
        dv += (shake * complex(shake_n[t][0], shake_n[t][1]) - pull * pos) * speed
        new_v = v + dv
        # Speed is constant along the path: only the direction is random. A perturbation that
        # exactly cancels v (measure zero) keeps the old direction.
        mag = abs(new_v)
        if mag > 0:
            v = new_v * (speed / mag)
        pos += v
        path.append(pos)
    z = torch.tensor(path, dtype=torch.complex128)
    # Complex x + iy with y pointing down maps straight onto (row, column) = (imag, real).
    return torch.stack([z.imag, z.real], dim=1)


def _splat_bilinear(points: Tensor, shape: tuple[int, int]) -> Tensor:
    """Accumulate unit masses at sub-pixel ``points`` (N, 2) into a ``shape`` grid, bilinearly.

    Points must lie in ``[0, kh-1] x [0, kw-1]``; each spreads over its four neighbours with
    weights that preserve its mass and its position (first moment) exactly.
    """
    out = torch.zeros(shape, dtype=torch.float64)
    lo = []
    frac = []
    for axis, size in enumerate(shape):
        p = points[:, axis]
        if size == 1:
            lo.append(torch.zeros_like(p, dtype=torch.long))
            frac.append(torch.zeros_like(p))
            continue
        i0 = p.floor().clamp(0, size - 2)
        lo.append(i0.long())
        frac.append(p - i0)
    (r0, c0), (fr, fc) = lo, frac
    for dr, wr in ((0, 1.0 - fr), (1, fr)):
        for dc, wc in ((0, 1.0 - fc), (1, fc)):
            rr = (r0 + dr).clamp(max=shape[0] - 1)
            cc = (c0 + dc).clamp(max=shape[1] - 1)
            out.index_put_((rr, cc), wr * wc, accumulate=True)
    return out


def motion_kernel(
    size: Size2 = 31,
    intensity: float = 0.5,
    *,
    length: float | None = None,
    num_samples: int = 2000,
    exposure: float = 1.0,
    generator: GeneratorLike = None,
) -> Tensor:
    """Uniform motion blur from a random camera-shake trajectory (Boracchi & Foi 2012).

    This is the generator that Schuler et al. and DeblurGAN adopted: a 2-D random walk with
    inertia, Gaussian and impulsive shake and a drift back to the start, sampled densely at
    ``num_samples`` points. The first ``exposure`` fraction of the path (the shutter's open
    time; B&F use 1/100 .. 1) is rasterised with bilinear sub-pixel splatting, placed so its
    centre of mass is exactly the kernel origin ``(kh//2, kw//2)``, and normalised to sum 1.

    ``length=None`` (default) scales the path to the largest size that fits in the kernel
    around that centre, so ``size`` is the extent of the blur. A number is the path's arc
    length in pixels; a path that long that would not fit is shrunk about its centre until it
    does (nothing is ever cut off).

    ``intensity`` in [0, 1] is B&F's anxiety divided by 0.1, the maximum DeblurGAN draws it
    from: 0 is a straight linear-motion blur in a random direction; the path gets more curved,
    jittery and tangled as it grows.
    ``generator``: a ``torch.Generator``, an int seed, or ``None`` for torch's global generator;
    the same seed gives the same kernel.
    """
    kh, kw = _size2(size, "Motion kernel size", minimum=3)
    intensity = as_float(intensity, "Motion kernel intensity", low=0.0, high=1.0)
    num_samples = as_int(num_samples, "Motion kernel num_samples", minimum=2)
    exposure = as_float(exposure, "Motion kernel exposure", low=0.0, high=1.0, low_open=True)
    if length is not None:
        length = as_float(length, "Motion kernel length", low=0.0, low_open=True)
    gen = _as_generator(generator, "Motion kernel")

    path = _camera_trajectory(num_samples, 0.1 * intensity, gen)
    path = path[: max(2, math.ceil(exposure * num_samples))]

    centre = torch.tensor([kh // 2, kw // 2], dtype=torch.float64)
    far = torch.tensor([kh - 1, kw - 1], dtype=torch.float64)
    offsets = path - path.mean(dim=0)
    lo, hi = offsets.min(dim=0).values, offsets.max(dim=0).values
    fit = math.inf
    for axis in range(2):
        if lo[axis] < 0:
            fit = min(fit, float(centre[axis] / -lo[axis]))
        if hi[axis] > 0:
            fit = min(fit, float((far[axis] - centre[axis]) / hi[axis]))
    scale = fit if length is None else min(fit, length / _REF_LENGTH)
    # Scaling about the centre of mass keeps it at the origin; the clamp only removes
    # round-off past the border.
    points = (centre + scale * offsets).clamp(min=torch.zeros(2, dtype=torch.float64))
    points = points.clamp(max=far)
    kernel = _splat_bilinear(points, (kh, kw))
    return kernel / kernel.sum()


# ---- analytic kernels ----------------------------------------------------------------------------
def gaussian_kernel2d(
    size: Size2, sigma_x: float, sigma_y: float | None = None, theta: float = 0.0
) -> Tensor:
    """Sampled 2-D Gaussian, normalised to sum 1.

    ``sigma_x`` is the standard deviation (pixels) along the axis at angle ``theta`` degrees
    counter-clockwise from the image's horizontal (width) axis, as the image is displayed;
    ``sigma_y`` (default ``sigma_x``: isotropic) along the perpendicular axis. Taps sit at
    offsets ``-(k-1)/2 .. (k-1)/2`` from the geometric centre, as :func:`gaussian_1d`, so the
    isotropic kernel is the outer product of two 1-D ones.
    """
    kh, kw = _size2(size, "Gaussian kernel size")
    sigma_x = as_float(sigma_x, "Gaussian kernel sigma_x", low=0.0, low_open=True)
    sigma_y = sigma_x if sigma_y is None else sigma_y
    sigma_y = as_float(sigma_y, "Gaussian kernel sigma_y", low=0.0, low_open=True)
    theta = as_float(theta, "Gaussian kernel theta (degrees)")
    rows = torch.arange(kh, dtype=torch.float64) - (kh - 1) / 2
    cols = torch.arange(kw, dtype=torch.float64) - (kw - 1) / 2
    x = cols.view(1, kw)
    y = -rows.view(kh, 1)  # rows grow downwards; the angle is measured with y pointing up
    rad = math.radians(theta)
    along = math.cos(rad) * x + math.sin(rad) * y
    across = -math.sin(rad) * x + math.cos(rad) * y
    k = torch.exp(-0.5 * ((along / sigma_x) ** 2 + (across / sigma_y) ** 2))
    return k / k.sum()


def box_kernel2d(size: Size2) -> Tensor:
    """``kh x kw`` box of ``1/(kh*kw)``."""
    kh, kw = _size2(size, "Box kernel size")
    return torch.full((kh, kw), 1.0 / (kh * kw), dtype=torch.float64)


DDRM_KERNEL_NAMES = ("deblur_uniform", "deblur_gauss", "deblur_aniso")


def ddrm_kernel2d(name: str) -> Tensor:
    """DDRM's separable blurs as 2-D kernels ``K[a, b] = k_rows[a] * k_cols[b]``.

    ``a`` runs along the height, ``b`` along the width, matching ``conf/degradation``:
    ``deblur_uniform`` (alias ``deblur_uni``) is the 9x9 box; ``deblur_gauss`` 5 taps of sigma
    10 on both axes; ``deblur_aniso`` 9 taps with sigma 1 along the height (rows) and sigma 20
    along the width (columns), i.e. a mostly horizontal blur.
    """
    key = "deblur_uniform" if name == "deblur_uni" else name
    if key == "deblur_uniform":
        k_rows = k_cols = uniform_1d(9)
    elif key == "deblur_gauss":
        k_rows = k_cols = gaussian_1d(5, 10.0)
    elif key == "deblur_aniso":
        k_rows, k_cols = gaussian_1d(9, 1.0), gaussian_1d(9, 20.0)
    else:
        raise ConfigError(
            f"Unknown DDRM kernel {name!r}; valid names are deblur_uniform (or deblur_uni), "
            "deblur_gauss, deblur_aniso."
        )
    k = torch.outer(k_rows, k_cols)
    return k / k.sum()


def kernel2d_from_file(path: str | Path) -> Tensor:
    """A kernel stored as ``.npy`` (2-D array) or as an image (PNG, ...; colour is averaged).

    Values must be non-negative and not all zero; the result is normalised to sum 1. A relative
    path is taken from the current directory (the runner does not change it).
    """
    p = Path(str(path)).expanduser()
    if not p.is_file():
        raise ConfigError(
            f"Kernel file {str(p)!r} does not exist (relative paths are taken from "
            f"{Path.cwd()}); give the path of a .npy array or a grayscale image."
        )
    try:
        if p.suffix.lower() == ".npy":
            arr = np.load(p, allow_pickle=False)
        else:
            from PIL import Image

            with Image.open(p) as img:
                if img.mode not in ("L", "LA", "I", "I;16", "F", "RGB", "RGBA"):
                    img = img.convert("RGB")
                arr = np.asarray(img)
            if arr.ndim == 3:
                if arr.shape[2] in (2, 4):  # drop the alpha channel
                    arr = arr[..., :-1]
                arr = arr.astype(np.float64).mean(axis=2)
    except ConfigError:
        raise
    except Exception as exc:  # noqa: BLE001 - any reader failure is a bad user file
        raise ConfigError(f"Could not read the kernel file {str(p)!r}: {exc}") from None
    return normalize_kernel2d(np.asarray(arr, dtype=np.float64), f"The kernel in {str(p)!r}")


# ---- from a config spec --------------------------------------------------------------------------
KERNEL2D_TYPES: dict[str, tuple[tuple[str, ...], tuple[str, ...]]] = {
    # type: (required keys, optional keys)
    "motion": (("size",), ("intensity", "length", "num_samples", "exposure", "seed")),
    "gaussian": (("size", "sigma"), ()),
    "gaussian_aniso": (("size", "sigma_x", "sigma_y"), ("theta",)),
    "box": (("size",), ()),
    "ddrm": (("name",), ()),
    "file": (("path",), ()),
}


def kernel2d_from_spec(
    spec: Any,
    generator: GeneratorLike = None,
    what: str = "kernel",
    *,
    ignore_other_types: bool = False,
) -> Tensor:
    """Build a 2-D kernel from its config mapping.

    Schemas: ``{type: motion, size: 31, intensity: 0.5, seed: 0}`` (optional ``length``,
    ``num_samples``, ``exposure``), ``{type: gaussian, size: 21, sigma: 3}``, ``{type:
    gaussian_aniso, size: 21, sigma_x: 4, sigma_y: 1, theta: 30}``, ``{type: box, size: 9}``
    (``size`` may be ``[kh, kw]`` everywhere), ``{type: ddrm, name: deblur_gauss}``, ``{type:
    file, path: k.npy}``. An explicit 2-D array (nested list, ndarray, tensor) is accepted too and
    normalised. ``generator`` (a ``torch.Generator`` or seed) drives a motion kernel instead of
    the spec's ``seed`` when given, so a caller can draw a different kernel per image from one
    spec; with neither, the motion kernel uses seed 0.

    A key that no kernel type knows is an error. A key of another type is an error too, unless
    ``ignore_other_types``: then it is ignored, so one config node can carry the parameters of
    every type and the type can be switched with a single override (``blur2d.yaml`` does this).
    """
    if isinstance(spec, Tensor | np.ndarray) or (
        isinstance(spec, Sequence) and not isinstance(spec, str)
    ):
        return normalize_kernel2d(spec, what)
    if not isinstance(spec, Mapping):
        raise ConfigError(
            f"{what} must be a mapping like {{type: motion, size: 31, intensity: 0.5, seed: 0}} "
            f"or a 2-D array of weights, got {spec!r}."
        )
    params = dict(spec)
    kind = params.pop("type", None)
    if kind not in KERNEL2D_TYPES:
        raise ConfigError(
            f"{what}: unknown 2-D kernel type {kind!r}; valid types are {sorted(KERNEL2D_TYPES)}."
        )
    required, optional = KERNEL2D_TYPES[kind]
    own = set(required) | set(optional)
    known = {key for req, opt in KERNEL2D_TYPES.values() for key in req + opt}
    unknown = set(params) - (known if ignore_other_types else own)
    if unknown:
        raise ConfigError(
            f"{what}: unknown key(s) {sorted(unknown)} for a {kind} kernel; valid keys are "
            f"{list(required + optional)}."
        )
    params = {k: v for k, v in params.items() if k in own}
    missing = [k for k in required if params.get(k) is None]
    if missing:
        raise ConfigError(f"{what}: a {kind} kernel needs the key(s) {missing}.")
    if kind == "motion":
        seed = params.pop("seed", None)
        gen = generator if generator is not None else (0 if seed is None else seed)
        optional_args = {k: v for k, v in params.items() if k != "size" and v is not None}
        return motion_kernel(params["size"], generator=gen, **optional_args)
    if kind == "gaussian":
        return gaussian_kernel2d(params["size"], params["sigma"])
    if kind == "gaussian_aniso":
        return gaussian_kernel2d(
            params["size"], params["sigma_x"], params["sigma_y"], params.get("theta") or 0.0
        )
    if kind == "box":
        return box_kernel2d(params["size"])
    if kind == "ddrm":
        return ddrm_kernel2d(str(params["name"]))
    return kernel2d_from_file(params["path"])


# ---- analysis ------------------------------------------------------------------------------------
def rank1_approximation(kernel: Any) -> tuple[Tensor, Tensor, float]:
    """Best separable approximation ``kernel ≈ outer(k_rows, k_cols)`` (report §5.3).

    The leading singular pair of the kernel (normalised to sum 1) is taken, its sign chosen so
    both factors sum positive, negative entries (round-off or estimation noise) clipped to 0,
    and each 1-D factor normalised to sum 1; ``k_rows`` blurs along the height, ``k_cols`` along
    the width. ``rel_error`` is ``‖K - outer(k_rows, k_cols)‖_F / ‖K‖_F`` for the normalised
    ``K``: the error of what is returned, 0 (to round-off) for a separable kernel.
    """
    k = _to_float64(kernel)
    if k.dim() != 2 or k.numel() == 0 or not bool(torch.isfinite(k).all()):
        raise ConfigError(f"rank1_approximation needs a finite 2-D kernel, got {tuple(k.shape)}.")
    total = float(k.sum())
    if abs(total) < 1e-300:
        raise ConfigError("rank1_approximation needs a kernel with a non-zero sum.")
    k = k / total
    u, s, vh = torch.linalg.svd(k)
    col, row = u[:, 0] * s[0].sqrt(), vh[0] * s[0].sqrt()
    if float(col.sum()) < 0:
        col, row = -col, -row
    k_rows, k_cols = col.clamp_min(0), row.clamp_min(0)
    if float(k_rows.sum()) <= 0 or float(k_cols.sum()) <= 0:
        raise ConfigError("The kernel's leading singular vectors have no positive part.")
    k_rows, k_cols = k_rows / k_rows.sum(), k_cols / k_cols.sum()
    err = float(torch.linalg.norm(k - torch.outer(k_rows, k_cols)) / torch.linalg.norm(k))
    return k_rows, k_cols, err


def normalized_cross_correlation(k_est: Any, k_true: Any) -> float:
    """Max over all 2-D shifts of ``<k_est shifted, k_true> / (‖k_est‖ ‖k_true‖)``.

    The kernel-similarity measure BlindDPS reports (not mean-subtracted): 1 when the estimate
    equals the true kernel up to a shift and a positive scale, for kernels of any two sizes
    (every overlap is tried, with zeros outside each kernel).
    """
    a, b = _to_float64(k_est), _to_float64(k_true)
    if a.dim() != 2 or b.dim() != 2:
        raise ConfigError("normalized_cross_correlation needs two 2-D kernels.")
    na, nb = torch.linalg.norm(a), torch.linalg.norm(b)
    if float(na) == 0 or float(nb) == 0:
        raise ConfigError("normalized_cross_correlation is undefined for an all-zero kernel.")
    corr = F.conv2d(b[None, None], a[None, None], padding=(a.shape[0] - 1, a.shape[1] - 1))
    return float(corr.max() / (na * nb))
