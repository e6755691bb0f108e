"""model=hf: diffusers UNet2DModel priors built from tiny pipelines saved with save_pretrained."""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path
from typing import Any

import pytest
import torch

diffusers = pytest.importorskip("diffusers")

from ddrm_exp.degradations import Denoising  # noqa: E402
from ddrm_exp.errors import ConfigError  # noqa: E402
from ddrm_exp.models.base import DiffusionPrior  # noqa: E402
from ddrm_exp.models.hf import HFUNetEps, betas_from_scheduler_config, build_hf_prior  # noqa: E402
from ddrm_exp.samplers import DDRM  # noqa: E402

S = 16
TIMESTEPS = [0, 17, 999]


def tiny_unet(out_channels: int = 3, seed: int = 0) -> Any:
    torch.manual_seed(seed)
    unet = diffusers.UNet2DModel(
        sample_size=S,
        in_channels=3,
        out_channels=out_channels,
        layers_per_block=1,
        block_out_channels=(32, 32),
        norm_num_groups=8,
        down_block_types=("DownBlock2D", "DownBlock2D"),
        up_block_types=("UpBlock2D", "UpBlock2D"),
    )
    return unet.eval()


def save_pipeline(root: Path, unet: Any, scheduler: Any | None) -> Path:
    unet.save_pretrained(root / "unet")
    if scheduler is not None:
        scheduler.save_pretrained(root / "scheduler")
    return root


@pytest.fixture(scope="module")
def unet() -> Any:
    return tiny_unet()


@pytest.fixture(scope="module", params=["linear", "scaled_linear"])
def pipeline(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory, unet: Any):
    kind = request.param
    kwargs: dict[str, Any] = {"beta_schedule": kind}
    if kind == "scaled_linear":
        kwargs.update(beta_start=0.00085, beta_end=0.012)
    scheduler = diffusers.DDPMScheduler(num_train_timesteps=1000, **kwargs)
    root = save_pipeline(tmp_path_factory.mktemp(f"pipe_{kind}"), unet, scheduler)
    return root, scheduler


def _x(seed: int = 1, batch: int = 2) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.rand(batch, 3, S, S, generator=g) * 2 - 1


def test_loads_pipeline_schedule_and_eps(pipeline: tuple[Path, Any], unet: Any) -> None:
    root, scheduler = pipeline
    prior = build_hf_prior(str(root))
    assert isinstance(prior, DiffusionPrior)
    assert prior.shape == (3, S, S)
    assert prior.schedule.betas.dtype == torch.float64
    assert prior.schedule.num_timesteps == 1000
    torch.testing.assert_close(
        prior.schedule.betas, scheduler.betas.to(torch.float64), rtol=1e-6, atol=1e-10
    )
    torch.testing.assert_close(
        prior.schedule.alphas_cumprod,
        scheduler.alphas_cumprod.to(torch.float64),
        rtol=1e-5,
        atol=1e-8,
    )
    x = _x()
    for t in TIMESTEPS:
        tt = torch.full((2,), float(t))
        with torch.no_grad():
            expected = unet(x, tt).sample
            got = prior.eps(x, tt)
        torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-6)


def test_ddrm_sample_runs(pipeline: tuple[Path, Any]) -> None:
    root, _ = pipeline
    prior = build_hf_prior(str(root), image_size=S).eval()
    op = Denoising((3, S, S))
    x = _x(batch=1)
    y = op.H(x.flatten(1))
    with torch.no_grad():
        out = DDRM(timesteps=3).sample(prior, op, y, sigma_y=0.0)
    assert out.x0.shape == (1, 3, S, S)
    assert torch.isfinite(out.x0).all()
    assert out.nfe >= 3


def test_squaredcos_and_trained_betas_match_diffusers() -> None:
    for kwargs in (
        {"beta_schedule": "squaredcos_cap_v2"},
        {"beta_schedule": "linear", "num_train_timesteps": 50, "beta_end": 0.2},
        {"trained_betas": torch.linspace(1e-3, 0.05, 40).tolist()},
    ):
        sched = diffusers.DDPMScheduler(**kwargs)
        betas = betas_from_scheduler_config(dict(sched.config))
        torch.testing.assert_close(betas, sched.betas.to(torch.float64), rtol=1e-6, atol=1e-9)


def test_bare_model_dir_with_scheduler_beside_it(tmp_path: Path, unet: Any) -> None:
    unet.save_pretrained(tmp_path)
    diffusers.DDPMScheduler(beta_schedule="linear", beta_end=0.03).save_pretrained(tmp_path)
    prior = build_hf_prior(str(tmp_path), image_size=[S, S])
    assert prior.schedule.betas[-1].item() == pytest.approx(0.03)
    assert prior.image_size == (S, S)


def test_no_scheduler_config_warns_and_uses_ddpm_linear(
    tmp_path: Path, unet: Any, caplog: pytest.LogCaptureFixture
) -> None:
    root = save_pipeline(tmp_path, unet, None)
    with caplog.at_level(logging.WARNING, logger="ddrm_exp.models.hf"):
        prior = build_hf_prior(str(root))
    assert "No scheduler config" in caplog.text
    torch.testing.assert_close(
        prior.schedule.betas, torch.linspace(1e-4, 0.02, 1000, dtype=torch.float64)
    )


def test_learned_variance_keeps_first_channels(tmp_path: Path) -> None:
    unet6 = tiny_unet(out_channels=6)
    sched = diffusers.DDPMScheduler(variance_type="learned_range")
    prior = build_hf_prior(str(save_pipeline(tmp_path, unet6, sched)))
    x, t = _x(), torch.tensor([5.0, 900.0])
    with torch.no_grad():
        full = unet6(x, t).sample
        got = prior.eps(x, t)
    assert got.shape == x.shape
    torch.testing.assert_close(got, full[:, :3], rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("prediction_type", ["v_prediction", "sample"])
def test_v_and_sample_prediction_converted_to_eps(
    tmp_path: Path, unet: Any, prediction_type: str
) -> None:
    """x̂_0 from our ε equals the x̂_0 diffusers' own DDPMScheduler.step derives."""
    sched = diffusers.DDPMScheduler(prediction_type=prediction_type, clip_sample=False)
    prior = build_hf_prior(str(save_pipeline(tmp_path, unet, sched)))
    assert isinstance(prior.network, HFUNetEps)
    assert prior.network.prediction_type == prediction_type
    x = _x().double()
    for t in [0, 10, 500, 999]:
        tt = torch.full((2,), float(t))
        with torch.no_grad():
            eps = prior.eps(x, tt)
            out = unet(x.float(), tt).sample.double()
        a = prior.schedule.alpha_bar(t)
        x0_ours = (x - (1 - a) ** 0.5 * eps) / a**0.5
        x0_ref = sched.step(out, t, x).pred_original_sample
        torch.testing.assert_close(x0_ours, x0_ref.double(), rtol=1e-4, atol=1e-4)
        if prediction_type == "v_prediction":
            torch.testing.assert_close(eps, (1 - a) ** 0.5 * x + a**0.5 * out)


def test_image_size_mismatch(pipeline: tuple[Path, Any]) -> None:
    root, _ = pipeline
    with pytest.raises(ConfigError, match=rf"image_size=32.*sample_size.*model.image_size={S}"):
        build_hf_prior(str(root), image_size=32)


def test_hub_id_offline_not_cached_fails_fast(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    start = time.monotonic()
    with pytest.raises(ConfigError) as info:
        build_hf_prior("google/ddpm-ema-bedroom-256", cache_dir=str(tmp_path / "hf_cache"))
    assert time.monotonic() - start < 10
    msg = str(info.value)
    assert "google/ddpm-ema-bedroom-256" in msg
    assert "Nothing can be downloaded" in msg
    assert "model.repo_or_path=/path/saved/by/save_pretrained" in msg


@pytest.mark.filterwarnings("ignore:The `local_dir_use_symlinks`:UserWarning")
def test_hub_id_loads_from_local_cache_offline(
    tmp_path: Path, unet: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A hub id found in a Hugging Face cache (its on-disk layout) loads without the network."""
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    cache = tmp_path / "hf_cache"
    repo = cache / "models--someone--tiny-ddpm"
    commit = "0123456789abcdef0123456789abcdef01234567"
    (repo / "refs").mkdir(parents=True)
    (repo / "refs" / "main").write_text(commit)
    sched = diffusers.DDPMScheduler(beta_end=0.025)
    save_pipeline(repo / "snapshots" / commit, unet, sched)
    prior = build_hf_prior("someone/tiny-ddpm", cache_dir=str(cache))
    torch.testing.assert_close(prior.schedule.betas, sched.betas.double(), rtol=1e-6, atol=1e-10)
    x, t = _x(), torch.tensor([3.0, 700.0])
    with torch.no_grad():
        torch.testing.assert_close(prior.eps(x, t), unet(x, t).sample, rtol=1e-5, atol=1e-6)


def test_ddrm_exp_offline_env_var_also_forces_local(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.setenv("DDRM_EXP_OFFLINE", "1")
    start = time.monotonic()
    with pytest.raises(ConfigError, match="not in the local Hugging Face cache"):
        build_hf_prior("someone/some-ddpm", cache_dir=str(tmp_path / "hf_cache"))
    assert time.monotonic() - start < 10


def test_missing_directory_and_non_model_dir(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="no such directory"):
        build_hf_prior(str(tmp_path / "nope" / "model"))
    with pytest.raises(ConfigError, match="config.json"):
        build_hf_prior(str(tmp_path))


def test_unsupported_schedules_are_config_errors(tmp_path: Path, unet: Any) -> None:
    root = save_pipeline(tmp_path, unet, diffusers.DDPMScheduler())
    cfg_path = root / "scheduler" / "scheduler_config.json"
    base = json.loads(cfg_path.read_text())
    for patch, needle in (
        ({"beta_schedule": "sigmoid"}, "beta_schedule='sigmoid'"),
        ({"prediction_type": "flow"}, "prediction_type='flow'"),
        ({"rescale_betas_zero_snr": True}, "rescale_betas_zero_snr"),
    ):
        cfg_path.write_text(json.dumps({**base, **patch}))
        with pytest.raises(ConfigError, match=needle):
            build_hf_prior(str(root))


def test_missing_diffusers_is_config_error(monkeypatch: pytest.MonkeyPatch) -> None:
    import sys

    monkeypatch.setitem(sys.modules, "diffusers", None)
    with pytest.raises(ConfigError, match=r"pip install -e '\.\[hf\]'"):
        build_hf_prior("/nonexistent")


def test_config_file_targets_builder() -> None:
    from omegaconf import OmegaConf

    from ddrm_exp.paths import CONF_DIR

    cfg = OmegaConf.load(CONF_DIR / "model" / "hf.yaml")
    assert cfg._target_ == "ddrm_exp.models.hf.build_hf_prior"
    assert cfg.image_size == 256
    assert cfg.repo_or_path == "google/ddpm-ema-bedroom-256"
