"""State-dict layouts of the UNets against the published checkpoints, plus small forward passes.

Why: the real checkpoints are too large to ship, but ``load_state_dict(strict=True)`` only needs
every parameter name and shape to agree. ``tests/data/manifests/*.json`` record those, taken from
the reference architectures (see ``scripts/make_layout_manifests.py``); here the project's own
networks are built full size on the ``meta`` device — no memory, no weights — and compared.

The CelebA-HQ (SDEdit), LSUN church and LSUN cat checkpoints use the same DDPM configuration as
LSUN bedroom (ch 128, ch_mult 1,1,2,2,4,4, attention at 16, 256x256), hence the same manifest.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import torch
from torch import nn

from ddrm_exp.models.adm_unet import ADMUNet, GroupNorm32, adm_timestep_embedding, adm_unet
from ddrm_exp.models.ddpm_unet import ddpm_unet

MANIFESTS = Path(__file__).parent / "data" / "manifests"

FULL_SIZE: dict[str, tuple[str, Callable[[], nn.Module]]] = {
    "lsun_bedroom": ("ddpm_lsun_bedroom", lambda: ddpm_unet(256)),
    # Same configuration as LSUN bedroom (configs/celeba_hq.yml), so the same manifest.
    "celeba_hq": (
        "ddpm_lsun_bedroom",
        lambda: ddpm_unet(
            256, ch=128, ch_mult=(1, 1, 2, 2, 4, 4), num_res_blocks=2, attn_resolutions=(16,)
        ),
    ),
    "cifar10": (
        "ddpm_cifar10",
        lambda: ddpm_unet(
            32, ch=128, ch_mult=(1, 2, 2, 2), num_res_blocks=2, attn_resolutions=(16,), dropout=0.1
        ),
    ),
    "imagenet256_uncond": ("adm_imagenet256_uncond", lambda: adm_unet()),
    "imagenet256_uncond_fp16": ("adm_imagenet256_uncond", lambda: adm_unet(use_fp16=True)),
}


def _manifest(name: str) -> dict[str, list[int]]:
    data = json.loads((MANIFESTS / f"{name}.json").read_text())
    assert data["source"], "a manifest must say where its layout came from"
    return data["keys"]


def _layout(model: nn.Module) -> dict[str, list[int]]:
    return {name: list(t.shape) for name, t in model.state_dict().items()}


def _on_meta(build: Callable[[], nn.Module]) -> nn.Module:
    with torch.device("meta"):
        return build()


@pytest.mark.parametrize("model_name", sorted(FULL_SIZE))
def test_full_size_layout_matches_manifest(model_name: str) -> None:
    manifest_name, build = FULL_SIZE[model_name]
    expected = _manifest(manifest_name)
    actual = _layout(_on_meta(build))
    missing = sorted(set(expected) - set(actual))
    unexpected = sorted(set(actual) - set(expected))
    wrong_shape = {
        k: (actual[k], expected[k]) for k in expected if k in actual and actual[k] != expected[k]
    }
    assert not missing and not unexpected and not wrong_shape, (missing, unexpected, wrong_shape)


@pytest.mark.parametrize("model_name", sorted(FULL_SIZE))
def test_manifest_state_dict_loads_strictly(model_name: str) -> None:
    manifest_name, build = FULL_SIZE[model_name]
    model = _on_meta(build)
    state = {k: torch.empty(shape, device="meta") for k, shape in _manifest(manifest_name).items()}
    model.load_state_dict(state, strict=True, assign=True)
    # The check has teeth: one tensor missing is refused.
    state.pop(next(iter(state)))
    with pytest.raises(RuntimeError, match="Missing key"):
        _on_meta(build).load_state_dict(state, strict=True, assign=True)


def test_manifest_key_counts() -> None:
    """Pin the sizes so a regenerated manifest that silently lost tensors is noticed."""
    counts = {
        n: len(_manifest(n))
        for n in ("ddpm_lsun_bedroom", "ddpm_cifar10", "adm_imagenet256_uncond")
    }
    assert counts == {"ddpm_lsun_bedroom": 450, "ddpm_cifar10": 328, "adm_imagenet256_uncond": 566}


# --- small forward passes -------------------------------------------------------------------


@pytest.fixture(autouse=True)
def _single_thread() -> Iterator[None]:
    """These networks are tiny; on a shared, busy CPU intra-op threads only add contention."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def _randomize(model: nn.Module, seed: int = 0) -> nn.Module:
    """Give every parameter random values: ADM zero-initialises its residual outputs, which
    would make the network the identity on its skip paths and its output identically zero."""
    gen = torch.Generator().manual_seed(seed)
    norm_weights = {id(m.weight) for m in model.modules() if isinstance(m, nn.GroupNorm)}
    with torch.no_grad():
        for p in model.parameters():
            fan_in = p[0].numel() if p.ndim > 1 else 1
            noise = torch.randn(p.shape, generator=gen, dtype=torch.float32) / math.sqrt(fan_in)
            p.copy_(noise * 0.5 + (1.0 if id(p) in norm_weights else 0.0))
    return model


def _small_adm(**overrides: object) -> ADMUNet:
    kwargs: dict[str, object] = dict(
        image_size=32,
        model_channels=32,
        channel_mult=(1, 2, 2),
        attention_resolutions=(16, 8),
        num_head_channels=8,
    )
    kwargs.update(overrides)
    return adm_unet(**kwargs)  # type: ignore[arg-type]


SMALL_ADM_VARIANTS = {
    "published_options": {},
    "conv_resampling_no_scale_shift_new_order": dict(
        resblock_updown=False,
        use_scale_shift_norm=False,
        use_new_attention_order=True,
        num_head_channels=-1,
        num_heads=2,
    ),
    "64px_default_mult_3_outputs": dict(
        image_size=64, channel_mult=None, out_channels=3, attention_resolutions=(16, 8)
    ),
}


@pytest.mark.parametrize("variant", sorted(SMALL_ADM_VARIANTS))
def test_small_adm_forward_shape(variant: str) -> None:
    torch.manual_seed(0)
    model = _randomize(_small_adm(**SMALL_ADM_VARIANTS[variant])).eval()
    size, out_ch = model.image_size, model.out_channels
    x = torch.randn(2, 3, size, size)
    with torch.no_grad():
        out = model(x, torch.tensor([0.0, 999.0]))
    assert out.shape == (2, out_ch, size, size)
    assert out.dtype == torch.float32
    assert torch.isfinite(out).all() and out.abs().max() > 0


def test_small_ddpm_forward_shape() -> None:
    torch.manual_seed(0)
    model = ddpm_unet(32, ch=32, ch_mult=(1, 2, 2), attn_resolutions=(16,), dropout=0.1).eval()
    with torch.no_grad():
        out = model(torch.randn(2, 3, 32, 32), torch.tensor([0.0, 999.0]))
    assert out.shape == (2, 3, 32, 32) and out.dtype == torch.float32
    assert torch.isfinite(out).all()


def _cpu_half_conv_works() -> bool:
    try:
        conv = nn.Conv2d(2, 2, 3, padding=1).half()
        conv(torch.zeros(1, 2, 4, 4, dtype=torch.float16))
        q = torch.zeros(1, 1, 4, 8, dtype=torch.float16)
        torch.nn.functional.scaled_dot_product_attention(q, q, q)
    except RuntimeError:
        return False
    return True


@pytest.mark.skipif(not _cpu_half_conv_works(), reason="float16 conv/attention unsupported on CPU")
def test_small_adm_fp16_torso_matches_fp32() -> None:
    torch.manual_seed(0)
    model = _randomize(_small_adm()).eval()
    x = torch.randn(2, 3, 32, 32)
    t = torch.tensor([10.0, 500.0])
    with torch.no_grad():
        full = model(x, t)
        model.convert_to_fp16()
        half = model(x, t)
    assert model.use_fp16
    # Only the torso's convolutions are half; norms, the timestep MLP and the head stay float32.
    assert model.input_blocks[1][0].in_layers[2].weight.dtype == torch.float16
    assert model.middle_block[1].qkv.weight.dtype == torch.float16
    assert all(
        m.weight.dtype == torch.float32 for m in model.modules() if isinstance(m, GroupNorm32)
    )
    assert model.input_blocks[1][0].emb_layers[1].weight.dtype == torch.float32
    assert model.time_embed[0].weight.dtype == torch.float32
    assert model.out[2].weight.dtype == torch.float32
    assert half.dtype == torch.float32 and half.shape == full.shape
    assert (half - full).abs().max() <= 1e-2 * full.abs().max()
    # Back to float32 (the weights keep their float16 rounding, as in the official code).
    model.convert_to_fp32()
    assert not model.use_fp16
    with torch.no_grad():
        again = model(x, t)
    assert (again - full).abs().max() <= 1e-2 * full.abs().max()


def test_use_fp16_flag_converts_torso() -> None:
    model = _small_adm(use_fp16=True)
    assert model.use_fp16 and model.torso_dtype == torch.float16
    assert model.time_embed[2].weight.dtype == torch.float32


# --- embedding and argument checks ----------------------------------------------------------


def test_adm_timestep_embedding_is_cos_then_sin() -> None:
    t = torch.tensor([0.0, 7.0])
    emb = adm_timestep_embedding(t, 8)
    assert emb.shape == (2, 8)
    assert torch.equal(emb[0], torch.tensor([1.0] * 4 + [0.0] * 4))
    freqs = torch.exp(-math.log(10000) * torch.arange(4, dtype=torch.float32) / 4)
    expected = torch.cat([torch.cos(7.0 * freqs), torch.sin(7.0 * freqs)])
    assert torch.allclose(emb[1], expected)
    assert adm_timestep_embedding(t, 9).shape == (2, 9)


def test_adm_rejects_wrong_input_size() -> None:
    model = _small_adm()
    with pytest.raises(ValueError, match="32, 32"):
        model(torch.zeros(1, 3, 64, 64), torch.zeros(1))
    with pytest.raises(ValueError, match="t must have shape"):
        model(torch.zeros(2, 3, 32, 32), torch.zeros(3))


def test_adm_rejects_bad_configurations() -> None:
    with pytest.raises(ValueError, match="no default channel_mult"):
        adm_unet(image_size=100)
    with pytest.raises(ValueError, match="not divisible"):
        adm_unet(image_size=36, model_channels=32, channel_mult=(1, 2, 2, 2))
    with pytest.raises(ValueError, match="attention_resolutions"):
        _small_adm(attention_resolutions=(4,))
    with pytest.raises(NotImplementedError, match="class-conditional"):
        adm_unet(class_cond=True)


def test_adm_default_channel_mult_per_size() -> None:
    with torch.device("meta"):
        assert adm_unet().config.channel_mult == (1, 1, 2, 2, 4, 4)
        small = adm_unet(image_size=64, attention_resolutions=(16, 8))
        assert small.config.channel_mult == (1, 2, 3, 4)
