"""Border models of real blur (ddrm_exp.degradations.valid_blur).

The dense operators are checked against blur matrices built independently (a convolution of
every unit image by ``F.conv2d`` on a padded copy), their SVD protocol identities on small
images in float64, the valid model against a scene blurred with ``blur_valid`` (a real blurry
frame is reproduced exactly on its measured pixels), and edge tapering against its definition.
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from ddrm_exp.degradations import FFTBlur
from ddrm_exp.degradations.fft_blur import blur_circular
from ddrm_exp.degradations.kernels2d import motion_kernel
from ddrm_exp.degradations.valid_blur import (
    BorderBlur,
    TaperedFFTBlur,
    blur_matrix_2d,
    blur_valid,
    edge_taper,
    valid_blur_operator,
    valid_margins,
    valid_region,
)
from ddrm_exp.errors import ConfigError

F64 = torch.float64


def random_kernel(kh: int, kw: int, seed: int) -> torch.Tensor:
    k = torch.rand(kh, kw, generator=torch.Generator().manual_seed(seed), dtype=F64)
    return k / k.sum()


def conv_reference(x: torch.Tensor, k: torch.Tensor, mode: str) -> torch.Tensor:
    """``y[p] = Σ_q k[q] x[p - q + origin]`` with ``F.pad`` for the outside (``(B,1,H,W)``)."""
    kh, kw = k.shape
    top, left = kh - 1 - kh // 2, kw - 1 - kw // 2
    pad = (left, kw - 1 - left, top, kh - 1 - top)
    padded = F.pad(x, pad, mode="constant" if mode == "zero" else mode)
    return F.conv2d(padded, k.flip(0, 1)[None, None].to(x))


def dense_of(op: BorderBlur, fn: str) -> torch.Tensor:
    n = op.n
    return getattr(op, fn)(torch.eye(n, dtype=F64)).T


@pytest.mark.parametrize("border", ["zero", "reflect"])
@pytest.mark.parametrize("kernel", [random_kernel(3, 3, 0), random_kernel(2, 4, 1)])
def test_blur_matrix_matches_padded_convolution(border: str, kernel: torch.Tensor) -> None:
    h, w = 7, 6
    a = blur_matrix_2d(kernel, (h, w), border)
    x = torch.randn(5, 1, h, w, dtype=F64)
    ref = conv_reference(x, kernel, "reflect" if border == "reflect" else "zero")
    assert torch.allclose(x.reshape(5, -1) @ a.T, ref.reshape(5, -1), atol=1e-12)


def test_valid_rows_reproduce_the_blur_of_a_larger_scene() -> None:
    """A real blurry frame: the valid blur of a scene around x; measured pixels equal H x."""
    k = motion_kernel(7, 0.5, generator=3)
    h, w = 12, 10
    top, bottom, left, right = valid_margins(k)
    scene = torch.randn(1, 3, h + top + bottom, w + left + right, dtype=F64)
    x = scene[..., top : top + h, left : left + w]
    # blur_valid reads (kh//2, kw//2) above/left: extend the scene to the full kernel box.
    kh, kw = k.shape
    full = F.pad(
        scene, (kw // 2 - left, kw - 1 - kw // 2 - right, kh // 2 - top, kh - 1 - kh // 2 - bottom)
    )
    y = blur_valid(full, k)
    assert y.shape[-2:] == (h, w)
    op = BorderBlur(
        (3, h, w), kernel=k, border="valid", zero_threshold=0.0, eig_dtype=F64, dtype=F64
    )
    rows, cols = valid_region(k, (h, w))
    hx = op.H(x.reshape(1, -1)).reshape(1, 3, h, w)
    assert torch.allclose(hx[..., rows, cols], y[..., rows, cols], atol=1e-10)
    # the ring is unmeasured: zero in H x, and the measured region is not empty
    assert rows.stop > rows.start and cols.stop > cols.start
    ring = torch.ones(h, w, dtype=torch.bool)
    ring[rows, cols] = False
    assert float(hx[..., ring].abs().max()) == 0.0


def test_valid_region_uses_the_nonzero_support_only() -> None:
    k = torch.zeros(5, 5, dtype=F64)
    k[2, 1:4] = 1 / 3  # horizontal 3-tap line in a 5x5 box
    assert valid_margins(k) == (0, 0, 1, 1)
    rows, cols = valid_region(k, (8, 9))
    assert (rows.start, rows.stop, cols.start, cols.stop) == (0, 8, 1, 8)


@pytest.mark.parametrize("border", ["valid", "zero", "reflect"])
def test_svd_protocol_against_the_dense_matrix(border: str) -> None:
    h, w = 6, 7
    k = random_kernel(3, 3, 4)
    op = BorderBlur(
        (2, h, w), kernel=k, border=border, zero_threshold=0.0, dtype=F64, eig_dtype=F64
    )
    n = op.n
    eye = torch.eye(n, dtype=F64)
    v, u = dense_of(op, "V"), dense_of(op, "U")
    assert torch.allclose(v.T @ v, eye, atol=1e-10)
    assert torch.allclose(u.T @ u, eye, atol=1e-10)
    assert torch.allclose(op.Vt(op.V(eye)), eye, atol=1e-10)
    s = op.singulars()
    assert s.shape == (n,) and bool((s[:-1] >= s[1:]).all())
    a = blur_matrix_2d(k, (h, w), border)
    dense = torch.block_diag(a, a)  # channel-major pixels
    assert torch.allclose(dense_of(op, "H"), dense, atol=1e-10)
    # same singular values as the dense matrix (each repeated per channel)
    ref = torch.linalg.svdvals(a)
    assert torch.allclose(s[::2], ref, atol=1e-10)


def test_threshold_zeroes_small_singular_values_and_h_pinv_inverts_the_rest() -> None:
    k = motion_kernel(5, 0.3, generator=1)
    op = BorderBlur(
        (1, 8, 8), kernel=k, border="valid", zero_threshold=0.05, dtype=F64, eig_dtype=F64
    )
    s = op.singulars()
    assert bool((s[s > 0] >= 0.05).all()) and bool((s == 0).any())
    x = torch.randn(3, 64, dtype=F64)
    # H H⁺ H = H for the thresholded operator
    assert torch.allclose(op.H(op.H_pinv(op.H(x))), op.H(x), atol=1e-9)


def test_per_image_kernels_act_as_separate_operators() -> None:
    ks = torch.stack([random_kernel(3, 3, 5), motion_kernel(3, 0.2, generator=2)])
    batch = BorderBlur((3, 6, 6), kernel=ks, border="valid", dtype=F64, eig_dtype=F64)
    x = torch.randn(2, 108, dtype=F64)
    for i in range(2):
        one = BorderBlur((3, 6, 6), kernel=ks[i], border="valid", dtype=F64, eig_dtype=F64)
        assert torch.allclose(batch.H(x)[i], one.H(x[i : i + 1])[0], atol=1e-10)
        assert torch.allclose(batch.singulars()[i], one.singulars(), atol=1e-12)
    with pytest.raises(ValueError, match="batch"):
        batch.H(x[:1])


def test_edge_taper_is_continuous_across_the_wrap_and_keeps_the_interior() -> None:
    k = motion_kernel(5, 0.5, generator=0)
    y = torch.rand(1, 3, 20, 20, dtype=F64)
    t = edge_taper(y, k)
    # border pixels become the circular blur, deep interior pixels stay
    assert torch.allclose(t[..., 0, 0], blur_circular(y, k)[..., 0, 0], atol=1e-12)
    assert torch.allclose(t[..., 8:12, 8:12], y[..., 8:12, 8:12], atol=1e-12)


def test_factory_and_errors() -> None:
    k = random_kernel(3, 3, 0)
    assert isinstance(valid_blur_operator(k, (1, 6, 6), border="circular"), FFTBlur)
    op = valid_blur_operator(k, (1, 6, 6), border="taper")
    assert isinstance(op, TaperedFFTBlur)
    assert op.prepare_measurement(torch.rand(1, 36)).shape == (1, 36)
    assert isinstance(valid_blur_operator(k, (1, 6, 6)), BorderBlur)
    assert tuple(valid_blur_operator(k, (1, 6, 6)).kernel2d.shape) == (3, 3)
    with pytest.raises(ConfigError, match="border"):
        valid_blur_operator(k, (1, 6, 6), border="mirror")
    with pytest.raises(ConfigError, match="taper"):
        BorderBlur((3, 128, 128), kernel=k)


# ---- wiring into the blind degradation (AssumedBlur, the measurement plan) ------------------
def test_assumed_blur_builds_the_border_model_it_is_given() -> None:
    from ddrm_exp.degradations.assumed_blur import AssumedBlur, operator_name

    ks = torch.stack([random_kernel(3, 3, 0), random_kernel(3, 3, 1)])
    valid = AssumedBlur((3, 8, 8), assumed_kernel="gt", border="valid", dtype=F64)
    op = valid.with_kernels(ks)
    assert isinstance(op, BorderBlur) and op.border == "valid" and operator_name(op) == "valid"
    x = torch.randn(2, 192, dtype=F64)
    for i in range(2):
        one = BorderBlur((3, 8, 8), kernel=ks[i], dtype=F64)
        assert torch.allclose(op.H(x)[i], one.H(x[i : i + 1])[0], atol=1e-5)
    taper = AssumedBlur((3, 8, 8), assumed_kernel="gt", border="taper")
    assert operator_name(taper.with_kernels(ks)) == "taper"
    legacy = AssumedBlur((3, 8, 8), assumed_kernel="gt", border=None)
    assert operator_name(legacy.with_kernels(ks)) == "fft"
    with pytest.raises(ConfigError, match="border"):
        AssumedBlur((3, 8, 8), border="mirror")


def test_auto_border_follows_the_data_and_the_image_size() -> None:
    from ddrm_exp.degradations.assumed_blur import AssumedBlur

    small = AssumedBlur((3, 8, 8), assumed_kernel="gt", border="auto")
    assert small.active_border is None  # until the data are known
    small.resolve_border("valid")
    assert small.active_border == "valid"
    large = AssumedBlur((3, 128, 128), assumed_kernel="gt", border="auto")
    large.resolve_border("valid")
    assert large.active_border == "taper"  # no dense SVD at this size
    for data, expected in (("reflect", "reflect"), ("circular", None), (None, None)):
        a = AssumedBlur((3, 8, 8), assumed_kernel="gt", border="auto")
        a.resolve_border(data)
        assert a.active_border == expected
    fixed = AssumedBlur((3, 8, 8), assumed_kernel="gauss", border="valid")
    fixed.resolve_border("circular")  # an explicit border is kept
    assert fixed.active_border == "valid" and isinstance(fixed.default, BorderBlur)


def test_keep_sharp_returns_frames_with_a_delta_kernel_unrestored() -> None:
    from ddrm_exp.degradations.assumed_blur import AssumedBlur
    from ddrm_exp.run.measurement import BatchMeasurement, MeasurementPlan
    from ddrm_exp.samplers.base import SampleResult

    assumed = AssumedBlur((3, 8, 8), assumed_kernel="estimated", border="valid", keep_sharp=True)
    plan = MeasurementPlan(
        assumed,
        from_dataset=True,
        has_true_kernel=False,
        estimator=None,
        estimator_name="classical",
        use_ssim=False,
    )
    sharp = torch.zeros(5, 5, dtype=F64)
    sharp[2, 2] = 1
    kernels = torch.stack([sharp, random_kernel(5, 5, 3)])
    y = torch.rand(2, 192)
    bm = BatchMeasurement(
        operator=assumed.with_kernels(kernels),
        y=y,
        kernels=kernels,
        estimates=kernels,
        true_kernels=None,
        estimation_seconds=None,
        rank1_errors=[None, None],
        measurement_metrics=[{}, {}],
    )
    plan.keep_delta_frames(bm)  # measure() decides it, before sampling
    assert bm.sampled == [1]
    x0 = torch.zeros(2, 3, 8, 8)
    plan.after_sampling(bm, SampleResult(x0=x0, nfe=1))
    assert torch.equal(x0[0].reshape(-1), y[0])  # the delta frame is kept as it is
    assert float(x0[1].abs().max()) == 0.0  # the blurred one keeps its restoration


def test_rank1_step_is_for_the_reports_operators_only() -> None:
    from ddrm_exp.degradations.assumed_blur import AssumedBlur

    k = motion_kernel(5, 0.5, generator=4)[None]
    kw = dict(assumed_kernel="estimated", rank1=True)
    kept, errors = AssumedBlur((3, 8, 8), border="valid", **kw).prepare_kernels(k)
    assert torch.equal(kept, k) and errors == [None]
    legacy, errors = AssumedBlur((3, 8, 8), border=None, **kw).prepare_kernels(k)
    assert errors[0] is not None and errors[0] > 0
    assert torch.linalg.matrix_rank(legacy[0]) == 1


@pytest.mark.parametrize("border", ["valid", "zero", "reflect"])
def test_the_projects_svd_protocol_check(border: str) -> None:
    from ddrm_exp.degradations.dense import check_svd_protocol

    k = motion_kernel(3, 0.5, generator=6)
    op = BorderBlur((2, 5, 6), kernel=k, border=border, dtype=F64, eig_dtype=F64)
    check_svd_protocol(op)
