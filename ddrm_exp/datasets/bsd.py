"""The Beam-Splitter Deblurring dataset (BSD; Zhong et al., "Real-world video deblurring", IJCV
2022): real blurry/sharp frame pairs, or its sharp frames blurred by a known kernel.

Layout, as distributed (640x480 RGB frames)::

    <root>/BSD_<exposure>/<split>/<seq>/Blur/RGB/<frame>.png
    <root>/BSD_<exposure>/<split>/<seq>/Sharp/RGB/<frame>.png

with ``exposure`` one of ``1ms8ms``, ``2ms16ms``, ``3ms24ms`` (``1ms_8ms`` is accepted too),
``split`` one of ``train``, ``valid``, ``test``, sequences like ``000`` and frames like
``00000000.png``. Sequences and frames are sorted naturally (``2`` before ``10``).

Both datasets return the sharp frame as ``"image"`` and a ``"measurement"`` next to it:

* :class:`BSDDataset` -- the camera's real blurry frame (non-uniform blur, no known kernel).
* :class:`BSDSyntheticDataset` -- the sharp frame blurred by a kernel drawn from a seeded
  generator, also returned as ``"kernel"``; no noise is added (the runner adds σ_y noise).

Geometry (``crop`` x ``resize``), always identical for the two frames of a pair:

* ``center`` + ``resize=true`` -- resize the short side to the model size, centre crop (the
  transform of every other dataset).
* ``center`` + ``resize=false`` -- centre crop at native resolution. No resampling, so the real
  blur keeps its size in pixels; frames must be at least the model size.
* ``none`` + ``resize=true`` -- resize the whole frame to the model size (aspect ratio changes,
  and with it the blur's shape).
* ``none`` + ``resize=false`` -- frames must already be the model size.
"""

from __future__ import annotations

import importlib
import os
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypedDict, Unpack

import numpy as np
import torch
import torch.nn.functional as F
from omegaconf import DictConfig, ListConfig, OmegaConf
from PIL import Image
from torch import Tensor
from torch.utils.data import Dataset

from ddrm_exp.datasets.base import IMAGE_EXTENSIONS, file_digest, subset_range
from ddrm_exp.datasets.transforms import (
    Size,
    as_size,
    image_file_size,
    pil_to_tensor,
    resize_center_crop,
    to_rgb,
)
from ddrm_exp.errors import ConfigError

__all__ = [
    "BLUR_MODES",
    "CROPS",
    "EXPOSURES",
    "KERNEL_PER",
    "BSD_SPLITS",
    "BSDDataset",
    "BSDFrame",
    "BSDSyntheticDataset",
    "layout_text",
    "natural_key",
]

EXPOSURES: tuple[str, ...] = ("1ms8ms", "2ms16ms", "3ms24ms")
BSD_SPLITS: tuple[str, ...] = ("train", "valid", "test")
CROPS: tuple[str, ...] = ("center", "none")
BLUR_MODES: tuple[str, ...] = ("circular", "reflect")
KERNEL_PER: tuple[str, ...] = ("sequence", "frame")

# Mixed into the kernel seed so kernel draws never share a stream with the runner's per-image
# generators, which are seeded by (seed, index, stream) with small integers.
_KERNEL_STREAM = 0x4B45524E

_DIGITS = re.compile(r"(\d+)")


def natural_key(name: str) -> tuple[tuple[int, int, str], ...]:
    """Sort key that orders embedded numbers by value: ``"2" < "10"``, ``"a9" < "a10"``."""
    parts = _DIGITS.split(name)
    return tuple(
        (0, int(p), p) if i % 2 == 1 else (1, 0, p.lower()) for i, p in enumerate(parts) if p
    )


def layout_text(root: str = "<root>", exposure: str = "<exposure>", split: str = "<split>") -> str:
    """The expected directory layout, for error messages."""
    base = f"{root}/BSD_{exposure}/{split}/<seq>"
    return (
        f"{base}/Blur/RGB/<frame>.png and {base}/Sharp/RGB/<frame>.png "
        f"(exposure: {', '.join(EXPOSURES)}; split: {', '.join(BSD_SPLITS)}; "
        f"e.g. {root}/BSD_2ms16ms/test/000/Sharp/RGB/00000000.png)"
    )


def _exposure_key(name: str) -> str:
    return name.removeprefix("BSD_").replace("_", "").lower()


@dataclass(frozen=True)
class BSDFrame:
    """One frame of a sequence: where its files are, and what identifies it."""

    sequence: str
    # Position of the sequence among all sequences of the split, so that kernel seeds do not
    # depend on which sequences a run selects.
    sequence_index: int
    frame: int
    stem: str
    sharp: Path
    blur: Path | None

    @property
    def name(self) -> str:
        return f"{self.sequence}/{self.stem}"


def _choice(value: Any, options: Sequence[str], key: str) -> str:
    if value not in options:
        raise ConfigError(
            f"dataset.{key}={value!r} is not supported; use one of {', '.join(options)}."
        )
    return str(value)


def _positive_int(value: Any, key: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int | np.integer) or int(value) < 1:
        raise ConfigError(f"dataset.{key}={value!r} must be a positive integer.")
    return int(value)


def _resolve_split_dir(root: Any, exposure: str, split: str) -> Path:
    if root is None or str(root).strip() == "":
        raise ConfigError(f"dataset.root is not set; point it at the BSD tree: {layout_text()}.")
    base = Path(os.path.expanduser(os.fspath(root)))
    layout = layout_text(os.fspath(base), exposure, split)
    if not base.is_dir():
        raise ConfigError(f"BSD directory {os.fspath(base)!r} does not exist; expected {layout}.")
    key = _exposure_key(exposure)
    if base.name.startswith("BSD_") and _exposure_key(base.name) == key:
        exposure_dir = base  # dataset.root already names the exposure directory
    else:
        found = sorted(
            (d for d in base.iterdir() if d.is_dir() and d.name.startswith("BSD_")),
            key=lambda d: natural_key(d.name),
        )
        matches = [d for d in found if _exposure_key(d.name) == key]
        if not matches:
            have = ", ".join(d.name for d in found) or "none"
            raise ConfigError(
                f"No BSD_{exposure} directory in {os.fspath(base)!r} (BSD_* found: {have}); "
                f"check dataset.exposure. Expected {layout}."
            )
        exposure_dir = matches[0]
    split_dir = exposure_dir / split
    if not split_dir.is_dir():
        have = sorted(d.name for d in exposure_dir.iterdir() if d.is_dir())
        raise ConfigError(
            f"BSD split directory {os.fspath(split_dir)!r} does not exist (found: "
            f"{', '.join(have) or 'nothing'}); check dataset.split. Expected {layout}."
        )
    return split_dir


def _frame_files(folder: Path) -> dict[str, Path]:
    files = {}
    for p in folder.iterdir():
        if p.is_file() and not p.name.startswith(".") and p.suffix.lower() in IMAGE_EXTENSIONS:
            files[p.stem] = p
    return files


def _frame_number(stem: str, position: int) -> int:
    digits = _DIGITS.findall(stem)
    return int(digits[-1]) if digits else position


def _select_sequences(all_names: list[str], wanted: Any) -> list[int]:
    """Indices into ``all_names`` of the requested sequences (names, or numbers for ``007``)."""
    if wanted is None:
        return list(range(len(all_names)))
    if isinstance(wanted, str | int) and not isinstance(wanted, bool):
        wanted = [wanted]
    chosen: list[int] = []
    for w in wanted:
        if isinstance(w, bool):
            hits = []
        elif isinstance(w, str) and w in all_names:
            hits = [all_names.index(w)]
        elif isinstance(w, int) or (isinstance(w, str) and w.isdigit()):
            hits = [i for i, n in enumerate(all_names) if n.isdigit() and int(n) == int(w)]
        else:
            hits = []
        if not hits:
            shown = ", ".join(all_names[:20]) + (", ..." if len(all_names) > 20 else "")
            raise ConfigError(
                f"dataset.sequences has {w!r}, which is not a sequence of this split "
                f"(available: {shown})."
            )
        chosen.extend(h for h in hits if h not in chosen)
    return chosen


def scan_bsd(
    split_dir: Path, sequences: Any, stride: int, need_blur: bool, layout: str
) -> list[BSDFrame]:
    """Every ``stride``-th frame of the chosen sequences, with Blur/Sharp files paired by name."""
    seq_dirs = sorted(
        (d for d in split_dir.iterdir() if d.is_dir() and not d.name.startswith(".")),
        key=lambda d: natural_key(d.name),
    )
    if not seq_dirs:
        raise ConfigError(
            f"No sequence directories in {os.fspath(split_dir)!r}; expected {layout}."
        )
    names = [d.name for d in seq_dirs]
    frames: list[BSDFrame] = []
    for si in _select_sequences(names, sequences):
        seq_dir = seq_dirs[si]
        kinds = ("Sharp", "Blur") if need_blur else ("Sharp",)
        listed: dict[str, dict[str, Path]] = {}
        for kind in kinds:
            folder = seq_dir / kind / "RGB"
            if not folder.is_dir():
                raise ConfigError(
                    f"BSD sequence {os.fspath(seq_dir)!r} has no {kind}/RGB folder; "
                    f"expected {layout}."
                )
            listed[kind] = _frame_files(folder)
            if not listed[kind]:
                raise ConfigError(f"No frames in {os.fspath(folder)!r}; expected {layout}.")
        stems = sorted(listed["Sharp"], key=natural_key)
        if need_blur:
            only_sharp = sorted(set(listed["Sharp"]) - set(listed["Blur"]), key=natural_key)
            only_blur = sorted(set(listed["Blur"]) - set(listed["Sharp"]), key=natural_key)
            if only_sharp or only_blur:
                raise ConfigError(
                    f"BSD sequence {os.fspath(seq_dir)!r}: Blur and Sharp frames do not match "
                    f"(only in Sharp: {only_sharp[:5] or 'none'}; only in Blur: "
                    f"{only_blur[:5] or 'none'}); every frame needs both files, as in {layout}."
                )
        for pos in range(0, len(stems), stride):
            stem = stems[pos]
            frames.append(
                BSDFrame(
                    sequence=seq_dir.name,
                    sequence_index=si,
                    frame=_frame_number(stem, pos),
                    stem=stem,
                    sharp=listed["Sharp"][stem],
                    blur=listed["Blur"][stem] if need_blur else None,
                )
            )
    return frames


def transform_frame(image: Image.Image, size: Size, crop: str, resize: bool) -> Tensor:
    """Model-size tensor in [-1, 1]; a pure function of the frame, so pairs stay aligned."""
    img = to_rgb(image)
    if crop == "center":
        img = resize_center_crop(img, size, resize=resize)
    elif resize and (img.height, img.width) != size:
        img = img.resize((size[1], size[0]), Image.Resampling.BILINEAR)
    return pil_to_tensor(img)


class FrameSelection(TypedDict, total=False):
    """The settings every BSD dataset takes from :class:`_BSDFrames` (defaults there)."""

    root: str | os.PathLike[str] | None
    exposure: str
    split: str
    sequences: Any
    stride: int
    limit: int | None
    start: int
    crop: str
    resize: bool


class _BSDFrames(Dataset[dict[str, Any]]):
    """Scanning, selection and the shared frame transform of the two BSD datasets."""

    # Whether the dataset reads the Blur frames (the real pairs) or only the Sharp ones.
    need_blur: bool

    def __init__(
        self,
        image_size: int | Sequence[int],
        root: str | os.PathLike[str] | None = None,
        exposure: str = "1ms8ms",
        split: str = "test",
        sequences: Any = None,
        stride: int = 1,
        limit: int | None = None,
        start: int = 0,
        crop: str = "center",
        resize: bool = True,
    ) -> None:
        self.image_size: Size = as_size(image_size)
        self.exposure = str(exposure)
        self.split = _choice(split, BSD_SPLITS, "split")
        self.crop = _choice(crop, CROPS, "crop")
        self.resize = bool(resize)
        self.stride = _positive_int(stride, "stride")
        split_dir = _resolve_split_dir(root, self.exposure, self.split)
        self.split_dir = split_dir
        layout = layout_text(os.fspath(split_dir.parent.parent), self.exposure, self.split)
        if isinstance(sequences, DictConfig):
            raise ConfigError("dataset.sequences must be null, a name, or a list of names.")
        if sequences is not None and not isinstance(sequences, str | int):
            sequences = list(sequences)
        everything = scan_bsd(split_dir, sequences, self.stride, self.need_blur, layout)
        chosen = subset_range(len(everything), start, limit, f"{os.fspath(split_dir)!r}")
        self.frames: list[BSDFrame] = [everything[i] for i in chosen]
        self.names: list[str] = [f.name for f in self.frames]
        self._check_sizes()

    def _check_sizes(self) -> None:
        """Fail at construction, not halfway through a run, on frames that cannot be used."""
        h, w = self.image_size
        for f in self.frames:
            sharp = image_file_size(f.sharp)
            if f.blur is not None:
                blur = image_file_size(f.blur)
                if blur != sharp:
                    raise ConfigError(
                        f"BSD frame {f.name!r}: Blur is {blur[1]}x{blur[0]} but Sharp is "
                        f"{sharp[1]}x{sharp[0]} (WxH); a pair must have one size so both get "
                        f"the same crop."
                    )
            if self.resize:
                continue
            too_small = sharp[0] < h or sharp[1] < w
            if (self.crop == "none" and sharp != (h, w)) or too_small:
                need = "at least" if self.crop == "center" else "exactly"
                raise ConfigError(
                    f"BSD frame {f.name!r} is {sharp[1]}x{sharp[0]} (WxH) but dataset.resize="
                    f"false with dataset.crop={self.crop} needs frames of {need} the model size "
                    f"{w}x{h}. Set dataset.resize=true, or a smaller model.image_size."
                )

    def load(self, path: Path) -> Tensor:
        with Image.open(path) as img:
            img.load()
            return transform_frame(img, self.image_size, self.crop, self.resize)

    def __len__(self) -> int:
        return len(self.frames)

    def input_ids(self) -> list[str]:
        """A content hash of each frame's Sharp file (and its Blur file, when it has one)."""
        return [
            file_digest(f.sharp) + ("" if f.blur is None else "+" + file_digest(f.blur))
            for f in self.frames
        ]

    def _position(self, index: int) -> int:
        if index < 0:
            index += len(self)
        if not 0 <= index < len(self):
            raise IndexError(f"index {index} out of range for {len(self)} frames")
        return index

    def frame_at(self, index: int) -> BSDFrame:
        """Which sequence and frame dataset item ``index`` is, without reading its images."""
        return self.frames[self._position(index)]

    def _base_item(self, index: int) -> dict[str, Any]:
        f = self.frames[index]
        return {
            "image": self.load(f.sharp),
            "index": index,
            "name": f.name,
            "sequence": f.sequence,
            "frame": f.frame,
        }


class BSDDataset(_BSDFrames):
    """Real BSD pairs: ``"image"`` is the Sharp frame, ``"measurement"`` the Blur frame.

    Items: ``image`` and ``measurement`` (3, H, W) float32 in [-1, 1], ``index``, ``name``
    (``"<seq>/<frame>"``), ``sequence`` (str), ``frame`` (int, from the file name).
    Frames are ordered by sequence, then frame; ``stride`` keeps every ``stride``-th frame of
    each sequence, then ``start``/``limit`` select from that list.
    """

    need_blur = True

    def __getitem__(self, index: int) -> dict[str, Any]:
        index = self._position(index)
        item = self._base_item(index)
        blur = self.frames[index].blur
        assert blur is not None  # scan_bsd pairs every frame when need_blur
        item["measurement"] = self.load(blur)
        return item


def _import_function(module: str, name: str) -> Any:
    """``module.name``, imported when first needed so ``dataset=bsd`` works without it."""
    try:
        return getattr(importlib.import_module(f"ddrm_exp.degradations.{module}"), name)
    except (ImportError, AttributeError) as exc:
        raise ConfigError(
            f"dataset=bsd_synthetic needs ddrm_exp.degradations.{module}.{name}, which could "
            f"not be imported ({exc})."
        ) from exc


def blur_reflect(x: Tensor, kernel: Tensor) -> Tensor:
    """Convolve (B, C, H, W) with ``kernel`` (centre at ``(kh//2, kw//2)``), reflect-padded.

    The same convolution as the circular blur away from the borders; near them it mirrors the
    image instead of wrapping around, which looks like a real photo but is not exactly what a
    circular (FFT) operator models.
    """
    kh, kw = kernel.shape
    top, left = kh - 1 - kh // 2, kw - 1 - kw // 2
    padded = F.pad(x, (left, kw - 1 - left, top, kh - 1 - top), mode="reflect")
    c = x.shape[1]
    weight = kernel.flip(0, 1).to(x).expand(c, 1, kh, kw)
    return F.conv2d(padded, weight, groups=c)


class BSDSyntheticDataset(_BSDFrames):
    """BSD Sharp frames blurred by a known kernel: a deblurring benchmark with ground truth.

    Items are those of :class:`BSDDataset` plus ``"kernel"`` (kh, kw) float64, sum 1, and
    ``"measurement"`` = the model-size sharp image blurred by it, noise-free. The kernel is
    in model pixels (it is applied after crop/resize) and is drawn by
    ``kernel2d_from_spec(kernel, generator)`` from a generator seeded by
    ``(seed, sequence position in the split)`` for ``kernel_per=sequence`` or
    ``(seed, sequence position, frame number)`` for ``kernel_per=frame``, so it does not depend
    on ``sequences``, ``stride``, ``start`` or ``limit``.

    ``blur_mode=circular`` wraps around the borders, which is exactly the FFT blur operator's
    model; ``reflect`` mirrors the borders (a more natural image, but the operator is then only
    right away from the borders). The Blur folders are not needed.
    """

    need_blur = False

    def __init__(
        self,
        image_size: int | Sequence[int],
        kernel: Any = None,
        kernel_per: str = "sequence",
        blur_mode: str = "circular",
        seed: int = 0,
        **frames: Unpack[FrameSelection],
    ) -> None:
        self.kernel_per = _choice(kernel_per, KERNEL_PER, "kernel_per")
        self.blur_mode = _choice(blur_mode, BLUR_MODES, "blur_mode")
        if isinstance(seed, bool) or not isinstance(seed, int | np.integer) or seed < 0:
            raise ConfigError(f"dataset.seed={seed!r} must be a non-negative integer.")
        self.seed = int(seed)
        if kernel is None:
            kernel = {"type": "motion", "size": 31, "intensity": 0.5}
        if isinstance(kernel, DictConfig | ListConfig):
            kernel = OmegaConf.to_container(kernel, resolve=True)  # type: ignore[assignment]
        # A mapping spec, or an explicit 2-D list of weights; kernel2d_from_spec validates it.
        self.kernel_spec: Any = kernel
        self._from_spec = _import_function("kernels2d", "kernel2d_from_spec")
        self._blur_circular = (
            _import_function("fft_blur", "blur_circular") if self.blur_mode == "circular" else None
        )
        super().__init__(image_size, **frames)
        self._cache: dict[tuple[int, ...], Tensor] = {}
        if self.frames:
            self.kernel_for(0)  # a bad spec fails now, not on the first batch

    def _kernel_key(self, f: BSDFrame) -> tuple[int, ...]:
        if self.kernel_per == "sequence":
            return (f.sequence_index,)
        return (f.sequence_index, f.frame)

    def kernel_for(self, index: int) -> Tensor:
        """The true kernel of item ``index``: (kh, kw) float64 summing to 1."""
        key = self._kernel_key(self.frames[self._position(index)])
        cached = self._cache.get(key)
        if cached is not None:
            return cached.clone()  # items must not share storage a consumer could edit
        entropy = [self.seed, _KERNEL_STREAM, *key]
        state = np.random.SeedSequence(entropy).generate_state(2, dtype=np.uint32)
        gen = torch.Generator().manual_seed(int(state[0]) << 32 | int(state[1]))
        k = self._from_spec(self.kernel_spec, generator=gen, what="dataset.kernel")
        k = torch.as_tensor(k, dtype=torch.float64)
        if k.ndim != 2:
            raise ConfigError(f"dataset.kernel={self.kernel_spec!r} gave a {k.ndim}-D kernel.")
        h, w = self.image_size
        if k.shape[0] > h or k.shape[1] > w:
            raise ConfigError(
                f"dataset.kernel is {k.shape[1]}x{k.shape[0]} (WxH), larger than the model "
                f"size {w}x{h}; use a smaller kernel size."
            )
        if self.kernel_per == "sequence":
            self._cache[key] = k
        return k

    def blur(self, image: Tensor, kernel: Tensor) -> Tensor:
        """``image`` (3, H, W) blurred by ``kernel`` as this dataset's measurements are."""
        x = image.to(torch.float64).unsqueeze(0)
        if self._blur_circular is not None:
            y = self._blur_circular(x, kernel)
        else:
            y = blur_reflect(x, kernel)
        return y.reshape(image.shape).to(image.dtype)

    def __getitem__(self, index: int) -> dict[str, Any]:
        index = self._position(index)
        item = self._base_item(index)
        k = self.kernel_for(index)
        item["kernel"] = k
        item["measurement"] = self.blur(item["image"], k)
        return item
