"""Blur operators with the borders of real blur: valid, zero-padded, reflected or edge-tapered.

A real blurry frame is a *valid* convolution of a larger scene: the pixel ``p`` of the frame
``y`` mixes scene pixels up to the kernel's reach around ``p``, and near the frame's border
some of them lie outside the sharp frame ``x`` that is to be restored. The circular
:class:`~ddrm_exp.degradations.fft_blur.FFTBlur` models them as the opposite side of ``x`` and
the separable :class:`~ddrm_exp.degradations.separable.Deblurring` as zeros; both are wrong by
the full contrast of the border, and inverting a blur spreads that error over the image as
streaks. The border models here:

* ``valid`` (:class:`BorderBlur`): the pixels of ``y`` whose blur reads only pixels of ``x`` are
  measured exactly (``y = k * x`` there, with no assumption about the scene outside); the ring of
  ``y`` pixels that also read the outside is *unmeasured*: the operator gives them a zero
  singular value, so DDRM ignores them and the prior fills the border of ``x`` in. The ring is
  as thin as the kernel's non-zero support allows (a horizontal blur leaves every row measured).
* ``zero`` / ``reflect`` (:class:`BorderBlur`): every pixel measured, the outside of ``x``
  assumed zero or the mirror image of ``x`` (``torch``'s ``reflect`` padding, as
  :func:`ddrm_exp.datasets.bsd.blur_reflect` blurs ``dataset=bsd_synthetic``, for which it is
  exact). ``zero`` is DDRM's zero-padded Toeplitz model for any kernel, separable or not.
* ``taper`` (:class:`TaperedFFTBlur`): the classical edge tapering (MATLAB's ``edgetaper``): the
  measurement is blended near its borders with its own circular blur, so it looks like a circular
  blur of something, and the circular FFT operator is used on it. Cheap at any size, approximate.
* ``circular``: :class:`~ddrm_exp.degradations.fft_blur.FFTBlur` as it is.

:class:`BorderBlur` has no fast transform: its SVD is computed densely, once per kernel, from the
``(H·W) x (H·W)`` matrix of one channel (shared by the channels). At 64x64 that is a 4096-square
symmetric eigenproblem, about 10-30 s on one CPU core and 3 x 64 MiB of float32 matrices; the
cost grows as ``(H·W)³`` (about 10 min and 1 GiB per matrix at 128x128), so above
:data:`MAX_DENSE_PIXELS` pixels it is refused and ``taper`` is the border model to use. A small
cache keeps the last few SVDs (the same true kernel over a sequence costs one).

Spectral layout: pixel-major, channel-minor (spectral index ``i·C + c`` is singular pair ``i``
of channel ``c``), singular values sorted in descending order, so each value repeats ``C``
times. Convention as everywhere in the project: ``k`` is applied as a convolution with its
origin at ``(kh//2, kw//2)``: ``y[p] = Σ_q k[q] x[p - q + origin]``.
"""

from __future__ import annotations

import hashlib
import math
from collections import OrderedDict

import torch
import torch.nn.functional as F
from torch import Tensor

from ddrm_exp.degradations._checks import as_dtype, as_float, as_shape
from ddrm_exp.degradations.base import HFunctions
from ddrm_exp.degradations.fft_blur import ZERO_THRESHOLD, FFTBlur, _as_kernels, blur_circular
from ddrm_exp.errors import ConfigError

__all__ = [
    "BORDERS",
    "DENSE_BORDERS",
    "MAX_DENSE_PIXELS",
    "BorderBlur",
    "TaperedFFTBlur",
    "blur_matrix_2d",
    "blur_valid",
    "edge_taper",
    "valid_blur_operator",
    "valid_margins",
    "valid_region",
]

DENSE_BORDERS = ("valid", "zero", "reflect")
BORDERS = (*DENSE_BORDERS, "taper", "circular")

MAX_DENSE_PIXELS = 96 * 96
"""Largest ``H·W`` for which :class:`BorderBlur` computes its dense SVD (about a minute on one
core at 96x96; ``(H·W)³`` beyond)."""

_CACHE_SIZE = 4
_eigen_cache: OrderedDict[str, tuple[Tensor, Tensor, Tensor]] = OrderedDict()


# ---- geometry ------------------------------------------------------------------------------------
def _support_rows_cols(kernel: Tensor) -> tuple[int, int, int, int]:
    """``(amin, amax, bmin, bmax)``: the extent of the kernel's non-zero taps, relative to its
    origin ``(kh//2, kw//2)``."""
    nz = torch.nonzero(kernel != 0)
    if nz.numel() == 0:
        raise ConfigError("The blur kernel is all zero.")
    oa, ob = kernel.shape[0] // 2, kernel.shape[1] // 2
    return (
        int(nz[:, 0].min()) - oa,
        int(nz[:, 0].max()) - oa,
        int(nz[:, 1].min()) - ob,
        int(nz[:, 1].max()) - ob,
    )


def valid_margins(kernel: Tensor) -> tuple[int, int, int, int]:
    """``(top, bottom, left, right)``: how far outside an image its blur by ``kernel`` reads.

    ``blur_valid`` of a scene extended by these margins around ``x`` is exactly ``x``-sized;
    only the kernel's non-zero taps count.
    """
    amin, amax, bmin, bmax = _support_rows_cols(torch.as_tensor(kernel))
    return max(amax, 0), max(-amin, 0), max(bmax, 0), max(-bmin, 0)


def valid_region(kernel: Tensor, size: tuple[int, int]) -> tuple[slice, slice]:
    """The rows and columns of an ``H x W`` blurred image that read only pixels of the image."""
    h, w = size
    top, bottom, left, right = valid_margins(kernel)
    return slice(top, max(h - bottom, top)), slice(left, max(w - right, left))


def blur_valid(scene: Tensor, kernel: Tensor) -> Tensor:
    """The valid convolution of ``scene`` (``(B, C, H, W)`` or ``(C, H, W)``) with ``kernel``.

    Output ``(H - kh + 1) x (W - kw + 1)``: pixel ``p`` of the output is pixel
    ``p + (kh//2, kw//2)`` of the full blur, so a scene extended by ``(kh//2, kw//2)`` on the
    top/left (and the rest on the bottom/right) around ``x`` gives the real blurry frame of ``x``.
    """
    squeeze = scene.dim() == 3
    s = scene.unsqueeze(0) if squeeze else scene
    k = torch.as_tensor(kernel).to(s)
    c = s.shape[1]
    out = F.conv2d(s, k.flip(0, 1).expand(c, 1, *k.shape), groups=c)
    return out.squeeze(0) if squeeze else out


def _source_index(i: Tensor, size: int, border: str) -> tuple[Tensor, Tensor]:
    """Where index ``i`` (possibly outside ``0..size-1``) reads from, and whether it exists."""
    inside = (i >= 0) & (i < size)
    if border == "reflect":
        if size == 1:
            return torch.zeros_like(i), torch.ones_like(inside)
        period = 2 * (size - 1)
        j = i.remainder(period)
        return torch.where(j < size, j, period - j), torch.ones_like(inside)
    if border == "circular":
        return i.remainder(size), torch.ones_like(inside)
    return i.clamp(0, size - 1), inside


def blur_matrix_2d(kernel: Tensor, size: tuple[int, int], border: str = "valid") -> Tensor:
    """The ``(H·W) x (H·W)`` float64 matrix of one channel's blur (rows: output pixels).

    ``border``: ``valid`` (rows of the pixels outside :func:`valid_region` are zero: they are not
    measured), ``zero``, ``reflect`` (``torch`` ``reflect`` padding, which needs the kernel's
    reach below the image size) or ``circular``.
    """
    if border not in (*DENSE_BORDERS, "circular"):
        raise ConfigError(f"border={border!r} has no blur matrix; use one of {DENSE_BORDERS}.")
    k = torch.as_tensor(kernel).to(torch.float64)
    h, w = size
    oa, ob = k.shape[0] // 2, k.shape[1] // 2
    if border == "reflect":
        top, bottom, left, right = valid_margins(k)
        if max(top, bottom) > h - 1 or max(left, right) > w - 1:
            raise ConfigError(
                f"A {tuple(k.shape)} kernel reaches farther than a {h}x{w} image can be "
                "reflected; use a smaller kernel or border=zero/valid."
            )
    rows = torch.arange(h).view(h, 1)
    cols = torch.arange(w).view(1, w)
    out_index = (rows * w + cols).reshape(-1)
    measured = torch.ones(h * w, dtype=torch.bool)
    if border == "valid":
        rs, cs = valid_region(k, (h, w))
        keep = torch.zeros(h, w, dtype=torch.bool)
        keep[rs, cs] = True
        measured = keep.reshape(-1)
    matrix = torch.zeros(h * w, h * w, dtype=torch.float64)
    for a, b in torch.nonzero(k != 0).tolist():
        src_r, ok_r = _source_index(rows - a + oa, h, border)
        src_c, ok_c = _source_index(cols - b + ob, w, border)
        ok = (ok_r & ok_c).reshape(-1) & measured
        src = (src_r * w + src_c).reshape(-1)
        weight = k[a, b].expand(int(ok.sum()))
        matrix.index_put_((out_index[ok], src[ok]), weight, accumulate=True)
    return matrix


# ---- the dense SVD -------------------------------------------------------------------------------
def _eigen(
    kernel: Tensor,
    size: tuple[int, int],
    border: str,
    eig_dtype: torch.dtype,
    device: torch.device,
) -> tuple[Tensor, Tensor, Tensor]:
    """``(A, λ, W)``: one channel's blur matrix and the eigenpairs of ``AᵀA`` in descending
    order, all in ``eig_dtype`` on ``device`` (a GPU solves the 4096-square problem of a 64x64
    image in well under a second); the expensive part, cached for the last few kernels."""
    digest = hashlib.sha1(kernel.to(torch.float64).contiguous().numpy().tobytes()).hexdigest()
    key = f"{digest}:{tuple(kernel.shape)}:{size}:{border}:{eig_dtype}:{device}"
    if key in _eigen_cache:
        _eigen_cache.move_to_end(key)
        return _eigen_cache[key]
    a = blur_matrix_2d(kernel, size, border).to(device=device, dtype=eig_dtype)
    eye = torch.eye(a.shape[0], dtype=eig_dtype, device=device)
    if torch.equal(a, eye):  # a centred delta: nothing to decompose
        out = (a, torch.ones(a.shape[0], dtype=eig_dtype, device=device), eye)
    else:
        evals, evecs = torch.linalg.eigh(a.T @ a)
        out = (a, evals.flip(0), evecs.flip(1))
    _eigen_cache[key] = out
    while len(_eigen_cache) > _CACHE_SIZE:
        _eigen_cache.popitem(last=False)
    return out


def _orthonormal_complement(partial: Tensor, seed: int = 0) -> Tensor:
    """An orthonormal basis (n x (n - k)) of the complement of ``partial``'s orthonormal
    columns (n x k): random vectors with ``partial`` projected out, then QR."""
    n, k = partial.shape
    gen = torch.Generator().manual_seed(seed)
    extra = torch.randn(n, n - k, generator=gen, dtype=partial.dtype).to(partial.device)
    for _ in range(2):  # twice: one Gram-Schmidt pass loses orthogonality in floating point
        extra = extra - partial @ (partial.T @ extra)
        extra, _ = torch.linalg.qr(extra)
    return extra


def _dense_svd(
    kernel: Tensor,
    size: tuple[int, int],
    border: str,
    zero_threshold: float,
    eig_dtype: torch.dtype,
    device: torch.device,
) -> tuple[Tensor, Tensor, Tensor]:
    """``(U, s, V)`` of one channel's blur matrix ``A`` thresholded: ``U diag(s) Vᵀ`` is ``A``
    without its singular values below ``zero_threshold`` (those are 0 in ``s``), s descending.

    ``V`` and ``s²`` come from the symmetric eigenproblem of ``AᵀA`` (3x faster than an SVD);
    ``U``'s columns of the kept singular values are ``A v / s`` (re-orthonormalised: they
    inherit the eigenvectors' round-off amplified by ``1/s``), supported on the measured
    pixels; the rest of ``U`` is the measured pixels' remaining directions and the unmeasured
    pixels themselves. ``U`` and ``V`` are returned in ``eig_dtype``, ``s`` in float64.
    """
    a, evals, v = _eigen(kernel, size, border, eig_dtype, device)
    n = a.shape[0]
    s = evals.to(torch.float64).clamp_min(0).sqrt()
    # Directions below the eigensolver's round-off floor are null space, not signal.
    floor = float(s[0]) * math.sqrt(n * torch.finfo(eig_dtype).eps)
    rank = int((s >= max(floor, zero_threshold)).sum()) if float(s[0]) > 0 else 0
    s[rank:] = 0
    is_measured = a.abs().sum(dim=1) > 0
    measured = torch.nonzero(is_measured).squeeze(1)
    unmeasured = torch.nonzero(~is_measured).squeeze(1)
    u_kept = (a[measured] @ v[:, :rank]) / s[:rank].to(eig_dtype)
    q, r = torch.linalg.qr(u_kept)
    u_kept = q * torch.sign(torch.diagonal(r)).view(1, -1)
    u_rest = _orthonormal_complement(u_kept)
    u = torch.zeros(n, n, dtype=eig_dtype, device=device)
    u[measured, : measured.numel()] = torch.cat([u_kept, u_rest], dim=1)
    u[unmeasured, measured.numel() + torch.arange(unmeasured.numel(), device=device)] = 1.0
    return u, s, v


class BorderBlur(HFunctions):
    """Blur by any 2-D kernel with a ``valid``, ``zero`` or ``reflect`` border, as ``U Σ Vᵀ``.

    ``kernel``: ``(kh, kw)`` for every image or ``(B, kh, kw)``, one per image of a batch of
    exactly ``B`` (``singulars()`` is then ``(B, n)``). The measurement has the image's size
    (``m = n``) whatever the border: with ``valid`` the ring that reads outside the image is
    part of ``y`` but has zero singular values (unmeasured), so a frame's real blurry image is
    the measurement as it is. ``zero_threshold``: singular values below it are set to 0 (null
    space), as :class:`~ddrm_exp.degradations.fft_blur.FFTBlur` does; ``H = U Σ Vᵀ`` holds for
    the thresholded operator. ``eig_dtype``: precision of the eigensolver (float32 is 2-3x
    faster; the singular vectors are then orthonormal to about 1e-6).
    """

    def __init__(
        self,
        shape: tuple[int, int, int],
        *,
        kernel: Tensor,
        border: str = "valid",
        zero_threshold: float = ZERO_THRESHOLD,
        device: str | torch.device = "cpu",
        dtype: torch.dtype = torch.float32,
        eig_dtype: torch.dtype = torch.float32,
    ) -> None:
        c, h, w = self.shape = as_shape(shape)
        dtype = as_dtype(dtype)
        eig_dtype = as_dtype(eig_dtype)
        if border not in DENSE_BORDERS:
            raise ConfigError(
                f"BorderBlur border={border!r} is not supported; use one of {DENSE_BORDERS} "
                "(circular: FFTBlur; taper: TaperedFFTBlur)."
            )
        if h * w > MAX_DENSE_PIXELS:
            raise ConfigError(
                f"border={border} needs a dense SVD of the {h}x{w} blur, which is too large "
                f"(at most {MAX_DENSE_PIXELS} pixels; the cost grows as the cube of the pixel "
                "count). Use border=taper (edge tapering with the FFT operator) at this size."
            )
        zero_threshold = as_float(zero_threshold, "zero_threshold", low=0.0)
        kernels, batched = _as_kernels(kernel)
        for k in kernels:
            if k.shape[0] > 2 * h - 1 or k.shape[1] > 2 * w - 1:
                raise ConfigError(
                    f"The {tuple(k.shape)} kernel is larger than the {h}x{w} image can use."
                )
        self.border = border
        self.per_image = batched
        self.batch = kernels.shape[0]
        self.zero_threshold = zero_threshold
        us, ss, vs = [], [], []
        for k in kernels:
            u, s, v = _dense_svd(k, (h, w), border, zero_threshold, eig_dtype, torch.device(device))
            us.append(u)
            ss.append(s)
            vs.append(v)
        self.u_mat = torch.stack(us).to(device=device, dtype=dtype)
        self.v_mat = torch.stack(vs).to(device=device, dtype=dtype)
        self._singulars = torch.stack(ss).repeat_interleave(c, dim=1).to(device=device, dtype=dtype)
        self.kernel = (kernels if batched else kernels[0]).to(device=device, dtype=dtype)
        self.kernel2d = self.kernel  # the declared kernel (HFunctions.kernel2d)
        self.eig_dtype = eig_dtype

    def with_kernels(self, kernels: Tensor) -> BorderBlur:
        """This blur (its border, threshold, precision, device and dtype) for ``kernels``:
        ``(kh, kw)``, or ``(B, kh, kw)`` with one per image. A new dense SVD per kernel."""
        return type(self)(
            self.shape,
            kernel=kernels,
            border=self.border,
            zero_threshold=self.zero_threshold,
            device=self.kernel.device,
            dtype=self.kernel.dtype,
            eig_dtype=self.eig_dtype,
        )

    def _check_batch(self, b: int) -> None:
        if self.per_image and b != self.batch:
            raise ValueError(
                f"This BorderBlur holds {self.batch} per-image kernels but was given a batch of "
                f"{b}."
            )

    def _to_spectral(self, vec: Tensor, basis: Tensor) -> Tensor:
        """(B, C·P) pixels -> (B, P·C) spectral, ``basisᵀ`` per channel."""
        b = vec.shape[0]
        self._check_batch(b)
        c = self.shape[0]
        coeffs = torch.matmul(vec.reshape(b, c, -1), basis if self.per_image else basis[0])
        return coeffs.transpose(1, 2).reshape(b, -1)

    def _to_pixels(self, vec: Tensor, basis: Tensor) -> Tensor:
        """(B, P·C) spectral -> (B, C·P) pixels."""
        b = vec.shape[0]
        self._check_batch(b)
        c = self.shape[0]
        coeffs = vec.reshape(b, -1, c).transpose(1, 2)
        mat = basis if self.per_image else basis[0]
        return torch.matmul(coeffs, mat.transpose(-1, -2)).reshape(b, -1)

    def Vt(self, vec: Tensor) -> Tensor:
        return self._to_spectral(vec.reshape(vec.shape[0], -1), self.v_mat)

    def V(self, vec: Tensor) -> Tensor:
        return self._to_pixels(vec.reshape(vec.shape[0], -1), self.v_mat)

    def Ut(self, vec: Tensor) -> Tensor:
        return self._to_spectral(vec.reshape(vec.shape[0], -1), self.u_mat)

    def U(self, vec: Tensor) -> Tensor:
        return self._to_pixels(vec.reshape(vec.shape[0], -1), self.u_mat)

    def singulars(self) -> Tensor:
        return self._singulars if self.per_image else self._singulars[0]


# ---- edge tapering -------------------------------------------------------------------------------
def _taper_profile(projection: Tensor, length: int) -> Tensor:
    """``1 - β`` with ``β`` the kernel projection's circular autocorrelation on ``length``
    samples, normalised to 1 at lag 0: 0 at the border, 1 inside, over the blur's reach."""
    padded = projection.new_zeros(length)
    n = min(projection.numel(), length)
    padded[:n] = projection[:n]
    spectrum = torch.fft.rfft(padded)
    beta = torch.fft.irfft(spectrum.abs().square(), n=length)
    return 1.0 - beta / beta[0]


def edge_taper(y: Tensor, kernel: Tensor) -> Tensor:
    """MATLAB's ``edgetaper``: ``α y + (1 - α) (k ⊛ y)``, circularly, per image and channel.

    ``α`` is the product of the row and column profiles ``1 - β`` (``β``: the normalised
    autocorrelation of the kernel's projection on that axis), 0 on the border and 1 farther
    inside than the kernel reaches, so the result is continuous across the wrap-around and
    the circular FFT operator's border error shrinks. ``y``: ``(B, C, H, W)``; ``kernel``:
    ``(kh, kw)`` or ``(B, kh, kw)``.
    """
    k, batched = _as_kernels(kernel)
    h, w = y.shape[-2:]
    alphas = []
    for kk in k:
        kk = kk / kk.sum()
        a_rows = _taper_profile(kk.sum(dim=1), h)
        a_cols = _taper_profile(kk.sum(dim=0), w)
        alphas.append(torch.outer(a_rows, a_cols))
    alpha = torch.stack(alphas).unsqueeze(1).to(y)
    blurred = blur_circular(y, k.to(y) if batched else k[0].to(y))
    return alpha * y + (1 - alpha) * blurred


class TaperedFFTBlur(FFTBlur):
    """The circular :class:`FFTBlur` for measurements that are edge-tapered first.

    ``prepare_measurement(y)`` is :func:`edge_taper` with this operator's kernel(s); whoever
    feeds a real (valid) blurry frame to this operator must call it (the runner does).
    """

    border = "taper"

    def prepare_measurement(self, y: Tensor) -> Tensor:
        b = y.shape[0]
        images = y.reshape(b, *self.shape)
        return edge_taper(images, self.kernel).reshape(b, -1)


# ---- one entry point -----------------------------------------------------------------------------
def valid_blur_operator(
    kernel: Tensor,
    shape: tuple[int, int, int],
    *,
    border: str = "valid",
    zero_threshold: float = ZERO_THRESHOLD,
    device: str | torch.device = "cpu",
    dtype: torch.dtype = torch.float32,
) -> HFunctions:
    """The blur operator of ``kernel`` (``(kh, kw)`` or ``(B, kh, kw)``) with ``border``.

    ``valid`` / ``zero`` / ``reflect``: :class:`BorderBlur`; ``taper``: :class:`TaperedFFTBlur`
    (call its ``prepare_measurement`` on the measurement); ``circular``: :class:`FFTBlur`.
    Every operator measures an image of ``shape`` (``m = n``) and declares its kernel as
    ``kernel2d``; ``with_kernels`` gives the same kind of operator for other kernels.
    """
    if border not in BORDERS:
        raise ConfigError(f"border={border!r} is not supported; use one of {', '.join(BORDERS)}.")
    op: HFunctions
    if border in DENSE_BORDERS:
        op = BorderBlur(
            shape,
            kernel=kernel,
            border=border,
            zero_threshold=zero_threshold,
            device=device,
            dtype=dtype,
        )
    else:
        cls = TaperedFFTBlur if border == "taper" else FFTBlur
        op = cls(shape, kernel=kernel, zero_threshold=zero_threshold, device=device, dtype=dtype)
    return op
