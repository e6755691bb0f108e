"""Progress inside a batch: the sampler reports each step; results are unchanged by it."""

from __future__ import annotations

import io
import logging

import pytest
import torch

from ddrm_exp.degradations.separable import SuperResolution
from ddrm_exp.models.gaussian import build_gaussian_prior
from ddrm_exp.samplers import DDRM
from ddrm_exp.samplers.progress import StepProgress


def _sample(sampler: DDRM) -> torch.Tensor:
    prior = build_gaussian_prior(image_size=16)
    operator = SuperResolution((3, 16, 16), factor=2)
    x = torch.rand(2, 3, 16, 16, generator=torch.Generator().manual_seed(0)) * 2 - 1
    y = operator.H(x.flatten(1))
    gens = [torch.Generator().manual_seed(i) for i in range(2)]
    return sampler.sample(prior, operator, y, 0.0, generator=gens).x0


def test_progress_sees_every_step_and_changes_nothing() -> None:
    calls: list[tuple[int, int]] = []
    plain = _sample(DDRM(timesteps=5))
    watched = DDRM(timesteps=5)
    watched.progress = lambda done, total: calls.append((done, total))
    assert torch.equal(_sample(watched), plain)  # bit for bit
    assert calls == [(i, 5) for i in range(1, 6)]


def test_not_on_a_terminal_it_logs_the_nfe_done(caplog: pytest.LogCaptureFixture) -> None:
    progress = StepProgress("job ddrm", interval=0.0, stream=io.StringIO())
    assert not progress.on_terminal
    with caplog.at_level(logging.INFO, logger="ddrm_exp"):
        for _batch in range(2):
            for step in range(1, 4):
                progress(step, 3)
    lines = [r.getMessage() for r in caplog.records]
    assert lines[0] == "job ddrm: batch 1, 1 of 3 NFE done (first step)"  # no rate yet
    assert lines[1].startswith("job ddrm: batch 1, 2 of 3 NFE done (") and "NFE/s)" in lines[1]
    assert "batch 2, 3 of 3 NFE done" in lines[-1] and len(lines) == 6
    assert progress.batches == 2


def test_the_log_is_throttled(caplog: pytest.LogCaptureFixture) -> None:
    progress = StepProgress("job", interval=3600.0, stream=io.StringIO())
    with caplog.at_level(logging.INFO, logger="ddrm_exp"):
        for step in range(1, 21):
            progress(step, 20)
    assert not caplog.records
