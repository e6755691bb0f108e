"""Locations inside the project tree."""

from pathlib import Path

PACKAGE_DIR = Path(__file__).resolve().parent
# conf/ sits beside the package in the source tree (installed with `pip install -e .`).
CONF_DIR = PACKAGE_DIR.parent / "conf"
