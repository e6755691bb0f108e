"""Blur by an *assumed* kernel, which need not be the true one (report §5, Table 2, Figure 8).

:class:`AssumedBlur` is the ``_target_`` of ``conf/degradation/blur_{given,estimated}.yaml``: a
fixed DDRM blur for the whole run, or, when the kernel comes from the data (the true kernel,
``gt``, or an estimate, ``estimated``), an operator built per batch from ``(B, kh, kw)`` kernels
(:meth:`AssumedBlur.with_kernels`). :class:`PerImageOperators` joins operators of different kinds
into one batch operator. How a run measures with them is :mod:`ddrm_exp.run.measurement`.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from omegaconf import DictConfig, ListConfig, OmegaConf
from torch import Tensor

from ddrm_exp.degradations._checks import as_float, as_shape
from ddrm_exp.degradations.base import HFunctions
from ddrm_exp.degradations.blur2d import METHODS, operator_for_kernel
from ddrm_exp.degradations.fft_blur import ZERO_THRESHOLD, FFTBlur
from ddrm_exp.degradations.kernels2d import ddrm_kernel2d, kernel2d_from_spec, rank1_approximation
from ddrm_exp.degradations.valid_blur import (
    BORDERS,
    DENSE_BORDERS,
    MAX_DENSE_PIXELS,
    BorderBlur,
    TaperedFFTBlur,
    valid_blur_operator,
)
from ddrm_exp.errors import ConfigError

__all__ = [
    "ASSUMED_KERNELS",
    "FIXED_KERNELS",
    "AssumedBlur",
    "PerImageOperators",
    "operator_name",
]

# The report's "wrong" kernels are DDRM's own blurs (Table 2: "DDRM 2D deblurring", "DDRM 1D
# (Gaussian) deblurring"; Figure 8: Gaussian, uniform, 2D): deblur_gauss (5 taps, σ 10),
# deblur_uni (9x9 box), deblur_aniso (9 taps, σ 20 x σ 1).
FIXED_KERNELS: dict[str, str] = {
    "gauss": "deblur_gauss",
    "uniform": "deblur_uniform",
    "aniso2d": "deblur_aniso",
}
DATA_KERNELS: tuple[str, ...] = ("gt", "estimated")
# How the assumed blur treats the frame's borders: one of valid_blur.BORDERS, "auto" (the data's
# own model, see AssumedBlur.resolve_border) or None (as ``method`` builds the operator: DDRM's
# zero-padded separable one for a rank-1 kernel, the circular FFT one otherwise).
BORDER_CHOICES: tuple[str, ...] = ("auto", *BORDERS)
ASSUMED_KERNELS: tuple[str, ...] = (*DATA_KERNELS, *FIXED_KERNELS)


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
    """``fft`` / ``separable`` / ``valid`` / ``zero`` / ``reflect`` / ``taper`` / ``mixed``: how
    a batch's blur was modelled, for the records."""
    if isinstance(op, PerImageOperators):
        names = {operator_name(o) for o in op.operators}
        return names.pop() if len(names) == 1 else "mixed"
    if isinstance(op, BorderBlur):
        return op.border
    if isinstance(op, TaperedFFTBlur):
        return "taper"
    return "fft" if isinstance(op, FFTBlur) else "separable"


def is_delta(kernel: Tensor) -> bool:
    """Whether ``kernel`` (kh, kw) is a single tap at its centre: no blur at all."""
    kh, kw = kernel.shape[-2:]
    return int((kernel != 0).sum()) == 1 and bool(kernel[kh // 2, kw // 2] != 0)


def _check_choices(
    assumed_kernel: str, method: str, rank1: bool, border: str | None, keep_sharp: bool
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
    if border is not None and border not in BORDER_CHOICES:
        raise ConfigError(
            f"degradation.border={border!r} is not supported; use null or one of "
            f"{', '.join(BORDER_CHOICES)}."
        )
    if not isinstance(keep_sharp, bool):
        raise ConfigError(f"degradation.keep_sharp must be true or false, got {keep_sharp!r}.")


def _true_kernel(spec: Any, shape: tuple[int, int, int]) -> Tensor:
    """``degradation.true_kernel``'s kernel, which must fit in the image."""
    if isinstance(spec, DictConfig | ListConfig):
        spec = OmegaConf.to_container(spec, resolve=True)
    kernel = kernel2d_from_spec(spec, what="degradation.true_kernel")
    if kernel.shape[0] > shape[1] or kernel.shape[1] > shape[2]:
        raise ConfigError(
            f"degradation.true_kernel is {tuple(kernel.shape)}, larger than the "
            f"{shape[1]}x{shape[2]} image; use a smaller size."
        )
    return kernel


class AssumedBlur(HFunctions):
    """The ``_target_`` of ``conf/degradation/blur_{given,estimated}.yaml``.

    ``assumed_kernel``: ``gauss`` / ``uniform`` / ``aniso2d`` are DDRM's fixed blurs (see
    :data:`FIXED_KERNELS`); this object is then that operator for every image. ``gt`` (the
    true kernel: the dataset's, or ``true_kernel``) and ``estimated`` (the kernel estimator's)
    differ per image: the runner calls :meth:`with_kernels` on every batch. Until then such an
    operator acts as the identity (a 1x1 delta kernel), so it can be built and inspected
    without data; measuring with it directly would be meaningless, and the runner never does.

    ``method`` (``auto`` | ``fft`` | ``separable``) is :func:`operator_for_kernel`'s, decided
    per image: ``auto`` takes DDRM's zero-padded separable operator for a rank-1 kernel and the
    circular FFT operator otherwise. ``rank1=true`` replaces each *estimated* kernel by its best
    rank-1 approximation (report §5.3), so ``auto`` then runs DDRM's separable deblurring on it,
    as the report did; the true and the fixed kernels are used as they are (the fixed ones are
    separable already). ``min_coverage`` is the report's 2.5 % rule for local estimates.

    ``border`` (issue 14) is how the operator treats the frame's borders, whatever ``method``
    says: ``valid`` (the blurry pixels whose blur reads outside the frame are unmeasured: exact
    for a real camera frame), ``zero``, ``reflect``, ``taper`` (edge-tapered measurement,
    circular FFT operator) or ``circular`` (:mod:`ddrm_exp.degradations.valid_blur`); ``null``
    leaves it to ``method`` (the report's operators); ``auto`` follows the data
    (:meth:`resolve_border`). The dense ones (``valid``, ``zero``, ``reflect``) need an SVD per
    kernel and exist up to 96x96 images; ``auto`` takes ``taper`` above that. ``keep_sharp``:
    an image whose kernel is a delta (no blur: the estimator's ``delta_spread`` makes them) is
    returned as it is, not restored (:mod:`ddrm_exp.run.measurement` does it).
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
        border: str | None = None,
        keep_sharp: bool = False,
        device: str | torch.device = "cpu",
        dtype: torch.dtype = torch.float32,
    ) -> None:
        _check_choices(assumed_kernel, method, rank1, border, keep_sharp)
        self.border = border
        # What the operators use: the configured border, until resolve_border fixes "auto".
        self.active_border: str | None = None if border == "auto" else border
        self.keep_sharp = keep_sharp
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
        self.true_kernel = None if true_kernel is None else _true_kernel(true_kernel, self.shape)

    @property
    def per_image(self) -> bool:
        """Whether the kernel comes from the data (gt, estimated), i.e. per batch."""
        return self.fixed_kernel is None

    @property
    def border_model(self) -> str | None:
        """The border model every per-image operator has, as :func:`operator_name` names it;
        None where ``method`` picks the operator for each kernel (``border`` null)."""
        if self.active_border is None:
            return None
        return "fft" if self.active_border == "circular" else self.active_border

    def resolve_border(self, data_border: str | None) -> None:
        """Fix ``border=auto`` to the data's own border model: ``valid`` for a camera's blurry
        frames, ``reflect`` or ``circular`` for images blurred that way, ``None`` (as ``method``
        builds it) when nothing is known. A dense model on an image over 96x96 becomes ``taper``.
        Any other ``border`` is left as configured."""
        if self.border != "auto":
            return
        chosen = None if data_border in (None, "circular") else data_border
        _, h, w = self.shape
        if chosen in DENSE_BORDERS and h * w > MAX_DENSE_PIXELS:
            chosen = "taper"
        self.active_border = chosen
        if self.fixed_kernel is not None:
            self.default = self._single(self.fixed_kernel)

    def _single(self, kernel: Tensor) -> HFunctions:
        if self.active_border is not None:
            return valid_blur_operator(
                kernel,
                self.shape,
                border=self.active_border,
                zero_threshold=self.zero_threshold,
                device=self.device,
                dtype=self.dtype,
            )
        return operator_for_kernel(
            kernel,
            self.shape,
            device=self.device,
            method=self.method,
            zero_threshold=self.zero_threshold,
            dtype=self.dtype,
        )

    def with_kernels(self, kernels: Tensor) -> HFunctions:
        """The operator of a batch whose image ``i`` is blurred by ``kernels[i]`` (kh, kw).

        Each image gets what ``method`` picks for its own kernel, so an image's result does not
        depend on the batch it is in. A batch of FFT choices becomes one batched
        :class:`FFTBlur`; a batch needing different kinds, :class:`PerImageOperators`.
        """
        if kernels.dim() != 3:
            raise ValueError(f"kernels must be (B, kh, kw), got {tuple(kernels.shape)}")
        if self.active_border is not None:
            return self._single(kernels[0] if len(kernels) == 1 else kernels)
        ops = [self._single(k) for k in kernels]
        if len(ops) == 1:
            return ops[0]
        if all(isinstance(op, FFTBlur) for op in ops):
            return ops[0].with_kernels(kernels)
        return PerImageOperators(ops)

    def prepare_kernels(self, kernels: Tensor) -> tuple[Tensor, list[float | None]]:
        """The kernels the operator will use, and each one's rank-1 error (None: unchanged).

        The rank-1 step serves the report's separable operator, so it applies with the
        operators ``method`` builds (``border`` null); a border model takes any kernel."""
        if not (self.rank1 and self.assumed_kernel == "estimated" and self.active_border is None):
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
