"""2-D kernels: builders, the YAML spec, files, rank-1 approximation and NCC."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from omegaconf import OmegaConf
from PIL import Image

from ddrm_exp.degradations import gaussian_1d, kernel_from_spec
from ddrm_exp.degradations.kernels2d import (
    box_kernel2d,
    ddrm_kernel2d,
    gaussian_kernel2d,
    kernel2d_from_file,
    kernel2d_from_spec,
    kernel_center_of_mass,
    motion_kernel,
    normalized_cross_correlation,
    rank1_approximation,
)
from ddrm_exp.errors import ConfigError

CONF = Path(__file__).resolve().parents[1] / "conf" / "degradation"
FAST = settings(max_examples=25, deadline=None)

SPECS: list[dict[str, Any]] = [
    {"type": "motion", "size": 31, "intensity": 0.5, "seed": 0},
    {"type": "motion", "size": [15, 21], "intensity": 0.0, "seed": 3, "exposure": 0.5},
    {"type": "motion", "size": 16, "intensity": 1.0, "num_samples": 300, "length": 8},
    {"type": "gaussian", "size": 21, "sigma": 3},
    {"type": "gaussian", "size": [4, 7], "sigma": 1.5},
    {"type": "gaussian_aniso", "size": 21, "sigma_x": 4, "sigma_y": 1, "theta": 30},
    {"type": "box", "size": 9},
    {"type": "box", "size": [3, 5]},
    {"type": "ddrm", "name": "deblur_gauss"},
    {"type": "ddrm", "name": "deblur_uniform"},
    {"type": "ddrm", "name": "deblur_aniso"},
]


def expected_shape(spec: dict[str, Any]) -> tuple[int, int]:
    if spec["type"] == "ddrm":
        return (5, 5) if spec["name"] == "deblur_gauss" else (9, 9)
    size = spec["size"]
    return tuple(size) if isinstance(size, list) else (size, size)  # type: ignore[return-value]


@pytest.mark.parametrize("spec", SPECS, ids=lambda s: str(s))
def test_every_builder_gives_a_normalised_nonnegative_float64_kernel(spec: dict[str, Any]) -> None:
    k = kernel2d_from_spec(spec)
    assert k.dtype == torch.float64 and k.shape == expected_shape(spec)
    assert bool((k >= 0).all())
    assert abs(float(k.sum()) - 1.0) < 1e-12
    # the spec also works as an OmegaConf node, as Hydra passes it
    torch.testing.assert_close(kernel2d_from_spec(OmegaConf.create(spec)), k)


# ---- motion --------------------------------------------------------------------------------------
def test_motion_kernel_is_deterministic_per_seed_and_varies_across_seeds() -> None:
    a = motion_kernel(21, 0.5, generator=7)
    torch.testing.assert_close(a, motion_kernel(21, 0.5, generator=7), rtol=0, atol=0)
    torch.testing.assert_close(
        a, motion_kernel(21, 0.5, generator=torch.Generator().manual_seed(7))
    )
    others = [motion_kernel(21, 0.5, generator=s) for s in range(5)]
    for i in range(5):
        for j in range(i):
            assert float((others[i] - others[j]).abs().sum()) > 0.1
    # one generator gives a new kernel on each draw
    g = torch.Generator().manual_seed(0)
    assert (
        float((motion_kernel(21, generator=g) - motion_kernel(21, generator=g)).abs().sum()) > 0.1
    )


@pytest.mark.parametrize("size", [21, 16, (15, 24), (8, 5)], ids=str)
@pytest.mark.parametrize("intensity", [0.0, 0.4, 1.0])
def test_motion_kernel_is_centred_on_the_origin_and_fills_the_window(
    size: int | tuple[int, int], intensity: float
) -> None:
    kh, kw = (size, size) if isinstance(size, int) else size
    k = motion_kernel(size, intensity, generator=11)
    assert k.shape == (kh, kw)
    r, c = kernel_center_of_mass(k)
    assert abs(r - kh // 2) < 1e-9 and abs(c - kw // 2) < 1e-9
    # length=None scales the path to the largest that fits: it reaches a border
    rows, cols = (k > 0).nonzero(as_tuple=True)
    assert (
        int(rows.min()) == 0
        or int(rows.max()) == kh - 1
        or int(cols.min()) == 0
        or (int(cols.max()) == kw - 1)
    )


def test_zero_intensity_is_a_straight_line_of_the_given_length() -> None:
    for seed in range(4):
        k = motion_kernel(31, 0.0, length=20.0, generator=seed)
        rows, cols = (k > 1e-12).nonzero(as_tuple=True)
        pts = torch.stack([rows, cols], 1).double()
        cov = torch.cov(pts.T, aweights=k[rows, cols])
        eig = torch.linalg.eigvalsh(cov)
        assert float(eig[0]) < 0.05 * float(eig[1])  # all mass on a line
        extent = float(torch.cdist(pts, pts).max())
        assert 19.0 <= extent <= 22.0


def test_motion_kernel_exposure_uses_the_start_of_the_path() -> None:
    full = motion_kernel(31, 0.2, length=30, generator=2)
    part = motion_kernel(31, 0.2, length=30, exposure=0.1, generator=2)
    assert int((part > 0).sum()) < int((full > 0).sum())
    assert abs(float(part.sum()) - 1) < 1e-12


def test_motion_kernel_num_samples_only_refines_the_path() -> None:
    """Kernels are as spread out at 500 and 8000 samples (B&F's rescaled per-step terms)."""

    def spread(n: int) -> float:
        vals = []
        for s in range(12):
            k = motion_kernel(25, 0.3, length=24, num_samples=n, generator=s)
            rows, cols = torch.meshgrid(
                torch.arange(25.0, dtype=torch.float64),
                torch.arange(25.0, dtype=torch.float64),
                indexing="ij",
            )
            vals.append(float((k * ((rows - 12) ** 2 + (cols - 12) ** 2)).sum()))
        return sum(vals) / len(vals)

    assert 0.6 < spread(500) / spread(8000) < 1.6


# ---- analytic kernels ----------------------------------------------------------------------------
def test_gaussian_isotropic_is_the_outer_product_of_1d_gaussians() -> None:
    for size, sigma in ((5, 10.0), (21, 3.0), (6, 1.0)):
        g = gaussian_1d(size, sigma)
        torch.testing.assert_close(gaussian_kernel2d(size, sigma), torch.outer(g, g))


def test_gaussian_anisotropic_orientation() -> None:
    # theta = 0: sigma_x along the width (columns), sigma_y along the height (rows)
    k0 = gaussian_kernel2d((9, 11), 3.0, 1.0, 0.0)
    torch.testing.assert_close(k0, torch.outer(gaussian_1d(9, 1.0), gaussian_1d(11, 3.0)))
    torch.testing.assert_close(
        gaussian_kernel2d(11, 3.0, 1.0, 90.0), gaussian_kernel2d(11, 1.0, 3.0)
    )
    # theta = 30: the long axis points 30 degrees counter-clockwise as displayed (y up)
    k = gaussian_kernel2d(61, 6.0, 1.0, 30.0)
    rows, cols = torch.meshgrid(
        torch.arange(61.0, dtype=torch.float64),
        torch.arange(61.0, dtype=torch.float64),
        indexing="ij",
    )
    x, y = cols - 30, -(rows - 30)
    cov = torch.tensor(
        [[(k * x * x).sum(), (k * x * y).sum()], [(k * x * y).sum(), (k * y * y).sum()]]
    )
    evals, evecs = torch.linalg.eigh(cov)
    major = evecs[:, 1] * torch.sign(evecs[0, 1])
    angle = math.degrees(math.atan2(float(major[1]), float(major[0])))
    assert abs(angle - 30.0) < 0.5
    assert (
        abs(math.sqrt(float(evals[1])) - 6.0) < 0.1 and abs(math.sqrt(float(evals[0])) - 1.0) < 0.05
    )


def test_box_kernel() -> None:
    torch.testing.assert_close(
        box_kernel2d((3, 5)), torch.full((3, 5), 1 / 15, dtype=torch.float64)
    )


@pytest.mark.parametrize("name", ["deblur_uniform", "deblur_gauss", "deblur_aniso"])
def test_ddrm_kernels_match_the_degradation_configs(name: str) -> None:
    cfg = OmegaConf.load(CONF / f"{name}.yaml")
    rows = kernel_from_spec(cfg.kernel_rows)
    cols = kernel_from_spec(cfg.kernel_cols if cfg.kernel_cols is not None else cfg.kernel_rows)
    torch.testing.assert_close(ddrm_kernel2d(name), torch.outer(rows, cols))


def test_deblur_aniso_blurs_mostly_along_the_width() -> None:
    k = ddrm_kernel2d("deblur_aniso")
    assert float(k[4].sum()) > 0.39  # the middle row holds the sigma=1 peak of the height axis
    assert float(k[:, 0].sum()) > 0.1  # and the width axis is nearly flat (sigma 20)
    torch.testing.assert_close(ddrm_kernel2d("deblur_uni"), ddrm_kernel2d("deblur_uniform"))


# ---- files ---------------------------------------------------------------------------------------
def test_kernel_from_npy_and_png(tmp_path: Path) -> None:
    arr = np.random.default_rng(0).random((7, 5))
    np.save(tmp_path / "k.npy", arr)
    torch.testing.assert_close(
        kernel2d_from_file(tmp_path / "k.npy"), torch.from_numpy(arr / arr.sum())
    )
    gray = (arr / arr.max() * 255).round().astype(np.uint8)
    Image.fromarray(gray, mode="L").save(tmp_path / "k.png")
    from_png = kernel2d_from_spec({"type": "file", "path": str(tmp_path / "k.png")})
    torch.testing.assert_close(from_png, torch.from_numpy(gray / gray.sum()))
    Image.fromarray(np.stack([gray] * 3, axis=2), mode="RGB").save(tmp_path / "rgb.png")
    torch.testing.assert_close(kernel2d_from_file(tmp_path / "rgb.png"), from_png)


@pytest.mark.parametrize(
    ("content", "needle"),
    [
        (None, "does not exist"),
        (np.array([[1.0, -0.5], [0.2, 0.3]]), "negative"),
        (np.zeros((3, 3)), "all zero"),
        (np.ones((2, 3, 3)), "2-D"),
        (np.array([[1.0, np.nan]]), "non-finite"),
    ],
)
def test_bad_kernel_files_raise_config_error(
    tmp_path: Path, content: np.ndarray | None, needle: str
) -> None:
    path = tmp_path / "k.npy"
    if content is not None:
        np.save(path, content)
    with pytest.raises(ConfigError, match=needle):
        kernel2d_from_file(path)


def test_unreadable_image_is_config_error(tmp_path: Path) -> None:
    (tmp_path / "k.png").write_text("not an image")
    with pytest.raises(ConfigError, match="Could not read"):
        kernel2d_from_file(tmp_path / "k.png")


# ---- spec ----------------------------------------------------------------------------------------
def test_spec_seed_generator_and_explicit_arrays() -> None:
    spec = {"type": "motion", "size": 15, "intensity": 0.3}
    torch.testing.assert_close(kernel2d_from_spec(spec), motion_kernel(15, 0.3, generator=0))
    seeded = kernel2d_from_spec({**spec, "seed": 4})
    torch.testing.assert_close(seeded, motion_kernel(15, 0.3, generator=4))
    g = torch.Generator().manual_seed(9)
    torch.testing.assert_close(
        kernel2d_from_spec({**spec, "seed": 4}, generator=g), motion_kernel(15, 0.3, generator=9)
    )
    torch.testing.assert_close(
        kernel2d_from_spec([[1, 1], [2, 0]]),
        torch.tensor([[0.25, 0.25], [0.5, 0.0]], dtype=torch.float64),
    )


def test_keys_of_other_types_are_ignored_only_on_request() -> None:
    spec = {"type": "gaussian", "size": 5, "sigma": 1.0, "intensity": 0.5, "name": "x"}
    with pytest.raises(ConfigError, match="intensity"):
        kernel2d_from_spec(spec)
    k = kernel2d_from_spec(spec, ignore_other_types=True)
    torch.testing.assert_close(k, gaussian_kernel2d(5, 1.0))
    with pytest.raises(ConfigError, match="sigmaa"):
        kernel2d_from_spec({**spec, "sigmaa": 1}, ignore_other_types=True)


@pytest.mark.parametrize(
    ("spec", "needle"),
    [
        ({"type": "blur", "size": 3}, "unknown 2-D kernel type"),
        ({"type": "gaussian", "size": 5}, "sigma"),
        ({"type": "gaussian", "size": 5, "sigma": 1, "intensity": 0.5}, "intensity"),
        ({"type": "gaussian", "size": 5, "sigma": 0}, "sigma"),
        ({"type": "motion", "size": 2}, "size"),
        ({"type": "motion", "size": 9, "intensity": 1.5}, "intensity"),
        ({"type": "motion", "size": 9, "exposure": 0}, "exposure"),
        ({"type": "motion", "size": 9, "seed": -1}, "seed"),
        ({"type": "box", "size": [3, 0]}, "size"),
        ({"type": "box", "size": [3, 3, 3]}, "pair"),
        ({"type": "ddrm", "name": "sr4"}, "sr4"),
        ({"type": "file"}, "path"),
        ("gaussian", "mapping"),
        ([[1.0, -1.0]], "negative"),
    ],
)
def test_bad_specs_raise_config_error(spec: Any, needle: str) -> None:
    with pytest.raises(ConfigError, match=needle):
        kernel2d_from_spec(spec)


# ---- rank-1 approximation ------------------------------------------------------------------------
@FAST
@given(
    st.integers(1, 9),
    st.integers(1, 9),
    st.integers(0, 2**16),
)
def test_rank1_of_a_separable_kernel_is_exact(kh: int, kw: int, seed: int) -> None:
    g = torch.Generator().manual_seed(seed)
    rows = torch.rand(kh, generator=g, dtype=torch.float64) + 0.01
    cols = torch.rand(kw, generator=g, dtype=torch.float64) + 0.01
    k_rows, k_cols, err = rank1_approximation(3.0 * torch.outer(rows, cols))
    assert err < 1e-12
    torch.testing.assert_close(k_rows, rows / rows.sum())
    torch.testing.assert_close(k_cols, cols / cols.sum())


def test_rank1_of_a_motion_kernel() -> None:
    k = motion_kernel(21, 0.5, generator=1)
    k_rows, k_cols, err = rank1_approximation(k)
    assert 0.05 < err < 1.0
    for f, n in ((k_rows, 21), (k_cols, 21)):
        assert f.shape == (n,) and bool((f >= 0).all()) and abs(float(f.sum()) - 1) < 1e-12
    # it is the best rank-1 fit before clipping: no worse than the Frobenius optimum by much
    s = torch.linalg.svdvals(k / k.sum())
    optimum = float(torch.sqrt((s[1:] ** 2).sum()) / torch.sqrt((s**2).sum()))
    assert err >= optimum - 1e-12 and err < optimum + 0.2
    _, _, err_g = rank1_approximation(gaussian_kernel2d(21, 4, 1, 30))
    assert err_g > 0.01  # a rotated anisotropic Gaussian is not separable


# ---- NCC -----------------------------------------------------------------------------------------
def test_ncc_of_a_kernel_with_itself_shifted_or_scaled_is_one() -> None:
    k = motion_kernel(15, 0.5, generator=3)
    assert abs(normalized_cross_correlation(k, k) - 1) < 1e-12
    shifted = torch.nn.functional.pad(k, (3, 0, 0, 5))  # bigger kernel, content moved
    assert abs(normalized_cross_correlation(shifted, k) - 1) < 1e-12
    assert abs(normalized_cross_correlation(k, 2.5 * shifted) - 1) < 1e-12
    other = motion_kernel(15, 0.5, generator=4)
    ncc = normalized_cross_correlation(other, k)
    assert 0 < ncc < 0.99
    assert abs(ncc - normalized_cross_correlation(k, other)) < 1e-12


@FAST
@given(st.integers(0, 2**16), st.integers(1, 8), st.integers(1, 8))
def test_ncc_is_at_most_one(seed: int, kh: int, kw: int) -> None:
    g = torch.Generator().manual_seed(seed)
    a = torch.rand(kh, kw, generator=g, dtype=torch.float64)
    b = torch.rand(kw, kh, generator=g, dtype=torch.float64)
    assert 0 < normalized_cross_correlation(a, b) <= 1 + 1e-12
