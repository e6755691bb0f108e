"""Temporal consistency metrics: flicker, Farnebäck flow, warping, warping error."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from ddrm_exp.datasets import load_sample_photos
from ddrm_exp.metrics import flicker, temporal_summary, warping_error
from ddrm_exp.metrics.temporal import (
    non_occluded,
    optical_flow,
    sequence_flows,
    to_grey_uint8,
    warp,
)


def _photo(name: str = "astronaut") -> torch.Tensor:
    """A bundled sample photo as a (3, H, W) tensor in [-1, 1]."""
    arr = dict(load_sample_photos("heldout"))[name]
    return torch.from_numpy(arr.copy()).permute(2, 0, 1).float() / 127.5 - 1.0


# A textured part of the astronaut photo (suit, badge, face): the flat black background of its
# corners gives Farnebäck nothing to track.
Y0, X0 = 100, 200


def _translating(step: tuple[int, int], frames: int = 4, size: int = 64) -> torch.Tensor:
    """Frames whose content moves by ``step = (dy, dx)`` pixels from one frame to the next.

    Frame k is the crop of the photo at (Y0 - k dy, X0 - k dx), so frame_k(p) = frame_0(p - k d).
    """
    img = _photo()
    dy, dx = step
    crops = [
        img[:, Y0 - k * dy : Y0 - k * dy + size, X0 - k * dx : X0 - k * dx + size]
        for k in range(frames)
    ]
    return torch.stack(crops)


# ---------------------------------------------------------------------------------- flicker


def test_flicker_zero_for_static_sequence_restored_identically() -> None:
    frame = _photo()[:, Y0 : Y0 + 32, X0 : X0 + 32]
    seq = frame.expand(5, -1, -1, -1).clone()
    assert flicker(seq, seq) == [0.0] * 4


def test_flicker_of_one_perturbed_frame_in_unit_pixels() -> None:
    sharp = _translating((1, 2), frames=5, size=32)
    restored = sharp.clone()
    restored[2] += 0.2  # 0.1 in [0, 1] units
    values = flicker(restored, sharp)
    assert len(values) == 4
    # the jump shows in the pairs (1, 2) and (2, 3), and only there
    assert values[0] == pytest.approx(0.0, abs=1e-12)
    assert values[1] == pytest.approx(0.1, abs=1e-6)
    assert values[2] == pytest.approx(0.1, abs=1e-6)
    assert values[3] == pytest.approx(0.0, abs=1e-12)


def test_flicker_single_frame_is_empty() -> None:
    seq = torch.zeros(1, 3, 8, 8)
    assert flicker(seq, seq) == []


@settings(max_examples=40, deadline=None)
@given(
    data=st.data(),
    t=st.integers(2, 5),
    h=st.integers(1, 6),
    w=st.integers(1, 6),
)
def test_flicker_ignores_any_static_offset(data: st.DataObject, t: int, h: int, w: int) -> None:
    f32 = st.floats(-1.0, 1.0, width=32)
    sharp = torch.from_numpy(data.draw(arrays(np.float32, (t, 3, h, w), elements=f32)))
    offset_elems = st.floats(-2.0, 2.0, width=32)
    offset = torch.from_numpy(data.draw(arrays(np.float32, (3, h, w), elements=offset_elems)))
    values = flicker(sharp + offset, sharp)
    assert len(values) == t - 1
    assert max(values) < 1e-6


@pytest.mark.parametrize(
    ("restored", "sharp"),
    [
        (torch.zeros(3, 3, 8, 8), torch.zeros(4, 3, 8, 8)),  # different lengths
        (torch.zeros(3, 3, 8, 8), torch.zeros(3, 3, 8, 9)),  # different sizes
        (torch.zeros(3, 8, 8), torch.zeros(3, 8, 8)),  # a single frame, not a sequence
    ],
)
def test_mismatched_or_missing_dims_raise(restored: torch.Tensor, sharp: torch.Tensor) -> None:
    with pytest.raises(ValueError):
        flicker(restored, sharp)
    with pytest.raises(ValueError):
        warping_error(restored, sharp)
    with pytest.raises(ValueError):
        temporal_summary(restored, sharp)


def test_frame_shape_errors() -> None:
    with pytest.raises(ValueError):
        optical_flow(torch.zeros(3, 8, 8), torch.zeros(3, 8, 9))
    with pytest.raises(ValueError):
        optical_flow(torch.zeros(1, 3, 8, 8), torch.zeros(1, 3, 8, 8))
    with pytest.raises(ValueError):
        warp(torch.zeros(3, 8, 8), np.zeros((8, 9, 2), np.float32))


# ------------------------------------------------------------------------------ flow, warp


def test_grey_conversion_range() -> None:
    frame = torch.stack([torch.full((2, 2), -1.0), torch.full((2, 2), 1.0), torch.zeros(2, 2)])
    grey = to_grey_uint8(frame)
    assert grey.dtype == np.uint8 and grey.shape == (2, 2)
    # 0.587 * 255 + 0.114 * 127.5
    assert int(grey[0, 0]) == round(0.587 * 255 + 0.114 * 127.5)
    assert int(to_grey_uint8(torch.ones(3, 2, 2))[0, 0]) == 255


@pytest.mark.parametrize("step", [(3, -2), (-1, 2)])
def test_farneback_recovers_integer_translation(step: tuple[int, int]) -> None:
    seq = _translating(step, frames=2, size=64)
    flow = optical_flow(seq[0], seq[1])
    assert flow.shape == (64, 64, 2) and flow.dtype == np.float32
    interior = flow[8:-8, 8:-8].reshape(-1, 2)
    dy, dx = step
    expected = np.array([dx, dy], dtype=np.float32)  # channel 0 is x
    err = np.abs(interior - expected)
    assert np.median(err) < 0.1
    assert np.percentile(err, 90) < 0.5


def test_farneback_on_a_large_frame() -> None:
    img = _photo("coffee")  # 400 x 600
    dy, dx = 4, -5
    a = img[:, 10:390, 10:590]
    b = img[:, 10 - dy : 390 - dy, 10 - dx : 590 - dx]
    flow = optical_flow(a, b)
    assert flow.shape == (380, 580, 2)
    assert np.allclose(np.median(flow[40:-40, 40:-40].reshape(-1, 2), 0), [dx, dy], atol=0.1)


def test_warp_with_the_flow_aligns_the_frames() -> None:
    seq = _translating((2, 3), frames=2, size=64)
    flow = optical_flow(seq[0], seq[1])
    aligned = warp(seq[1], flow)
    assert aligned.shape == seq[0].shape and aligned.dtype == seq[0].dtype
    inner = (slice(None), slice(8, -8), slice(8, -8))
    before = (seq[1] - seq[0])[inner].abs().mean()
    after = (aligned - seq[0])[inner].abs().mean()
    assert after < 0.1 * before


def test_warp_by_an_exact_integer_flow_is_a_shift() -> None:
    image = torch.arange(3 * 5 * 6, dtype=torch.float32).reshape(3, 5, 6)
    flow = np.zeros((5, 6, 2), np.float32)
    flow[..., 0] = 1.0  # out(y, x) = image(y, x + 1)
    out = warp(image, flow)
    assert torch.equal(out[:, :, :-1], image[:, :, 1:])
    assert torch.equal(out[:, :, -1], image[:, :, -1])  # border replicated


def test_occlusion_mask_drops_pixels_leaving_the_frame_and_inconsistent_ones() -> None:
    h, w = 10, 12
    bwd = np.zeros((h, w, 2), np.float32)
    bwd[..., 0] = -2.0  # every pixel of frame k comes from 2 px to its left
    fwd = -bwd
    valid = non_occluded(bwd, fwd)
    assert not valid[:, :2].any()  # their match is outside frame k - 1
    assert valid[:, 2:].all()
    fwd_bad = fwd.copy()
    fwd_bad[5, :] = 0.0  # the forward flow does not bring row 5 back
    valid_bad = non_occluded(bwd, fwd_bad)
    assert not valid_bad[5].any()
    assert valid_bad[4, 2:].all()


# ---------------------------------------------------------------------------- warping error


def test_warping_error_of_a_perfect_restoration_is_near_zero() -> None:
    sharp = _translating((2, -1), frames=4, size=64)
    floor = warping_error(sharp, sharp)
    assert len(floor) == 3
    assert max(floor) < 2e-4

    noisy = sharp + 0.1 * torch.randn(sharp.shape, generator=torch.Generator().manual_seed(0))
    noisy = noisy.clamp(-1, 1)
    shuffled = sharp[[0, 2, 1, 3]]
    for bad in (noisy, shuffled):
        err = warping_error(bad, sharp)
        assert min(err) > 20 * max(floor)


def test_flows_are_shared_and_warping_error_is_masked_mse() -> None:
    sharp = _translating((1, 1), frames=3, size=48)
    flows = sequence_flows(sharp)
    assert len(flows) == 2
    assert all(p.flow.shape == (48, 48, 2) and p.valid.dtype == bool for p in flows)
    # the row and the column entering the frame are not visible in the previous frame
    assert not flows[0].valid[0].any() and not flows[0].valid[:, 0].any()
    assert flows[0].valid.mean() > 0.9
    # a restoration with a constant error: warping cancels it up to the replicated border
    restored = (sharp + 0.2).clamp(-1, 1)
    assert warping_error(restored, sharp, flows) == pytest.approx(
        warping_error(restored, sharp), rel=1e-9
    )


def test_temporal_summary() -> None:
    sharp = _translating((1, 2), frames=3, size=48)
    noisy = sharp + 0.05 * torch.randn(sharp.shape, generator=torch.Generator().manual_seed(1))
    summary = temporal_summary(noisy, sharp)
    assert set(summary) == {"flicker", "warping_error", "warping_error_sharp"}
    assert summary["flicker"] == pytest.approx(float(np.mean(flicker(noisy, sharp))))
    assert summary["warping_error_sharp"] < summary["warping_error"]
    assert all(isinstance(v, float) and math.isfinite(v) for v in summary.values())

    single = temporal_summary(sharp[:1], sharp[:1])
    assert single == {"flicker": None, "warping_error": None, "warping_error_sharp": None}
