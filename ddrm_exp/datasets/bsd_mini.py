"""A miniature BSD tree made from the bundled sample photos, for tests, demos and video code.

Each sequence is a "video" of a crop panning across one of the ``train`` sample photos at a
constant velocity (a few pixels per frame, a different direction per sequence). Like the
beam-splitter camera of BSD, which records a short and a long exposure of the same instant,
the Sharp frame is the crop at the frame's instant and the Blur frame is the average of the
crops along the motion during one frame interval centred on it, i.e. a uniform linear motion
blur whose length is the per-frame velocity. Sub-frames are read bilinearly, 1/4 px apart
(``--blur subpixel``), so the kernel is a continuous segment (``--blur nearest``: whole-pixel
sub-frames, the dotted kernels of the first trees). The average is taken on 8-bit sRGB values
(a real sensor integrates linear light; for a test set the simpler model keeps Blur an exact
blur of the photo by the recorded kernel).

    python -m ddrm_exp.datasets.bsd_mini OUT_DIR [--sequences 2 --frames 4]

writes ``OUT_DIR/BSD_1ms8ms/test/000/{Blur,Sharp}/RGB/00000000.png`` ..., readable with
``dataset=bsd dataset.root=OUT_DIR``, and ``OUT_DIR/BSD_1ms8ms/test/motion.json``: every
frame's exact blur kernel (:func:`read_motion`), so diagnostics can restore with the true kernel.
Blur is a *valid* blur (the crops along the motion come from the larger photo, not wrapped
around), and the kernel is exact at the tree's own resolution: write trees at the model's size
(``--height 64 --width 64`` for the tiny model) when the true kernel must hold after loading.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from PIL import Image

from ddrm_exp.datasets.bsd import BSD_SPLITS
from ddrm_exp.datasets.samples import load_sample_photos
from ddrm_exp.datasets.transforms import as_size
from ddrm_exp.errors import ConfigError

__all__ = [
    "BLUR_MODES",
    "MOTION_FILE",
    "VELOCITIES",
    "read_motion",
    "read_photo_folder",
    "seeded_velocities",
    "write_mini_bsd",
]

# (dy, dx) pixels per frame, one per sequence (cycled): varied directions and lengths.
VELOCITIES: tuple[tuple[int, int], ...] = (
    (1, 4),
    (-3, 2),
    (2, -3),
    (4, 1),
    (-1, -4),
    (3, 3),
)

MOTION_FILE = "motion.json"

# How a sub-frame at a fractional position is read from the photo: "subpixel" (the default)
# interpolates it bilinearly, with sub-frames at most 1/4 px apart, so the kernel is the
# continuous segment a steady motion integrates; "nearest" rounds it to a whole pixel (Python's
# round, half to even) -- the first trees' model, kept to reproduce their numbers, whose
# kernels are *dotted* lines (taps skipped or doubled where positions round alike), which no
# moving camera draws.
BLUR_MODES = ("nearest", "subpixel")
SUBPIXEL_STEPS = 4

# The photo is scaled so the whole camera path fits with this much room to spare; the crop then
# shows a large part of the scene rather than a few pixels of a big photo.
_MARGIN = 1.25


def _scaled_photo(photo: np.ndarray, need_h: int, need_w: int) -> np.ndarray:
    ph, pw = photo.shape[:2]
    scale = max(need_h * _MARGIN / ph, need_w * _MARGIN / pw)
    new_w = max(need_w, math.ceil(pw * scale))
    new_h = max(need_h, math.ceil(ph * scale))
    img = Image.fromarray(photo).resize((new_w, new_h), Image.Resampling.BILINEAR)
    return np.asarray(img, dtype=np.uint8)


def _crop(photo: np.ndarray, top: float, left: float, h: int, w: int) -> np.ndarray:
    y, x = int(round(top)), int(round(left))
    return photo[y : y + h, x : x + w]


def _frame_kernel(top: float, left: float, shifts: Sequence[tuple[float, float]]) -> np.ndarray:
    """The blur kernel of a frame averaging the crops at ``(top + dy, left + dx)``.

    Blur[p] = mean over the crops of scene[p + off], with ``off`` each crop's whole-pixel offset
    from the Sharp crop. In the project's convention (a convolution with its origin at the
    centre, ``y[p] = Σ_q k[q] x[p - q + origin]``) that is ``k[origin - off] += 1 / n``.
    """
    y0, x0 = int(round(top)), int(round(left))
    offs = [(int(round(top + dy)) - y0, int(round(left + dx)) - x0) for dy, dx in shifts]
    return _kernel_of([(a, b, 1.0 / len(offs)) for a, b in offs])


def _kernel_of(taps: Sequence[tuple[int, int, float]]) -> np.ndarray:
    """The odd-sided kernel of weighted whole-pixel offsets ``(a, b, w)`` from the Sharp crop:
    ``k[origin - off] += w`` (see :func:`_frame_kernel`), just large enough to hold them."""
    r = max(max(abs(a), abs(b)) for a, b, _ in taps)
    kernel = np.zeros((2 * r + 1, 2 * r + 1))
    for a, b, w in taps:
        kernel[r - a, r - b] += w
    return kernel


def _crop_subpixel(photo: np.ndarray, top: float, left: float, h: int, w: int) -> np.ndarray:
    """The crop at a fractional position, bilinearly interpolated (float64)."""
    y0, x0 = math.floor(top), math.floor(left)
    fy, fx = top - y0, left - x0
    out = np.zeros((h, w, photo.shape[2]), dtype=np.float64)
    for dy, wy in ((0, 1 - fy), (1, fy)):
        for dx, wx in ((0, 1 - fx), (1, fx)):
            if wy * wx > 0:
                out += wy * wx * photo[y0 + dy : y0 + dy + h, x0 + dx : x0 + dx + w]
    return out


def _subpixel_kernel(top: float, left: float, shifts: Sequence[tuple[float, float]]) -> np.ndarray:
    """The kernel of a frame averaging the bilinear crops at ``(top + dy, left + dx)``,
    relative to the Sharp crop at the rounded ``(top, left)`` (as :func:`_frame_kernel`)."""
    y0, x0 = int(round(top)), int(round(left))
    taps = []
    for dy, dx in shifts:
        fy0, fx0 = math.floor(top + dy), math.floor(left + dx)
        fy, fx = top + dy - fy0, left + dx - fx0
        for a, wy in ((0, 1 - fy), (1, fy)):
            for b, wx in ((0, 1 - fx), (1, fx)):
                if wy * wx > 0:
                    taps.append((fy0 + a - y0, fx0 + b - x0, wy * wx / len(shifts)))
    return _kernel_of(taps)


def seeded_velocities(
    count: int, seed: int, min_length: float = 1.5, max_length: float = 4.5
) -> list[tuple[float, float]]:
    """``count`` (dy, dx) velocities in px per frame, lengths and directions uniform in
    [min_length, max_length] x [0, 2π), from ``seed``: motions no other tree shares."""
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(count):
        length = float(rng.uniform(min_length, max_length))
        angle = float(rng.uniform(0, 2 * math.pi))
        out.append((round(length * math.sin(angle), 3), round(length * math.cos(angle), 3)))
    return out


def read_motion(split_dir: str | os.PathLike[str]) -> dict[str, list[np.ndarray]]:
    """Each sequence's per-frame blur kernels (odd-sided, summing to 1), from ``motion.json``."""
    path = Path(os.fspath(split_dir)) / MOTION_FILE
    if not path.is_file():
        raise ConfigError(
            f"{path} does not exist: only trees written by python -m ddrm_exp.datasets.bsd_mini "
            "(with motion) know their kernels; rewrite the tree."
        )
    data = json.loads(path.read_text())
    return {
        name: [np.asarray(k, dtype=np.float64) for k in seq["kernels"]]
        for name, seq in data["sequences"].items()
    }


def read_photo_folder(folder: str | os.PathLike[str]) -> list[tuple[str, np.ndarray]]:
    """The colour photos of ``folder`` (sorted by file name) as ``(stem, H x W x 3 uint8)``."""
    path = Path(os.fspath(folder))
    if not path.is_dir():
        raise ConfigError(f"--photos {path}: no such folder.")
    photos = []
    for file in sorted(path.iterdir()):
        if file.suffix.lower() not in {".png", ".jpg", ".jpeg"}:
            continue
        with Image.open(file) as img:
            if img.mode in ("L", "LA", "I", "I;16", "1"):
                continue  # BSD is colour video
            photos.append((file.stem, np.asarray(img.convert("RGB"), dtype=np.uint8)))
    if not photos:
        raise ConfigError(f"--photos {path}: no colour png/jpg photos in it.")
    return photos


def write_mini_bsd(
    root: str | os.PathLike[str],
    sequences: int = 2,
    frames: int = 4,
    size: int | Sequence[int] = (96, 128),
    exposure: str = "1ms8ms",
    split: str = "test",
    motion: bool = True,
    photos: Sequence[tuple[str, np.ndarray]] | None = None,
    blur: str = "subpixel",
    velocities: Sequence[tuple[float, float]] | None = None,
) -> Path:
    """Write ``root/BSD_<exposure>/<split>/<seq>/{Blur,Sharp}/RGB/<frame>.png``.

    ``size`` is (H, W) of every frame. Sequences are named ``000``, ``001``...; frames
    ``00000000.png``, ... as in BSD. With ``motion=False`` the Blur frames are copies of the
    Sharp ones (the crop still pans), which makes pairing and cropping easy to check.
    ``photos`` (``(name, H x W x 3 uint8)`` pairs, one per sequence, cycled) replaces the
    bundled ``train`` sample photos, e.g. to build trees from held-out photos (``--photos``).
    ``blur`` is one of :data:`BLUR_MODES` (``subpixel`` for continuous motion);
    ``velocities`` ((dy, dx) px per frame, one per sequence, cycled; fractional ones need
    ``subpixel``) replaces :data:`VELOCITIES`.
    Returns the ``<split>`` directory. Deterministic: the same arguments give the same files.
    """
    if isinstance(sequences, bool) or not isinstance(sequences, int) or sequences < 1:
        raise ConfigError(f"sequences={sequences!r} must be a positive integer.")
    if isinstance(frames, bool) or not isinstance(frames, int) or frames < 1:
        raise ConfigError(f"frames={frames!r} must be a positive integer.")
    if not exposure or "/" in exposure or "\\" in exposure:
        raise ConfigError(f"exposure={exposure!r} must be a plain name such as 1ms8ms.")
    if split not in BSD_SPLITS:
        raise ConfigError(f"split={split!r} must be one of {', '.join(BSD_SPLITS)}.")
    h, w = as_size(size)
    if blur not in BLUR_MODES:
        raise ConfigError(f"blur={blur!r} must be one of {', '.join(BLUR_MODES)}.")
    moves = list(VELOCITIES if velocities is None else velocities)
    if not moves:
        raise ConfigError("velocities is empty: give one (dy, dx) per sequence.")
    if blur == "nearest" and any(float(v) != int(v) for pair in moves for v in pair):
        raise ConfigError("Fractional velocities need blur='subpixel' (--blur subpixel).")
    subpixel = blur == "subpixel"
    draw = _subpixel_kernel if subpixel else _frame_kernel
    read = _crop_subpixel if subpixel else _crop
    if photos is None:
        photos = load_sample_photos("train")
    if not photos:
        raise ConfigError("photos is empty: give at least one photo to pan across.")
    split_dir = Path(os.fspath(root)) / f"BSD_{exposure}" / split
    known: dict[str, dict[str, object]] = {}
    for s in range(sequences):
        photo_name, photo = photos[s % len(photos)]
        vy, vx = moves[s % len(moves)]
        # The path spans `frames` frame intervals: half an exposure before the first frame to
        # half after the last; +2 absorbs rounding of sub-frame positions.
        need_h = h + math.ceil(abs(vy) * frames) + 2
        need_w = w + math.ceil(abs(vx) * frames) + 2
        scene = _scaled_photo(photo, need_h, need_w)
        mid = (frames - 1) / 2
        top0 = (scene.shape[0] - h) / 2 - vy * mid
        left0 = (scene.shape[1] - w) / 2 - vx * mid
        # Sub-frames at most one pixel apart, so the long exposure is a continuous smear.
        n_sub = int(math.ceil(max(abs(vy), abs(vx)))) + 1
        if subpixel:
            n_sub = SUBPIXEL_STEPS * (n_sub - 1) + 1
        offsets = np.linspace(-0.5, 0.5, n_sub)
        seq_dir = split_dir / f"{s:03d}"
        kernels = []
        for kind in ("Blur", "Sharp"):
            (seq_dir / kind / "RGB").mkdir(parents=True, exist_ok=True)
        for t in range(frames):
            top, left = top0 + vy * t, left0 + vx * t
            sharp = _crop(scene, top, left, h, w)
            if motion:
                shifts = [(vy * u, vx * u) for u in offsets]
                if subpixel:
                    # The Sharp crop sits at the rounded position; centring the motion there
                    # keeps Blur centred on Sharp (a zero-mean kernel), as the beam splitter's
                    # two exposures are. Centred on the unrounded position, every kernel carried
                    # a stray shift of up to 0.5 px per axis: no blind method can know it, so it
                    # cost the blurry frame and every estimated-kernel restoration PSNR, and
                    # favoured the true kernel, which carried it.
                    top, left = float(round(top)), float(round(left))
                    positions = [(top + dy, left + dx) for dy, dx in shifts]
                else:
                    positions = [(top0 + vy * (t + u), left0 + vx * (t + u)) for u in offsets]
                kernels.append(draw(top, left, shifts).tolist())
                acc = np.zeros((h, w, 3), dtype=np.float64)
                for py, px in positions:
                    acc += read(scene, py, px, h, w)
                blur = np.clip(np.round(acc / n_sub), 0, 255).astype(np.uint8)
            else:
                kernels.append([[1.0]])
                blur = sharp
            Image.fromarray(np.ascontiguousarray(sharp)).save(
                seq_dir / "Sharp/RGB" / f"{t:08d}.png"
            )
            Image.fromarray(np.ascontiguousarray(blur)).save(seq_dir / "Blur/RGB" / f"{t:08d}.png")
        known[seq_dir.name] = {
            "photo": photo_name,
            "velocity": [vy, vx] if motion else [0, 0],
            "blur": "subpixel" if subpixel else "nearest",
            "kernels": kernels,
        }
    (split_dir / MOTION_FILE).write_text(
        json.dumps(
            {
                "convention": "convolution, origin at the centre (fft_blur.blur_circular); "
                "Blur is a valid blur of the larger photo, before 8-bit rounding",
                "size": [h, w],
                "sequences": known,
            }
        )
    )
    return split_dir


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m ddrm_exp.datasets.bsd_mini",
        description="Write a miniature BSD tree (panning crops of the sample photos).",
    )
    parser.add_argument("out_dir", help="directory to write into (becomes dataset.root)")
    parser.add_argument("--sequences", type=int, default=2, help="number of sequences")
    parser.add_argument("--frames", type=int, default=4, help="frames per sequence")
    parser.add_argument("--height", type=int, default=96, help="frame height in pixels")
    parser.add_argument("--width", type=int, default=128, help="frame width in pixels")
    parser.add_argument("--exposure", default="1ms8ms", help="names the BSD_<exposure> folder")
    parser.add_argument("--split", default="test", help="train, valid or test")
    parser.add_argument(
        "--no-motion", action="store_true", help="Blur frames are copies of the Sharp frames"
    )
    parser.add_argument(
        "--photos",
        default=None,
        help="a folder of photos (png/jpg, sorted by name, greyscale ones skipped) to pan "
        "across instead of the bundled train sample photos",
    )
    parser.add_argument(
        "--blur",
        choices=BLUR_MODES,
        default="subpixel",
        help="subpixel: bilinear sub-frames 1/4 px apart (continuous motion); nearest: "
        "sub-frames at whole pixels (dotted kernels: the trees before the segment estimator)",
    )
    parser.add_argument(
        "--motion-seed",
        type=int,
        default=None,
        help="draw each sequence's velocity (--motion-range px a frame, any direction) from "
        "this seed instead of the fixed list (needs --blur subpixel)",
    )
    parser.add_argument(
        "--motion-range",
        type=float,
        nargs=2,
        default=(1.5, 4.5),
        metavar=("MIN", "MAX"),
        help="the seeded velocities' lengths, px a frame (default 1.5 4.5; e.g. 0.5 2 for mild "
        "blur)",
    )
    args = parser.parse_args(argv)
    try:
        low, high = args.motion_range
        if not 0 <= low <= high:
            raise ConfigError(f"--motion-range needs 0 <= MIN <= MAX, got {low:g} {high:g}.")
        velocities = (
            None
            if args.motion_seed is None
            else seeded_velocities(args.sequences, args.motion_seed, low, high)
        )
        photos = None if args.photos is None else read_photo_folder(args.photos)
        split_dir = write_mini_bsd(
            args.out_dir,
            sequences=args.sequences,
            frames=args.frames,
            size=(args.height, args.width),
            exposure=args.exposure,
            split=args.split,
            motion=not args.no_motion,
            photos=photos,
            blur=args.blur,
            velocities=velocities,
        )
    except ConfigError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(
        f"Wrote {args.sequences} sequence(s) x {args.frames} frame(s) to {split_dir}; read it "
        f"with dataset=bsd dataset.root={args.out_dir} dataset.exposure={args.exposure} "
        f"dataset.split={args.split}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
