"""Parameter validation shared by the operators.

Operators are built from YAML by Hydra, so a bad value is a user mistake: it must surface as a
:class:`~ddrm_exp.errors.ConfigError` naming the value, before any heavy work is done.
"""

from __future__ import annotations

import math
from numbers import Integral, Real
from typing import Any, TypedDict

import torch

from ddrm_exp.errors import ConfigError


def as_int(value: Any, what: str, *, minimum: int | None = None) -> int:
    """``value`` as an ``int`` (integral floats allowed), at least ``minimum``."""
    ok = not isinstance(value, bool) and (
        isinstance(value, Integral)
        or (isinstance(value, Real) and math.isfinite(float(value)) and float(value).is_integer())
    )
    if not ok or (minimum is not None and int(value) < minimum):
        bound = f" >= {minimum}" if minimum is not None else ""
        raise ConfigError(f"{what} must be an integer{bound}, got {value!r}.")
    return int(value)


def as_float(
    value: Any,
    what: str,
    *,
    low: float | None = None,
    high: float | None = None,
    low_open: bool = False,
    high_open: bool = False,
) -> float:
    """``value`` as a finite ``float`` inside the given interval."""
    if isinstance(value, bool) or not isinstance(value, Real) or not math.isfinite(float(value)):
        raise ConfigError(f"{what} must be a finite number, got {value!r}.")
    v = float(value)
    bad_low = low is not None and (v <= low if low_open else v < low)
    bad_high = high is not None and (v >= high if high_open else v > high)
    if bad_low or bad_high:
        lo = "-inf" if low is None else f"{low:g}"
        hi = "inf" if high is None else f"{high:g}"
        left = "(" if low_open or low is None else "["
        right = ")" if high_open or high is None else "]"
        interval = f"{left}{lo}, {hi}{right}"
        raise ConfigError(f"{what} must lie in {interval}, got {value!r}.")
    return v


def as_shape(shape: Any) -> tuple[int, int, int]:
    """The image shape ``(C, H, W)`` as a tuple of three positive ints."""
    try:
        items = tuple(shape)
    except TypeError:
        items = ()
    if len(items) != 3:
        raise ConfigError(f"The image shape must be (C, H, W), got {shape!r}.")
    c, h, w = (as_int(v, f"Image shape entry in {shape!r}", minimum=1) for v in items)
    return c, h, w


def as_dtype(dtype: Any) -> torch.dtype:
    """A floating torch dtype (operators hold real matrices)."""
    if not isinstance(dtype, torch.dtype) or not dtype.is_floating_point:
        raise ConfigError(f"The operator dtype must be a floating torch dtype, got {dtype!r}.")
    return dtype


class OperatorOptions(TypedDict, total=False):
    """The keywords an operator takes besides its own parameters (configs build every operator
    as ``Cls(shape=..., device=..., dtype=..., **params)``); see :func:`operator_options`."""

    zero_threshold: float
    device: str | torch.device
    dtype: torch.dtype


def operator_options(
    options: OperatorOptions, zero_threshold: float
) -> tuple[float, str | torch.device, torch.dtype]:
    """``(zero_threshold, device, dtype)`` from ``options``, checked, with the defaults: the
    operator family's ``zero_threshold``, the CPU and float32."""
    unknown = sorted(set(options) - OperatorOptions.__optional_keys__)
    if unknown:
        raise TypeError(f"unexpected keyword argument(s): {', '.join(unknown)}")
    threshold = as_float(options.get("zero_threshold", zero_threshold), "zero_threshold", low=0.0)
    return threshold, options.get("device", "cpu"), as_dtype(options.get("dtype", torch.float32))
