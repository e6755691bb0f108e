"""1-D blur and resampling kernels, kept apart from the operators that use them.

The official DDRM code builds its kernels inline in ``main.py``; here they are small pure
functions (always float64, so SVDs built from them are accurate) plus :func:`kernel_from_spec`,
which turns the YAML schema ``{type: gaussian, size: 5, sigma: 10}`` into a tensor. Later
operators (2-D kernels, FFT blurs, per-image kernels) are meant to add their builders here.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import torch
from torch import Tensor

from ddrm_exp.degradations._checks import as_float, as_int
from ddrm_exp.errors import ConfigError

__all__ = [
    "KERNEL_TYPES",
    "bicubic_1d",
    "gaussian_1d",
    "keys_cubic",
    "kernel_from_spec",
    "uniform_1d",
]


def uniform_1d(size: int) -> Tensor:
    """Box kernel: ``size`` taps of ``1/size`` (official ``deblur_uni`` uses ``size=9``)."""
    size = as_int(size, "Uniform kernel size", minimum=1)
    return torch.full((size,), 1.0 / size, dtype=torch.float64)


def gaussian_1d(size: int, sigma: float) -> Tensor:
    """Sampled Gaussian at ``x = -(size-1)/2 .. (size-1)/2``, normalised to sum 1.

    For odd ``size`` the taps sit at integers, as in the official ``deblur_gauss`` (5 taps,
    ``sigma=10``) and ``deblur_aniso`` (9 taps, ``sigma=1`` and ``sigma=20``).
    """
    size = as_int(size, "Gaussian kernel size", minimum=1)
    sigma = as_float(sigma, "Gaussian kernel sigma", low=0.0, low_open=True)
    x = torch.arange(size, dtype=torch.float64) - (size - 1) / 2
    k = torch.exp(-0.5 * (x / sigma) ** 2)
    return k / k.sum()


def keys_cubic(x: Tensor, a: float = -0.5) -> Tensor:
    """Keys' cubic convolution function (``a=-0.5`` is the usual bicubic)."""
    ax = x.abs()
    inner = (a + 2) * ax**3 - (a + 3) * ax**2 + 1
    outer = a * ax**3 - 5 * a * ax**2 + 8 * a * ax - 4 * a
    return torch.where(ax <= 1, inner, torch.where(ax < 2, outer, torch.zeros_like(ax)))


def bicubic_1d(factor: int, a: float = -0.5) -> Tensor:
    """Bicubic anti-aliasing kernel for downsampling by ``factor``: ``4*factor`` taps, sum 1.

    Tap ``i`` is ``keys_cubic((i - floor(4*factor/2) + 0.5) / factor)``, as in the official
    ``sr_bicubic`` degradations.
    """
    factor = as_int(factor, "Bicubic downsampling factor", minimum=1)
    a = as_float(a, "Bicubic parameter a")
    length = 4 * factor
    i = torch.arange(length, dtype=torch.float64)
    k = keys_cubic((i - math.floor(length / 2) + 0.5) / factor, a)
    total = k.sum()
    if total.abs() < 1e-12:
        raise ConfigError(f"Bicubic parameter a={a!r} gives a kernel summing to 0; use e.g. -0.5.")
    return k / total


KERNEL_TYPES: dict[str, tuple[str, ...]] = {
    "uniform": ("size",),
    "gaussian": ("size", "sigma"),
    "bicubic": ("factor", "a"),
}


def kernel_from_spec(spec: Any, what: str = "kernel") -> Tensor:
    """Build a 1-D float64 kernel from its config.

    ``spec`` is either a mapping ``{type: uniform, size: N}``, ``{type: gaussian, size: N,
    sigma: S}``, ``{type: bicubic, factor: F, a: -0.5}``, or an explicit list of tap weights
    (used as given, not normalised). ``what`` names the parameter in error messages.
    """
    if isinstance(spec, Tensor):
        spec = spec.detach().cpu().tolist()
    if isinstance(spec, Mapping):
        params = dict(spec)
        kind = params.pop("type", None)
        if kind not in KERNEL_TYPES:
            raise ConfigError(
                f"{what}: unknown kernel type {kind!r}; valid types are {sorted(KERNEL_TYPES)}."
            )
        unknown = set(params) - set(KERNEL_TYPES[kind])
        if unknown:
            raise ConfigError(
                f"{what}: unknown key(s) {sorted(unknown)} for a {kind} kernel; "
                f"valid keys are {list(KERNEL_TYPES[kind])}."
            )
        try:
            if kind == "uniform":
                return uniform_1d(params["size"])
            if kind == "gaussian":
                return gaussian_1d(params["size"], params["sigma"])
            return bicubic_1d(params["factor"], params.get("a", -0.5))
        except KeyError as missing:
            raise ConfigError(
                f"{what}: a {kind} kernel needs the key {missing.args[0]!r}."
            ) from None
    if isinstance(spec, Sequence) and not isinstance(spec, str) and len(spec) > 0:
        values = [as_float(v, f"{what} weight") for v in spec]
        kernel = torch.tensor(values, dtype=torch.float64)
        if not bool(kernel.ne(0).any()):
            raise ConfigError(f"{what} must have a non-zero weight, got {list(spec)!r}.")
        return kernel
    raise ConfigError(
        f"{what} must be a mapping like {{type: gaussian, size: 5, sigma: 10}} or a non-empty "
        f"list of weights, got {spec!r}."
    )
