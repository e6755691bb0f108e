"""Temporal consistency of restored videos: flicker and flow-based warping error.

Sequences are (T, C, H, W) tensors in [-1, 1], as everywhere in this project; every value is
reported in [0, 1] pixel units, like :mod:`ddrm_exp.metrics.image`. Each measure gives one value
per consecutive frame pair (k - 1, k), k = 1 .. T - 1; :func:`temporal_summary` averages them.

* :func:`flicker` compares the frame-to-frame change of the restoration with that of the sharp
  reference. No motion estimate is involved, so it is exact and cheap.
* :func:`warping_error` follows Lai et al., "Learning Blind Video Temporal Consistency" (ECCV
  2018): the restored frame k - 1 is warped into frame k with the optical flow of the *sharp*
  sequence, and the mean squared difference to restored frame k is taken over the pixels that a
  forward-backward check finds visible in both frames. The flow is never perfect, so
  ``warping_error(sharp, sharp)`` is not zero: it is the floor a restoration is compared with
  (``warping_error_sharp`` in the summary).

Optical flow is classical Farnebäck (OpenCV) on greyscale frames: deterministic, CPU-only, and
no downloaded weights.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import cv2
import numpy as np
import torch
from torch import Tensor

from ddrm_exp.metrics.image import to_unit

# Farnebäck parameters (cv2.calcOpticalFlowFarneback), OpenCV's reference values. They were
# checked on integer translations of the bundled sample photos from 64x64 to 480x580 frames
# (median end-point error below 0.03 px on textured content); larger windows or the Gaussian
# window were less accurate on 64x64 frames. OpenCV stops the pyramid once a level would be
# smaller than 32 px, so FARNEBACK_LEVELS = 5 is an upper bound: 64x64 frames get 2 levels,
# 640x480 frames all 5. Displacements up to roughly winsize * 2**(levels - 1) / 2 are tracked,
# i.e. a few pixels at 64x64 and tens of pixels at 640x480.
FARNEBACK_PYR_SCALE = 0.5
FARNEBACK_LEVELS = 5
FARNEBACK_WINSIZE = 15
FARNEBACK_ITERATIONS = 3
FARNEBACK_POLY_N = 5
FARNEBACK_POLY_SIGMA = 1.1

# Forward-backward consistency (Sundaram et al. 2010, with the constants of Ruder et al. 2016,
# which Lai et al. use): a pixel x of frame k with backward flow b = F_{k->k-1}(x) is visible in
# both frames when the forward flow f = F_{k-1->k}(x + b) brings it back, up to
#     |b + f|^2 < OCCLUSION_ALPHA_1 * (|b|^2 + |f|^2) + OCCLUSION_ALPHA_2   (in px^2).
# Pixels whose match x + b falls outside frame k - 1 count as occluded as well.
OCCLUSION_ALPHA_1 = 0.01
OCCLUSION_ALPHA_2 = 0.5

# ITU-R BT.601 luma, as cv2.COLOR_RGB2GRAY.
_LUMA = (0.299, 0.587, 0.114)


def _check_sequences(restored: Tensor, sharp: Tensor) -> None:
    for name, x in (("restored", restored), ("sharp", sharp)):
        if not isinstance(x, Tensor):
            raise ValueError(f"{name} must be a torch.Tensor, got {type(x).__name__}")
        if x.ndim != 4:
            raise ValueError(
                f"{name} must be a (T, C, H, W) sequence of frames, got shape {tuple(x.shape)}"
            )
    if restored.shape != sharp.shape:
        raise ValueError(
            f"restored and sharp sequences differ in shape: {tuple(restored.shape)} vs "
            f"{tuple(sharp.shape)}"
        )


def _check_frame(name: str, x: Tensor) -> None:
    if not isinstance(x, Tensor):
        raise ValueError(f"{name} must be a torch.Tensor, got {type(x).__name__}")
    if x.ndim != 3 or x.shape[0] not in (1, 3):
        raise ValueError(f"{name} must be a (3, H, W) or (1, H, W) frame, got {tuple(x.shape)}")


def flicker(restored: Tensor, sharp: Tensor) -> list[float]:
    """Per consecutive pair k: mean |(r_k - r_{k-1}) - (s_k - s_{k-1})|, in [0, 1] units.

    Zero when the restoration changes from frame to frame exactly as the sharp video does, in
    particular whenever ``restored = sharp + D`` with one offset image D for all frames (a
    static error does not flicker). Values are not clamped to [-1, 1] first (unlike PSNR), so
    that such an offset cancels exactly; restorations saved by the runner are in range anyway.
    Computed in float64. ``[]`` for a single frame.
    """
    _check_sequences(restored, sharp)
    r = restored.detach().to("cpu", torch.float64)
    s = sharp.detach().to("cpu", torch.float64)
    if r.shape[0] < 2:
        return []
    d = (r[1:] - r[:-1]) - (s[1:] - s[:-1])
    # [-1, 1] -> [0, 1] is x / 2 + 1 / 2: differences just halve
    return [float(v) for v in (d.abs() / 2.0).flatten(1).mean(1).tolist()]


def to_grey_uint8(frame: Tensor) -> np.ndarray:
    """A (3, H, W) or (1, H, W) frame in [-1, 1] as an H x W uint8 luma image (BT.601)."""
    _check_frame("frame", frame)
    x = to_unit(frame.detach().to("cpu", torch.float64))
    if x.shape[0] == 3:
        x = sum(w * x[c] for c, w in enumerate(_LUMA))
    else:
        x = x[0]
    return np.ascontiguousarray((x * 255.0).round().clamp(0, 255).to(torch.uint8).numpy())


def optical_flow(frame_from: Tensor, frame_to: Tensor) -> np.ndarray:
    """Farnebäck flow (H, W, 2) float32, ``[..., 0]`` = x (columns), ``[..., 1]`` = y (rows).

    ``frame_from(p) ≈ frame_to(p + flow(p))``, so ``warp(frame_to, flow) ≈ frame_from``.
    Frames are (3, H, W) (or (1, H, W)) tensors in [-1, 1]; parameters are the module's
    ``FARNEBACK_*`` constants.
    """
    _check_frame("frame_from", frame_from)
    _check_frame("frame_to", frame_to)
    if frame_from.shape != frame_to.shape:
        raise ValueError(
            f"frames differ in shape: {tuple(frame_from.shape)} vs {tuple(frame_to.shape)}"
        )
    flow = cv2.calcOpticalFlowFarneback(
        to_grey_uint8(frame_from),
        to_grey_uint8(frame_to),
        None,
        FARNEBACK_PYR_SCALE,
        FARNEBACK_LEVELS,
        FARNEBACK_WINSIZE,
        FARNEBACK_ITERATIONS,
        FARNEBACK_POLY_N,
        FARNEBACK_POLY_SIGMA,
        0,
    )
    return np.asarray(flow, dtype=np.float32)


def _check_flow(flow: np.ndarray, h: int, w: int) -> None:
    if not isinstance(flow, np.ndarray) or flow.shape != (h, w, 2):
        shape = getattr(flow, "shape", type(flow).__name__)
        raise ValueError(f"flow must be an ({h}, {w}, 2) numpy array, got {shape}")


def _remap(array: np.ndarray, flow: np.ndarray) -> np.ndarray:
    """Bilinear backward warp of an H x W (x K) float32 array: out(p) = array(p + flow(p))."""
    h, w = flow.shape[:2]
    gx, gy = np.meshgrid(np.arange(w, dtype=np.float32), np.arange(h, dtype=np.float32))
    map_x = gx + flow[..., 0].astype(np.float32)
    map_y = gy + flow[..., 1].astype(np.float32)
    return cv2.remap(
        np.ascontiguousarray(array, dtype=np.float32),
        map_x,
        map_y,
        interpolation=cv2.INTER_LINEAR,
        borderMode=cv2.BORDER_REPLICATE,
    )


def warp(image: Tensor, flow: np.ndarray) -> Tensor:
    """Backward-warp a (C, H, W) tensor: ``out(p) = image(p + flow(p))``.

    Bilinear, border replicate; ``flow`` is (H, W, 2) as returned by :func:`optical_flow`.
    The result has the input's dtype and device (the warp itself runs in float32 on the CPU).
    """
    if not isinstance(image, Tensor) or image.ndim != 3:
        raise ValueError(f"image must be a (C, H, W) tensor, got {getattr(image, 'shape', image)}")
    c, h, w = image.shape
    _check_flow(flow, h, w)
    hwc = image.detach().to("cpu", torch.float32).permute(1, 2, 0).numpy()
    out = _remap(hwc, flow).reshape(h, w, c)  # cv2 drops a single channel axis
    return torch.from_numpy(out).permute(2, 0, 1).to(image.device, image.dtype)


def non_occluded(flow_bwd: np.ndarray, flow_fwd: np.ndarray) -> np.ndarray:
    """H x W bool mask of the pixels of frame k that are visible in frame k - 1.

    ``flow_bwd`` is the flow k -> k-1 and ``flow_fwd`` the flow k-1 -> k. A pixel passes when
    its match lies inside the frame and the forward-backward check (``OCCLUSION_ALPHA_*``)
    holds.
    """
    if not isinstance(flow_bwd, np.ndarray) or flow_bwd.ndim != 3:
        shape = getattr(flow_bwd, "shape", type(flow_bwd).__name__)
        raise ValueError(f"flow_bwd must be an (H, W, 2) numpy array, got {shape}")
    h, w = flow_bwd.shape[:2]
    _check_flow(flow_bwd, h, w)
    _check_flow(flow_fwd, h, w)
    fwd_at_match = _remap(flow_fwd, flow_bwd)
    round_trip = flow_bwd + fwd_at_match
    lhs = (round_trip**2).sum(-1)
    rhs = OCCLUSION_ALPHA_1 * ((flow_bwd**2).sum(-1) + (fwd_at_match**2).sum(-1))
    consistent = lhs < rhs + OCCLUSION_ALPHA_2
    gx, gy = np.meshgrid(np.arange(w, dtype=np.float32), np.arange(h, dtype=np.float32))
    mx = gx + flow_bwd[..., 0]
    my = gy + flow_bwd[..., 1]
    inside = (mx >= 0) & (mx <= w - 1) & (my >= 0) & (my <= h - 1)
    return consistent & inside


@dataclass(frozen=True)
class FlowPair:
    """Motion between sharp frames k - 1 and k: the flow k -> k-1 and its visibility mask."""

    flow: np.ndarray  # (H, W, 2), frame k -> frame k - 1
    valid: np.ndarray  # (H, W) bool, non-occluded pixels of frame k


def sequence_flows(sharp: Tensor) -> list[FlowPair]:
    """The :class:`FlowPair` of each consecutive pair of a (T, C, H, W) sequence (T - 1 of them).

    Computed once, it can be passed to several :func:`warping_error` calls.
    """
    if not isinstance(sharp, Tensor) or sharp.ndim != 4:
        raise ValueError(
            f"sharp must be a (T, C, H, W) sequence, got {getattr(sharp, 'shape', sharp)}"
        )
    pairs = []
    for k in range(1, sharp.shape[0]):
        bwd = optical_flow(sharp[k], sharp[k - 1])
        fwd = optical_flow(sharp[k - 1], sharp[k])
        pairs.append(FlowPair(flow=bwd, valid=non_occluded(bwd, fwd)))
    return pairs


def warping_error(
    restored: Tensor, sharp: Tensor, flows: list[FlowPair] | None = None
) -> list[float]:
    """Per consecutive pair k: masked MSE between restored_k and warped restored_{k-1}.

    The flow and occlusion mask come from the sharp frames (``flows``, from
    :func:`sequence_flows`, or computed here). Values are in [0, 1] units (clamped, as PSNR),
    averaged over channels and non-occluded pixels; ``nan`` for a pair with no such pixel.
    ``warping_error(sharp, sharp)`` is the floor set by the flow's own errors.
    """
    _check_sequences(restored, sharp)
    if flows is None:
        flows = sequence_flows(sharp)
    if len(flows) != max(restored.shape[0] - 1, 0):
        raise ValueError(f"{len(flows)} flows given for {restored.shape[0]} frames")
    r = to_unit(restored.detach().to("cpu", torch.float32))
    errors = []
    for k, pair in enumerate(flows, start=1):
        _check_flow(pair.flow, r.shape[-2], r.shape[-1])
        mask = torch.from_numpy(np.asarray(pair.valid, dtype=bool))
        if mask.shape != r.shape[-2:]:
            raise ValueError(f"mask of pair {k} has shape {tuple(mask.shape)}")
        n = int(mask.sum())
        if n == 0:
            errors.append(math.nan)
            continue
        sq = (r[k] - warp(r[k - 1], pair.flow)).double().pow(2).mean(0)
        errors.append(float(sq[mask].sum() / n))
    return errors


def _mean(values: list[float]) -> float | None:
    finite = [v for v in values if math.isfinite(v)]
    return float(np.mean(finite)) if finite else None


def temporal_summary(restored: Tensor, sharp: Tensor) -> dict[str, float | None]:
    """Per-sequence means: ``flicker``, ``warping_error`` and ``warping_error_sharp`` (floor).

    Values are None when there is no frame pair (T < 2), or, for the warping errors, when no
    pair has a non-occluded pixel. The flow is estimated once and shared by both warping errors.
    """
    _check_sequences(restored, sharp)
    flows = sequence_flows(sharp)
    return {
        "flicker": _mean(flicker(restored, sharp)),
        "warping_error": _mean(warping_error(restored, sharp, flows)),
        "warping_error_sharp": _mean(warping_error(sharp, sharp, flows)),
    }
