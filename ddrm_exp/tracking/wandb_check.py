"""wandb's needs, checked before the model is built: a writable directory, and for online mode
an API key and a reachable server.

Without these checks ``logger.mode=online`` with no network hangs in ``wandb.init`` for about
a minute and a half and ends in a traceback, and a missing key or an unwritable directory is
found only after the model is built. ``logger.fallback=offline`` turns an online problem into a
warning and an offline run (``wandb sync`` uploads it later).

The key is looked up where wandb itself looks (``WANDB_API_KEY``, then the netrc file), with
the standard library, so the check does not depend on wandb's internals.
"""

from __future__ import annotations

import logging
import netrc
import os
import socket
import tempfile
import threading
from pathlib import Path
from urllib.parse import urlparse

from omegaconf import DictConfig

from ddrm_exp.errors import ConfigError

log = logging.getLogger(__name__)

DEFAULT_BASE_URL = "https://api.wandb.ai"
FALLBACKS = ("none", "offline")
# Long enough for a slow link, short enough that a machine without network learns it at once.
CONNECT_TIMEOUT_S = 5.0


def base_url() -> str:
    return os.environ.get("WANDB_BASE_URL") or DEFAULT_BASE_URL


def api_key_source(host: str) -> str | None:
    """Where an API key for ``host`` is found, or None."""
    if os.environ.get("WANDB_API_KEY"):
        return "WANDB_API_KEY"
    path = Path(os.environ.get("NETRC") or Path.home() / ".netrc")
    try:
        entry = netrc.netrc(str(path)).authenticators(host)
    except (OSError, netrc.NetrcParseError):
        return None
    return str(path) if entry and entry[2] else None


def unreachable(url: str, timeout: float = CONNECT_TIMEOUT_S) -> str | None:
    """Why the server at ``url`` cannot be reached (a TCP connect, no request), or None.

    The name lookup is bounded too: it runs in a daemon thread, since ``getaddrinfo`` ignores
    socket timeouts and can wait far longer on a machine whose resolver is unreachable.
    """
    parsed = urlparse(url)
    host = parsed.hostname or ""
    port = parsed.port or (80 if parsed.scheme == "http" else 443)
    outcome: list[str | None] = []

    def connect() -> None:
        try:
            with socket.create_connection((host, port), timeout=timeout):
                outcome.append(None)
        except OSError as exc:
            outcome.append(f"{host}:{port}: {exc.strerror or exc or type(exc).__name__}")

    worker = threading.Thread(target=connect, daemon=True)
    worker.start()
    worker.join(timeout)
    return outcome[0] if outcome else f"{host}:{port}: no answer"


def unwritable(directory: Path) -> str | None:
    """Why wandb could not write ``directory``, or None."""
    try:
        directory.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=directory):
            pass
    except OSError as exc:
        return f"{exc.strerror or exc} ({exc.filename or directory})"
    return None


def online_problem() -> str | None:
    """What stops an online wandb run here, or None."""
    url = base_url()
    host = urlparse(url).hostname or url
    if api_key_source(host) is None:
        return (
            f"no wandb API key for {host} (neither WANDB_API_KEY nor an entry in "
            f"{os.environ.get('NETRC') or '~/.netrc'}); run `wandb login` or set WANDB_API_KEY"
        )
    reason = unreachable(url)
    if reason is not None:
        return f"the wandb server cannot be reached within {CONNECT_TIMEOUT_S:g} s ({reason})"
    return None


def preflight(logger: DictConfig, output_dir: Path, can_write: bool = True) -> None:
    """Check ``logger=wandb`` before the model; may switch ``logger.mode`` to offline.

    ``can_write``: False when the run directory is read-only, where the run stops anyway with
    its own message (and a complete job has been skipped before this).
    """
    if logger.get("name") != "wandb":
        return
    mode = logger.get("mode", "offline")
    fallback = logger.get("fallback") or "none"
    if fallback not in FALLBACKS:
        raise ConfigError(
            f"logger.fallback must be one of {', '.join(FALLBACKS)}, got {fallback!r}."
        )
    if mode == "online":
        problem = online_problem()
        if problem is not None:
            if fallback != "offline":
                raise ConfigError(
                    f"logger.mode=online, but {problem}. Nothing was computed. Use "
                    "logger.mode=offline (upload later with `wandb sync`), or add "
                    "logger.fallback=offline to fall back to it on its own, or logger=none."
                )
            log.warning(
                "logger.mode=online, but %s: logging offline instead (logger.fallback=offline); "
                "upload later with `wandb sync %s/wandb/offline-run-*`",
                problem,
                output_dir,
            )
            logger.mode = "offline"
            mode = "offline"
    if mode != "disabled" and can_write:
        reason = unwritable(output_dir / "wandb")
        if reason is not None:
            raise ConfigError(
                f"wandb cannot write its files under {output_dir / 'wandb'}: {reason}. Nothing "
                "was computed. Make that path a writable directory, or use logger=none."
            )
