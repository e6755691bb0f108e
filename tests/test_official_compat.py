"""``degradation.official_compat=true``: the official blur operators as published.

The reference here is written from the description of the official ``Deblurring`` /
``Deblurring2D`` (``functions/svd_replacement.py``), not from our operator: the Toeplitz matrices
of the official loop (last tap dropped), their SVDs in numpy, the 2-D modes sorted by the product
of 1-D singular values (stably, as PyTorch's CUDA sort does for the published 256x256 runs), the
spectral vector ordered pixel-major, channel-minor, and ``singulars()`` the sorted list tiled
three times. ``H = Σ_q s_q u_q v_qᵀ`` is then formed as a dense matrix.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from omegaconf import OmegaConf

from ddrm_exp.config import instantiate_config
from ddrm_exp.degradations import Deblurring, kernel_from_spec
from ddrm_exp.degradations.separable import official_tiled_grid
from ddrm_exp.errors import ConfigError

CONF_DIR = Path(__file__).resolve().parents[1] / "conf" / "degradation"
BLURS = ["deblur_uniform", "deblur_gauss", "deblur_aniso"]
# Square as in the official code, and a non-square shape (the same rule on H*W modes). Sizes
# where every 1-D matrix has well separated singular values (gaps >= 1e-3, none near 0): the
# official operator pairs U and V modes with shuffled values, so it depends on the singular
# vectors themselves, which a rank-deficient or near-degenerate matrix does not determine (at
# 12 px the official 8-tap box matrix has rank 9, and numpy and torch pick different null
# spaces).
SHAPES = [(3, 16, 16), (3, 16, 10)]
ZERO = 3e-2


def _kernels(name: str) -> tuple[np.ndarray, np.ndarray]:
    cfg = OmegaConf.load(CONF_DIR / f"{name}.yaml")
    rows = kernel_from_spec(OmegaConf.to_container(cfg.kernel_rows), "rows")
    cols_spec = cfg.kernel_cols if cfg.kernel_cols is not None else cfg.kernel_rows
    cols = kernel_from_spec(OmegaConf.to_container(cols_spec), "cols")
    return rows.double().numpy(), cols.double().numpy()


def _build(name: str, shape: tuple[int, int, int], **overrides: object) -> Deblurring:
    cfg = OmegaConf.load(CONF_DIR / f"{name}.yaml")
    for key, value in overrides.items():
        cfg[key] = value
    return instantiate_config("degradation", cfg, shape=shape, dtype=torch.float64)


def _official_toeplitz(kernel: np.ndarray, size: int) -> np.ndarray:
    """The official 1-D loop: ``j`` runs from ``i - K//2`` up to ``i + K//2 - 1``."""
    half = len(kernel) // 2
    out = np.zeros((size, size))
    for i in range(size):
        for j in range(i - half, i + half):
            if 0 <= j < size:
                out[i, j] = kernel[j - i + half]
    return out


def _official_dense(k_rows: np.ndarray, k_cols: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
    """The official operator as a dense ``(C*H*W) x (C*H*W)`` matrix on c-major images."""
    c, h, w = shape
    u1, s1, v1t = np.linalg.svd(_official_toeplitz(k_rows, h))
    u2, s2, v2t = np.linalg.svd(_official_toeplitz(k_cols, w))
    s1[s1 < ZERO] = 0.0
    s2[s2 < ZERO] = 0.0
    products = np.outer(s1, s2).reshape(-1)  # mode (i, j) at i*w + j
    order = np.argsort(-products, kind="stable")
    tiled = np.tile(products[order], 3)  # singulars().repeat(1, 3)
    dense = np.zeros((c * h * w, c * h * w))
    for k, mode in enumerate(order):
        i, j = divmod(int(mode), w)
        u_mode = np.outer(u1[:, i], u2[:, j]).reshape(-1)
        v_mode = np.outer(v1t[i], v2t[j]).reshape(-1)
        block = np.outer(u_mode, v_mode)
        for ch in range(c):  # spectral entry 3k + ch is channel ch of the mode at position k
            sl = slice(ch * h * w, (ch + 1) * h * w)
            dense[sl, sl] += tiled[3 * k + ch] * block
    return dense


def _dense(op: Deblurring, fn: str = "H") -> torch.Tensor:
    return getattr(op, fn)(torch.eye(op.n, dtype=torch.float64)).T


def _conv_same(x: torch.Tensor, k_rows: np.ndarray, k_cols: np.ndarray) -> torch.Tensor:
    """The true zero-padded "same" correlation, per channel."""
    kr = torch.as_tensor(k_rows, dtype=torch.float64)
    kc = torch.as_tensor(k_cols, dtype=torch.float64)
    c = x.shape[1]
    out = F.conv2d(x, kr.view(1, 1, -1, 1).expand(c, 1, -1, 1), padding=(len(kr) // 2, 0), groups=c)
    return F.conv2d(
        out, kc.view(1, 1, 1, -1).expand(c, 1, 1, -1), padding=(0, len(kc) // 2), groups=c
    )


def _smooth_image(shape: tuple[int, int, int], seed: int = 0) -> torch.Tensor:
    """A photo-like test image: low frequencies dominate, so a blur changes it little."""
    c, h, w = shape
    g = torch.Generator().manual_seed(seed)
    coarse = torch.rand(1, c, 3, 3, generator=g, dtype=torch.float64) * 2 - 1
    return F.interpolate(coarse, size=(h, w), mode="bilinear", align_corners=True)


@pytest.mark.parametrize("name", BLURS)
@pytest.mark.parametrize("shape", SHAPES)
def test_compat_equals_the_official_operator_as_published(
    name: str, shape: tuple[int, int, int]
) -> None:
    k_rows, k_cols = _kernels(name)
    op = _build(name, shape, official_compat=True)
    expected = torch.from_numpy(_official_dense(k_rows, k_cols, shape))
    torch.testing.assert_close(_dense(op), expected, rtol=0, atol=1e-12)


@pytest.mark.parametrize("name", BLURS)
def test_compat_is_not_the_blur_it_builds(name: str) -> None:
    shape = (3, 12, 12)
    k_rows, k_cols = _kernels(name)
    compat = _build(name, shape, official_compat=True)
    toeplitz = _build(name, shape, official_toeplitz=True)
    correct = _build(name, shape)
    x = _smooth_image(shape)
    flat = x.reshape(1, -1)
    blurred = _conv_same(x, k_rows, k_cols).reshape(1, -1)

    def rel(a: torch.Tensor, b: torch.Tensor) -> float:
        return float((a - b).norm() / b.norm())

    # The correct operator is the blur up to the ZERO threshold; official_toeplitz is the blur
    # without the last tap; official_compat is neither.
    assert rel(correct.H(flat), blurred) < 0.05
    assert rel(compat.H(flat), toeplitz.H(flat)) > 0.1
    assert rel(compat.H(flat), blurred) > 0.1
    # The same singular vectors and the same multiset of singular values (the sorted list
    # three times over either way): only the pairing differs.
    assert torch.equal(compat.vh_r, toeplitz.vh_r) and torch.equal(compat.u_c, toeplitz.u_c)
    assert torch.equal(compat.singulars(), toeplitz.singulars())
    assert not torch.equal(compat.perm, toeplitz.perm)


@pytest.mark.parametrize("name", BLURS)
def test_compat_keeps_the_protocol(name: str) -> None:
    shape = (3, 10, 16)
    op = _build(name, shape, official_compat=True)
    n = op.n
    eye = torch.eye(n, dtype=torch.float64)
    s = op.singulars()
    assert s.shape == (n,) and bool((s[:-1] >= s[1:]).all())  # sorted, descending
    v, vt = _dense(op, "V"), _dense(op, "Vt")
    u, ut = _dense(op, "U"), _dense(op, "Ut")
    torch.testing.assert_close(v @ v.T, eye, rtol=0, atol=1e-12)
    torch.testing.assert_close(vt, v.T, rtol=0, atol=1e-12)
    torch.testing.assert_close(u @ u.T, eye, rtol=0, atol=1e-12)
    torch.testing.assert_close(ut, u.T, rtol=0, atol=1e-12)
    h = _dense(op)
    torch.testing.assert_close(h, u @ torch.diag(s) @ v.T, rtol=0, atol=1e-12)
    torch.testing.assert_close(_dense(op, "Ht"), h.T, rtol=0, atol=1e-12)
    pinv = _dense(op, "H_pinv")
    torch.testing.assert_close(h @ pinv @ h, h, rtol=0, atol=1e-9)
    torch.testing.assert_close(pinv @ h @ pinv, pinv, rtol=0, atol=1e-9)
    torch.testing.assert_close(pinv, torch.linalg.pinv(h, rtol=1e-9), rtol=0, atol=1e-8)


def test_tiled_grid_is_the_wrapped_pairing() -> None:
    s_r = torch.tensor([1.0, 0.5], dtype=torch.float64)
    s_c = torch.tensor([0.8, 0.3], dtype=torch.float64)
    # Products by mode (i, j): 0.8, 0.3, 0.4, 0.15; sorted: 0.8 (0,0), 0.4 (1,0), 0.3 (0,1),
    # 0.15 (1,1). Entry (k, c) gets sorted[(3k + c) % 4].
    grid = official_tiled_grid(s_r, s_c, 3)
    sorted_s = [0.8, 0.4, 0.3, 0.15]
    mode_at = [(0, 0), (1, 0), (0, 1), (1, 1)]
    for k, (i, j) in enumerate(mode_at):
        for c in range(3):
            assert float(grid[c, i, j]) == sorted_s[(3 * k + c) % 4]


def test_ties_keep_the_mode_order() -> None:
    # A symmetric kernel gives exact ties s_i s_j == s_j s_i; the stable order puts (0, 1)
    # before (1, 0), as PyTorch's CUDA sort did in the official runs.
    s = torch.tensor([1.0, 0.5], dtype=torch.float64)
    grid = official_tiled_grid(s, s, 3)
    # sorted: 1.0 (0,0), 0.5 (0,1), 0.5 (1,0), 0.25 (1,1)
    assert grid[:, 0, 1].tolist() == [0.25, 1.0, 0.5]  # k = 1: entries 3, 4, 5 mod 4
    assert grid[:, 1, 0].tolist() == [0.5, 0.25, 1.0]  # k = 2: entries 6, 7, 8 mod 4


def test_compat_needs_three_channels() -> None:
    with pytest.raises(ConfigError, match="exactly 3 channels"):
        _build("deblur_uniform", (1, 12, 12), official_compat=True)


def test_compat_must_be_a_bool() -> None:
    with pytest.raises(ConfigError, match="official_compat must be true or false"):
        _build("deblur_gauss", (3, 8, 8), official_compat="yes")


@pytest.mark.parametrize("name", BLURS)
def test_default_is_the_correct_blur_and_unchanged(name: str) -> None:
    shape = (3, 12, 12)
    default = _build(name, shape)
    explicit = _build(name, shape, official_compat=False, official_toeplitz=False)
    assert default.official_compat is False
    for attr in ("_singulars", "perm", "vh_r", "vh_c", "u_r", "u_c"):
        assert torch.equal(getattr(default, attr), getattr(explicit, attr))
    # official_compat implies the dropped tap.
    compat = _build(name, shape, official_compat=True)
    toeplitz = _build(name, shape, official_toeplitz=True)
    assert torch.equal(compat.matrix_rows, toeplitz.matrix_rows)
    assert compat.official_toeplitz is True
