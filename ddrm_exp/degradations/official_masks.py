"""The official DDRM ``inp_lorem`` mask: downloaded once, cached, checked against a pinned sha256.

The official repository (github.com/bahjat-kawar/ddrm, MIT licence) ships
``inp_masks/lorem3.npy``, a 256x256 uint8 array, 0 = missing (14.0 % of the pixels), which its
``--deg inp_lorem`` reads. It is fetched from the raw URL at a pinned commit with the same
machinery as the checkpoints (:func:`ddrm_exp.models.checkpoints.download_file`: a temporary
file, verified, then renamed into place) and kept under ``<paths.cache_dir>/ddrm_official/``.
The file itself is never part of this repository.
"""

from __future__ import annotations

import logging
import os
import shlex
from pathlib import Path

from ddrm_exp.errors import ConfigError
from ddrm_exp.models.checkpoints import (
    DownloadError,
    check_cache_slot,
    download_file,
    download_refusal,
    verify_file,
)

log = logging.getLogger(__name__)

__all__ = [
    "LOREM_COMMIT",
    "LOREM_FILE",
    "LOREM_SHA256",
    "LOREM_SIZE",
    "LOREM_URL",
    "official_lorem_path",
]

LOREM_COMMIT = "32b6b3ccfda532ba01c9cc5b6e7456c3a06a6ca2"
"""The official repository's commit the URL is pinned to (the file is unchanged since 159fb84)."""
LOREM_URL = (
    f"https://raw.githubusercontent.com/bahjat-kawar/ddrm/{LOREM_COMMIT}/inp_masks/lorem3.npy"
)
LOREM_SHA256 = "3146225645ef2031f4b6a982d6b0a33da79edaff092009b8624d4e3a5b40c355"
LOREM_SIZE = 65664  # bytes
LOREM_FILE = "ddrm_official/inp_masks/lorem3.npy"
"""Where the file lives inside ``paths.cache_dir``."""


def _cache_dest(cache_dir: str | os.PathLike[str] | None) -> Path:
    if cache_dir is None or not str(cache_dir).strip():
        raise ConfigError(
            "degradation.source=official needs a cache directory for the official lorem mask, "
            "but degradation.cache_dir is empty. Leave it at ${paths.cache_dir} (set by "
            "DDRM_EXP_CACHE) or give a writable directory."
        )
    return Path(os.path.abspath(Path(cache_dir).expanduser())) / Path(*LOREM_FILE.split("/"))


def _by_hand(dest: Path) -> str:
    return (
        f"Download {LOREM_URL} (sha256 {LOREM_SHA256}, {LOREM_SIZE} bytes) on a machine with "
        f"internet access and put it at {dest} (e.g. `curl -L --create-dirs -o "
        f"{shlex.quote(str(dest))} {LOREM_URL}`; the cache directory is paths.cache_dir, set by "
        "DDRM_EXP_CACHE), or point degradation.mask_path=/path/to/lorem3.npy at a copy, or run "
        "with the rendered stand-in mask (degradation.source=rendered, or lorem_source=rendered "
        "for experiment=table1)."
    )


def check_official_lorem(path: Path, what: str) -> Path:
    """``path`` if it is the official ``lorem3.npy`` byte for byte, else a ConfigError."""
    problems = verify_file(path, sha256=LOREM_SHA256, size=LOREM_SIZE)
    if problems:
        raise ConfigError(
            f"{what} {path} is not the official lorem3.npy ({'; '.join(problems)}): it is "
            f"corrupt, incomplete or another mask. Delete it (rm {shlex.quote(str(path))}) and "
            f"run again to download it anew from {LOREM_URL}, or use degradation.mask_path for "
            "a mask of your own with degradation.source=rendered."
        )
    return path


def official_lorem_path(cache_dir: str | os.PathLike[str] | None, download: bool = True) -> Path:
    """The verified local copy of the official ``lorem3.npy``, downloading it if needed.

    The cached file is checked against the pinned size and sha256 every time. Without it, a
    download is tried unless ``download`` is false or ``DDRM_EXP_OFFLINE`` is set; every failure
    is a one-paragraph :class:`ConfigError` that gives the URL and where to put the file.
    """
    dest = _cache_dest(cache_dir)
    if dest.is_file():
        return check_official_lorem(dest, "The cached official lorem mask")
    check_cache_slot(dest, "of the official lorem mask")
    why = download_refusal(download)
    if why is not None:
        raise ConfigError(
            f"degradation.source=official needs the official DDRM lorem mask (lorem3.npy), which "
            f"is not in the cache and {why}, so it was not downloaded. {_by_hand(dest)}"
        )
    log.info("Downloading the official lorem mask from %s to %s.", LOREM_URL, dest)
    try:
        return download_file(LOREM_URL, dest, sha256=LOREM_SHA256, size=LOREM_SIZE, timeout=30)
    except DownloadError as exc:
        raise ConfigError(
            f"degradation.source=official needs the official DDRM lorem mask (lorem3.npy), but "
            f"it could not be downloaded from {LOREM_URL}: {exc}. Nothing was saved. "
            f"{_by_hand(dest)}"
        ) from exc
