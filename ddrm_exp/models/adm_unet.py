"""The ADM UNet of Dhariwal & Nichol (2021), in the state-dict layout of openai guided-diffusion.

DDRM calls this network ``model.type: openai``; its unconditional ImageNet prior is the published
``256x256_diffusion_uncond.pt``. Module names and parameter shapes follow that file exactly, so it
loads with ``load_state_dict(strict=True)``:

* ``time_embed.{0,2}`` — the two linear layers of the timestep MLP (index 1 is a SiLU);
* ``input_blocks.{n}.{m}``, ``middle_block.{0,1,2}``, ``output_blocks.{n}.{m}`` — sequences of
  residual blocks (``in_layers.{0,2}``, ``emb_layers.1``, ``out_layers.{0,3}``, optional
  ``skip_connection``), attention blocks (``norm``, ``qkv``, ``proj_out``; 1-D convolutions) and,
  without ``resblock_updown``, resampling convolutions (``op`` / ``conv``);
* ``out.{0,2}`` — the output GroupNorm and convolution.

The numerics follow the published network: GroupNorm (32 groups, eps 1e-5) always computed in
float32, SiLU activations, FiLM-like "scale-shift" conditioning, average-pool / nearest-neighbour
resampling inside residual blocks, the [cos | sin] timestep embedding with max period 10000, and
multi-head attention whose q/k/v are split per head first (the "legacy" order) unless
``use_new_attention_order``. Attention runs through ``scaled_dot_product_attention``; that is the
same softmax(qᵀk/√d)v as the reference's einsums, equal to float rounding.

In ``float16`` mode (``convert_to_fp16``) the torso (input, middle and output blocks) runs in
half precision with only its convolution weights converted, as the official ``convert_to_fp16``
does: norms still compute in float32 and the timestep MLP, the embedding projections and the
output head stay float32.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

#: guided-diffusion's default channel multipliers per image size (``channel_mult=""``).
DEFAULT_CHANNEL_MULT: dict[int, tuple[float, ...]] = {
    512: (0.5, 1, 1, 2, 2, 4, 4),
    256: (1, 1, 2, 2, 4, 4),
    128: (1, 1, 2, 3, 4),
    64: (1, 2, 3, 4),
}


@dataclass(frozen=True)
class ADMUNetConfig:
    """Architecture hyper-parameters, named as guided-diffusion's ``UNetModel`` arguments.

    ``attention_resolutions`` are feature-map sizes (e.g. 32, 16, 8 — as in the command-line
    flag), not the downsampling factors ``UNetModel`` itself takes.
    """

    image_size: int = 256
    in_channels: int = 3
    model_channels: int = 256
    out_channels: int = 6
    num_res_blocks: int = 2
    attention_resolutions: tuple[int, ...] = (32, 16, 8)
    channel_mult: tuple[float, ...] = (1, 1, 2, 2, 4, 4)
    dropout: float = 0.0
    num_heads: int = 4
    num_head_channels: int = 64
    num_heads_upsample: int = -1
    use_scale_shift_norm: bool = True
    resblock_updown: bool = True
    use_new_attention_order: bool = False


def adm_timestep_embedding(t: Tensor, dim: int, max_period: float = 10000.0) -> Tensor:
    """Sinusoidal embedding of (B,) timesteps as guided-diffusion builds it.

    Unlike the DDPM embedding ([sin | cos], frequencies 10000^(-k/(d/2-1))) this one is
    [cos | sin] with frequencies max_period^(-k/(d/2)); a checkpoint only works with its own.
    """
    half = dim // 2
    freqs = torch.exp(
        -math.log(max_period) * torch.arange(half, dtype=torch.float32, device=t.device) / half
    )
    args = t.float()[:, None] * freqs[None, :]
    emb = torch.cat([torch.cos(args), torch.sin(args)], dim=1)
    if dim % 2 == 1:
        emb = F.pad(emb, (0, 1))
    return emb


class GroupNorm32(nn.GroupNorm):
    """GroupNorm with 32 groups that computes in float32 and returns the input's dtype.

    Statistics over a half-precision torso would lose too much precision; the published model was
    trained with float32 norms, so they stay float32 even after ``convert_to_fp16``.
    """

    def __init__(self, channels: int) -> None:
        super().__init__(num_groups=32, num_channels=channels)

    def forward(self, x: Tensor) -> Tensor:
        weight = None if self.weight is None else self.weight.float()
        bias = None if self.bias is None else self.bias.float()
        return F.group_norm(x.float(), self.num_groups, weight, bias, self.eps).to(x.dtype)


def _upsample(x: Tensor) -> Tensor:
    return F.interpolate(x, scale_factor=2.0, mode="nearest")


def _downsample(x: Tensor) -> Tensor:
    return F.avg_pool2d(x, kernel_size=2, stride=2)


class ResBlock(nn.Module):
    """Residual block conditioned on the timestep embedding, optionally resampling.

    With ``up``/``down`` the block resamples both its branch (between the first norm+SiLU and the
    first convolution) and its identity path, parameter-free, as ``resblock_updown`` prescribes.
    """

    def __init__(
        self,
        channels: int,
        emb_channels: int,
        out_channels: int,
        dropout: float,
        use_scale_shift_norm: bool,
        up: bool = False,
        down: bool = False,
    ) -> None:
        super().__init__()
        if up and down:
            raise ValueError("a ResBlock cannot both upsample and downsample")
        self.use_scale_shift_norm = use_scale_shift_norm
        self.resample = _upsample if up else _downsample if down else None
        self.in_layers = nn.Sequential(
            GroupNorm32(channels),
            nn.SiLU(),
            nn.Conv2d(channels, out_channels, 3, padding=1),
        )
        self.emb_layers = nn.Sequential(
            nn.SiLU(),
            nn.Linear(emb_channels, 2 * out_channels if use_scale_shift_norm else out_channels),
        )
        self.out_layers = nn.Sequential(
            GroupNorm32(out_channels),
            nn.SiLU(),
            nn.Dropout(p=dropout),
            nn.Conv2d(out_channels, out_channels, 3, padding=1),
        )
        self.skip_connection: nn.Module = (
            nn.Identity() if out_channels == channels else nn.Conv2d(channels, out_channels, 1)
        )

    def forward(self, x: Tensor, emb: Tensor) -> Tensor:
        norm, act, conv = self.in_layers
        h = act(norm(x))
        if self.resample is not None:
            h, x = self.resample(h), self.resample(x)
        h = conv(h)
        emb_out = self.emb_layers(emb).to(h.dtype)[:, :, None, None]
        out_norm, out_rest = self.out_layers[0], self.out_layers[1:]
        if self.use_scale_shift_norm:
            scale, shift = emb_out.chunk(2, dim=1)
            h = out_rest(out_norm(h) * (1 + scale) + shift)
        else:
            h = self.out_layers(h + emb_out)
        return self.skip_connection(x) + h


class AttentionBlock(nn.Module):
    """Multi-head self-attention over all spatial positions, with a residual connection.

    ``qkv`` produces 3·C channels. In the legacy order (the published checkpoints) they are grouped
    per head as [q_h, k_h, v_h]; in the new order as [q | k | v] with heads inside each.
    """

    def __init__(self, channels: int, num_heads: int, use_new_attention_order: bool) -> None:
        super().__init__()
        if num_heads < 1 or channels % num_heads != 0:
            raise ValueError(f"{channels} attention channels do not split into {num_heads} heads")
        self.num_heads = num_heads
        self.use_new_attention_order = use_new_attention_order
        self.norm = GroupNorm32(channels)
        self.qkv = nn.Conv1d(channels, 3 * channels, 1)
        self.proj_out = nn.Conv1d(channels, channels, 1)

    def forward(self, x: Tensor) -> Tensor:
        b, c, *spatial = x.shape
        x = x.reshape(b, c, -1)
        length = x.shape[-1]
        qkv = self.qkv(self.norm(x))
        head_ch = c // self.num_heads
        if self.use_new_attention_order:
            q, k, v = qkv.reshape(b, 3, self.num_heads, head_ch, length).unbind(1)
        else:
            q, k, v = qkv.reshape(b, self.num_heads, 3, head_ch, length).unbind(2)
        # (B, heads, T, d) on each side; default scale 1/√d as in the reference.
        a = F.scaled_dot_product_attention(
            q.transpose(-1, -2), k.transpose(-1, -2), v.transpose(-1, -2)
        )
        h = self.proj_out(a.transpose(-1, -2).reshape(b, c, length))
        return (x + h).reshape(b, c, *spatial)


class Downsample(nn.Module):
    """Strided 3x3 convolution (``resblock_updown=False``); its parameter is named ``op``."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.op = nn.Conv2d(channels, channels, 3, stride=2, padding=1)

    def forward(self, x: Tensor) -> Tensor:
        return self.op(x)


class Upsample(nn.Module):
    """Nearest-neighbour 2x upsampling followed by a 3x3 convolution (``resblock_updown=False``)."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(channels, channels, 3, padding=1)

    def forward(self, x: Tensor) -> Tensor:
        return self.conv(_upsample(x))


class EmbedSequential(nn.Sequential):
    """A sequence whose residual blocks also receive the timestep embedding.

    It is an ``nn.Sequential`` so that children are named ``0, 1, 2`` as in the checkpoints.
    """

    def forward(self, x: Tensor, emb: Tensor) -> Tensor:  # type: ignore[override]
        for layer in self:
            x = layer(x, emb) if isinstance(layer, ResBlock) else layer(x)
        return x


def _zero_(module: nn.Module) -> nn.Module:
    """Zero a module's parameters, as guided-diffusion initialises its residual outputs.

    Only an untrained model is affected (it then predicts ε = 0); loaded weights overwrite it.
    """
    with torch.no_grad():
        for p in module.parameters():
            p.zero_()
    return module


class ADMUNet(nn.Module):
    """ε (and learned-variance) prediction UNet; ``forward(x, t)`` with x (B, C, S, S), t (B,).

    Returns (B, out_channels, S, S) in the output head's dtype (float32 unless the whole module was
    cast). For the published models ``out_channels`` is 6: ε in the first 3, the variance
    interpolation in the last 3.
    """

    def __init__(self, config: ADMUNetConfig) -> None:
        super().__init__()
        _validate(config)
        self.config = config
        self.image_size = config.image_size
        self.in_channels = config.in_channels
        self.model_channels = mc = config.model_channels
        self.out_channels = config.out_channels
        emb_dim = 4 * mc
        mult = config.channel_mult
        attn_res = set(config.attention_resolutions)
        heads_up = (
            config.num_heads if config.num_heads_upsample == -1 else config.num_heads_upsample
        )

        def heads(ch: int, num_heads: int) -> int:
            if config.num_head_channels == -1:
                return num_heads
            if ch % config.num_head_channels != 0:
                raise ValueError(
                    f"{ch} attention channels are not divisible by "
                    f"num_head_channels={config.num_head_channels}"
                )
            return ch // config.num_head_channels

        def res_block(ch_in: int, ch_out: int, up: bool = False, down: bool = False) -> ResBlock:
            return ResBlock(
                ch_in,
                emb_dim,
                ch_out,
                config.dropout,
                config.use_scale_shift_norm,
                up=up,
                down=down,
            )

        def attention(ch: int, num_heads: int) -> AttentionBlock:
            return AttentionBlock(ch, heads(ch, num_heads), config.use_new_attention_order)

        self.time_embed = nn.Sequential(
            nn.Linear(mc, emb_dim), nn.SiLU(), nn.Linear(emb_dim, emb_dim)
        )

        ch = first_ch = int(mult[0] * mc)
        self.input_blocks = nn.ModuleList(
            [EmbedSequential(nn.Conv2d(config.in_channels, ch, 3, padding=1))]
        )
        skip_channels = [ch]
        res = config.image_size
        for level, m in enumerate(mult):
            for _ in range(config.num_res_blocks):
                layers: list[nn.Module] = [res_block(ch, int(m * mc))]
                ch = int(m * mc)
                if res in attn_res:
                    layers.append(attention(ch, config.num_heads))
                self.input_blocks.append(EmbedSequential(*layers))
                skip_channels.append(ch)
            if level != len(mult) - 1:
                down = res_block(ch, ch, down=True) if config.resblock_updown else Downsample(ch)
                self.input_blocks.append(EmbedSequential(down))
                skip_channels.append(ch)
                res //= 2

        self.middle_block = EmbedSequential(
            res_block(ch, ch), attention(ch, config.num_heads), res_block(ch, ch)
        )

        self.output_blocks = nn.ModuleList()
        for level, m in reversed(list(enumerate(mult))):
            for i in range(config.num_res_blocks + 1):
                layers = [res_block(ch + skip_channels.pop(), int(m * mc))]
                ch = int(m * mc)
                if res in attn_res:
                    layers.append(attention(ch, heads_up))
                if level != 0 and i == config.num_res_blocks:
                    layers.append(
                        res_block(ch, ch, up=True) if config.resblock_updown else Upsample(ch)
                    )
                    res *= 2
                self.output_blocks.append(EmbedSequential(*layers))

        self.out = nn.Sequential(
            GroupNorm32(ch), nn.SiLU(), nn.Conv2d(first_ch, config.out_channels, 3, padding=1)
        )

        for module in self.modules():
            if isinstance(module, ResBlock):
                _zero_(module.out_layers[3])
            elif isinstance(module, AttentionBlock):
                _zero_(module.proj_out)
        _zero_(self.out[2])

    def _torso_convs(self) -> Iterator[nn.Module]:
        for part in (self.input_blocks, self.middle_block, self.output_blocks):
            for module in part.modules():
                if isinstance(module, nn.Conv1d | nn.Conv2d):
                    yield module

    def convert_to_fp16(self) -> ADMUNet:
        """Run the torso in float16, converting only its convolutions (as the official code does).

        Call it after loading weights with ``assign=True``, which replaces parameters by the
        state dict's (float32) tensors. Returns ``self``.
        """
        for conv in self._torso_convs():
            conv.half()
        return self

    def convert_to_fp32(self) -> ADMUNet:
        """Undo :meth:`convert_to_fp16`. Returns ``self``."""
        for conv in self._torso_convs():
            conv.float()
        return self

    @property
    def torso_dtype(self) -> torch.dtype:
        """The dtype the input/middle/output blocks compute in: that of their convolutions."""
        return self.input_blocks[0][0].weight.dtype

    @property
    def use_fp16(self) -> bool:
        return self.torso_dtype == torch.float16

    def forward(self, x: Tensor, t: Tensor) -> Tensor:
        size = self.image_size
        if x.ndim != 4 or x.shape[1] != self.in_channels or tuple(x.shape[-2:]) != (size, size):
            raise ValueError(
                f"this ADM UNet takes (B, {self.in_channels}, {size}, {size}) images, "
                f"got {tuple(x.shape)}"
            )
        if t.ndim == 0:
            t = t.expand(x.shape[0])
        if tuple(t.shape) != (x.shape[0],):
            raise ValueError(f"t must have shape ({x.shape[0]},), got {tuple(t.shape)}")
        emb_in = adm_timestep_embedding(t, self.model_channels)
        emb = self.time_embed(emb_in.to(self.time_embed[0].weight.dtype))
        h = x.to(self.torso_dtype)
        skips: list[Tensor] = []
        for block in self.input_blocks:
            h = block(h, emb)
            skips.append(h)
        h = self.middle_block(h, emb)
        for block in self.output_blocks:
            h = block(torch.cat([h, skips.pop()], dim=1), emb)
        return self.out(h.to(self.out[2].weight.dtype))


def _validate(config: ADMUNetConfig) -> None:
    """Reject configurations the architecture cannot realise, with a message saying why."""
    levels = len(config.channel_mult)
    if levels == 0:
        raise ValueError("channel_mult must not be empty")
    if config.image_size <= 0 or config.image_size % 2 ** (levels - 1) != 0:
        raise ValueError(
            f"image_size {config.image_size} is not divisible by 2^{levels - 1}, "
            f"as {levels} channel_mult levels require"
        )
    reachable = {config.image_size // 2**k for k in range(levels)}
    unreachable = sorted(set(config.attention_resolutions) - reachable)
    if unreachable:
        raise ValueError(
            f"attention_resolutions {unreachable} are not feature-map sizes of this UNet "
            f"(those are {sorted(reachable, reverse=True)})"
        )
    if config.num_head_channels == -1 and config.num_heads < 1:
        raise ValueError("num_heads must be positive when num_head_channels is -1")


def adm_unet(
    image_size: int = 256,
    in_channels: int = 3,
    model_channels: int = 256,
    out_channels: int = 6,
    num_res_blocks: int = 2,
    attention_resolutions: Sequence[int] = (32, 16, 8),
    channel_mult: Sequence[float] | None = None,
    dropout: float = 0.0,
    num_heads: int = 4,
    num_head_channels: int = 64,
    num_heads_upsample: int = -1,
    use_scale_shift_norm: bool = True,
    resblock_updown: bool = True,
    use_new_attention_order: bool = False,
    use_fp16: bool = False,
    class_cond: bool = False,
    num_classes: int | None = None,
) -> ADMUNet:
    """Build an :class:`ADMUNet` from plain arguments (as a Hydra config gives them).

    The defaults are the unconditional 256x256 ImageNet model. ``channel_mult=None`` picks
    guided-diffusion's default for ``image_size`` (64, 128, 256 or 512); ``use_fp16`` converts the
    torso to float16 right away (see :meth:`ADMUNet.convert_to_fp16`). Class-conditional models
    are not supported: ``class_cond``/``num_classes`` exist only to refuse them loudly rather than
    to build a network whose ``label_emb`` weights would be missing.
    """
    if class_cond or num_classes is not None:
        raise NotImplementedError("class-conditional ADM models are not supported")
    image_size = int(image_size)
    if channel_mult is None:
        if image_size not in DEFAULT_CHANNEL_MULT:
            raise ValueError(
                f"no default channel_mult for image_size {image_size}; guided-diffusion defines "
                f"one for {sorted(DEFAULT_CHANNEL_MULT)} — pass channel_mult explicitly"
            )
        mult = DEFAULT_CHANNEL_MULT[image_size]
    else:
        mult = tuple(float(m) if float(m) != int(m) else int(m) for m in channel_mult)
    if isinstance(attention_resolutions, str):
        attention_resolutions = [int(r) for r in attention_resolutions.split(",")]
    model = ADMUNet(
        ADMUNetConfig(
            image_size=image_size,
            in_channels=int(in_channels),
            model_channels=int(model_channels),
            out_channels=int(out_channels),
            num_res_blocks=int(num_res_blocks),
            attention_resolutions=tuple(int(r) for r in attention_resolutions),
            channel_mult=mult,
            dropout=float(dropout),
            num_heads=int(num_heads),
            num_head_channels=int(num_head_channels),
            num_heads_upsample=int(num_heads_upsample),
            use_scale_shift_norm=bool(use_scale_shift_norm),
            resblock_updown=bool(resblock_updown),
            use_new_attention_order=bool(use_new_attention_order),
        )
    )
    if use_fp16:
        model.convert_to_fp16()
    return model
