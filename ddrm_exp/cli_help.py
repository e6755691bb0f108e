"""``python -m ddrm_exp --help``'s option lists, read from the config files themselves.

Every ``conf/<group>/<option>.yaml`` says in one ``# help: ...`` line of its opening comment
what it is. The help template (``conf/hydra/help/ddrm.yaml``) holds the prose and one
``${ddrm_options:<group>}`` per group; Hydra resolves the template when it prints the help, and
the resolver registered here renders that group's options from their files. A new option (a
sampler, a degradation, ...) is in the help as soon as its file is in ``conf/``.
"""

from __future__ import annotations

import re
from pathlib import Path

from omegaconf import DictConfig, OmegaConf

from ddrm_exp.paths import CONF_DIR

__all__ = ["RESOLVER", "default_options", "option_help", "register", "render_options"]

RESOLVER = "ddrm_options"
_HELP_LINE = re.compile(r"#\s*help:\s*(?P<text>.*?)\s*$")
# Options are listed from column 6, their descriptions from column 26 (a longer name list gets
# a line of its own).
_INDENT, _NAME_WIDTH = 6, 20


def option_help(path: Path) -> str | None:
    """The ``# help:`` line of a config file's opening comment, or None where it has none."""
    for line in path.read_text(encoding="utf-8").splitlines():
        if not line.startswith("#"):
            return None
        if match := _HELP_LINE.fullmatch(line):
            return match["text"] or None
    return None


def default_options(conf_dir: Path) -> dict[str, str]:
    """group -> the option ``config.yaml``'s defaults list picks."""
    out: dict[str, str] = {}
    for entry in OmegaConf.load(conf_dir / "config.yaml").get("defaults", []):
        if isinstance(entry, DictConfig):
            for group, option in entry.items():
                if isinstance(option, str) and not str(group).startswith("override "):
                    out[str(group)] = option
    return out


def _natural(name: str) -> list[int | str]:
    """sr2 < sr4 < sr16: digits compare as numbers."""
    return [int(part) if part.isdigit() else part for part in re.split(r"(\d+)", name)]


def render_options(conf_dir: Path, group: str) -> str:
    """A group's options, one row each, the default first and the rest in natural order;
    options with the same help line share a row (``sr2, sr4, sr8, sr16``)."""
    default = default_options(conf_dir).get(group)
    names = sorted((p.stem for p in (conf_dir / group).glob("*.yaml")), key=_natural)
    names.sort(key=lambda name: name != default)  # stable: the rest keep their order
    rows: dict[str, list[str]] = {}
    for name in names:
        text = option_help(conf_dir / group / f"{name}.yaml") or ""
        rows.setdefault(text, []).append(name)
    lines = []
    for text, options in rows.items():
        label = ", ".join(options)
        described = f"{text} (default)" if default in options else text
        if len(label) < _NAME_WIDTH:
            lines.append(" " * _INDENT + f"{label:<{_NAME_WIDTH}}{described}".rstrip())
        else:
            lines.append(" " * _INDENT + label)
            lines.append(" " * (_INDENT + _NAME_WIDTH) + described)
    return "\n".join(lines)


def _conf_dir_of(root: DictConfig) -> Path:
    """The directory the primary config was composed from (``--config-dir``/``--config-path``
    runs included): Hydra records it among ``hydra.runtime.config_sources``."""
    for source in root.hydra.runtime.get("config_sources", []):
        if source.get("provider") == "main" and source.get("schema") == "file":
            return Path(str(source.path))
    return CONF_DIR


def _resolve(group: str, *, _root_: DictConfig) -> str:
    # The template goes through string.Template after this: a literal $ must be doubled.
    return render_options(_conf_dir_of(_root_), group).replace("$", "$$")


def register() -> None:
    """Make ``${ddrm_options:<group>}`` resolvable (before Hydra reads the help template)."""
    if not OmegaConf.has_resolver(RESOLVER):
        OmegaConf.register_new_resolver(RESOLVER, _resolve)
