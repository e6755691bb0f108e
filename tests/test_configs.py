"""Every option of every config group composes, validates and builds what it names."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from helpers import compose_cfg
from hydra.utils import instantiate
from omegaconf import open_dict

from ddrm_exp.config import image_size_of, validate
from ddrm_exp.errors import ConfigError
from ddrm_exp.paths import CONF_DIR

GROUPS = ["dataset", "degradation", "noise", "model", "sampler", "logger", "paths"]


def options(group: str) -> list[str]:
    return sorted(p.stem for p in (CONF_DIR / group).glob("*.yaml"))


def test_every_group_has_options() -> None:
    for group in GROUPS:
        assert options(group), f"conf/{group} is empty"
    assert (CONF_DIR / "experiment").is_dir()


@pytest.mark.parametrize(
    ("group", "option"), [(g, o) for g in GROUPS for o in options(g)], ids=lambda v: str(v)
)
def test_option_composes_and_validates(group: str, option: str) -> None:
    cfg = compose_cfg([f"{group}={option}"])
    validate(cfg)


@pytest.mark.parametrize("option", options("degradation"))
def test_degradation_builds_at_default_size(option: str) -> None:
    cfg = compose_cfg([f"degradation={option}"])
    h, w = image_size_of(cfg)
    op = instantiate(cfg.degradation, shape=(3, h, w), device="cpu")
    x = torch.rand(2, 3 * h * w) * 2 - 1
    y = op.H(x)
    assert y.shape == (2, op.m)
    assert torch.isfinite(op.H_pinv(y)).all()


def test_sampler_builds() -> None:
    cfg = compose_cfg([])
    sampler = instantiate(cfg.sampler)
    assert (sampler.timesteps, sampler.eta, sampler.eta_b) == (20, 0.85, 1.0)


@pytest.mark.parametrize(
    ("overrides", "needle"),
    [
        (["noise.sigma_y=-0.1"], "noise.sigma_y"),
        (["sampler.timesteps=0"], "sampler.timesteps"),
        (["sampler.timesteps=1001"], "sampler.timesteps"),
        (["sampler.timesteps=abc"], "sampler.timesteps"),
        (["sampler.eta=1.5"], "sampler.eta"),
        (["batch_size=0"], "batch_size"),
        (["device=gpu"], "device"),
        (["logger=wandb", "logger.mode=cloud"], "logger.mode"),
        (["model.image_size=-3"], "model.image_size"),
        (["model=lsun_bedroom", "model.image_size=128"], "model.image_size=128x128"),
    ],
)
def test_bad_values_are_named(overrides: list[str], needle: str) -> None:
    cfg = compose_cfg(overrides)
    with pytest.raises(ConfigError, match=needle.replace(".", r"\.")):
        validate(cfg)


def test_all_problems_reported_together() -> None:
    cfg = compose_cfg(["noise.sigma_y=-1", "sampler.timesteps=0"])
    with pytest.raises(ConfigError) as info:
        validate(cfg)
    assert "noise.sigma_y" in str(info.value) and "sampler.timesteps" in str(info.value)


def test_struct_mode_rejects_unknown_keys() -> None:
    cfg = compose_cfg([])
    with pytest.raises(Exception, match="timestep"):
        cfg.sampler.timestep = 3  # noqa: B018 - the misspelt key must not be accepted silently
    with open_dict(cfg):
        cfg.sampler.extra = 1


def test_paths_are_configurable(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("DDRM_EXP_DATA", str(tmp_path))
    cfg = compose_cfg([])
    assert cfg.paths.data_dir == str(tmp_path)
