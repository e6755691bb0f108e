"""FFTBlur (circular blur by any 2-D kernel), blur_circular, operator_for_kernel and blur2d.

The operator is checked against a circular convolution written directly as a sum of shifted
images (``torch.roll``) and against an independent ``numpy.fft`` spectrum; the SVD protocol
identities are checked on dense matrices at small sizes and, with hypothesis, on random inputs.
Per-image kernels are checked to act exactly as separate operators, in the sampler too.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from helpers import compose_cfg, run_job, tiny_eps_prior
from hypothesis import given, settings
from hypothesis import strategies as st
from omegaconf import OmegaConf

from ddrm_exp.config import instantiate_config
from ddrm_exp.datasets import SampleImages
from ddrm_exp.degradations import Deblurring, FFTBlur, HFunctions, blur_circular
from ddrm_exp.degradations.blur2d import blur2d_operator, operator_for_kernel
from ddrm_exp.degradations.dense import check_svd_protocol, dense_matrices
from ddrm_exp.degradations.kernels2d import gaussian_kernel2d, motion_kernel
from ddrm_exp.errors import ConfigError
from ddrm_exp.metrics.image import psnr
from ddrm_exp.models.gaussian import build_gaussian_prior
from ddrm_exp.samplers import DDRM, MCG

ROOT = Path(__file__).resolve().parents[1]
TOL = dict(atol=1e-10, rtol=1e-9)
FAST = settings(max_examples=25, deadline=None)
Shape = tuple[int, int, int]

# odd/even, square/non-square images; the last has a single row
SHAPES: list[Shape] = [(1, 8, 8), (3, 6, 6), (2, 7, 9), (1, 6, 5), (3, 5, 6), (1, 1, 8)]


def random_kernel(kh: int, kw: int, seed: int) -> torch.Tensor:
    k = torch.rand(kh, kw, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)
    return k / k.sum()


KERNELS = {
    "odd3x3": random_kernel(3, 3, 0),
    "even4x2": random_kernel(4, 2, 1),
    "wide1x5": random_kernel(1, 5, 2),
    "large9x9": random_kernel(9, 9, 3),  # larger than some images: taps wrap and add up
}


# ---- independent references ----------------------------------------------------------------------
def roll_blur(x: torch.Tensor, kernel: torch.Tensor) -> torch.Tensor:
    """y[p] = Σ_q k[q] x[p - q + origin], indices mod the image size; x is (..., H, W)."""
    kh, kw = kernel.shape
    out = torch.zeros_like(x)
    for a in range(kh):
        for b in range(kw):
            out += kernel[a, b] * torch.roll(x, shifts=(a - kh // 2, b - kw // 2), dims=(-2, -1))
    return out


def numpy_transfer(kernel: torch.Tensor, h: int, w: int) -> np.ndarray:
    """Full 2-D transfer function with numpy: the kernel wrapped onto the torus, then fft2."""
    k = kernel.numpy()
    placed = np.zeros((h, w))
    for a in range(k.shape[0]):
        for b in range(k.shape[1]):
            placed[(a - k.shape[0] // 2) % h, (b - k.shape[1] // 2) % w] += k[a, b]
    return np.fft.fft2(placed)


def make(shape: Shape, kernel: torch.Tensor, zero: float = 0.0) -> FFTBlur:
    return FFTBlur(shape, kernel=kernel, zero_threshold=zero, dtype=torch.float64)


# ---- dense protocol checks -----------------------------------------------------------------------
@pytest.mark.parametrize("shape", SHAPES, ids=str)
@pytest.mark.parametrize("kname", list(KERNELS))
def test_dense_svd_protocol_and_direct_convolution(shape: Shape, kname: str) -> None:
    c, h, w = shape
    kernel = KERNELS[kname]
    op = make(shape, kernel)
    # The protocol (orthonormal U, V; H = U Σ Vᵀ; Hᵀ; sorted singular values; H⁺ numpy's and
    # the Penrose identities), then what is the FFT blur's own.
    d = check_svd_protocol(op, pinv_rcond=1e-10, **TOL)
    n = op.n
    eye = torch.eye(n, dtype=torch.float64)
    assert op.m == n
    torch.testing.assert_close(HFunctions.H(op, eye).T, d.H, **TOL)  # the FFT shortcut's H
    direct = roll_blur(eye.view(n, c, h, w), kernel).reshape(n, n).T
    torch.testing.assert_close(d.H, direct, **TOL)
    # singular values: sorted |K(f)| over all frequencies, each once per channel
    expected = np.sort(np.tile(np.abs(numpy_transfer(kernel, h, w)).ravel(), c))[::-1].copy()
    torch.testing.assert_close(d.s, torch.from_numpy(expected), **TOL)
    torch.testing.assert_close(HFunctions.H_pinv(op, eye).T, d.pinv, atol=1e-9, rtol=1e-8)


@pytest.mark.parametrize("shape", [(1, 8, 8), (3, 7, 6)], ids=str)
def test_threshold_zeroes_small_frequencies(shape: Shape) -> None:
    """With zero_threshold, H is the blur with every |K(f)| < threshold removed."""
    c, h, w = shape
    kernel = gaussian_kernel2d(5, 1.2, 0.6, 20.0)
    zero = 0.05
    op = make(shape, kernel, zero)
    d = dense_matrices(op)
    transfer = numpy_transfer(kernel, h, w)
    kept = np.where(np.abs(transfer) < zero, 0.0, transfer)
    eye = np.eye(h * w).reshape(h * w, h, w)
    per_channel = np.real(np.fft.ifft2(np.fft.fft2(eye) * kept)).reshape(h * w, h * w).T
    expected = torch.from_numpy(np.kron(np.eye(c), per_channel))
    torch.testing.assert_close(d.H, expected, **TOL)
    s = d.s
    assert float(s[s > 0].min()) >= zero and int((s == 0).sum()) > 0
    torch.testing.assert_close(d.H, d.U @ torch.diag(s) @ d.V.T, **TOL)
    # H⁺ inverts what is kept and drops the rest: H⁺ H is the orthogonal projector V_m V_mᵀ
    vm = d.V[:, s > 0]
    torch.testing.assert_close(d.pinv @ d.H, vm @ vm.T, **TOL)


# ---- identities for random inputs ----------------------------------------------------------------
@st.composite
def blur_cases(draw: st.DrawFn) -> tuple[FFTBlur, torch.Tensor, torch.Tensor, torch.Tensor]:
    c = draw(st.integers(1, 3))
    h, w = draw(st.integers(1, 12)), draw(st.integers(1, 12))
    kh, kw = draw(st.integers(1, 7)), draw(st.integers(1, 7))
    seed = draw(st.integers(0, 2**16))
    g = torch.Generator().manual_seed(seed)
    kernel = torch.rand(kh, kw, generator=g, dtype=torch.float64)
    zero = draw(st.sampled_from([0.0, 0.03, 0.2]))
    op = make((c, h, w), kernel, zero)
    x = torch.randn(2, c * h * w, generator=g, dtype=torch.float64)
    y = torch.randn(2, c * h * w, generator=g, dtype=torch.float64)
    return op, kernel, x, y


@FAST
@given(blur_cases())
def test_identities_hold_for_random_inputs(
    case: tuple[FFTBlur, torch.Tensor, torch.Tensor, torch.Tensor],
) -> None:
    op, kernel, x, y = case
    c, h, w = op.shape
    torch.testing.assert_close(op.V(op.Vt(x)), x, **TOL)
    torch.testing.assert_close(op.Vt(op.V(x)), x, **TOL)
    torch.testing.assert_close(op.U(op.Ut(x)), x, **TOL)
    torch.testing.assert_close(op.Vt(x).norm(dim=1), x.norm(dim=1), **TOL)
    hx = op.H(x)
    torch.testing.assert_close(hx, op.U(op.singulars() * op.Vt(x)), **TOL)
    # adjoint: <Hx, y> = <x, Hᵀy>
    torch.testing.assert_close((hx * y).sum(1), (x * op.Ht(y)).sum(1), **TOL)
    # pseudo-inverse is exact on the range of Hᵀ
    x_row = op.Ht(y)
    torch.testing.assert_close(op.H_pinv(op.H(x_row)), x_row, atol=1e-8, rtol=1e-7)
    s = op.singulars()
    assert bool((s[:-1] >= s[1:]).all())
    if op.zero_threshold == 0.0:
        direct = roll_blur(x.view(2, c, h, w), kernel).reshape(2, -1)
        torch.testing.assert_close(hx, direct, **TOL)
        torch.testing.assert_close(blur_circular(x.view(2, c, h, w), kernel).reshape(2, -1), direct)


# ---- per-image kernels ---------------------------------------------------------------------------
def test_per_image_kernels_equal_separate_operators() -> None:
    shape = (3, 8, 10)
    kernels = [motion_kernel(7, 0.3, generator=s) for s in (1, 2, 3)]
    batch = FFTBlur(shape, kernel=torch.stack(kernels), dtype=torch.float64)
    singles = [FFTBlur(shape, kernel=k, dtype=torch.float64) for k in kernels]
    assert batch.singulars().shape == (3, batch.n) and singles[0].singulars().shape == (batch.n,)
    torch.testing.assert_close(batch.singulars(), torch.stack([o.singulars() for o in singles]))
    g = torch.Generator().manual_seed(0)
    x = torch.randn(3, batch.n, generator=g, dtype=torch.float64)
    for name in ("V", "Vt", "U", "Ut", "H", "Ht", "H_pinv"):
        got = getattr(batch, name)(x)
        want = torch.cat([getattr(o, name)(x[i : i + 1]) for i, o in enumerate(singles)])
        torch.testing.assert_close(got, want, **TOL, msg=name)
    torch.testing.assert_close(
        blur_circular(x.view(3, *shape), torch.stack(kernels)),
        torch.cat([blur_circular(x[i : i + 1].view(1, *shape), k) for i, k in enumerate(kernels)]),
    )
    with pytest.raises(ValueError, match="batch of 2"):
        batch.H(x[:2])


@pytest.mark.parametrize("sampler", [DDRM(7, 0.85, 1.0), MCG(5, 0.85, 1.0, grad_scale=1.0)])
def test_sampler_with_per_image_kernels_equals_separate_runs(sampler: DDRM) -> None:
    """(B, n) singulars: one batched run gives each image what its own operator gives."""
    shape = (3, 16, 16)
    prior = tiny_eps_prior(shape)  # float64 end to end, so the comparison can be tight
    kernels = torch.stack([motion_kernel(9, 0.2, generator=s) for s in (4, 5)])
    batch_op = FFTBlur(shape, kernel=kernels, dtype=torch.float64)
    x = torch.rand(2, *shape, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    x = 2 * x - 1
    y = batch_op.H(x.reshape(2, -1))

    def gens(idx: list[int]) -> list[torch.Generator]:
        return [torch.Generator().manual_seed(10 + i) for i in idx]

    together = sampler.sample(prior, batch_op, y, 0.05, generator=gens([0, 1])).x0
    for i in range(2):
        op = FFTBlur(shape, kernel=kernels[i], dtype=torch.float64)
        alone = sampler.sample(prior, op, y[i : i + 1], 0.05, generator=gens([i])).x0
        torch.testing.assert_close(together[i : i + 1], alone, atol=1e-8, rtol=1e-7)


def test_sampler_rejects_singulars_of_another_batch() -> None:
    shape = (3, 8, 8)
    prior = build_gaussian_prior(image_size=8)
    op = FFTBlur(shape, kernel=torch.ones(3, 3, 3) / 9)
    with pytest.raises(ValueError, match="singulars"):
        DDRM(3).sample(prior, op, torch.zeros(2, op.n), 0.0)


# ---- conventions and errors ----------------------------------------------------------------------
@pytest.mark.parametrize("size", [(3, 3), (4, 4), (1, 1), (2, 5)])
def test_delta_kernel_is_identity(size: tuple[int, int]) -> None:
    kernel = torch.zeros(size, dtype=torch.float64)
    kernel[size[0] // 2, size[1] // 2] = 1.0
    op = make((3, 6, 7), kernel, 0.03)
    x = torch.randn(2, op.n, dtype=torch.float64)
    torch.testing.assert_close(op.H(x), x, **TOL)
    torch.testing.assert_close(op.H_pinv(x), x, **TOL)
    torch.testing.assert_close(op.singulars(), torch.ones(op.n, dtype=torch.float64))


def test_blur_circular_wraps_around_the_borders() -> None:
    """A horizontal 3-tap blur of a dot on the left edge reaches the right edge."""
    x = torch.zeros(1, 5, 6)
    x[0, 2, 0] = 1.0
    y = blur_circular(x, torch.tensor([[1.0, 1.0, 1.0]]) / 3)
    expected = torch.zeros(1, 5, 6)
    expected[0, 2, [5, 0, 1]] = 1 / 3
    torch.testing.assert_close(y, expected)
    # it is a convolution: an asymmetric kernel [0, 0, 1] moves the image one pixel right
    shifted = blur_circular(x, torch.tensor([[0.0, 0.0, 1.0]]))
    torch.testing.assert_close(shifted, torch.roll(x, 1, dims=-1))


def test_default_dtype_device_and_to() -> None:
    op = FFTBlur((3, 8, 8), kernel=motion_kernel(5, generator=0))
    assert op.singulars().dtype == torch.float32 and op.kernel.dtype == torch.float32
    x = torch.rand(2, op.n)
    assert op.H(x).dtype == torch.float32 and op.V(op.Vt(x)).shape == (2, op.n)
    torch.testing.assert_close(op.V(op.Vt(x)), x, atol=1e-5, rtol=1e-5)
    assert op.to("cpu") is op


@pytest.mark.parametrize(
    ("kernel", "needle"),
    [
        (torch.zeros(3, 3), "all zero"),
        (torch.ones(3), "(kh, kw)"),
        (torch.full((2, 2), float("nan")), "non-finite"),
    ],
)
def test_bad_kernels_raise_config_error(kernel: torch.Tensor, needle: str) -> None:
    with pytest.raises(ConfigError, match=needle.replace("(", r"\(").replace(")", r"\)")):
        FFTBlur((3, 8, 8), kernel=kernel)


def test_bad_threshold_raises_config_error() -> None:
    with pytest.raises(ConfigError, match="zero_threshold"):
        FFTBlur((3, 8, 8), kernel=torch.ones(3, 3), zero_threshold=-1)


# ---- operator_for_kernel -------------------------------------------------------------------------
def test_operator_for_kernel_picks_separable_for_rank1_and_fft_otherwise() -> None:
    shape = (3, 16, 16)
    gauss = gaussian_kernel2d(5, 1.5)
    assert isinstance(operator_for_kernel(gauss, shape), Deblurring)
    assert isinstance(operator_for_kernel(gauss, shape, method="fft"), FFTBlur)
    motion = motion_kernel(9, 0.5, generator=0)
    op = operator_for_kernel(motion, shape)
    assert isinstance(op, FFTBlur)
    torch.testing.assert_close(op.kernel2d, motion.float())
    batch = torch.stack([gauss, gauss])
    assert isinstance(operator_for_kernel(batch, shape), FFTBlur)
    # a rank-1 kernel longer than the image: the separable operator cannot hold it
    assert isinstance(operator_for_kernel(gaussian_kernel2d(21, 3.0), (3, 16, 16)), FFTBlur)
    with pytest.raises(ConfigError, match="rank-1"):
        operator_for_kernel(motion, shape, method="separable")
    with pytest.raises(ConfigError, match="per image"):
        operator_for_kernel(batch, shape, method="separable")
    with pytest.raises(ConfigError, match="method"):
        operator_for_kernel(gauss, shape, method="dense")


@pytest.mark.parametrize("size", [(5, 3), (4, 6)])
def test_separable_and_fft_agree_inside_the_image(size: tuple[int, int]) -> None:
    """Same convolution (orientation, origin, also even sizes); only the borders differ."""
    g = torch.Generator().manual_seed(0)
    rows = torch.rand(size[0], generator=g, dtype=torch.float64)
    cols = torch.rand(size[1], generator=g, dtype=torch.float64)
    kernel = torch.outer(rows, cols) / (rows.sum() * cols.sum())
    shape = (2, 16, 18)
    sep = operator_for_kernel(kernel, shape, zero_threshold=0.0, dtype=torch.float64)
    fft = operator_for_kernel(kernel, shape, method="fft", zero_threshold=0.0, dtype=torch.float64)
    assert isinstance(sep, Deblurring) and isinstance(fft, FFTBlur)
    x = torch.randn(3, *shape, generator=g, dtype=torch.float64)
    a = sep.H(x.reshape(3, -1)).view(3, *shape)
    b = fft.H(x.reshape(3, -1)).view(3, *shape)
    m = max(size)
    torch.testing.assert_close(a[..., m:-m, m:-m], b[..., m:-m, m:-m], **TOL)
    torch.testing.assert_close(b, roll_blur(x, kernel), **TOL)


# ---- the degradation config ----------------------------------------------------------------------
BLUR2D = OmegaConf.load(ROOT / "conf" / "degradation" / "blur2d.yaml")


@pytest.mark.parametrize(
    ("spec", "kind"),
    [
        (None, FFTBlur),  # the YAML's own motion kernel
        ({"type": "gaussian", "size": 7, "sigma": 1.5}, Deblurring),
        ({"type": "gaussian_aniso", "size": 9, "sigma_x": 3, "sigma_y": 1, "theta": 30}, FFTBlur),
        ({"type": "box", "size": [3, 5]}, Deblurring),
        ({"type": "ddrm", "name": "deblur_aniso"}, Deblurring),
    ],
)
def test_blur2d_config_builds_and_measures(spec: dict | None, kind: type) -> None:
    cfg = BLUR2D.copy()
    if spec is not None:
        cfg.kernel = spec
    shape = (3, 32, 32)
    op = instantiate_config("degradation", cfg, shape=shape, device=torch.device("cpu"))
    assert isinstance(op, kind)
    x = torch.rand(2, *shape) * 2 - 1
    y = op.H(x.reshape(2, -1))
    assert y.shape == (2, op.m) and bool(torch.isfinite(op.H_pinv(y)).all())


def test_blur2d_ddrm_kernels_match_the_official_configs() -> None:
    """{type: ddrm} through blur2d is the same operator as conf/degradation/deblur_*.yaml."""
    shape = (1, 12, 16)
    eye = torch.eye(math.prod(shape), dtype=torch.float64)
    for name in ("deblur_uniform", "deblur_gauss", "deblur_aniso"):
        ours = blur2d_operator(shape, kernel={"type": "ddrm", "name": name}, dtype=torch.float64)
        cfg = OmegaConf.load(ROOT / "conf" / "degradation" / f"{name}.yaml")
        official = instantiate_config("degradation", cfg, shape=shape, dtype=torch.float64)
        torch.testing.assert_close(ours.H(eye), official.H(eye), **TOL, msg=name)


def compose_degradation(overrides: list[str]) -> Any:
    return compose_cfg(["degradation=blur2d", *overrides])


def test_blur2d_type_is_switched_by_one_override() -> None:
    """The YAML holds every type's parameters; `type` picks which are read."""
    shape = (3, 16, 16)
    cfg = compose_degradation(["degradation.kernel.type=gaussian", "degradation.kernel.size=5"])
    op = instantiate_config("degradation", cfg.degradation, shape=shape, dtype=torch.float64)
    assert isinstance(op, Deblurring)
    torch.testing.assert_close(op.kernel2d, gaussian_kernel2d(5, cfg.degradation.kernel.sigma))
    cfg = compose_degradation(["degradation.kernel.type=motion", "degradation.kernel.seed=3"])
    op = instantiate_config("degradation", cfg.degradation, shape=shape)
    torch.testing.assert_close(op.kernel2d, motion_kernel(31, 0.5, generator=3).float())
    cfg = compose_degradation(["degradation.kernel.type=file"])
    with pytest.raises(ConfigError, match="path"):
        instantiate_config("degradation", cfg.degradation, shape=shape)
    cfg = compose_degradation(["degradation.method=separable"])  # the motion kernel
    with pytest.raises(ConfigError, match="rank-1"):
        instantiate_config("degradation", cfg.degradation, shape=shape)
    bad = BLUR2D.copy()
    bad.kernel.sigmaa = 2.0  # a key no kernel type knows is still an error
    with pytest.raises(ConfigError, match="sigmaa"):
        instantiate_config("degradation", bad, shape=shape)


# ---- end to end ----------------------------------------------------------------------------------
def test_ddrm_restores_motion_blur_better_than_pinv() -> None:
    """Gaussian prior, heldout photos, a non-separable motion blur with noise, 20 steps."""
    size = 32
    shape = (3, size, size)
    prior = build_gaussian_prior(image_size=size)
    ds = SampleImages(image_size=size, limit=2)
    x = torch.stack([ds[i]["image"] for i in range(len(ds))])
    op = FFTBlur(shape, kernel=motion_kernel(9, 0.3, generator=0))
    assert isinstance(op, FFTBlur)
    gens = [torch.Generator().manual_seed(i) for i in range(len(x))]
    y = op.H(x.reshape(len(x), -1))
    y = y + 2 * 0.05 * torch.randn(y.shape, generator=torch.Generator().manual_seed(7))
    out = DDRM(20, 0.85, 1.0).sample(prior, op, y, 0.05, generator=gens).x0
    assert out.shape == x.shape and bool(torch.isfinite(out).all())
    pinv = op.H_pinv(y).reshape(x.shape)
    restored, baseline = psnr(out, x), psnr(pinv, x)
    assert sum(restored) / len(restored) > sum(baseline) / len(baseline) + 1.0


def test_blur2d_motion_runs(tmp_path: Path) -> None:
    """A whole run (in-process: the CLI's path is test_cli's)."""
    run_dir = tmp_path / "run"
    run_job(
        [
            "degradation=blur2d",
            "degradation.kernel.type=motion",
            "degradation.kernel.size=9",
            "model=gaussian",
            "model.image_size=32",
            "noise.sigma_y=0.02",
            "sampler.timesteps=4",
            "metrics.lpips=false",
            "dataset.limit=2",
            "batch_size=2",
            "logger=none",
            "device=cpu",
        ],
        run_dir,
    )
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["count"] == 2 and summary["degradation"] == "blur2d"
    assert math.isfinite(summary["restored"]["psnr"]["mean"])
