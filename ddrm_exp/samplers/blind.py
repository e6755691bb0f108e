"""DDRM with the blur kernel estimated inside the sampling loop, in the manner of GibbsDDRM.

GibbsDDRM (Murata et al., ICML 2023) treats the unknown operator's parameters ``φ`` (here the
blur kernel ``k``) as one more variable of a partially collapsed Gibbs sampler: each diffusion
step draws ``x_{t-1}`` by DDRM's update in the SVD of the *current* ``H_k``, and then moves
``k`` by a few (Langevin) gradient steps on ``-log p(k | y, x̂_0) = ‖y − k ⊛ x̂_0‖²/(2σ²) +
prior(k)``, where ``x̂_0`` is the network's clean estimate at that step. The kernel updates
start only after the noisiest steps, when ``x̂_0`` looks like an image at all.

As implemented here, per sampler step ``i`` of ``N`` (noisiest first):

1. DDRM's network step and spectral update (eq. (9)) in the basis of the current ``FFTBlur``;
   ``x_{t-1}`` is then mapped back to pixel space as DDRM does.
2. If ``start ≤ i < N − 1`` (``start = ⌈start_fraction · N⌉``; the last step is skipped
   because its ``x̂_0`` is already the result), each image's kernel takes ``kernel_steps``
   projected (Langevin) gradient steps on

       U(k) = ‖w ⊙ F(y − k ⊛ x̂_0)‖² / (2 σ²) + λ Σ_j (k_j + ε)^p,

   restricted to the ``kernel_size²`` taps centred on the origin and projected onto the
   simplex ``{k ≥ 0, Σ k = 1}`` after every step. ``x̂_0`` is clamped to [-1, 1] for the fit
   (its overshoot at noisy steps is not image content). The data term is a quadratic in
   ``k``: its normal matrix ``A`` (auto-correlations of ``x̂_0`` at the tap offsets) and
   vector ``b`` (cross-correlations of ``x̂_0`` with ``y``) come from one FFT per channel, so
   each gradient step is a ``d × d`` mat-vec (``d = kernel_size²``) and costs nothing next to
   the network. ``w`` is 1 (``fit_domain=pixel``, GibbsDDRM's likelihood) or the magnitude of
   the finite-difference gradient (``fit_domain=gradient``: the fit on image derivatives, as
   classical kernel estimators do; it whitens the 1/f² spectrum of photos, so plain gradient
   steps converge on the kernel's fine structure and not just its low frequencies).
   The step is ``kernel_lr / L`` with ``L`` the largest eigenvalue of the data Hessian
   ``A/σ²``, so ``kernel_lr < 2`` is stable whatever the image; ``langevin=True`` adds
   ``√(2 · step · temperature) ξ`` per step (unadjusted Langevin).
3. The operator is rebuilt with the new kernels (same shape, ``zero_threshold``, dtype and
   device), and DDRM's measurement constants are recomputed. The spectral state moves to the
   new basis as ``x̄ ← V_newᵀ V_old x̄``: ``V`` is the same real Fourier basis for every kernel,
   only the order of its coordinates changes with the singular values.

Notes:

* ``σ`` is the measurement noise in [-1, 1] units (``2 σ_y``), floored at ``2/255`` so that a
  noiseless ``y`` does not make the energy infinite; in the pixel domain with
  ``temperature=1`` the Langevin chain targets the kernel's conditional posterior given
  ``x̂_0``, and with ``fit_domain=gradient`` the same scale is kept (an approximation).
* An L1 prior is constant on the simplex (``Σ|k| = Σk = 1``), so it cannot promote sparsity
  there; ``sparsity_p < 1`` (default 0.5, GibbsDDRM's kind of sparse prior) can. ``ε`` keeps its
  gradient finite at 0.
* The initial kernel: ``init_kernel`` passed to :meth:`InLoopKernelDDRM.sample`, else ``init``:
  ``delta``, ``gaussian`` (``init_sigma`` pixels) or ``operator`` (the kernel(s) of the
  operator passed in).
* A good ``init_kernel`` (a video's previous frame) calls for kernel updates starting *later*,
  not earlier: the early ``x̂_0`` are too poor to improve a kernel that is already close, and
  the updates pull it towards their own bias. Measured (tiny model, 4 held-out 64 px photos,
  13-tap motion blurs, σ_y = 0.02, 20 steps; final kernel NCC / PSNR): from the true kernel,
  start 0.4 gives 0.79 / 23.1 dB, 0.7 gives 0.82 / 24.9 dB, no update 1.00 / 26.2 dB; from it
  rotated by 10° 0.79 / 22.9, 0.82 / 24.8, 0.95 / 25.2; by 30° 0.80 / 22.8, 0.78 / 23.0,
  0.82 / 21.8 dB (a delta start with the default 0.4: 0.76 / 22.0 dB). Hence
  ``init_start_fraction``, the start used instead of ``start_fraction`` when ``init_kernel``
  is given: ``None`` (default) keeps ``start_fraction``; about 0.7 suits slowly varying blur.
* With no update (``kernel_steps=0`` or ``start_fraction=1``) the loop is DDRM's, operation
  for operation, with the initial kernel's operator.
* Randomness: the DDRM draws of :class:`~ddrm_exp.samplers.ddrm.DDRM`, then, with
  ``langevin=True``, one ``(kernel_steps, d)`` draw per kernel update, per image from its own
  generator; every per-image quantity is computed per image, so results do not depend on the
  batch.
"""

from __future__ import annotations

import math
from functools import cache

import torch
from torch import Tensor

from ddrm_exp.degradations.base import HFunctions
from ddrm_exp.degradations.fft_blur import FFTBlur
from ddrm_exp.degradations.kernels2d import gaussian_kernel2d
from ddrm_exp.errors import ConfigError
from ddrm_exp.models.base import DiffusionPrior
from ddrm_exp.samplers.ddrm import (
    DDRM,
    GeneratorArg,
    Problem,
    SampleResult,
    WarmStart,
    draw_noise,
)

__all__ = [
    "FIT_DOMAINS",
    "INITS",
    "InLoopKernelDDRM",
    "kernel_normal_equations",
    "project_simplex",
]

INITS = ("delta", "gaussian", "operator")
FIT_DOMAINS = ("pixel", "gradient")
SIGMA_FLOOR = 2.0 / 255.0
"""Lower bound of σ (in [-1, 1] units) in the kernel energy: one 8-bit level of noise."""


def project_simplex(v: Tensor) -> Tensor:
    """Euclidean projection of each row of ``v`` (B, d) onto ``{k ≥ 0, Σ k = 1}``.

    The sort-based algorithm (Held et al. 1974; Duchi et al. 2008): the projection is
    ``max(v − θ, 0)`` with the one ``θ`` that makes it sum to 1.
    """
    u, _ = torch.sort(v, dim=-1, descending=True)
    cumsum = u.cumsum(dim=-1) - 1.0
    idx = torch.arange(1, v.shape[-1] + 1, device=v.device, dtype=v.dtype)
    active = (u - cumsum / idx) > 0
    # The active taps are a prefix of the sorted ones: count them, read θ at the last.
    rho = active.sum(dim=-1, keepdim=True).clamp_min(1)
    theta = cumsum.gather(-1, rho - 1) / rho.to(v.dtype)
    return (v - theta).clamp_min(0.0)


@cache
def _tap_indices(kh: int, kw: int, h: int, w: int) -> tuple[Tensor, Tensor]:
    """Flat pixel index of each tap's offset, and of each pair's offset difference.

    Tap ``(i, j)`` of a kernel shifts the image by ``(i − kh//2, j − kw//2)`` (FFTBlur's origin
    convention), wrapped onto the ``h × w`` torus. Returns ``taps`` (d,) and ``pairs`` (d, d)
    with ``pairs[q, q']`` the index of ``offset(q) − offset(q')``.
    """
    di = torch.arange(kh).view(kh, 1).expand(kh, kw).reshape(-1) - kh // 2
    dj = torch.arange(kw).view(1, kw).expand(kh, kw).reshape(-1) - kw // 2
    taps = (di % h) * w + (dj % w)
    pairs = ((di.view(-1, 1) - di.view(1, -1)) % h) * w + ((dj.view(-1, 1) - dj.view(1, -1)) % w)
    return taps, pairs


def _gradient_weight(h: int, w: int, device: torch.device) -> Tensor:
    """``|D_h(f)|² + |D_v(f)|²`` of the forward differences, in the ``rfft2`` layout."""
    u = torch.arange(h, device=device, dtype=torch.float64).view(h, 1)
    v = torch.arange(w // 2 + 1, device=device, dtype=torch.float64).view(1, -1)
    return 4.0 * torch.sin(math.pi * u / h) ** 2 + 4.0 * torch.sin(math.pi * v / w) ** 2


def kernel_normal_equations(
    x0: Tensor, y: Tensor, kernel_shape: tuple[int, int], fit_domain: str = "pixel"
) -> tuple[Tensor, Tensor]:
    """``A`` (B, d, d) and ``b`` (B, d) with ``‖y − k ⊛ x0‖²_w = kᵀAk − 2bᵀk + const``.

    ``x0``, ``y``: (B, C, H, W) images; ``k``: (kh, kw) taps flattened row-major, applied with
    FFTBlur's convention to every channel. The norm is the plain one (``pixel``) or that of the
    finite-difference gradients (``gradient``). Computed in float64: the correlations sum
    ``H·W·C`` products.
    """
    kh, kw = kernel_shape
    h, w = x0.shape[-2:]
    xf = torch.fft.rfft2(x0.to(torch.float64))
    yf = torch.fft.rfft2(y.to(torch.float64))
    auto = (xf.conj() * xf).real.sum(dim=1)
    cross = (xf.conj() * yf).sum(dim=1)
    if fit_domain == "gradient":
        weight = _gradient_weight(h, w, x0.device)
        auto, cross = auto * weight, cross * weight
    # irfft2(conj(X)·Y)[δ] = Σ_p x[p] y[p + δ]: the correlations at every circular lag δ.
    r_auto = torch.fft.irfft2(auto.to(cross.dtype), s=(h, w)).flatten(1)
    r_cross = torch.fft.irfft2(cross, s=(h, w)).flatten(1)
    taps, pairs = _tap_indices(kh, kw, h, w)
    a = r_auto[:, pairs.to(x0.device).reshape(-1)].view(-1, kh * kw, kh * kw)
    b = r_cross[:, taps.to(x0.device)]
    return a, b


class InLoopKernelDDRM(DDRM):
    """DDRM on an :class:`FFTBlur` whose kernel is unknown and estimated while sampling.

    See the module docstring for the algorithm. Usage::

        sampler = InLoopKernelDDRM(timesteps=20, kernel_size=13)
        out = sampler.sample(prior, FFTBlur(shape, kernel=guess), y, sigma_y=0.02, generator=g)
        out.x0, out.kernel  # restoration (B, C, H, W), kernels (B, 13, 13) float64 on the CPU
    """

    name = "ddrm_blind"
    PARAMS = (
        *DDRM.PARAMS,
        "kernel_size",
        "start_fraction",
        "init_start_fraction",
        "kernel_steps",
        "kernel_lr",
        "langevin",
        "temperature",
        "sparsity",
        "sparsity_p",
        "sparsity_eps",
        "fit_domain",
        "init",
        "init_sigma",
    )

    def __init__(
        self,
        timesteps: int = 20,
        eta: float = 0.85,
        eta_b: float = 1.0,
        clip_x0: bool = False,
        kernel_size: int = 13,
        start_fraction: float = 0.4,
        kernel_steps: int = 20,
        kernel_lr: float = 0.3,
        langevin: bool = False,
        temperature: float = 1.0,
        sparsity: float = 0.0,
        sparsity_p: float = 0.5,
        sparsity_eps: float = 1e-3,
        fit_domain: str = "gradient",
        init: str = "delta",
        init_sigma: float = 1.0,
        name: str = "ddrm_blind",
        init_start_fraction: float | None = None,
    ) -> None:
        super().__init__(timesteps, eta, eta_b, clip_x0)

        def number(key: str, value: object, low: float, high: float = math.inf) -> float:
            try:
                v = float(value)  # type: ignore[arg-type]
            except (TypeError, ValueError):
                v = math.nan
            if not math.isfinite(v) or not low <= v <= high:
                bound = f">= {low:g}" if high == math.inf else f"in [{low:g}, {high:g}]"
                raise ConfigError(f"sampler.{key} must be a number {bound}, got {value!r}.")
            return v

        if isinstance(kernel_size, bool) or not isinstance(kernel_size, int):
            raise ConfigError(f"sampler.kernel_size must be an odd integer, got {kernel_size!r}.")
        if kernel_size < 1 or kernel_size % 2 == 0:
            raise ConfigError(f"sampler.kernel_size must be an odd integer, got {kernel_size!r}.")
        if isinstance(kernel_steps, bool) or not isinstance(kernel_steps, int) or kernel_steps < 0:
            raise ConfigError(
                f"sampler.kernel_steps must be an integer >= 0, got {kernel_steps!r}."
            )
        if init not in INITS:
            raise ConfigError(f"sampler.init must be one of {', '.join(INITS)}, got {init!r}.")
        if fit_domain not in FIT_DOMAINS:
            raise ConfigError(
                f"sampler.fit_domain must be one of {', '.join(FIT_DOMAINS)}, got {fit_domain!r}."
            )
        if not isinstance(langevin, bool):
            raise ConfigError(f"sampler.langevin must be true or false, got {langevin!r}.")
        self.kernel_size = kernel_size
        self.start_fraction = number("start_fraction", start_fraction, 0.0, 1.0)
        self.kernel_steps = kernel_steps
        # Above 2/L a gradient step on a quadratic diverges.
        self.kernel_lr = number("kernel_lr", kernel_lr, 0.0, 2.0)
        self.langevin = langevin
        self.temperature = number("temperature", temperature, 0.0)
        self.sparsity = number("sparsity", sparsity, 0.0)
        self.sparsity_p = number("sparsity_p", sparsity_p, 0.0, 1.0)
        self.sparsity_eps = number("sparsity_eps", sparsity_eps, 0.0)
        if self.sparsity > 0 and self.sparsity_p < 1 and self.sparsity_eps <= 0:
            raise ConfigError("sampler.sparsity_eps must be > 0 when sparsity_p < 1.")
        self.fit_domain = fit_domain
        self.init = init
        self.init_sigma = number("init_sigma", init_sigma, 0.0)
        if init == "gaussian" and self.init_sigma <= 0:
            raise ConfigError(f"sampler.init_sigma must be > 0, got {init_sigma!r}.")
        self.name = str(name)
        self.init_start_fraction = (
            None
            if init_start_fraction is None
            else number("init_start_fraction", init_start_fraction, 0.0, 1.0)
        )

    # ---- kernels --------------------------------------------------------------------------
    def start_step(self, num_steps: int, given_init: bool = False) -> int:
        """Index (0 = noisiest) of the first sampler step followed by a kernel update.

        ``given_init``: the sampling starts from an ``init_kernel`` passed to :meth:`sample`,
        which uses ``init_start_fraction`` when that is set, else ``start_fraction``.
        """
        fraction = self.start_fraction
        if given_init and self.init_start_fraction is not None:
            fraction = self.init_start_fraction
        return math.ceil(fraction * num_steps - 1e-9)

    def initial_kernel(
        self, operator: FFTBlur, batch: int, init_kernel: Tensor | None = None
    ) -> Tensor:
        """(B, kh, kw) float64 CPU kernels that sum to 1, from ``init_kernel`` or ``init``."""
        ks = self.kernel_size
        if init_kernel is not None:
            k = self.check_init_kernel(init_kernel, batch)
            what = "init_kernel"
        elif self.init == "operator":
            k = operator.kernel.detach().to("cpu", torch.float64)
            what = "the operator's kernel"
        elif self.init == "gaussian":
            k = gaussian_kernel2d(ks, self.init_sigma)
            what = "the Gaussian initial kernel"
        else:
            k = torch.zeros(ks, ks, dtype=torch.float64)
            k[ks // 2, ks // 2] = 1.0
            what = "the delta kernel"
        if k.dim() == 2:
            k = k.unsqueeze(0).expand(batch, -1, -1)
        if k.dim() != 3 or k.shape[0] != batch:
            raise ValueError(f"{what} must be (kh, kw) or ({batch}, kh, kw), got {tuple(k.shape)}")
        kh, kw = k.shape[-2:]
        if kh > ks or kw > ks or (ks - kh) % 2 or (ks - kw) % 2:
            raise ValueError(
                f"{what} of size {kh}x{kw} does not fit centred in kernel_size={ks} "
                "(it must be at most as large, with odd sides like it)"
            )
        # A smaller odd kernel keeps its origin at the centre when padded evenly.
        ph, pw = (ks - kh) // 2, (ks - kw) // 2
        k = torch.nn.functional.pad(k, (pw, pw, ph, ph))
        if bool((k < 0).any()) or bool((k.flatten(1).sum(1) <= 0).any()):
            raise ValueError(f"{what} must be non-negative with a positive sum")
        total = k.flatten(1).sum(1).view(-1, 1, 1)
        # A kernel that already sums to 1 (up to round-off) is used as given, bit for bit, so a
        # fixed kernel reproduces DDRM on FFTBlur(kernel) exactly.
        normalised = (total - 1.0).abs() <= 1e-9
        return torch.where(normalised, k, k / total).contiguous()

    def check_init_kernel(self, init_kernel: object, batch: int) -> Tensor:
        """``init_kernel`` as (B, kh, kw) float64 on the CPU, or a ConfigError saying why not.

        It must be a real tensor, ``(kh, kw)`` (every image) or ``(batch, kh, kw)``, with odd
        sides no larger than ``kernel_size`` (it is zero-padded about its centre tap, never
        cropped or resampled), finite, non-negative taps and a positive sum per kernel (any
        sum: it is normalised).
        """
        ks = self.kernel_size
        if not isinstance(init_kernel, Tensor) or init_kernel.is_complex():
            raise ConfigError(
                f"init_kernel must be a real torch tensor (B, kh, kw) or None, got "
                f"{getattr(init_kernel, 'dtype', type(init_kernel).__name__)}."
            )
        k = init_kernel.detach().to("cpu", torch.float64)
        if k.dim() == 2:
            k = k.unsqueeze(0).expand(batch, -1, -1)
        if k.dim() != 3 or k.shape[0] != batch:
            raise ConfigError(
                f"init_kernel must be one kernel per image, ({batch}, kh, kw) for this batch "
                f"of {batch} (or one (kh, kw) kernel for all), got {tuple(init_kernel.shape)}."
            )
        kh, kw = k.shape[-2:]
        if kh > ks or kw > ks or kh % 2 == 0 or kw % 2 == 0:
            raise ConfigError(
                f"init_kernel of size {kh}x{kw} does not fit centred in the sampler's "
                f"kernel_size={ks}: it must have odd sides no larger than {ks} (a smaller one "
                "is zero-padded about its centre tap)."
            )
        if not bool(torch.isfinite(k).all()):
            raise ConfigError("init_kernel contains NaN or infinite taps.")
        if bool((k < 0).any()):
            raise ConfigError(
                f"init_kernel has negative taps (min {float(k.min()):.3g}); a blur kernel is "
                "non-negative: clip it (k.clamp(min=0)) before passing it."
            )
        if bool((k.flatten(1).sum(1) <= 0).any()):
            bad = [int(i) for i in torch.nonzero(k.flatten(1).sum(1) <= 0).flatten()]
            raise ConfigError(f"init_kernel of image(s) {bad} is all zero.")
        return k

    def update_kernel(
        self,
        kernel: Tensor,
        x0: Tensor,
        y_img: Tensor,
        sigma_0: float,
        generator: GeneratorArg,
    ) -> Tensor:
        """``kernel_steps`` projected (Langevin) gradient steps of U(k); (B, kh, kw) float64."""
        batch, kh, kw = kernel.shape
        device = x0.device
        a, b = kernel_normal_equations(x0.clamp(-1.0, 1.0), y_img, (kh, kw), self.fit_domain)
        inv_var = 1.0 / max(sigma_0, SIGMA_FLOOR) ** 2
        # ∇ of ‖·‖²/(2σ²) is (A k − b)/σ²; its Lipschitz constant is λ_max(A)/σ². Per image.
        lip = torch.linalg.eigvalsh(a)[:, -1].clamp_min(1e-30) * inv_var
        step = (self.kernel_lr / lip).view(-1, 1)
        noise = None
        if self.langevin and self.kernel_steps > 0:
            noise = draw_noise((batch, self.kernel_steps, kh * kw), generator, device, a.dtype)
        k = kernel.to(device).reshape(batch, -1)
        for j in range(self.kernel_steps):
            grad = (torch.einsum("bij,bj->bi", a, k) - b) * inv_var
            if self.sparsity > 0 and self.sparsity_p < 1:
                p = self.sparsity_p
                grad = grad + self.sparsity * p * (k + self.sparsity_eps) ** (p - 1.0)
            k = k - step * grad
            if noise is not None:
                k = k + (2.0 * step * self.temperature).sqrt() * noise[:, j]
            k = project_simplex(k)
        return k.reshape(batch, kh, kw).cpu()

    @staticmethod
    def operator_for(operator: FFTBlur, kernel: Tensor) -> FFTBlur:
        """An FFTBlur like ``operator`` (shape, threshold, dtype, device) with ``kernel``."""
        return FFTBlur(
            operator.shape,
            kernel=kernel,
            zero_threshold=operator.zero_threshold,
            device=operator.kernel.device,
            dtype=operator.kernel.dtype,
        )

    # ---- the loop -------------------------------------------------------------------------
    def sample(  # type: ignore[override]
        self,
        prior: DiffusionPrior,
        operator: FFTBlur,
        y: Tensor,
        sigma_y: float,
        *,
        noise: Tensor | None = None,
        generator: GeneratorArg = None,
        return_trajectory: bool = False,
        init_kernel: Tensor | None = None,
        warm_start: WarmStart | None = None,
    ) -> SampleResult:
        """Restore ``x`` and estimate ``k`` from ``y = k ⊛ x + σ_y z`` (circular blur).

        ``operator``: an :class:`FFTBlur`; it gives the image shape, ``zero_threshold``, dtype
        and device (and the initial kernel when ``init=operator``). ``y``: (B, m) blurred
        images in [-1, 1], flattened. ``init_kernel``: (kh, kw) or (B, kh, kw) starting
        kernel(s), overriding ``init`` -- e.g. the previous video frame's final kernel; odd
        sides up to ``kernel_size`` (zero-padded about the centre), non-negative, any positive
        sum (normalised; one that sums to 1 is used bit for bit), else a ConfigError
        (:meth:`check_init_kernel`); kernel updates then start at ``init_start_fraction`` if
        set. ``None``: ``init``. ``warm_start``: as :meth:`DDRM.sample`; the kernel updates
        start at the same fraction of the shortened schedule. The rest as
        :meth:`DDRM.sample`. The result's ``kernel``
        holds the final kernels, (B, kernel_size, kernel_size) float64 on the CPU: those of the
        operator used for the last step.
        """
        if not isinstance(operator, FFTBlur):
            raise TypeError(
                f"InLoopKernelDDRM needs an FFTBlur operator, got {type(operator).__name__}"
            )
        c, h, w = operator.shape
        if self.kernel_size > min(h, w):
            raise ValueError(f"kernel_size={self.kernel_size} exceeds the image size {h}x{w}")
        batch = y.shape[0]
        sigma_0 = 2.0 * float(sigma_y)
        seq = self.schedule(prior, warm_start)
        start = self.start_step(len(seq), given_init=init_kernel is not None)
        y_img = y.reshape(batch, c, h, w)
        kernel = self.initial_kernel(operator, batch, init_kernel)

        def gibbs_move(
            i: int, num_steps: int, x0: Tensor, x_bar_mod: Tensor, op: HFunctions
        ) -> tuple[Tensor, HFunctions] | None:
            # The move on k given this step's x̂_0; not after the last step, whose x̂_0 is
            # already the result.
            nonlocal kernel
            if self.kernel_steps == 0 or not start <= i < num_steps - 1:
                return None
            kernel = self.update_kernel(kernel, x0.detach(), y_img, sigma_0, generator)
            new_op = self.operator_for(operator, kernel)
            # Same Fourier basis, new coordinate order: through pixel space.
            return new_op.Vt(op.V(x_bar_mod)), new_op

        problem = Problem(prior, self.operator_for(operator, kernel), y, float(sigma_y))
        walk = self.begin(problem, noise, generator, warm_start)
        result = self.walk(walk, return_trajectory, after_step=gibbs_move)
        result.kernel = kernel
        return result
