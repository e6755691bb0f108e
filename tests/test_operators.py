"""Degradation operators against independent direct implementations, plus the SVD protocol.

Every YAML under ``conf/degradation`` is instantiated through Hydra at a few small shapes (in
float64), densified by applying it to identity columns, and compared with a direct version
written here from scratch (``F.conv2d``, ``F.avg_pool2d``, a dense Hadamard matrix, ...). The
protocol identities (orthogonal ``U``/``V``, ``H = U Σ Vᵀ``, adjoint, pseudo-inverse) are
checked on the dense matrices and, with hypothesis, on random inputs and parameters.
"""

from __future__ import annotations

import math
from functools import cache
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import scipy.linalg
import torch
import torch.nn.functional as F
from hydra.errors import InstantiationException
from hydra.utils import instantiate
from hypothesis import given, settings
from hypothesis import strategies as st
from omegaconf import OmegaConf

from ddrm_exp.config import instantiate_config
from ddrm_exp.degradations import (
    BoxInpainting,
    Colorization,
    Deblurring,
    HFunctions,
    RandomInpainting,
    SuperResolution,
    WalshHadamardCS,
    kernel_from_spec,
    lorem_mask,
    random_mask,
)
from ddrm_exp.degradations.dense import DenseMatrices, check_svd_protocol, dense_matrices
from ddrm_exp.degradations.kernels2d import kernel2d_from_spec
from ddrm_exp.degradations.separable import BicubicSuperResolution, blur_matrix
from ddrm_exp.errors import ConfigError

CONF_DIR = Path(__file__).resolve().parents[1] / "conf" / "degradation"
ALL_CONFIGS = sorted(p.stem for p in CONF_DIR.glob("*.yaml"))
# Blind deblurring (degradations.AssumedBlur): the kernel comes from the data, batch by batch,
# so there is no one operator per config to compare with a direct implementation here;
# tests/test_blind_cli.py covers them.
BLIND_CONFIGS = {"blur_given", "blur_estimated"}
CONFIGS = [name for name in ALL_CONFIGS if name not in BLIND_CONFIGS]
EXPECTED_CONFIGS = {
    "denoise", "inpaint_random", "inpaint_lorem", "inpaint_box", "colorize",
    "sr2", "sr4", "sr8", "sr16", "sr_bicubic4", "sr_bicubic8", "sr_bicubic16",
    "deblur_uniform", "deblur_gauss", "deblur_aniso", "cs2", "cs4", "blur2d",
}  # fmt: skip
SHAPES = [(3, 8, 8), (3, 16, 16), (3, 8, 16), (3, 12, 16)]
# Large factors need larger images (bicubic16: 64 taps, sides >= 32); n = 1024 stays cheap.
LARGE_SHAPE = (1, 32, 32)
LARGE_CONFIGS = ("sr16", "sr_bicubic4", "sr_bicubic8", "sr_bicubic16")
TOL = dict(atol=1e-10, rtol=1e-9)
FAST = settings(max_examples=20, deadline=None)

Shape = tuple[int, int, int]


# ---- loading ---------------------------------------------------------------------------------
def load_cfg(name: str) -> Any:
    return OmegaConf.load(CONF_DIR / f"{name}.yaml")


def build(name: str, shape: Shape, **overrides: Any) -> HFunctions:
    """Instantiate a YAML through Hydra in float64, re-raising the operator's ConfigError."""
    try:
        return instantiate(load_cfg(name), shape=shape, dtype=torch.float64, **overrides)
    except InstantiationException as exc:
        if isinstance(exc.__cause__, ConfigError):
            raise exc.__cause__ from None
        raise


def is_pow2(v: int) -> bool:
    return v > 0 and v & (v - 1) == 0


def expected_valid(name: str, shape: Shape) -> bool:
    """Which (config, shape) combinations must construct; the others must raise ConfigError."""
    c, h, w = shape
    cfg = load_cfg(name)
    if name == "colorize":
        return c == 3
    if name.startswith("sr_bicubic"):
        f = cfg.factor
        return h % f == 0 and w % f == 0 and min(h, w) >= 2 * f
    if name.startswith("sr"):
        return h % cfg.factor == 0 and w % cfg.factor == 0
    if name.startswith("deblur"):
        return len(kernel_1d(cfg.kernel_rows)) <= h and len(kernel_1d(cfg.kernel_cols)) <= w
    if name.startswith("cs"):
        return is_pow2(h * w) and (h * w) % cfg.ratio == 0
    return True


# ---- independent direct implementations --------------------------------------------------------
def kernel_1d(spec: Any) -> list[float]:
    """The YAML kernel schema, written out directly."""
    if spec["type"] == "uniform":
        return [1.0 / spec["size"]] * spec["size"]
    assert spec["type"] == "gaussian"
    size, sigma = spec["size"], spec["sigma"]
    vals = [math.exp(-0.5 * ((i - (size - 1) / 2) / sigma) ** 2) for i in range(size)]
    return [v / sum(vals) for v in vals]


def keys(x: float, a: float = -0.5) -> float:
    x = abs(x)
    if x <= 1:
        return (a + 2) * x**3 - (a + 3) * x**2 + 1
    if x < 2:
        return a * x**3 - 5 * a * x**2 + 8 * a * x - 4 * a
    return 0.0


def bicubic_taps(factor: int, a: float = -0.5) -> list[float]:
    k = [keys((i - math.floor(4 * factor / 2) + 0.5) / factor, a) for i in range(4 * factor)]
    return [v / sum(k) for v in k]


def conv_same(x: torch.Tensor, k_rows: list[float], k_cols: list[float]) -> torch.Tensor:
    """Zero-padded "same" correlation of (B, C, H, W) with the outer product kernel."""
    b, c, h, w = x.shape
    kr, kc = torch.tensor(k_rows, dtype=x.dtype), torch.tensor(k_cols, dtype=x.dtype)
    weight = torch.outer(kr, kc).expand(c, 1, len(k_rows), len(k_cols))
    out = F.conv2d(x, weight, padding=(len(k_rows) // 2, len(k_cols) // 2), groups=c)
    return out[:, :, :h, :w]  # even kernels give one extra output row/column


def conv_circular(x: torch.Tensor, kernel: torch.Tensor) -> torch.Tensor:
    """y[p] = Σ_q k[q] x[p - q + (kh//2, kw//2)], indices wrapping around the image."""
    b, c, h, w = x.shape
    kh, kw = kernel.shape
    rows = (torch.arange(h + kh - 1) - (kh - 1 - kh // 2)) % h
    cols = (torch.arange(w + kw - 1) - (kw - 1 - kw // 2)) % w
    padded = x[:, :, rows][:, :, :, cols].reshape(b * c, 1, h + kh - 1, w + kw - 1)
    weight = kernel.flip(0, 1).to(x.dtype).view(1, 1, kh, kw)  # conv2d correlates
    return F.conv2d(padded, weight).view(b, c, h, w)


def bicubic_down(x: torch.Tensor, factor: int, a: float = -0.5) -> torch.Tensor:
    """Strided correlation with symmetric (edge-repeating) padding, via numpy's pad."""
    b, c, h, w = x.shape
    k = bicubic_taps(factor, a)
    left = len(k) // 2 - factor // 2
    right = len(k) - factor - left
    padded = np.pad(x.numpy(), ((0, 0), (0, 0), (left, right), (left, right)), mode="symmetric")
    kt = torch.tensor(k, dtype=x.dtype)
    weight = torch.outer(kt, kt).expand(c, 1, len(k), len(k))
    return F.conv2d(torch.from_numpy(padded), weight, stride=factor, groups=c)


def hadamard_cs(x: torch.Tensor, ratio: int, seed: int) -> torch.Tensor:
    b, c, h, w = x.shape
    n = h * w
    had = torch.from_numpy(scipy.linalg.hadamard(n).astype(np.float64)) / math.sqrt(n)
    perm = torch.randperm(n, generator=torch.Generator().manual_seed(seed))
    coeffs = x.reshape(b, c, n) @ had.T
    return coeffs[:, :, perm[: n // ratio]]


def direct_mask(name: str, cfg: Any, h: int, w: int) -> torch.Tensor:
    if name == "inpaint_random":
        missing = math.floor(cfg.fraction * h * w)
        order = torch.randperm(h * w, generator=torch.Generator().manual_seed(cfg.seed))
        keep = torch.ones(h * w, dtype=torch.bool)
        keep[order[:missing]] = False
        return keep.view(h, w)
    if name == "inpaint_box":
        keep = np.ones((h, w), dtype=bool)
        bh, bw = round(cfg.height_frac * h), round(cfg.width_frac * w)
        top, left = round(cfg.center[0] * h - bh / 2), round(cfg.center[1] * w - bw / 2)
        keep[max(top, 0) : max(top + bh, 0), max(left, 0) : max(left + bw, 0)] = False
        return torch.from_numpy(keep)
    assert name == "inpaint_lorem"
    return lorem_mask(h, w)  # the mask function itself is tested separately


def direct(name: str, x: torch.Tensor, **overrides: Any) -> torch.Tensor:
    """The operator ``name`` applied to a (B, C, H, W) batch, flattened to (B, m)."""
    cfg = OmegaConf.merge(load_cfg(name), overrides)
    b, c, h, w = x.shape
    if name == "denoise":
        y = x
    elif name.startswith("inpaint"):
        y = x.reshape(b, c, h * w)[:, :, direct_mask(name, cfg, h, w).reshape(-1)]
    elif name == "colorize":
        y = (torch.tensor(list(cfg.weights), dtype=x.dtype).view(1, c, 1, 1) * x).sum(1)
    elif name.startswith("sr_bicubic"):
        y = bicubic_down(x, cfg.factor, cfg.a)
    elif name.startswith("sr"):
        y = F.avg_pool2d(x, cfg.factor)
    elif name.startswith("deblur"):
        y = conv_same(x, kernel_1d(cfg.kernel_rows), kernel_1d(cfg.kernel_cols))
    elif name.startswith("cs"):
        y = hadamard_cs(x, cfg.ratio, cfg.seed)
    elif name == "blur2d":  # its default motion kernel is not separable: the circular FFT blur
        y = conv_circular(x, kernel2d_from_spec(cfg.kernel, ignore_other_types=True))
    else:
        raise AssertionError(f"no direct implementation for {name}")
    return y.reshape(b, -1)


def direct_dense(name: str, shape: Shape, **overrides: Any) -> torch.Tensor:
    n = math.prod(shape)
    return direct(name, torch.eye(n, dtype=torch.float64).view(n, *shape), **overrides).T


def threshold(a: torch.Tensor, zero: float) -> torch.Tensor:
    u, s, vh = np.linalg.svd(a.numpy())
    s = np.where(s < zero, 0.0, s)
    return torch.from_numpy((u[:, : len(s)] * s) @ vh[: len(s)])


def direct_1d(name: str, size: int, axis: int) -> torch.Tensor:
    """The 1-D factor (along rows for axis 0, columns for axis 1) of a separable operator."""
    cfg = load_cfg(name)
    eye = torch.eye(size, dtype=torch.float64)
    if name.startswith("deblur"):
        k = kernel_1d(cfg.kernel_rows if axis == 0 else cfg.kernel_cols)
        return conv_same(eye.view(size, 1, 1, size), [1.0], k).view(size, size).T
    if name.startswith("sr_bicubic"):
        f = cfg.factor
        k = bicubic_taps(f, cfg.a)
        left = len(k) // 2 - f // 2
        padded = np.pad(eye.numpy(), ((0, 0), (left, len(k) - f - left)), mode="symmetric")
        weight = torch.tensor(k, dtype=torch.float64).view(1, 1, -1)
        return F.conv1d(torch.from_numpy(padded).unsqueeze(1), weight, stride=f)[:, 0, :].T
    return F.avg_pool1d(eye.view(size, 1, size), cfg.factor).view(size, -1).T


@cache
def dense_for(name: str, shape: Shape) -> DenseMatrices:
    return dense_matrices(build(name, shape))


CASES = [(name, shape) for name in CONFIGS for shape in SHAPES] + [
    (name, LARGE_SHAPE) for name in LARGE_CONFIGS
]


def valid_or_raises(name: str, shape: Shape) -> bool:
    """True for a valid combination; for an invalid one, assert the ConfigError and say False."""
    if expected_valid(name, shape):
        return True
    with pytest.raises(ConfigError):
        build(name, shape)
    return False


# ---- config inventory --------------------------------------------------------------------------
def test_every_config_is_present_and_documented() -> None:
    assert set(ALL_CONFIGS) == EXPECTED_CONFIGS | BLIND_CONFIGS
    for name in ALL_CONFIGS:
        lines = (CONF_DIR / f"{name}.yaml").read_text().splitlines()
        assert lines[0].startswith("# Official DDRM: "), name
        cfg = load_cfg(name)
        assert cfg._target_.startswith("ddrm_exp.degradations."), name
        assert "shape" not in cfg and "device" not in cfg, name


@pytest.mark.parametrize("name", CONFIGS)
def test_instantiate_helper_and_default_dtype(name: str) -> None:
    shape = (3, 32, 32)
    op = instantiate_config("degradation", load_cfg(name), shape=shape)
    assert op.singulars().dtype == torch.float32
    x = torch.rand(2, *shape)
    assert op.H(x).shape == (2, op.m)
    assert op.to("cpu") is op


# ---- direct comparison ---------------------------------------------------------------------------
@pytest.mark.parametrize(("name", "shape"), CASES)
def test_matches_direct_implementation(name: str, shape: Shape) -> None:
    if not valid_or_raises(name, shape):
        return
    separable = name.startswith(("sr", "deblur"))
    if separable or name == "blur2d":
        # The thresholded operator is checked below (blur2d: tests/test_fft_blur.py); here the
        # exact operator.
        op = build(name, shape, zero_threshold=0.0)
        h_mat = op.H(torch.eye(op.n, dtype=torch.float64)).T
    else:
        h_mat = dense_for(name, shape).H
    expected = direct_dense(name, shape)
    assert h_mat.shape == expected.shape
    torch.testing.assert_close(h_mat, expected, **TOL)
    # Layout-free comparison as well: the normal matrices agree.
    torch.testing.assert_close(h_mat.T @ h_mat, expected.T @ expected, **TOL)


@pytest.mark.parametrize(
    ("name", "shape"), [(n, s) for n, s in CASES if n.startswith(("sr", "deblur"))]
)
def test_separable_threshold_matches_thresholded_1d_factors(name: str, shape: Shape) -> None:
    if not valid_or_raises(name, shape):
        return
    c, h, w = shape
    zero = float(load_cfg(name).zero_threshold)
    rows = threshold(direct_1d(name, h, 0), zero)
    cols = threshold(direct_1d(name, w, 1), zero)
    expected = torch.kron(torch.eye(c, dtype=torch.float64), torch.kron(rows, cols))
    torch.testing.assert_close(dense_for(name, shape).H, expected, **TOL)


# ---- SVD protocol on the dense matrices ---------------------------------------------------------
@pytest.mark.parametrize(("name", "shape"), CASES)
def test_svd_protocol(name: str, shape: Shape) -> None:
    if not valid_or_raises(name, shape):
        return
    op = build(name, shape)
    assert op.n == math.prod(shape)
    d = check_svd_protocol(op)
    n = op.n
    assert op.add_zeros(d.s.unsqueeze(0)).shape == (1, n)


# ---- Toeplitz convention -----------------------------------------------------------------------
@pytest.mark.parametrize("name", ["deblur_uniform", "deblur_gauss", "deblur_aniso"])
@pytest.mark.parametrize("shape", [(3, 16, 16), (1, 12, 16)])
def test_official_toeplitz_drops_exactly_the_last_tap(name: str, shape: Shape) -> None:
    _, h, w = shape
    cfg = load_cfg(name)
    k_rows, k_cols = kernel_1d(cfg.kernel_rows), kernel_1d(cfg.kernel_cols)
    correct = build(name, shape, zero_threshold=0.0)
    official = build(name, shape, zero_threshold=0.0, official_toeplitz=True)
    assert correct.official_toeplitz is False  # the YAML default is the correct blur
    for k, size, got_c, got_o in (
        (k_rows, h, correct.matrix_rows, official.matrix_rows),
        (k_cols, w, correct.matrix_cols, official.matrix_cols),
    ):
        big_k = len(k)
        diff = got_c - got_o
        expected = torch.zeros(size, size, dtype=torch.float64)
        i = torch.arange(size - big_k // 2)
        expected[i, i + big_k // 2] = k[-1]
        torch.testing.assert_close(diff, expected, **TOL)
    # 2-D: the official operator is the correct blur with the last tap of each kernel removed.
    dense_official = official.H(torch.eye(official.n, dtype=torch.float64)).T
    n = math.prod(shape)
    basis = torch.eye(n, dtype=torch.float64).view(n, *shape)
    dropped = conv_same(basis, k_rows[:-1] + [0.0], k_cols[:-1] + [0.0]).reshape(n, -1).T
    torch.testing.assert_close(dense_official, dropped, **TOL)
    dense_correct = correct.H(torch.eye(correct.n, dtype=torch.float64)).T
    torch.testing.assert_close(dense_correct, direct_dense(name, shape), **TOL)


def test_official_toeplitz_leaves_even_kernels_alone() -> None:
    k = torch.tensor([0.1, 0.2, 0.3, 0.4], dtype=torch.float64)
    torch.testing.assert_close(blur_matrix(k, 10), blur_matrix(k, 10, official=True))


# ---- property-based ------------------------------------------------------------------------------
small_shapes = st.tuples(st.integers(1, 3), st.integers(2, 10), st.integers(2, 10))


@FAST
@given(shape=small_shapes, fraction=st.floats(0.0, 0.999), seed=st.integers(0, 2**31 - 1))
def test_random_inpainting_properties(shape: Shape, fraction: float, seed: int) -> None:
    c, h, w = shape
    op = RandomInpainting(shape, fraction=fraction, seed=seed, dtype=torch.float64)
    mask = op.mask
    assert mask.shape == (h, w) and mask.dtype == torch.bool
    missing = int((~mask).sum())
    assert missing == min(math.floor(fraction * h * w + 1e-9), h * w - 1)
    assert op.m == c * (h * w - missing)
    x = torch.randn(3, c * h * w, dtype=torch.float64)
    y = torch.randn(3, op.m, dtype=torch.float64)
    torch.testing.assert_close(op.H(x), x.view(3, c, h * w)[:, :, mask.flatten()].reshape(3, -1))
    torch.testing.assert_close((op.H(x) * y).sum(1), (x * op.Ht(y)).sum(1), **TOL)
    torch.testing.assert_close(op.H_pinv(op.H(x)), (x.view(3, c, h, w) * mask).reshape(3, -1))
    torch.testing.assert_close(op.H(op.H_pinv(y)), y, **TOL)
    torch.testing.assert_close(op.V(op.Vt(x)), x)


@FAST
@given(
    shape=small_shapes,
    rows=st.lists(st.floats(-1.0, 1.0, allow_subnormal=False), min_size=1, max_size=6),
    cols=st.lists(st.floats(-1.0, 1.0, allow_subnormal=False), min_size=1, max_size=6),
    official=st.booleans(),
    zero=st.sampled_from([0.0, 3e-2]),
)
def test_deblurring_properties(
    shape: Shape, rows: list[float], cols: list[float], official: bool, zero: float
) -> None:
    c, h, w = shape
    if len(rows) > h or len(cols) > w or not any(rows) or not any(cols):
        with pytest.raises(ConfigError):
            Deblurring(shape, kernel_rows=rows, kernel_cols=cols)
        return
    op = Deblurring(
        shape,
        kernel_rows=rows,
        kernel_cols=cols,
        official_toeplitz=official,
        zero_threshold=zero,
        dtype=torch.float64,
    )
    x = torch.randn(2, c, h, w, dtype=torch.float64)
    y = torch.randn(2, op.m, dtype=torch.float64)
    hx = op.H(x)
    torch.testing.assert_close((hx * y).sum(1), (x.reshape(2, -1) * op.Ht(y)).sum(1), **TOL)
    torch.testing.assert_close(op.H(op.H_pinv(hx)), hx, atol=1e-8, rtol=1e-7)
    torch.testing.assert_close(op.V(op.Vt(x.reshape(2, -1))), x.reshape(2, -1), **TOL)
    s = op.singulars()
    assert bool((s[:-1] >= s[1:]).all()) and bool((s >= 0).all())
    if zero == 0.0:
        k_rows = rows[:-1] + [0.0] if official and len(rows) % 2 else rows
        k_cols = cols[:-1] + [0.0] if official and len(cols) % 2 else cols
        torch.testing.assert_close(hx, conv_same(x, k_rows, k_cols).reshape(2, -1), **TOL)


@FAST
@given(factor=st.integers(1, 4), a=st.integers(1, 4), b=st.integers(1, 4), c=st.integers(1, 3))
def test_super_resolution_properties(factor: int, a: int, b: int, c: int) -> None:
    shape = (c, factor * a, factor * b)
    op = SuperResolution(shape, factor=factor, dtype=torch.float64)
    x = torch.randn(2, *shape, dtype=torch.float64)
    torch.testing.assert_close(op.H(x), F.avg_pool2d(x, factor).reshape(2, -1), **TOL)
    torch.testing.assert_close(
        op.singulars(), torch.full((op.m,), 1.0 / factor, dtype=torch.float64), **TOL
    )


@FAST
@given(factor=st.integers(1, 3), a=st.integers(2, 4), b=st.integers(2, 4))
def test_bicubic_properties(factor: int, a: int, b: int) -> None:
    shape = (2, factor * a, factor * b)
    op = BicubicSuperResolution(shape, factor=factor, zero_threshold=0.0, dtype=torch.float64)
    x = torch.randn(2, *shape, dtype=torch.float64)
    torch.testing.assert_close(op.H(x), bicubic_down(x, factor).reshape(2, -1), **TOL)
    y = torch.randn(2, op.m, dtype=torch.float64)
    torch.testing.assert_close((op.H(x) * y).sum(1), (x.reshape(2, -1) * op.Ht(y)).sum(1), **TOL)


@FAST
@given(
    log_n=st.integers(1, 8),
    log_ratio=st.integers(0, 3),
    seed=st.integers(0, 2**31 - 1),
    c=st.integers(1, 3),
)
def test_cs_properties(log_n: int, log_ratio: int, seed: int, c: int) -> None:
    h = 2 ** (log_n // 2)
    w = 2**log_n // h
    ratio = 2 ** min(log_ratio, log_n)
    op = WalshHadamardCS((c, h, w), ratio=ratio, seed=seed, dtype=torch.float64)
    x = torch.randn(2, c, h, w, dtype=torch.float64)
    torch.testing.assert_close(op.H(x), hadamard_cs(x, ratio, seed).reshape(2, -1), **TOL)
    torch.testing.assert_close(op.V(op.Vt(x.reshape(2, -1))), x.reshape(2, -1), **TOL)
    y = torch.randn(2, op.m, dtype=torch.float64)
    torch.testing.assert_close((op.H(x) * y).sum(1), (x.reshape(2, -1) * op.Ht(y)).sum(1), **TOL)


@FAST
@given(weights=st.lists(st.floats(-2, 2, allow_subnormal=False), min_size=1, max_size=4))
def test_colorization_properties(weights: list[float]) -> None:
    shape = (len(weights), 3, 5)
    if not any(weights):
        with pytest.raises(ConfigError):
            Colorization(shape, weights=weights)
        return
    op = Colorization(shape, weights=weights, dtype=torch.float64)
    x = torch.randn(2, *shape, dtype=torch.float64)
    wt = torch.tensor(weights, dtype=torch.float64).view(1, -1, 1, 1)
    torch.testing.assert_close(op.H(x), (wt * x).sum(1).reshape(2, -1), **TOL)
    torch.testing.assert_close(op.singulars(), wt.norm().expand(15), **TOL)


@FAST
@given(
    h=st.integers(1, 12),
    w=st.integers(1, 12),
    hf=st.floats(0.05, 1.0),
    wf=st.floats(0.05, 1.0),
    cy=st.floats(0.0, 1.0),
    cx=st.floats(0.0, 1.0),
)
def test_box_mask_is_a_rectangle(
    h: int, w: int, hf: float, wf: float, cy: float, cx: float
) -> None:
    try:
        op = BoxInpainting((1, h, w), height_frac=hf, width_frac=wf, center=(cy, cx))
    except ConfigError as err:  # only when the box covers the whole image
        assert "keeps none" in str(err)
        return
    hole = ~op.mask
    rows = torch.nonzero(hole.any(1)).flatten()
    cols = torch.nonzero(hole.any(0)).flatten()
    if rows.numel():
        # The hole is exactly the product of a contiguous row range and column range.
        assert rows.numel() == int(rows[-1] - rows[0] + 1) <= round(hf * h)
        assert cols.numel() == int(cols[-1] - cols[0] + 1) <= round(wf * w)
        assert int(hole.sum()) == rows.numel() * cols.numel()


# ---- masks -----------------------------------------------------------------------------------
def test_box_default_is_centred_half() -> None:
    op = BoxInpainting((3, 8, 12))
    hole = ~op.mask
    assert hole[2:6, 3:9].all() and int(hole.sum()) == 4 * 6


def test_random_mask_fraction_and_seed() -> None:
    a = random_mask(64, 48, 0.5, seed=0)
    assert int((~a).sum()) == 64 * 48 // 2
    assert torch.equal(a, random_mask(64, 48, 0.5, seed=0))
    assert not torch.equal(a, random_mask(64, 48, 0.5, seed=1))
    assert int((~random_mask(10, 10, 0.29, seed=3)).sum()) == 29
    assert bool(random_mask(5, 5, 0.0).all())


@pytest.mark.parametrize("size", [(256, 256), (64, 64), (480, 640), (32, 48)])
def test_lorem_mask_is_deterministic_and_sensible(size: tuple[int, int]) -> None:
    a = lorem_mask(*size)
    assert a.shape == size and a.dtype == torch.bool
    assert torch.equal(a, lorem_mask(*size))
    covered = 1.0 - a.float().mean().item()
    assert 0.15 <= covered <= 0.25, covered
    # Text spreads over the whole image: every quarter has some of it.
    h, w = size
    for rows in (slice(0, h // 2), slice(h // 2, h)):
        for cols in (slice(0, w // 2), slice(w // 2, w)):
            assert bool((~a[rows, cols]).any())
    assert not torch.equal(a, lorem_mask(*size, text="Completely different words here"))


def test_inpainting_mask_shared_by_channels() -> None:
    op = build("inpaint_lorem", (3, 32, 32))
    x = torch.randn(1, 3, 32, 32, dtype=torch.float64)
    restored = op.H_pinv(op.H(x)).view(1, 3, 32, 32)
    torch.testing.assert_close(restored, x * op.mask)


# ---- errors ----------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("make", "needle"),
    [
        (lambda: SuperResolution((3, 16, 16), factor=3), "3"),
        (lambda: SuperResolution((3, 16, 16), factor=0), "0"),
        (lambda: SuperResolution((3, 16, 16), factor=2.5), "2.5"),
        (lambda: SuperResolution((3, 16, 24), factor=16), "16"),
        (lambda: BicubicSuperResolution((3, 16, 16), factor=16), "16x16"),
        (lambda: WalshHadamardCS((3, 12, 16), ratio=2), "192"),
        (lambda: WalshHadamardCS((3, 16, 16), ratio=3), "3"),
        (lambda: WalshHadamardCS((3, 16, 16), ratio=2, seed=-1), "-1"),
        (lambda: RandomInpainting((3, 8, 8), fraction=1.0), "1.0"),
        (lambda: RandomInpainting((3, 8, 8), fraction=-0.1), "-0.1"),
        (lambda: BoxInpainting((3, 8, 8), center=(0.5, 1.5)), "1.5"),
        (lambda: BoxInpainting((3, 8, 8), height_frac=0.0), "0.0"),
        (lambda: BoxInpainting((3, 8, 8), height_frac=1.0, width_frac=1.0), "8x8"),
        (lambda: Deblurring((3, 8, 8), kernel_rows={"type": "uniform", "size": 9}), "9"),
        (lambda: Deblurring((3, 8, 8), kernel_rows={"type": "blur", "size": 3}), "blur"),
        (lambda: Deblurring((3, 8, 8), kernel_rows={"type": "gaussian", "size": 3}), "sigma"),
        (
            lambda: Deblurring((3, 8, 8), kernel_rows={"type": "gaussian", "size": 3, "sigma": 0}),
            "0",
        ),
        (
            lambda: Deblurring(
                (3, 8, 8), kernel_rows={"type": "uniform", "size": 3}, official_toeplitz="yes"
            ),
            "yes",
        ),
        (lambda: Colorization((1, 8, 8)), "0.3333"),
        (lambda: lorem_mask(32, 32, text=""), "''"),
        (lambda: SuperResolution((3, 0, 16), factor=2), "0"),
    ],
)
def test_bad_params_raise_config_error(make: Any, needle: str) -> None:
    with pytest.raises(ConfigError) as info:
        make()
    assert needle in str(info.value)


def test_instantiate_config_unwraps_config_error() -> None:
    with pytest.raises(ConfigError, match="power of 2"):
        instantiate_config("degradation", load_cfg("cs2"), shape=(3, 12, 16))


def test_kernel_spec_accepts_lists_and_mappings() -> None:
    torch.testing.assert_close(
        kernel_from_spec({"type": "gaussian", "size": 5, "sigma": 10.0}),
        torch.tensor(
            kernel_1d({"type": "gaussian", "size": 5, "sigma": 10.0}), dtype=torch.float64
        ),
    )
    torch.testing.assert_close(
        kernel_from_spec({"type": "bicubic", "factor": 4}),
        torch.tensor(bicubic_taps(4), dtype=torch.float64),
    )
    torch.testing.assert_close(kernel_from_spec([1, 2, 1]), torch.tensor([1.0, 2.0, 1.0]).double())
