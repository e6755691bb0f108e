"""The DDPM UNet of Ho et al. (2020) in the PyTorch layout of pesser's conversion.

This is the network DDRM calls ``model.type: simple`` (LSUN bedroom/cat/church, CIFAR-10, and
SDEdit's CelebA-HQ). Module and parameter names follow the published state dicts exactly, so
those files load with ``strict=True``: ``temb.dense.{0,1}``, ``conv_in``,
``down.{i}.block.{j}.{norm1,conv1,temb_proj,norm2,conv2,nin_shortcut}``, ``down.{i}.attn.{j}``,
``down.{i}.downsample.conv``, ``mid.{block_1,attn_1,block_2}``, ``up.{i}.block.{j}``,
``up.{i}.upsample.conv``, ``norm_out``, ``conv_out``; attention blocks hold ``norm, q, k, v,
proj_out``.

The bundled ``tiny`` model uses the same class with a small configuration.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import Tensor, nn


@dataclass(frozen=True)
class DDPMUNetConfig:
    """Architecture hyper-parameters, named as in DDRM's ``model:`` config section."""

    resolution: int = 256
    in_channels: int = 3
    out_ch: int = 3
    ch: int = 128
    ch_mult: tuple[int, ...] = (1, 1, 2, 2, 4, 4)
    num_res_blocks: int = 2
    attn_resolutions: tuple[int, ...] = (16,)
    dropout: float = 0.0
    resamp_with_conv: bool = True
    extra: dict[str, object] = field(default_factory=dict)


def timestep_embedding(t: Tensor, dim: int) -> Tensor:
    """Sinusoidal embedding of (B,) timesteps: [sin | cos] with frequencies 10000^(-k/(d/2-1))."""
    half = dim // 2
    freqs = torch.exp(
        torch.arange(half, dtype=torch.float32, device=t.device) * -(math.log(10000) / (half - 1))
    )
    args = t.float()[:, None] * freqs[None, :]
    emb = torch.cat([torch.sin(args), torch.cos(args)], dim=1)
    if dim % 2 == 1:
        emb = F.pad(emb, (0, 1))
    return emb


def group_norm(channels: int) -> nn.GroupNorm:
    return nn.GroupNorm(num_groups=32, num_channels=channels, eps=1e-6, affine=True)


class _Resample(nn.Module):
    """A resolution change with an optional 3x3 convolution ``conv`` (the checkpoints' key)."""

    STRIDE, PADDING = 1, 1

    def __init__(self, channels: int, with_conv: bool) -> None:
        super().__init__()
        self.with_conv = with_conv
        if with_conv:
            self.conv = nn.Conv2d(channels, channels, 3, stride=self.STRIDE, padding=self.PADDING)


class Upsample(_Resample):
    def forward(self, x: Tensor) -> Tensor:
        x = F.interpolate(x, scale_factor=2.0, mode="nearest")
        return self.conv(x) if self.with_conv else x


class Downsample(_Resample):
    STRIDE, PADDING = 2, 0

    def forward(self, x: Tensor) -> Tensor:
        if self.with_conv:
            # TensorFlow's "SAME" padding for a stride-2 conv pads right/bottom only.
            return self.conv(F.pad(x, (0, 1, 0, 1)))
        return F.avg_pool2d(x, kernel_size=2, stride=2)


class ResnetBlock(nn.Module):
    def __init__(self, in_channels: int, out_channels: int, temb_channels: int, dropout: float):
        super().__init__()
        self.in_channels, self.out_channels = in_channels, out_channels
        self.norm1 = group_norm(in_channels)
        self.conv1 = nn.Conv2d(in_channels, out_channels, 3, stride=1, padding=1)
        self.temb_proj = nn.Linear(temb_channels, out_channels)
        self.norm2 = group_norm(out_channels)
        self.dropout = nn.Dropout(dropout)
        self.conv2 = nn.Conv2d(out_channels, out_channels, 3, stride=1, padding=1)
        if in_channels != out_channels:
            self.nin_shortcut = nn.Conv2d(in_channels, out_channels, 1, stride=1, padding=0)

    def forward(self, x: Tensor, temb: Tensor) -> Tensor:
        h = self.conv1(F.silu(self.norm1(x)))
        h = h + self.temb_proj(F.silu(temb))[:, :, None, None]
        h = self.conv2(self.dropout(F.silu(self.norm2(h))))
        if self.in_channels != self.out_channels:
            x = self.nin_shortcut(x)
        return x + h


class AttnBlock(nn.Module):
    """Single-head self-attention over all positions, through scaled_dot_product_attention."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.norm = group_norm(channels)
        self.q = nn.Conv2d(channels, channels, 1)
        self.k = nn.Conv2d(channels, channels, 1)
        self.v = nn.Conv2d(channels, channels, 1)
        self.proj_out = nn.Conv2d(channels, channels, 1)

    def forward(self, x: Tensor) -> Tensor:
        b, c, h, w = x.shape
        hn = self.norm(x)
        q, k, v = (m(hn).reshape(b, 1, c, h * w).transpose(2, 3) for m in (self.q, self.k, self.v))
        out = F.scaled_dot_product_attention(q, k, v)  # softmax(q kᵀ / √c) v
        out = out.transpose(2, 3).reshape(b, c, h, w)
        return x + self.proj_out(out)


class DDPMUNet(nn.Module):
    """ε-prediction UNet; ``forward(x, t)`` with x (B, C, R, R) and t a (B,) float tensor."""

    def __init__(self, config: DDPMUNetConfig) -> None:
        super().__init__()
        self.config = config
        ch, mult = config.ch, tuple(config.ch_mult)
        self.ch = ch
        self.temb_ch = ch * 4
        self.num_resolutions = len(mult)
        self.num_res_blocks = config.num_res_blocks
        self.resolution = config.resolution

        self.temb = nn.Module()
        self.temb.dense = nn.ModuleList(
            [nn.Linear(ch, self.temb_ch), nn.Linear(self.temb_ch, self.temb_ch)]
        )
        self.conv_in = nn.Conv2d(config.in_channels, ch, 3, stride=1, padding=1)

        res = config.resolution
        in_mult = (1, *mult)
        self.down = nn.ModuleList()
        block_in = ch
        for level in range(self.num_resolutions):
            blocks, attns = nn.ModuleList(), nn.ModuleList()
            block_in, block_out = ch * in_mult[level], ch * mult[level]
            for _ in range(config.num_res_blocks):
                blocks.append(ResnetBlock(block_in, block_out, self.temb_ch, config.dropout))
                block_in = block_out
                if res in config.attn_resolutions:
                    attns.append(AttnBlock(block_in))
            stage = nn.Module()
            stage.block, stage.attn = blocks, attns
            if level != self.num_resolutions - 1:
                stage.downsample = Downsample(block_in, config.resamp_with_conv)
                res //= 2
            self.down.append(stage)

        self.mid = nn.Module()
        self.mid.block_1 = ResnetBlock(block_in, block_in, self.temb_ch, config.dropout)
        self.mid.attn_1 = AttnBlock(block_in)
        self.mid.block_2 = ResnetBlock(block_in, block_in, self.temb_ch, config.dropout)

        ups: list[nn.Module] = []
        for level in reversed(range(self.num_resolutions)):
            blocks, attns = nn.ModuleList(), nn.ModuleList()
            block_out = ch * mult[level]
            for i in range(config.num_res_blocks + 1):
                skip_in = ch * in_mult[level] if i == config.num_res_blocks else ch * mult[level]
                blocks.append(
                    ResnetBlock(block_in + skip_in, block_out, self.temb_ch, config.dropout)
                )
                block_in = block_out
                if res in config.attn_resolutions:
                    attns.append(AttnBlock(block_in))
            stage = nn.Module()
            stage.block, stage.attn = blocks, attns
            if level != 0:
                stage.upsample = Upsample(block_in, config.resamp_with_conv)
                res *= 2
            ups.insert(0, stage)
        self.up = nn.ModuleList(ups)

        self.norm_out = group_norm(block_in)
        self.conv_out = nn.Conv2d(block_in, config.out_ch, 3, stride=1, padding=1)

    def forward(self, x: Tensor, t: Tensor) -> Tensor:
        if x.shape[-2:] != (self.resolution, self.resolution):
            raise ValueError(
                f"this UNet takes {self.resolution}x{self.resolution} images, got {tuple(x.shape)}"
            )
        temb = self.temb.dense[1](F.silu(self.temb.dense[0](timestep_embedding(t, self.ch))))
        hs = [self.conv_in(x)]
        for level, stage in enumerate(self.down):
            for i in range(self.num_res_blocks):
                h = stage.block[i](hs[-1], temb)
                if len(stage.attn) > 0:
                    h = stage.attn[i](h)
                hs.append(h)
            if level != self.num_resolutions - 1:
                hs.append(stage.downsample(hs[-1]))
        h = self.mid.block_2(self.mid.attn_1(self.mid.block_1(hs[-1], temb)), temb)
        for level in reversed(range(self.num_resolutions)):
            stage = self.up[level]
            for i in range(self.num_res_blocks + 1):
                h = stage.block[i](torch.cat([h, hs.pop()], dim=1), temb)
                if len(stage.attn) > 0:
                    h = stage.attn[i](h)
            if level != 0:
                h = stage.upsample(h)
        return self.conv_out(F.silu(self.norm_out(h)))


def ddpm_unet(
    resolution: int,
    ch: int = 128,
    ch_mult: Sequence[int] = (1, 1, 2, 2, 4, 4),
    num_res_blocks: int = 2,
    attn_resolutions: Sequence[int] = (16,),
    dropout: float = 0.0,
    in_channels: int = 3,
    out_ch: int = 3,
    resamp_with_conv: bool = True,
) -> DDPMUNet:
    """Build a :class:`DDPMUNet` from plain arguments (as a Hydra config would give them)."""
    return DDPMUNet(
        DDPMUNetConfig(
            resolution=int(resolution),
            in_channels=int(in_channels),
            out_ch=int(out_ch),
            ch=int(ch),
            ch_mult=tuple(int(m) for m in ch_mult),
            num_res_blocks=int(num_res_blocks),
            attn_resolutions=tuple(int(r) for r in attn_resolutions),
            dropout=float(dropout),
            resamp_with_conv=bool(resamp_with_conv),
        )
    )
