"""The image transform every dataset shares, and the up-front size check.

The geometry follows DDRM's LSUN transform (resize the short side to the target, then centre
crop) so that results on the same files match the official code's inputs.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Sequence
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch import Tensor

from ddrm_exp.errors import ConfigError

Size = tuple[int, int]


def as_size(image_size: int | Sequence[int]) -> Size:
    """Normalise ``image_size`` (an int, or ``(H, W)`` from YAML as a list) to ``(H, W)``."""
    if isinstance(image_size, bool):
        raise ConfigError(f"image_size={image_size!r} is not a size; give an int or [H, W].")
    if isinstance(image_size, int | np.integer):
        size = (int(image_size), int(image_size))
    else:
        try:
            values = [int(v) for v in image_size]
        except (TypeError, ValueError):
            raise ConfigError(
                f"image_size={image_size!r} is not a size; give an int or [H, W]."
            ) from None
        if len(values) != 2:
            raise ConfigError(f"image_size={list(image_size)!r} must be an int or [H, W].")
        size = (values[0], values[1])
    if size[0] <= 0 or size[1] <= 0:
        raise ConfigError(f"image_size={image_size!r} must be positive.")
    return size


def cover_scale_box(width: int, height: int, size: Size) -> tuple[int, int]:
    """The (width, height) an image is resized to so that it just covers ``size``.

    For a square target this is exactly "resize the short side to the target" as
    ``torchvision.transforms.Resize(int)`` does (long side truncated like torchvision).
    """
    th, tw = size
    scale = max(th / height, tw / width)
    new_w = max(tw, int(width * scale))
    new_h = max(th, int(height * scale))
    # Keep the side that defines the scale exact, so a float round-off cannot lose a pixel.
    if th / height >= tw / width:
        new_h = th
    else:
        new_w = tw
    return new_w, new_h


def resize_center_crop(image: Image.Image, size: Size, resize: bool = True) -> Image.Image:
    """Resize so the image covers ``size`` (antialiased bilinear), then centre crop to it.

    With ``resize=False`` the image is only centre-cropped; callers have already checked
    that its size matches, so this is then the identity.
    """
    th, tw = size
    img = image
    if resize and (img.height, img.width) != (th, tw):
        new_w, new_h = cover_scale_box(img.width, img.height, size)
        # PIL's bilinear filter widens its support when downscaling, i.e. it antialiases.
        img = img.resize((new_w, new_h), Image.Resampling.BILINEAR)
    left = int(round((img.width - tw) / 2.0))
    top = int(round((img.height - th) / 2.0))
    if (left, top, img.width, img.height) != (0, 0, tw, th):
        img = img.crop((left, top, left + tw, top + th))
    return img


def to_rgb(image: Image.Image) -> Image.Image:
    """Convert any PIL mode to 8-bit RGB (16-bit greyscale is rescaled, not clipped)."""
    if image.mode == "RGB":
        return image
    if image.mode in ("I;16", "I;16B", "I;16L", "I"):
        arr = np.asarray(image, dtype=np.float64)
        peak = 65535.0 if arr.max() > 255 else 255.0
        arr8 = np.clip(np.round(arr / peak * 255.0), 0, 255).astype(np.uint8)
        return Image.fromarray(arr8, mode="L").convert("RGB")
    return image.convert("RGB")


def pil_to_tensor(image: Image.Image) -> Tensor:
    """8-bit RGB PIL image -> float32 tensor (3, H, W) in [-1, 1]."""
    arr = np.asarray(to_rgb(image), dtype=np.uint8)
    t = torch.from_numpy(arr.copy()).permute(2, 0, 1).to(torch.float32)
    return t / 127.5 - 1.0


def load_image(path: str | os.PathLike[str], size: Size, resize: bool = True) -> Tensor:
    """Read one image file and apply the shared transform; returns (3, H, W) in [-1, 1]."""
    with Image.open(path) as img:
        img.load()
        out = resize_center_crop(to_rgb(img), size, resize=resize)
    return pil_to_tensor(out)


def image_file_size(path: str | os.PathLike[str]) -> Size:
    """(H, W) of an image file, from its header only (no pixel decode)."""
    try:
        with Image.open(path) as img:
            return (img.height, img.width)
    except (OSError, ValueError) as exc:
        raise ConfigError(
            f"Cannot read image {os.fspath(path)!r} ({exc}); remove it or fix the file."
        ) from exc


def size_mismatch_error(what: str, found: Size, expected: Size) -> ConfigError:
    return ConfigError(
        f"Image {what} is {found[1]}x{found[0]} (WxH) but the model expects "
        f"{expected[1]}x{expected[0]} and dataset.resize=false. Set dataset.resize=true to "
        f"resize and centre-crop images to the model size, or supply images of that size."
    )


def check_file_sizes(paths: Iterable[str | os.PathLike[str]], size: Size) -> None:
    """Raise a :class:`ConfigError` naming the first file whose size is not ``size``.

    Done at construction, not in ``__getitem__``, so a long run does not fail halfway.
    """
    for path in paths:
        found = image_file_size(path)
        if found != size:
            raise size_mismatch_error(repr(os.fspath(Path(path))), found, size)
