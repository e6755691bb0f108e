"""DiffusionPrior's prediction types: a v-network is seen by the samplers as the ε it implies."""

from __future__ import annotations

import pytest
import torch
from torch import Tensor, nn

from ddrm_exp.errors import ConfigError
from ddrm_exp.models.base import DiffusionPrior
from ddrm_exp.models.pretrained import build_pretrained_prior
from ddrm_exp.models.schedule import Schedule


class Oracle(nn.Module):
    """Returns the exact ε or v of known (x_0, ε), whatever x_t it is given."""

    def __init__(self, x0: Tensor, eps: Tensor, schedule: Schedule, kind: str) -> None:
        super().__init__()
        self.x0, self.eps, self.kind = x0, eps, kind
        self.abar = schedule.alphas_cumprod.float()

    def forward(self, x_t: Tensor, t: Tensor) -> Tensor:
        if self.kind == "eps":
            return self.eps
        a = self.abar[t.long()].view(-1, 1, 1, 1)
        return a.sqrt() * self.eps - (1 - a).sqrt() * self.x0


@pytest.mark.parametrize("t", [0, 500, 950, 999])
def test_v_prediction_gives_the_true_eps(t: int) -> None:
    sched = Schedule.linear()
    g = torch.Generator().manual_seed(t)
    x0 = torch.rand(2, 3, 8, 8, generator=g) * 2 - 1
    eps = torch.randn(2, 3, 8, 8, generator=g)
    a = sched.alpha_bar(t)
    x_t = a**0.5 * x0 + (1 - a) ** 0.5 * eps
    prior = DiffusionPrior(Oracle(x0, eps, sched, "v"), sched, 8, 3, "v", prediction="v")
    got = prior.eps(x_t, torch.full((2,), float(t)))
    torch.testing.assert_close(got, eps, atol=1e-5, rtol=1e-5)
    # ... and the x̂_0 a sampler derives from it is the true x_0
    x0_hat = (x_t - (1 - a) ** 0.5 * got) / a**0.5
    torch.testing.assert_close(x0_hat, x0, atol=2e-3 if t > 900 else 1e-4, rtol=0)


def test_eps_prediction_is_passed_through() -> None:
    sched = Schedule.linear()
    x0, eps = torch.zeros(1, 3, 4, 4), torch.randn(1, 3, 4, 4)
    prior = DiffusionPrior(Oracle(x0, eps, sched, "eps"), sched, 4)
    assert torch.equal(prior.eps(torch.randn(1, 3, 4, 4), torch.tensor([10.0])), eps)


def test_unknown_prediction_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match="model.prediction='x0'"):
        build_pretrained_prior(
            name="tiny",
            arch="ddpm",
            image_size=64,
            network={"ch": 32, "ch_mult": [1, 2, 2, 2], "num_res_blocks": 2},
            bundled="tiny.safetensors",
            prediction="x0",
        )
