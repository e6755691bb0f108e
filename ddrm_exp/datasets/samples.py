"""The colour photos shipped inside the scikit-image wheel, as a zero-download dataset.

Splits (fixed, by photo name):

* ``heldout`` -- ``astronaut``, ``chelsea``, ``coffee``, ``rocket``. The documented evaluation
  set. Nothing in this project fits or trains a prior on these photos, so restoration results
  on them are honest held-out numbers.
* ``train`` -- ``hubble_deep_field``, ``ihc``, ``motorcycle_left``, ``motorcycle_right``,
  ``retina``. The photos the embedded Gaussian prior is fitted to (and any training script may
  use).
* ``all`` -- both, heldout first.
* ``train_gray`` -- the greyscale photos ``camera``, ``coins``, ``moon``, ``brick``, ``grass``,
  ``gravel``, read as RGB with three equal channels. Not part of ``all``: evaluation is on
  colour photos. A training script may add them so that the learned colour prior allows
  unsaturated images (the five colour training photos are strongly coloured).

Only files that are inside the wheel are used (``skimage.data`` functions for other images
download them, which must never happen at run time).
"""

from __future__ import annotations

import functools
import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import skimage.data
from PIL import Image

from ddrm_exp.datasets.base import ImageFileDataset, subset_range
from ddrm_exp.errors import ConfigError

SAMPLES_DIR = Path(os.path.dirname(skimage.data.__file__))

SAMPLE_FILES: dict[str, str] = {
    "astronaut": "astronaut.png",
    "chelsea": "chelsea.png",
    "coffee": "coffee.png",
    "rocket": "rocket.jpg",
    "hubble_deep_field": "hubble_deep_field.jpg",
    "ihc": "ihc.png",
    "motorcycle_left": "motorcycle_left.png",
    "motorcycle_right": "motorcycle_right.png",
    "retina": "retina.jpg",
    "camera": "camera.png",
    "coins": "coins.png",
    "moon": "moon.png",
    "brick": "brick.png",
    "grass": "grass.png",
    "gravel": "gravel.png",
}

SPLITS: dict[str, tuple[str, ...]] = {
    "heldout": ("astronaut", "chelsea", "coffee", "rocket"),
    "train": ("hubble_deep_field", "ihc", "motorcycle_left", "motorcycle_right", "retina"),
}
SPLITS["all"] = SPLITS["heldout"] + SPLITS["train"]
SPLITS["train_gray"] = ("camera", "coins", "moon", "brick", "grass", "gravel")


def split_names(split: str) -> tuple[str, ...]:
    """Photo names in ``split``, or a :class:`ConfigError` listing the valid splits."""
    if split not in SPLITS:
        raise ConfigError(
            f"Unknown sample split {split!r}; valid splits are {', '.join(sorted(SPLITS))} "
            f"(e.g. dataset.split=heldout)."
        )
    return SPLITS[split]


def sample_path(name: str) -> Path:
    path = SAMPLES_DIR / SAMPLE_FILES[name]
    if not path.is_file():
        raise ConfigError(
            f"The scikit-image sample photo {path} is missing; reinstall scikit-image "
            f"(pip install --force-reinstall scikit-image)."
        )
    return path


@functools.cache
def _read_photo(name: str) -> np.ndarray:
    with Image.open(sample_path(name)) as img:
        arr = np.asarray(img.convert("RGB"), dtype=np.uint8)
    arr = np.ascontiguousarray(arr)
    arr.setflags(write=False)  # shared by the cache: nobody may edit it in place
    return arr


def load_sample_photos(split: str = "train") -> list[tuple[str, np.ndarray]]:
    """``(name, H x W x 3 uint8 array)`` for each photo of ``split``, at full resolution.

    Decoded once per process; the arrays returned are read-only views of that cache (call
    ``.copy()`` to modify one).
    """
    return [(name, _read_photo(name)) for name in split_names(split)]


class SampleImages(ImageFileDataset):
    """The scikit-image sample photos of one split, resized and centre-cropped to the model.

    ``names`` are the photo names (``"astronaut"``...).
    """

    def __init__(
        self,
        image_size: int | Sequence[int],
        split: str = "heldout",
        limit: int | None = None,
        start: int = 0,
        resize: bool = True,
    ) -> None:
        names = split_names(split)
        chosen = [names[i] for i in subset_range(len(names), start, limit, f"split {split!r}")]
        self.split = split
        super().__init__([sample_path(n) for n in chosen], chosen, image_size, resize=resize)
