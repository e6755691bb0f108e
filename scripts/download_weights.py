#!/usr/bin/env python
"""Download and verify the published weights of pretrained models ahead of time.

    python scripts/download_weights.py lsun_bedroom celeba_hq
    python scripts/download_weights.py --list
    python scripts/download_weights.py imagenet256_uncond --cache-dir /data/ddrm_cache

NAME is a config in conf/model/ with a ``weights:`` block. Files go to the same cache the
experiments read (``paths.cache_dir``: ``$DDRM_EXP_CACHE``, else ``~/.cache/ddrm_exp``), so a
later run finds them without touching the network. A file already in the cache is verified
instead of downloaded again (``--force`` downloads it anew and replaces it).

Exit status: 0 when every file is in place, 1 when one could not be fetched or verified, 2 for
an unknown NAME or bad arguments.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from collections.abc import Sequence
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # run from a checkout without `pip install -e .`
    sys.path.insert(0, str(ROOT))

from omegaconf import DictConfig, OmegaConf  # noqa: E402

from ddrm_exp.errors import ConfigError  # noqa: E402
from ddrm_exp.models.checkpoints import (  # noqa: E402
    WeightsSpec,
    cache_path,
    download_file,
    offline,
    resolve_checkpoint,
)

CONF_DIR = ROOT / "conf"
MODEL_DIR = CONF_DIR / "model"


def default_cache_dir() -> Path:
    """``paths.cache_dir`` as conf/paths/default.yaml resolves it in this environment."""
    paths = OmegaConf.load(CONF_DIR / "paths" / "default.yaml")
    assert isinstance(paths, DictConfig)
    return Path(str(paths.cache_dir)).expanduser()


def registry() -> dict[str, tuple[DictConfig, WeightsSpec]]:
    """Every model config that names published weights, by name."""
    entries: dict[str, tuple[DictConfig, WeightsSpec]] = {}
    for path in sorted(MODEL_DIR.glob("*.yaml")):
        cfg = OmegaConf.load(path)
        if not isinstance(cfg, DictConfig) or cfg.get("weights") is None:
            continue
        weights = OmegaConf.to_container(cfg.weights, resolve=False)
        assert isinstance(weights, dict)
        entries[path.stem] = (cfg, WeightsSpec.from_config(weights))
    return entries


def print_list(entries: dict[str, tuple[DictConfig, WeightsSpec]], cache_dir: Path) -> None:
    for name, (cfg, spec) in entries.items():
        dest = cache_path(cache_dir, spec)
        state = "cached" if dest.is_file() else "not downloaded"
        print(f"{name}  (arch {cfg.get('arch', '?')}, {cfg.get('image_size', '?')} px)")
        print(f"    file:     {spec.file}")
        print(f"    url:      {spec.url}")
        print(f"    checksum: {spec.describe_checksum()}")
        print(f"    cache:    {dest}  [{state}]")


def fetch(name: str, spec: WeightsSpec, cache_dir: Path, force: bool) -> Path:
    dest = cache_path(cache_dir, spec)
    if force and dest.is_file():
        if offline() or spec.url is None:
            why = "DDRM_EXP_OFFLINE is set" if offline() else "its config gives no URL"
            raise ConfigError(
                f"Cannot download the weights of model '{name}' again: {why}. The file at "
                f"{dest} was left as it was."
            )
        try:
            return download_file(spec.url, dest, md5=spec.md5, sha256=spec.sha256, size=spec.size)
        except ConfigError as exc:
            raise ConfigError(
                f"Could not download the weights of model '{name}' ({spec.file}) from "
                f"{spec.url}: {exc}. The file already at {dest} was left as it was."
            ) from exc
    return resolve_checkpoint(name, spec, None, cache_dir, download=True)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="download_weights.py",
        description="Download and verify the published weights of pretrained models "
        "(configs in conf/model/ with a weights: block) into the cache.",
    )
    parser.add_argument("names", nargs="*", metavar="NAME", help="model config name(s)")
    parser.add_argument("--list", action="store_true", help="list the registry and exit")
    parser.add_argument(
        "--cache-dir",
        type=Path,
        default=None,
        help="cache directory (default: paths.cache_dir, i.e. $DDRM_EXP_CACHE or "
        "~/.cache/ddrm_exp)",
    )
    parser.add_argument(
        "--force", action="store_true", help="download again even if the file is cached"
    )
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s: %(message)s")

    try:
        entries = registry()
        cache_dir = (
            args.cache_dir.expanduser() if args.cache_dir is not None else default_cache_dir()
        )
    except ConfigError as exc:
        print(f"download_weights: error: {exc}", file=sys.stderr)
        return 1

    if args.list:
        print_list(entries, cache_dir)
        return 0
    if not args.names:
        parser.print_usage(sys.stderr)
        print(
            "download_weights: error: name at least one model, or use --list. Models: "
            + ", ".join(entries),
            file=sys.stderr,
        )
        return 2

    names = [n.removesuffix(".yaml") for n in args.names]
    unknown = [n for n in names if n not in entries]
    if unknown:
        others = sorted(p.stem for p in MODEL_DIR.glob("*.yaml") if p.stem not in entries)
        note = f" ({', '.join(others)} have no weights to download)" if others else ""
        print(
            f"download_weights: error: unknown model {', '.join(map(repr, unknown))}. "
            f"Valid names: {', '.join(entries)}{note}.",
            file=sys.stderr,
        )
        return 2

    failed = 0
    for name in dict.fromkeys(names):
        _, spec = entries[name]
        try:
            path = fetch(name, spec, cache_dir, args.force)
        except ConfigError as exc:
            print(f"download_weights: error: {exc}", file=sys.stderr)
            failed += 1
            continue
        size = os.path.getsize(path)
        print(f"{name}: {path} ({size / 2**20:.1f} MiB)")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
