"""The one-line library entries: load_prior and load_operator by their CLI names."""

from __future__ import annotations

import pytest
import torch

import ddrm_exp
from ddrm_exp.degradations.separable import SuperResolution


def test_readme_example_runs() -> None:
    prior = ddrm_exp.load_prior("tiny")
    H = ddrm_exp.load_operator("sr4", image_size=64)
    assert isinstance(H, SuperResolution) and H.m == 3 * 16 * 16
    x = torch.rand(1, 3, 64, 64, generator=torch.Generator().manual_seed(0)) * 2 - 1
    y = H.H(x.flatten(1))
    x_hat = ddrm_exp.DDRM(timesteps=3).sample(prior, H, y, sigma_y=0.0).x0
    assert x_hat.shape == x.shape and torch.isfinite(x_hat).all()


def test_options_override_the_files_keys_and_typos_are_refused() -> None:
    assert ddrm_exp.load_prior("gaussian", image_size=32).shape == (3, 32, 32)
    assert ddrm_exp.load_operator("inpaint_random", image_size=16, fraction=0.75).m == 3 * 64
    with pytest.raises(ddrm_exp.ConfigError, match="tiny"):
        ddrm_exp.load_prior("tinny")
    with pytest.raises(ddrm_exp.ConfigError, match="factor"):
        ddrm_exp.load_operator("sr4", factr=2)
