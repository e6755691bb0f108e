"""Command-line overrides checked before Hydra sees them, so a typo gets the project's message.

Hydra reports a misspelt key or an unknown group option with a multi-line error and exit status
1, and in a multirun only when the job that uses it starts. Here every override (every value of
a sweep) is checked against ``conf/`` up front; a problem is reported like the project's own
validation, as one paragraph naming the close matches, with exit status 2. The output directory
Hydra creates first is checked here too (:func:`check_output_dir`).
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

from ddrm_exp.paths import CONF_DIR

# Hydra flags after which the next argument is their value, not an override.
_VALUE_FLAGS = {"--cfg", "-c", "--package", "-p", "--experimental-rerun"}
# Flags under which the overrides mean something else (another config, help, shell completion).
_SKIP_FLAGS = {
    "--config-path",
    "-cp",
    "--config-name",
    "-cn",
    "--config-dir",
    "-cd",
    "--help",
    "-h",
    "--hydra-help",
    "--info",
    "-i",
    "--shell-completion",
    "-sc",
    "--version",
    "--experimental-rerun",
}


def group_options(group: str) -> list[str]:
    """The options of a config group: the YAML files in ``conf/<group>/``."""
    folder = CONF_DIR / group
    return sorted(p.stem for p in folder.glob("*.yaml")) if folder.is_dir() else []


def _groups() -> set[str]:
    return {p.name for p in CONF_DIR.iterdir() if p.is_dir()}


def overrides_of(argv: Iterable[str]) -> list[str] | None:
    """The overrides among the arguments, or None where they must be left to Hydra."""
    out: list[str] = []
    args = list(argv)
    i = 0
    while i < len(args):
        arg = args[i]
        flag = arg.split("=", 1)[0]
        if flag in _SKIP_FLAGS:
            return None
        if flag in _VALUE_FLAGS and "=" not in arg:
            i += 2
            continue
        if not arg.startswith("-"):
            out.append(arg)
        i += 1
    return out


def _keys(node: Any, prefix: str = "") -> list[str]:
    """Every dotted key of a config, parents included."""
    out: list[str] = []
    if isinstance(node, DictConfig):
        for key in node.keys():
            path = f"{prefix}.{key}" if prefix else str(key)
            out.append(path)
            out += _keys(node._get_node(key), path)  # type: ignore[arg-type]
    return out


def _has_key(cfg: DictConfig, dotted: str) -> bool:
    node: Any = cfg
    for part in dotted.split("."):
        if not isinstance(node, DictConfig) or part not in node:
            return False
        node = node._get_node(part)
    return True


def _close(word: str, candidates: Iterable[str], cutoff: float = 0.6) -> str:
    matches = difflib.get_close_matches(word, list(candidates), n=3, cutoff=cutoff)
    return f" (did you mean {' or '.join(matches)}?)" if matches else ""


def _close_key(key: str, cfg: DictConfig) -> str:
    """Close matches of a dotted key: siblings of its last part first, then any full key.

    Matching whole paths alone would weigh the shared prefix (``sampler.``) so much that
    unrelated siblings look close.
    """
    parent, _, leaf = key.rpartition(".")
    node: Any = cfg
    for part in parent.split(".") if parent else []:
        node = node._get_node(part) if isinstance(node, DictConfig) and part in node else None
    if isinstance(node, DictConfig):
        siblings = [str(k) for k in node.keys()]
        matches = difflib.get_close_matches(leaf, siblings, n=3, cutoff=0.6)
        if matches:
            prefix = f"{parent}." if parent else ""
            return f" (did you mean {' or '.join(prefix + m for m in matches)}?)"
    return _close(key, _keys(cfg), cutoff=0.8)


def _options_with(key: str) -> list[str]:
    """``group=option`` for each option of the key's group whose file has the key."""
    group, _, rest = key.partition(".")
    if not rest or group not in _groups():
        return []
    out = []
    for option in group_options(group):
        try:
            node = OmegaConf.load(CONF_DIR / group / f"{option}.yaml")
        except Exception:  # noqa: BLE001 - a file Hydra will report on its own
            continue
        if isinstance(node, DictConfig) and _has_key(node, rest):
            out.append(f"{group}={option}")
    return out


def check_overrides(argv: Iterable[str]) -> str | None:
    """The problem with the command line's overrides as one paragraph, or None when there is
    none (or when they are left to Hydra: other config, help flags, unparsable syntax)."""
    from hydra import compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra
    from hydra.core.override_parser.overrides_parser import OverridesParser
    from hydra.errors import HydraException

    args = overrides_of(argv)
    if not args:
        return None
    try:
        parsed = OverridesParser.create().parse_overrides(args)
    except HydraException:
        return None  # Hydra's own message says where the syntax is wrong
    groups = _groups()
    problems: list[str] = []
    chosen: list[str] = []
    keys: list[Any] = []
    for o in parsed:
        name = o.key_or_group
        if name.startswith("hydra") or o.package is not None:
            continue
        values = list(o.sweep_string_iterator()) if o.is_sweep_override() else [o.value()]
        if name in groups:
            options = group_options(name)
            bad = [str(v) for v in values if v is not None and str(v) not in options]
            for value in bad:
                problems.append(
                    f"{name}={value} is not an option of {name}{_close(value, options)}; "
                    f"the options are {', '.join(options)}"
                )
            if not bad and values and values[0] is not None:
                chosen.append(f"{o.get_key_element()}={values[0]}")
        elif o.is_add() or o.is_delete() or o.is_force_add():
            continue  # '+key=...' adds a key on purpose; '~key' is Hydra's to check
        else:
            keys.append(o)
    if keys and not problems:
        GlobalHydra.instance().clear()
        try:
            with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
                cfg = compose(config_name="config", overrides=chosen)
        except HydraException:
            return None  # a group file that does not compose: Hydra says which
        finally:
            GlobalHydra.instance().clear()
        for o in keys:
            key = o.key_or_group
            if not _has_key(cfg, key):
                owners = _options_with(key)
                if owners:
                    problems.append(
                        f"{key} is not a key of the chosen {key.split('.')[0]}; it is a key "
                        f"of {' and '.join(owners)}, so choose that option too"
                    )
                    continue
                problems.append(
                    f"{key} is not a key of the config{_close_key(key, cfg)}; "
                    f"+{key}=... adds a new one (python -m ddrm_exp --cfg job lists the keys)"
                )
    if not problems:
        return None
    return "Invalid command line: " + "; ".join(problems) + "."


# Flags under which Hydra makes no run directory (it prints something and stops).
_NO_RUN_FLAGS = {"--cfg", "-c", "--resolve"}


def check_output_dir(argv: Iterable[str]) -> str | None:
    """The problem with the directory Hydra is about to create, as one paragraph, or None.

    Hydra creates ``hydra.run.dir`` (``hydra.sweep.dir`` for ``-m``) before any of the
    project's code runs, so a file standing there, or on the path to it, would end in Hydra's
    traceback. The directory is resolved here as Hydra will (the command line's overrides,
    ``paths.output_root``, the clock), and only checked: nothing is created. Anything that does
    not resolve without running Hydra is left to it.
    """
    from hydra import compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra
    from hydra.core.override_parser.overrides_parser import OverridesParser

    argv = list(argv)
    args = overrides_of(argv)
    if args is None or any(a.split("=", 1)[0] in _NO_RUN_FLAGS for a in argv):
        return None
    try:
        parsed = OverridesParser.create().parse_overrides(args)
        # A sweep's values cannot be composed at once; the output directory rarely depends on
        # them (it is named by the clock and the job number).
        fixed = [o.input_line for o in parsed if not o.is_sweep_override()]
        GlobalHydra.instance().clear()
        try:
            with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
                cfg = compose(config_name="config", overrides=fixed, return_hydra_config=True)
        finally:
            GlobalHydra.instance().clear()
        multirun = "-m" in argv or "--multirun" in argv or str(cfg.hydra.mode) == "MULTIRUN"
        key = "hydra.sweep.dir" if multirun else "hydra.run.dir"
        value = OmegaConf.select(cfg, key, throw_on_resolution_failure=True)
    except Exception:  # noqa: BLE001 - Hydra reports what does not parse or compose
        return None
    if value is None:
        return None
    target = Path(str(value))
    blocker = next((p for p in (target, *target.parents) if p.exists()), None)
    if blocker is None or blocker.is_dir():
        return None
    where = "is a file" if blocker == target else f"is a file on the path to {target}"
    what = "the multirun's jobs (hydra.sweep.dir)" if multirun else "the run (hydra.run.dir)"
    return (
        f"The output directory of {what} cannot be created: {blocker} {where}, not a "
        f"directory. Move the file away, or choose another directory with {key}=... (or "
        "paths.output_root=...)."
    )
