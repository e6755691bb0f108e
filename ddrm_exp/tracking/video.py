"""Videos of restored sequences: side-by-side frames, an H.264 mp4 writer, and a reader.

The mp4 is encoded by the ffmpeg binary bundled with ``imageio-ffmpeg`` (libx264, yuv420p,
``+faststart``), which browsers and wandb play. Should that be missing or fail, the video is
written as an animated GIF instead (Pillow) with a warning: an encoder problem never stops a
run. Like every other output, the file is written under a temporary name beside its target and
renamed into place.
"""

from __future__ import annotations

import logging
import os
import tempfile
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageSequence
from torch import Tensor

from ddrm_exp.metrics.image import to_unit
from ddrm_exp.tracking.files import _FILE_MODE, TEMP_SUFFIX, atomic_write

log = logging.getLogger(__name__)

# libx264 constant rate factor: 18 is close to visually lossless; small frames stay small files.
MP4_CRF = 18


def _to_uint8_hwc(frame: Tensor) -> np.ndarray:
    if not isinstance(frame, Tensor) or frame.ndim != 3 or frame.shape[0] not in (1, 3):
        raise ValueError(
            f"frames must be (3, H, W) or (1, H, W) tensors, got {getattr(frame, 'shape', frame)}"
        )
    x = to_unit(frame.detach().to("cpu", torch.float32))
    x = x.expand(3, -1, -1)
    return (x * 255.0).round().to(torch.uint8).permute(1, 2, 0).numpy()


def side_by_side(*frames: Tensor, separator: int = 2) -> np.ndarray:
    """(3, H, W) frames in [-1, 1] (e.g. blurry, restored, sharp) as one H x W' x 3 uint8 image.

    Frames are placed left to right, ``separator`` white columns apart; all must have the same
    height. Greyscale (1, H, W) frames are repeated over the three channels.
    """
    if not frames:
        raise ValueError("side_by_side needs at least one frame")
    tiles = [_to_uint8_hwc(f) for f in frames]
    heights = {t.shape[0] for t in tiles}
    if len(heights) != 1:
        raise ValueError(f"frames must have the same height, got {[t.shape[0] for t in tiles]}")
    if separator < 0:
        raise ValueError(f"separator must be >= 0, got {separator}")
    gap = np.full((tiles[0].shape[0], separator, 3), 255, dtype=np.uint8)
    parts: list[np.ndarray] = []
    for i, t in enumerate(tiles):
        if i:
            parts.append(gap)
        parts.append(t)
    return np.ascontiguousarray(np.concatenate(parts, axis=1))


def _check_frames(frames: Sequence[np.ndarray]) -> list[np.ndarray]:
    frames = list(frames)
    if not frames:
        raise ValueError("write_video needs at least one frame")
    shape = None
    for i, f in enumerate(frames):
        if not isinstance(f, np.ndarray) or f.dtype != np.uint8 or f.ndim != 3 or f.shape[2] != 3:
            raise ValueError(
                f"frame {i} must be an H x W x 3 uint8 array, got "
                f"{getattr(f, 'dtype', type(f).__name__)} {getattr(f, 'shape', '')}"
            )
        if shape is None:
            shape = f.shape
        elif f.shape != shape:
            raise ValueError(f"frame {i} has shape {f.shape}, frame 0 has {shape}")
    return frames


def _pad_even(frame: np.ndarray) -> np.ndarray:
    """yuv420p needs even sizes: repeat the last row / column where one is odd."""
    h, w = frame.shape[:2]
    if h % 2 == 0 and w % 2 == 0:
        return np.ascontiguousarray(frame)
    return np.pad(frame, ((0, h % 2), (0, w % 2), (0, 0)), mode="edge")


def _write_mp4(frames: list[np.ndarray], path: Path, fps: int) -> None:
    import imageio_ffmpeg  # imported here: its absence only means a GIF instead

    padded = [_pad_even(f) for f in frames]
    h, w = padded[0].shape[:2]
    path.parent.mkdir(parents=True, exist_ok=True)
    # The temporary name ends in TEMP_SUFFIX so that remove_stale_temps finds it after a kill;
    # ffmpeg is told the format, since it cannot guess it from that name.
    fd, tmp_name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=TEMP_SUFFIX)
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        writer = imageio_ffmpeg.write_frames(
            str(tmp),
            (w, h),
            fps=fps,
            codec="libx264",
            pix_fmt_out="yuv420p",
            quality=None,
            macro_block_size=1,  # no rescaling: sizes are already even
            ffmpeg_log_level="error",
            output_params=["-crf", str(MP4_CRF), "-movflags", "+faststart", "-f", "mp4"],
        )
        writer.send(None)  # start ffmpeg
        try:
            for f in padded:
                writer.send(f)
        finally:
            writer.close()
        # write_frames does not check ffmpeg's exit status: count what was really encoded
        n, _ = imageio_ffmpeg.count_frames_and_secs(str(tmp))
        if n != len(frames):
            raise RuntimeError(f"ffmpeg encoded {n} of {len(frames)} frames")
        os.chmod(tmp, _FILE_MODE)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def _write_gif(frames: list[np.ndarray], path: Path, fps: int) -> None:
    images = [Image.fromarray(f, mode="RGB") for f in frames]
    with atomic_write(path, "wb", fsync=False) as fh:
        images[0].save(
            fh,
            format="GIF",
            save_all=True,
            append_images=images[1:],
            duration=max(round(1000 / fps), 20),  # ms per frame; browsers slow down < 20 ms
            loop=0,
        )


def write_video(frames: Sequence[np.ndarray], path: Path, fps: int = 6) -> Path:
    """Write H x W x 3 uint8 frames as an H.264 mp4 at ``path``; return the path written.

    Odd sizes are padded to even ones by repeating the last row / column (yuv420p needs even
    sizes), so an mp4 read back may be one pixel taller / wider. If ``imageio_ffmpeg`` cannot be
    imported or ffmpeg fails, a warning says why and an animated GIF is written at
    ``path.with_suffix(".gif")`` instead (that path is returned); only a failure of the GIF as
    well raises. A ``path`` ending in ``.gif`` writes the GIF directly. Note that a GIF has at
    most 256 colours per frame, and Pillow merges identical consecutive frames into one.
    """
    frames = _check_frames(frames)
    if fps <= 0:
        raise ValueError(f"fps must be positive, got {fps}")
    path = Path(path)
    if path.suffix.lower() != ".gif":
        try:
            _write_mp4(frames, path, fps)
        except ImportError as exc:
            reason = f"imageio-ffmpeg is not importable: {type(exc).__name__}: {exc}"
        except Exception as exc:  # missing binary, encoder error...: fall back
            reason = f"ffmpeg failed: {type(exc).__name__}: {exc}"
        else:
            return path
        log.warning(
            "Could not write the H.264 video %s (%s); writing an animated GIF instead.",
            path,
            reason,
        )
    gif = path.with_suffix(".gif")
    _write_gif(frames, gif, fps)
    return gif


def read_video(path: Path) -> np.ndarray:
    """The frames of an mp4 (or any ffmpeg-readable video) or GIF as a (T, H, W, 3) uint8 array."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no video at {path}")
    if path.suffix.lower() == ".gif":
        with Image.open(path) as img:
            frames = [
                np.asarray(f.convert("RGB"), dtype=np.uint8) for f in ImageSequence.Iterator(img)
            ]
        return np.stack(frames)
    import imageio_ffmpeg

    reader = imageio_ffmpeg.read_frames(str(path))
    meta = next(reader)
    w, h = meta["size"]
    frames = [np.frombuffer(b, dtype=np.uint8).reshape(h, w, 3) for b in reader]
    if not frames:
        return np.zeros((0, h, w, 3), dtype=np.uint8)
    return np.stack(frames)
