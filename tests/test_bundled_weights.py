"""The bundled weights are the ones the config pins (model.bundled_md5, part of the config hash,
so results of earlier weights are never resumed as these), and a replaced file is refused."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest
from omegaconf import OmegaConf

from ddrm_exp.errors import ConfigError
from ddrm_exp.models.pretrained import ASSETS_DIR, locate_weights

CONF = Path(__file__).resolve().parents[1] / "conf" / "model" / "tiny.yaml"


def test_tiny_config_pins_the_shipped_weights() -> None:
    cfg = OmegaConf.load(CONF)
    shipped = hashlib.md5((ASSETS_DIR / cfg.bundled).read_bytes()).hexdigest()
    assert cfg.bundled_md5 == shipped, "update conf/model/tiny.yaml and the model card"


def test_replaced_bundled_weights_are_refused() -> None:
    cfg = OmegaConf.load(CONF)
    with pytest.raises(ConfigError, match="bundled_md5"):
        locate_weights("tiny", None, cfg.bundled, None, ".", False, bundled_md5="0" * 32)
    # An explicit checkpoint is the user's choice: the pin does not apply to it.
    explicit = locate_weights(
        "tiny", None, cfg.bundled, str(ASSETS_DIR / cfg.bundled), ".", False, "0" * 32
    )
    assert explicit.name == cfg.bundled
