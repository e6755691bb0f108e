"""scripts/prior_quality.py: differences grouped by picture, the snapshot rule, and the prior's
own samples."""

from __future__ import annotations

import pytest
import torch
from test_corpus import load_script

quality = load_script("prior_quality")


def test_by_picture_averages_views_and_seeds_of_one_picture() -> None:
    # two seeds x three images (a's two views, then b), seed-major as restore_scores lists them
    pictures = ["src__a", "src__a", "src__b"]
    values = [1.0, 3.0, 10.0, 5.0, 7.0, 20.0]
    assert quality.by_picture(values, pictures) == [4.0, 15.0]


def test_snapshot_rule_counts_tasks_won_then_the_mean() -> None:
    scores = {
        "t1": {"tiny": [2.0, 2.0], "gaussian": [1.0, 1.0]},
        "t2": {"tiny": [0.0, 0.0], "gaussian": [1.0, 1.0]},
    }
    line = quality.snapshot_line("w.safetensors", scores, "tiny", "gaussian")
    assert line["wins"] == 1 and line["mean_diff"] == pytest.approx(0.0)
    assert line["diff"] == {"t1": 1.0, "t2": -1.0}


def test_unconditional_samples_are_images() -> None:
    prior = quality.load_prior("gaussian", None, torch.device("cpu"))
    out = quality.unconditional(prior, 2, steps=3, seed=0)
    assert out.shape == (2, *prior.shape)
    assert bool(torch.isfinite(out).all()) and out.abs().max() <= 1.0
    # seeded: the same call gives the same samples
    torch.testing.assert_close(out, quality.unconditional(prior, 2, steps=3, seed=0))
