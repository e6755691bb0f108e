"""Published weights: where they live in the cache, how they are downloaded, how they are read.

A pretrained model config names its published file in a ``weights:`` block (see
``conf/model/lsun_bedroom.yaml``)::

    weights:
      file: ema_diffusion_lsun_bedroom_model/model-2388000.ckpt   # path inside the cache
      url: https://...                                            # where it is published
      md5: 1921fa46b66a3665e450e42f36c2720f                       # null where none is published
      sha256: null
      size: null                                                  # bytes, where known

:func:`resolve_checkpoint` turns that block into a local file: an explicit
``model.checkpoint=/path`` wins; otherwise the file in ``paths.cache_dir`` is used (and checked
against the size and checksums given); otherwise it is downloaded, unless downloads are turned off
(``model.download=false`` or the environment variable ``DDRM_EXP_OFFLINE=1``). A download goes to
a temporary ``<file>.part-<random>`` beside its destination, is verified, and only then renamed
into place, so the cache never holds a partial or unverified file under the final name.

:func:`load_state_dict` reads ``.safetensors`` files, and anything else with
``torch.load(..., weights_only=True)``: a pickle that would construct arbitrary objects (and so
could run code) is refused.
"""

from __future__ import annotations

import hashlib
import logging
import os
import pickle
import re
import secrets
import shlex
import sys
import urllib.error
import urllib.request
import zipfile
from collections.abc import Mapping
from dataclasses import dataclass
from http.client import HTTPException
from pathlib import Path, PurePosixPath
from typing import Any

import torch

from ddrm_exp.errors import ConfigError

log = logging.getLogger(__name__)

__all__ = [
    "OFFLINE_ENV",
    "DownloadError",
    "WeightsSpec",
    "cache_path",
    "download_file",
    "file_digests",
    "load_state_dict",
    "resolve_checkpoint",
    "verify_file",
]

#: Setting this environment variable to 1 (or true/yes/on) forbids every download.
OFFLINE_ENV = "DDRM_EXP_OFFLINE"
#: How the download script is invoked, as quoted in error messages.
DOWNLOAD_SCRIPT = "python scripts/download_weights.py"

_CHUNK = 1 << 20  # 1 MiB
_HEX_DIGITS = {"md5": 32, "sha256": 64}
_HEX = {a: re.compile(f"[0-9a-f]{{{n}}}") for a, n in _HEX_DIGITS.items()}
# containers that wrap a state dict, in order of preference when several are present
_WRAPPER_KEYS = ("ema", "state_dict", "model", "model_state_dict", "module", "net")
_USER_AGENT = "ddrm_exp-weights/0.1 (+python urllib)"


class DownloadError(ConfigError):
    """A download failed; the message says why. Nothing was left at the destination."""


# --------------------------------------------------------------------------------------------
# the registry entry


@dataclass(frozen=True)
class WeightsSpec:
    """One published weights file: its path inside the cache, its URL and what it must match."""

    file: str
    url: str | None
    md5: str | None = None
    sha256: str | None = None
    size: int | None = None

    def __post_init__(self) -> None:
        if not isinstance(self.file, str) or not self.file.strip():
            raise ConfigError(
                f"weights.file must be a non-empty relative path inside the cache, got "
                f"{self.file!r}. Set it to the published file name, e.g. "
                "'ema_diffusion_lsun_bedroom_model/model-2388000.ckpt'."
            )
        parts = PurePosixPath(self.file.replace("\\", "/")).parts
        if self.file.startswith(("/", "\\", "~")) or ".." in parts or ":" in self.file:
            raise ConfigError(
                f"weights.file must be a relative path inside the cache directory without '..', "
                f"got {self.file!r}. To use a file elsewhere, set model.checkpoint=/path/to/file "
                "instead."
            )
        if self.url is not None and (
            not isinstance(self.url, str) or not self.url.startswith(("http://", "https://"))
        ):
            raise ConfigError(
                f"weights.url must be an http:// or https:// URL or null, got {self.url!r}."
            )
        for algo in ("md5", "sha256"):
            value = getattr(self, algo)
            if value is None:
                continue
            if not isinstance(value, str) or not _HEX[algo].fullmatch(value.lower()):
                raise ConfigError(
                    f"weights.{algo} of {self.file!r} must be a {_HEX_DIGITS[algo]}-digit "
                    f"hexadecimal string (quote it in YAML) or null, got {value!r}."
                )
            object.__setattr__(self, algo, value.lower())
        if self.size is not None and (
            isinstance(self.size, bool) or not isinstance(self.size, int) or self.size <= 0
        ):
            raise ConfigError(
                f"weights.size of {self.file!r} must be a positive number of bytes or null, "
                f"got {self.size!r}."
            )

    @classmethod
    def from_config(cls, mapping: Mapping[str, Any] | WeightsSpec) -> WeightsSpec:
        """Build from a ``weights:`` block (a dict or an OmegaConf ``DictConfig``)."""
        if isinstance(mapping, WeightsSpec):
            return mapping
        if not isinstance(mapping, Mapping):
            raise ConfigError(
                f"model.weights must be a mapping with file/url/md5/sha256/size, got "
                f"{type(mapping).__name__}."
            )
        known = {"file", "url", "md5", "sha256", "size"}
        unknown = sorted(str(k) for k in mapping if k not in known)
        if unknown:
            raise ConfigError(
                f"model.weights has unknown key(s) {', '.join(unknown)}; the known keys are "
                f"{', '.join(sorted(known))}."
            )
        if "file" not in mapping:
            raise ConfigError("model.weights needs a 'file' entry (the file's path in the cache).")
        size = mapping.get("size")
        return cls(
            file=mapping["file"],
            url=mapping.get("url"),
            md5=mapping.get("md5"),
            sha256=mapping.get("sha256"),
            size=size,
        )

    @property
    def checksums(self) -> dict[str, str]:
        """The published digests, ``{"md5": ..., "sha256": ...}`` for those that are known."""
        return {a: v for a in ("md5", "sha256") if (v := getattr(self, a)) is not None}

    def describe_checksum(self) -> str:
        """``md5 <hex>`` / ``sha256 <hex>`` / ``no published checksum``."""
        sums = self.checksums
        if not sums:
            return "no published checksum"
        return ", ".join(f"{a} {v}" for a, v in sums.items())


def _as_spec(weights: WeightsSpec | Mapping[str, Any]) -> WeightsSpec:
    return WeightsSpec.from_config(weights)


def cache_path(cache_dir: str | os.PathLike[str], weights: WeightsSpec | Mapping[str, Any]) -> Path:
    """Where ``weights`` lives in ``cache_dir``: ``<cache_dir>/<weights.file>``."""
    spec = _as_spec(weights)
    return Path(os.path.abspath(Path(cache_dir).expanduser())) / Path(*spec.file.split("/"))


def offline() -> bool:
    """Whether ``DDRM_EXP_OFFLINE`` forbids downloads."""
    return os.environ.get(OFFLINE_ENV, "").strip().lower() in {"1", "true", "yes", "on"}


def download_refusal(download: bool, switch: str = "") -> str | None:
    """Why a file missing from the cache may not be downloaded (``DDRM_EXP_OFFLINE``, or
    ``download`` false: ``switch`` names the setting), or None where it may."""
    if offline():
        return f"{OFFLINE_ENV}={os.environ.get(OFFLINE_ENV)} is set"
    if not download:
        return f"downloading is turned off{switch}"
    return None


def check_cache_slot(dest: Path, what: str) -> None:
    """A ConfigError if the cache path ``dest`` (of ``what``) is taken by something not a
    file, which a download would neither use nor replace."""
    if dest.exists() and not dest.is_file():
        raise ConfigError(
            f"The cache path {dest} {what} exists but is not a file. Remove it and run again."
        )


# --------------------------------------------------------------------------------------------
# verification


def file_digests(path: Path, algos: tuple[str, ...] = ("md5", "sha256")) -> dict[str, str]:
    """Hex digests of a file, read in chunks."""
    hashers = {a: hashlib.new(a) for a in algos}
    with open(path, "rb") as fh:
        while chunk := fh.read(_CHUNK):
            for h in hashers.values():
                h.update(chunk)
    return {a: h.hexdigest() for a, h in hashers.items()}


def _mismatches(
    actual_size: int, digests: dict[str, str], size: int | None, sums: dict[str, str]
) -> list[str]:
    problems = []
    if size is not None and actual_size != size:
        problems.append(f"size is {actual_size} bytes, expected {size}")
    for algo, expected in sums.items():
        if digests.get(algo) != expected:
            problems.append(f"{algo} is {digests.get(algo)}, expected {expected}")
    return problems


def verify_file(
    path: Path, *, md5: str | None = None, sha256: str | None = None, size: int | None = None
) -> list[str]:
    """Check a file against what is known of it; return the mismatches (empty: it matches)."""
    sums = {a: v.lower() for a, v in (("md5", md5), ("sha256", sha256)) if v}
    actual_size = path.stat().st_size
    if size is not None and actual_size != size:
        return [f"size is {actual_size} bytes, expected {size}"]
    digests = file_digests(path, tuple(sums)) if sums else {}
    return _mismatches(actual_size, digests, size, sums)


# --------------------------------------------------------------------------------------------
# download


def _progress(total: int | None, desc: str) -> Any:
    from tqdm.auto import tqdm

    return tqdm(
        total=total,
        unit="B",
        unit_scale=True,
        unit_divisor=1024,
        desc=desc,
        file=sys.stderr,
        mininterval=1.0,
        leave=True,
    )


def _looks_like_html(head: bytes) -> bool:
    start = head[:512].lstrip().lower()
    return start.startswith((b"<!doctype html", b"<html", b"<?xml", b"<head"))


def download_file(
    url: str,
    dest: Path,
    *,
    md5: str | None = None,
    sha256: str | None = None,
    size: int | None = None,
    timeout: float = 60,
) -> Path:
    """Download ``url`` to ``dest`` atomically and verify it; return ``dest``.

    The body is streamed into ``<dest>.part-<random>`` in ``dest``'s directory, checked against
    the server's Content-Length and the given ``size``/``md5``/``sha256``, and then moved to
    ``dest`` with :func:`os.replace`. On any failure the temporary file is removed, ``dest`` is
    left as it was, and a :class:`DownloadError` says what went wrong. ``timeout`` (seconds)
    applies to connecting and to each read.
    """
    dest = Path(dest)
    sums = {a: v.lower() for a, v in (("md5", md5), ("sha256", sha256)) if v}
    # the topmost directory this call creates, removed again (if still empty) after a failure
    created = next((p for p in reversed(dest.parents) if not p.exists()), None)
    try:
        dest.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise DownloadError(
            f"cannot create the directory {dest.parent} ({exc.strerror or exc}); choose a "
            "writable cache with DDRM_EXP_CACHE=/path or paths.cache_dir=/path"
        ) from exc
    tmp = dest.with_name(f"{dest.name}.part-{secrets.token_hex(6)}")
    transfer = _Transfer({a: hashlib.new(a) for a in ("md5", "sha256")})
    try:
        _fetch(url, tmp, dest.name, size=size, sums=sums, timeout=timeout, transfer=transfer)
        os.replace(tmp, dest)
    except BaseException as exc:  # KeyboardInterrupt included: never leave the temporary file
        _remove(tmp, created)
        known = _download_error(exc, tmp, timeout, transfer.received)
        if known is None:
            raise
        raise known from exc
    digests = {a: h.hexdigest() for a, h in transfer.hashers.items()}
    if not sums:
        log.warning(
            "Downloaded %s from %s, but no checksum is published for it, so it could not be "
            "verified (md5 %s, sha256 %s).",
            dest,
            url,
            digests["md5"],
            digests["sha256"],
        )
    else:
        log.info("Downloaded and verified %s (%d bytes).", dest, transfer.received)
    return dest


@dataclass
class _Transfer:
    """What a download has received so far (the error messages say how much)."""

    hashers: dict[str, Any]
    received: int = 0


def _fetch(
    url: str,
    tmp: Path,
    name: str,
    *,
    size: int | None,
    sums: dict[str, str],
    timeout: float,
    transfer: _Transfer,
) -> None:
    """Stream ``url`` into ``tmp`` (fsynced) and check it; raise DownloadError on a mismatch."""
    request = urllib.request.Request(url, headers={"User-Agent": _USER_AGENT})
    with urllib.request.urlopen(request, timeout=timeout) as response:  # noqa: S310
        status = getattr(response, "status", 200)
        if status != 200:
            raise DownloadError(f"the server answered HTTP {status} {response.reason}")
        length_header = response.headers.get("Content-Length")
        expected_len = int(length_header) if length_header and length_header.isdigit() else None
        if size is not None and expected_len is not None and expected_len != size:
            raise DownloadError(
                f"the server offers {expected_len} bytes but the file should be {size} bytes"
            )
        with open(tmp, "xb") as out, _progress(expected_len or size, name) as bar:
            first = True
            while chunk := response.read(_CHUNK):
                if first and _looks_like_html(chunk):
                    raise DownloadError(
                        "the server returned a web page (HTML) instead of the file; the link "
                        "may have expired or need a login"
                    )
                first = False
                out.write(chunk)
                for h in transfer.hashers.values():
                    h.update(chunk)
                transfer.received += len(chunk)
                bar.update(len(chunk))
            out.flush()
            os.fsync(out.fileno())
    received = transfer.received
    if expected_len is not None and received != expected_len:
        raise DownloadError(f"the transfer was cut off after {received} of {expected_len} bytes")
    if received == 0:
        raise DownloadError("the server sent an empty file")
    digests = {a: h.hexdigest() for a, h in transfer.hashers.items()}
    problems = _mismatches(received, digests, size, sums)
    if problems:
        raise DownloadError(
            "the downloaded file does not match the published one (" + "; ".join(problems) + ")"
        )


def _download_error(
    exc: BaseException, tmp: Path, timeout: float, received: int
) -> DownloadError | None:
    """The user's message for a failed transfer; None: raise ``exc`` as it is."""
    if isinstance(exc, DownloadError):
        return None
    if isinstance(exc, urllib.error.HTTPError):
        return DownloadError(f"the server answered HTTP {exc.code} {exc.reason}")
    if isinstance(exc, urllib.error.URLError):
        if isinstance(exc.reason, TimeoutError):
            return DownloadError(f"the connection timed out after {timeout:g} s")
        return DownloadError(f"the server could not be reached ({exc.reason}; no network access?)")
    if isinstance(exc, TimeoutError):
        return DownloadError(
            f"the connection timed out after {timeout:g} s with {received} bytes received"
        )
    if isinstance(exc, HTTPException | ConnectionError):
        return DownloadError(
            f"the connection failed after {received} bytes ({type(exc).__name__}: {exc})"
        )
    if isinstance(exc, OSError):
        return DownloadError(
            f"writing {tmp} failed ({exc.strerror or exc}); is the disk full or the cache "
            "read-only?"
        )
    return None


def _remove(path: Path, created: Path | None = None) -> None:
    """Delete the temporary file, and the directories made for it if they are empty."""
    try:
        path.unlink(missing_ok=True)
    except OSError:  # pragma: no cover - best effort
        log.warning("Could not remove the temporary file %s.", path)
    if created is None:
        return
    directory = path.parent
    while True:
        try:
            directory.rmdir()
        except OSError:  # not empty (another download), or already gone
            return
        if directory == created or created not in directory.parents:
            return
        directory = directory.parent


# --------------------------------------------------------------------------------------------
# resolve


def _manual_instructions(name: str, spec: WeightsSpec, dest: Path) -> str:
    where = f"from {spec.url} " if spec.url else ""
    return (
        f"Download it {where}by hand and put it at {dest} ({spec.describe_checksum()}), or run "
        f"`{DOWNLOAD_SCRIPT} {shlex.quote(name)}` ahead of time on a machine with internet "
        "access (the cache directory is paths.cache_dir, set by DDRM_EXP_CACHE), or point "
        "model.checkpoint=/path/to/file at a copy you already have."
    )


def resolve_checkpoint(
    name: str,
    weights: WeightsSpec | Mapping[str, Any] | None,
    checkpoint: str | os.PathLike[str] | None,
    cache_dir: str | os.PathLike[str],
    download: bool = True,
) -> Path:
    """The local weights file of model ``name``, downloading it into the cache if needed.

    Order: an explicit ``checkpoint`` (must exist; not checked against the registry, since it may
    be a converted or fine-tuned file); else ``<cache_dir>/<weights.file>`` if present (checked
    against the known size and checksums); else a download from ``weights.url`` when ``download``
    is true and ``DDRM_EXP_OFFLINE`` is not set. Every failure is a :class:`ConfigError` that says
    where the file should be put by hand.
    """
    if checkpoint is not None and str(checkpoint).strip():
        return _given_checkpoint(name, checkpoint)
    if weights is None:
        raise ConfigError(
            f"Model '{name}' has no published weights in its config (no model.weights block) and "
            "no model.checkpoint was given. Set model.checkpoint=/path/to/weights."
        )
    spec = _as_spec(weights)
    dest = cache_path(cache_dir, spec)
    if dest.is_file():
        return _cached_weights(name, spec, dest)
    return _download_weights(name, spec, dest, download)


def _given_checkpoint(name: str, checkpoint: str | os.PathLike[str]) -> Path:
    """``model.checkpoint``: it must exist; it is not checked against the registry."""
    path = Path(os.path.abspath(Path(checkpoint).expanduser()))
    if not path.is_file():
        what = "is a directory, not a file" if path.is_dir() else "does not exist"
        raise ConfigError(
            f"model.checkpoint={checkpoint} for model '{name}' {what} (looked at {path}). "
            "Fix the path, or drop model.checkpoint to use the published weights from the "
            "cache."
        )
    log.info("Model '%s': using the weights file %s (model.checkpoint).", name, path)
    return path


def _cached_weights(name: str, spec: WeightsSpec, dest: Path) -> Path:
    """The cached file ``dest``, checked against the published size and checksums."""
    problems = verify_file(dest, md5=spec.md5, sha256=spec.sha256, size=spec.size)
    if problems:
        raise ConfigError(
            f"The cached weights file {dest} of model '{name}' does not match the published "
            f"file {spec.file} ({'; '.join(problems)}): it is corrupt or incomplete. Delete "
            f"it (rm {shlex.quote(str(dest))}) and run again to download it anew"
            + (f" from {spec.url}" if spec.url else "")
            + f", or run `{DOWNLOAD_SCRIPT} {shlex.quote(name)} --force`."
        )
    if not spec.checksums and spec.size is None:
        log.debug("Model '%s': %s has no published checksum; not verified.", name, dest)
    log.info("Model '%s': using the cached weights %s.", name, dest)
    return dest


def _download_weights(name: str, spec: WeightsSpec, dest: Path, download: bool) -> Path:
    """Download the published file into ``dest``, where allowed and a URL is known."""
    check_cache_slot(dest, f"for the weights of model '{name}'")
    why = download_refusal(download, " (model.download=false)")
    if why is not None:
        raise ConfigError(
            f"The weights of model '{name}' ({spec.file}) are not in the cache and {why}, so "
            f"they were not downloaded. {_manual_instructions(name, spec, dest)}"
        )
    if spec.url is None:
        raise ConfigError(
            f"The weights of model '{name}' ({spec.file}) are not in the cache and the config "
            f"gives no URL to download them from. Put the file at {dest}, or set "
            "model.checkpoint=/path/to/file."
        )

    log.info("Model '%s': downloading %s from %s to %s.", name, spec.file, spec.url, dest)
    try:
        return download_file(spec.url, dest, md5=spec.md5, sha256=spec.sha256, size=spec.size)
    except DownloadError as exc:
        raise ConfigError(
            f"Could not download the weights of model '{name}' ({spec.file}) from {spec.url}: "
            f"{exc}. Nothing was saved. {_manual_instructions(name, spec, dest)}"
        ) from exc


# --------------------------------------------------------------------------------------------
# load


def _unwrap(obj: Any, path: Path) -> Any:
    """Peel containers off a loaded checkpoint until a flat mapping remains."""
    for _ in range(4):
        if isinstance(obj, (list, tuple)):
            if not obj:
                break
            log.info("%s holds a %s; using its first element.", path, type(obj).__name__)
            obj = obj[0]
            continue
        if isinstance(obj, Mapping) and not all(isinstance(v, torch.Tensor) for v in obj.values()):
            present = [k for k in _WRAPPER_KEYS if isinstance(obj.get(k), (Mapping, list, tuple))]
            if not present:
                break
            if len(present) > 1:
                log.info("%s holds %s; using '%s'.", path, ", ".join(present), present[0])
            obj = obj[present[0]]
            continue
        break
    return obj


def _torch_detail(message: str) -> str:
    """The informative line of a ``torch.load`` error (its messages are pages long)."""
    match = re.search(r"(Trying to load unsupported[^\n]*|Unsupported global[^\n]*)", message)
    if match:
        return match.group(1).strip()
    match = re.search(r"WeightsUnpickler error:\s*([^\n]+)", message)
    if match:
        return match.group(1).strip()
    first = next((ln.strip() for ln in message.splitlines() if ln.strip()), "")
    return first.split(". ")[0].rstrip(".") or "no details"


def load_state_dict(path: Path) -> dict[str, torch.Tensor]:
    """Read a weights file into a flat ``{name: tensor}`` dict on the CPU.

    ``.safetensors`` files are read with safetensors; anything else with
    ``torch.load(weights_only=True)``, which refuses pickles that would build arbitrary objects.
    Containers are unwrapped (a dict whose ``ema``/``state_dict``/``model`` entry holds the
    weights; a list or tuple whose first element does) and a DataParallel ``module.`` prefix is
    stripped.
    """
    path = Path(path)
    _check_weights_file(path)
    obj = _read_safetensors(path) if path.suffix == ".safetensors" else _read_torch(path)
    return _flat_state_dict(_unwrap(obj, path), path)


def _check_weights_file(path: Path) -> None:
    """A file that cannot be weights (missing, empty, a saved web page) is refused first."""
    if not path.is_file():
        raise ConfigError(f"The weights file {path} does not exist.")
    with open(path, "rb") as fh:
        head = fh.read(512)
    if not head:
        raise ConfigError(f"The weights file {path} is empty. Delete it and download it again.")
    if _looks_like_html(head):
        raise ConfigError(
            f"The weights file {path} is a web page (HTML), not a weights file: a download "
            "probably saved an error or login page. Delete it and download the file again."
        )


def _read_safetensors(path: Path) -> Any:
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    try:
        return load_file(str(path), device="cpu")
    except (SafetensorError, OSError, ValueError) as exc:
        raise ConfigError(
            f"The safetensors file {path} could not be read ({exc}): it is corrupt or "
            "incomplete. Delete it and download it again."
        ) from exc


def _read_torch(path: Path) -> Any:
    """``torch.load(weights_only=True)``, its failures said in one paragraph."""
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except (pickle.UnpicklingError, RuntimeError) as exc:
        raise _torch_load_error(path, str(exc)) from exc
    # Random bytes reach the legacy unpickler, which fails in its own ways (IndexError: pop
    # from empty list, KeyError on an unknown opcode).
    except (EOFError, zipfile.BadZipFile, ValueError, OSError, IndexError, KeyError) as exc:
        raise ConfigError(
            f"The weights file {path} could not be read: it is corrupt or incomplete "
            f"({type(exc).__name__}: {exc}). Delete it and download it again."
        ) from exc


def _torch_load_error(path: Path, message: str) -> ConfigError:
    detail = _torch_detail(message)
    if "Weights only load failed" not in message:
        return ConfigError(
            f"The weights file {path} could not be read: it is corrupt, incomplete, or not a "
            f"PyTorch checkpoint ({detail}). Delete it and download it again."
        )
    maybe_corrupt = "GLOBAL" not in detail and "global" not in detail
    return ConfigError(
        f"The file {path} is not a plain weights file, so it was refused for safety: "
        f"torch.load(weights_only=True) rejected it ({detail}). "
        + (
            "Either it is a pickle that builds arbitrary Python objects (which "
            "could run code), or it is corrupt or not a PyTorch checkpoint. "
            if maybe_corrupt
            else "It is a pickle that builds arbitrary Python objects, which could "
            "run code when loaded. "
        )
        + "Use a file that holds only tensors (a state dict saved with "
        "torch.save(model.state_dict(), ...) or a .safetensors file), or delete it "
        "and download it again."
    )


def _flat_state_dict(state: Any, path: Path) -> dict[str, torch.Tensor]:
    """The unwrapped checkpoint as ``{name: tensor}``, without a DataParallel ``module.``."""
    if not isinstance(state, Mapping) or not state:
        raise ConfigError(
            f"The file {path} does not hold a state dict (found {_describe(state)}). Use a file "
            "saved with torch.save(model.state_dict(), ...) or a .safetensors file."
        )
    bad = [k for k, v in state.items() if not isinstance(k, str) or not isinstance(v, torch.Tensor)]
    if bad:
        shown = ", ".join(f"{k!r}: {_describe(state[k])}" for k in bad[:3])
        raise ConfigError(
            f"The file {path} does not hold a plain state dict: {len(bad)} of its {len(state)} "
            f"entries are not tensors ({shown}{', ...' if len(bad) > 3 else ''}). Use a file saved "
            "with torch.save(model.state_dict(), ...) or a .safetensors file."
        )
    result: dict[str, torch.Tensor] = dict(state)
    prefix = "module."
    if all(k.startswith(prefix) for k in result):
        result = {k[len(prefix) :]: v for k, v in result.items()}
    return result


def _describe(obj: Any) -> str:
    if isinstance(obj, Mapping):
        keys = list(obj)[:5]
        return f"a mapping with keys {keys}{' ...' if len(obj) > 5 else ''}"
    return f"a {type(obj).__name__}"
