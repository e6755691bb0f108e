"""Speed options of the network (precision, channels_last, compile): what each changes."""

from __future__ import annotations

import pytest
import torch

from ddrm_exp.degradations.denoising import Denoising
from ddrm_exp.errors import ConfigError
from ddrm_exp.metrics import psnr
from ddrm_exp.models.acceleration import Acceleration, accelerate
from ddrm_exp.models.pretrained import build_pretrained_prior
from ddrm_exp.samplers import DDRM
from ddrm_exp.samplers.ddrm import NoiseStream, draw_noise

TINY = dict(
    name="tiny",
    arch="ddpm",
    image_size=64,
    network={"ch": 32, "ch_mult": [1, 2, 2, 2], "num_res_blocks": 2, "attn_resolutions": []},
    bundled="tiny.safetensors",
    download=False,
    prediction="v",
)


@pytest.fixture(scope="module")
def tiny():
    return build_pretrained_prior(**TINY).eval()


def restore(prior, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    x = torch.rand(2, 3, 64, 64, generator=g) * 1.6 - 0.8
    op = Denoising((3, 64, 64))
    y = op.H(x.reshape(2, -1)) + 0.2 * torch.randn(2, 3 * 64 * 64, generator=g)
    gens = [torch.Generator().manual_seed(seed + i) for i in range(2)]
    out = DDRM(5, 0.85, 1.0).sample(prior, op, y, 0.1, generator=gens).x0
    return out, x


def test_default_is_the_same_prior(tiny) -> None:
    assert accelerate(tiny, Acceleration()) is tiny


def test_bad_precision_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match="precision='fp8'"):
        Acceleration("fp8")


def test_fp16_on_cpu_is_refused_before_any_work(tiny) -> None:
    with pytest.raises(ConfigError, match="fp16 needs a CUDA device"):
        accelerate(tiny, Acceleration("fp16"))


def test_channels_last_changes_nothing_but_layout(tiny) -> None:
    ref, _ = restore(tiny)
    fast, _ = restore(accelerate(tiny, Acceleration(channels_last=True)))
    torch.testing.assert_close(fast, ref, atol=1e-4, rtol=1e-4)


def test_bf16_stays_within_a_small_psnr_change(tiny) -> None:
    ref, x = restore(tiny)
    low, _ = restore(accelerate(tiny, Acceleration("bf16")))
    assert low.dtype == torch.float32  # the sampler's arithmetic stays float32
    delta = [a - b for a, b in zip(psnr(low, x), psnr(ref, x), strict=True)]
    assert max(abs(d) for d in delta) < 0.1, delta
    assert (low - ref).abs().max() > 0  # it did run in reduced precision


def test_tf32_on_cpu_equals_fp32(tiny) -> None:
    ref, _ = restore(tiny)
    other, _ = restore(accelerate(tiny, Acceleration("tf32")))
    accelerate(tiny, Acceleration())  # restore the process-wide default switches
    torch.testing.assert_close(other, ref, atol=1e-6, rtol=1e-6)


def test_noise_drawn_ahead_on_a_thread_is_the_same_noise(tiny, monkeypatch) -> None:
    ref, _ = restore(tiny)
    monkeypatch.setattr(DDRM, "prefetch_noise", True)
    ahead, _ = restore(tiny)
    torch.testing.assert_close(ahead, ref, atol=0, rtol=0)


def test_noise_stream_draws_exactly_what_it_announced() -> None:
    gens = [torch.Generator().manual_seed(i) for i in range(2)]
    with NoiseStream((2, 3, 4, 4), gens, torch.device("cpu"), torch.float32, 2, True) as s:
        s.next(), s.next()
        with pytest.raises(RuntimeError, match="more draws"):
            s.next()
    # The worker drew nothing beyond the two announced draws: the generators continue from there.
    fresh = [torch.Generator().manual_seed(i) for i in range(2)]
    for _ in range(3):
        expected = draw_noise((2, 3, 4, 4), fresh, torch.device("cpu"), torch.float32)
    torch.testing.assert_close(
        draw_noise((2, 3, 4, 4), gens, torch.device("cpu"), torch.float32), expected
    )


@pytest.mark.slow
def test_compile_matches_eager(tiny) -> None:
    ref, _ = restore(tiny)
    compiled, _ = restore(accelerate(tiny, Acceleration(compile=True)))
    torch.testing.assert_close(compiled, ref, atol=1e-4, rtol=1e-4)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_gpu_noise_is_the_cpu_noise_and_the_loop_never_syncs(tiny) -> None:
    gens = [torch.Generator().manual_seed(i) for i in range(3)]
    on_gpu = draw_noise((3, 2, 4, 4), gens, torch.device("cuda"), torch.float32)
    gens = [torch.Generator().manual_seed(i) for i in range(3)]
    on_cpu = draw_noise((3, 2, 4, 4), gens, torch.device("cpu"), torch.float32)
    torch.testing.assert_close(on_gpu.cpu(), on_cpu, atol=0, rtol=0)

    prior = tiny.to("cuda")
    op = Denoising((3, 64, 64), device="cuda")
    y = torch.zeros(2, 3 * 64 * 64, device="cuda")
    gens = [torch.Generator().manual_seed(i) for i in range(2)]
    sampler = DDRM(5, 0.85, 1.0)
    sampler.sample(prior, op, y, 0.1, generator=gens)  # warm-up (lazy init may sync)
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode("error")
    gens = [torch.Generator().manual_seed(i) for i in range(2)]
    try:
        ahead = sampler.sample(prior, op, y, 0.1, generator=gens).x0  # noise drawn ahead
    finally:
        torch.cuda.set_sync_debug_mode("default")
    gens = [torch.Generator().manual_seed(i) for i in range(2)]
    inline = DDRM(5, 0.85, 1.0)
    inline.prefetch_noise = False
    torch.testing.assert_close(
        inline.sample(prior, op, y, 0.1, generator=gens).x0, ahead, atol=0, rtol=0
    )
    prior.to("cpu")
