"""Video outputs: side-by-side frames, the H.264 mp4 writer, its GIF fallback, the reader."""

from __future__ import annotations

import logging
import math
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from ddrm_exp.tracking import video
from ddrm_exp.tracking.video import read_video, side_by_side, write_video


def _smooth_frames(n: int, h: int, w: int) -> list[np.ndarray]:
    """Slowly varying colour gradients that move from frame to frame (no two frames equal)."""
    y, x = np.mgrid[0:h, 0:w].astype(np.float64)
    frames = []
    for k in range(n):
        r = 128 + 100 * np.sin(2 * np.pi * (x + 3 * k) / (2 * w))
        g = 128 + 100 * np.cos(2 * np.pi * (y - 2 * k) / (2 * h))
        b = np.full_like(x, 60.0 + 25 * k)
        frames.append(np.stack([r, g, b], -1).round().clip(0, 255).astype(np.uint8))
    return frames


def _psnr(a: np.ndarray, b: np.ndarray) -> float:
    mse = np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2)
    return math.inf if mse == 0 else 10 * math.log10(255.0**2 / mse)


def _leftovers(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if p.name.startswith("."))


def test_side_by_side_layout() -> None:
    a = torch.full((3, 4, 5), -1.0)  # black
    b = torch.zeros(1, 4, 3)  # grey, single channel
    c = torch.full((3, 4, 2), 1.0)  # white
    img = side_by_side(a, b, c, separator=2)
    assert img.dtype == np.uint8 and img.shape == (4, 5 + 2 + 3 + 2 + 2, 3)
    assert (img[:, :5] == 0).all()
    assert (img[:, 5:7] == 255).all()  # separator
    assert (img[:, 7:10] == 128).all()  # round(0.5 * 255)
    assert (img[:, 12:] == 255).all()
    assert side_by_side(a).shape == (4, 5, 3)
    with pytest.raises(ValueError):
        side_by_side(a, torch.zeros(3, 5, 5))  # heights differ
    with pytest.raises(ValueError):
        side_by_side()


def test_write_video_mp4_round_trip(tmp_path: Path) -> None:
    frames = _smooth_frames(6, 48, 64)
    out = write_video(frames, tmp_path / "seq.mp4", fps=6)
    assert out == tmp_path / "seq.mp4" and out.is_file()
    assert out.read_bytes()[4:8] == b"ftyp"  # an ISO/mp4 container
    back = read_video(out)
    assert back.shape == (6, 48, 64, 3) and back.dtype == np.uint8
    for orig, got in zip(frames, back, strict=True):
        assert _psnr(got, orig) > 30
    # the frames stay in order: each read-back frame is closest to its own original
    for k, got in enumerate(back):
        assert int(np.argmax([_psnr(got, f) for f in frames])) == k
    assert _leftovers(tmp_path) == []


def test_write_video_is_h264_yuv420p(tmp_path: Path) -> None:
    imageio_ffmpeg = pytest.importorskip("imageio_ffmpeg")
    out = write_video(_smooth_frames(2, 16, 16), tmp_path / "seq.mp4")
    reader = imageio_ffmpeg.read_frames(str(out))
    meta = next(reader)
    reader.close()
    assert meta["codec"] == "h264"
    assert meta["pix_fmt"].startswith("yuv420p")
    assert meta["fps"] == pytest.approx(6)


def test_write_video_pads_odd_sizes(tmp_path: Path) -> None:
    frames = _smooth_frames(3, 21, 33)
    out = write_video(frames, tmp_path / "odd.mp4")
    assert out.suffix == ".mp4"
    back = read_video(out)
    assert back.shape == (3, 22, 34, 3)
    for orig, got in zip(frames, back, strict=True):
        assert _psnr(got[:21, :33], orig) > 30


def test_write_video_replaces_an_existing_file(tmp_path: Path) -> None:
    path = tmp_path / "seq.mp4"
    path.write_bytes(b"old")
    write_video(_smooth_frames(2, 16, 16), path)
    assert read_video(path).shape == (2, 16, 16, 3)
    assert _leftovers(tmp_path) == []


def test_gif_fallback_without_imageio_ffmpeg(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setitem(sys.modules, "imageio_ffmpeg", None)  # import now raises ImportError
    frames = _smooth_frames(4, 21, 33)
    with caplog.at_level(logging.WARNING, logger=video.__name__):
        out = write_video(frames, tmp_path / "seq.mp4", fps=5)
    assert out == tmp_path / "seq.gif"
    assert not (tmp_path / "seq.mp4").exists()
    assert "imageio-ffmpeg is not importable" in caplog.text and "GIF" in caplog.text
    back = read_video(out)
    assert back.shape == (4, 21, 33, 3)  # no padding for GIFs
    for orig, got in zip(frames, back, strict=True):
        assert _psnr(got, orig) > 25  # palette of 256 colours
    assert _leftovers(tmp_path) == []


def test_gif_fallback_when_ffmpeg_fails(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    imageio_ffmpeg = pytest.importorskip("imageio_ffmpeg")

    def broken(*args: object, **kwargs: object) -> None:
        raise OSError("ffmpeg exploded")

    monkeypatch.setattr(imageio_ffmpeg, "write_frames", broken)
    with caplog.at_level(logging.WARNING, logger=video.__name__):
        out = write_video(_smooth_frames(3, 16, 16), tmp_path / "seq.mp4")
    assert out.suffix == ".gif" and "ffmpeg exploded" in caplog.text
    assert read_video(out).shape == (3, 16, 16, 3)
    assert _leftovers(tmp_path) == []  # the half-written mp4 temp file is gone


def test_gif_failure_is_raised(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "imageio_ffmpeg", None)

    def broken(*args: object, **kwargs: object) -> None:
        raise RuntimeError("no gif either")

    monkeypatch.setattr(video, "_write_gif", broken)
    with pytest.raises(RuntimeError, match="no gif either"):
        write_video(_smooth_frames(2, 8, 8), tmp_path / "seq.mp4")


def test_write_video_rejects_bad_frames(tmp_path: Path) -> None:
    with pytest.raises(ValueError):
        write_video([], tmp_path / "a.mp4")
    with pytest.raises(ValueError):
        write_video([np.zeros((8, 8, 3), np.float32)], tmp_path / "a.mp4")
    with pytest.raises(ValueError):
        write_video(
            [np.zeros((8, 8, 3), np.uint8), np.zeros((8, 10, 3), np.uint8)], tmp_path / "a.mp4"
        )
    with pytest.raises(FileNotFoundError):
        read_video(tmp_path / "missing.mp4")


def test_gif_path_writes_a_gif_directly(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING, logger=video.__name__):
        out = write_video(_smooth_frames(3, 10, 12), tmp_path / "seq.gif")
    assert out == tmp_path / "seq.gif" and caplog.text == ""
    assert read_video(out).shape == (3, 10, 12, 3)
