"""A DDPM U-Net (Ho et al. 2020, App. B; Nichol & Dhariwal 2021): residual blocks with time injection,
self-attention at chosen resolutions, optional class embedding with a null class for guidance.

Input x: (B, C, H, W) any H, W (odd sizes are handled); t: (B,) float time (any scale, embedded
sinusoidally); y: (B,) long class labels in [0, num_classes], where num_classes is the null class.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn


def norm_groups(c: int) -> int:
    """Groups for GroupNorm: up to 32, dividing c, at least 4 channels a group where c allows.

    GroupNorm(32, c) fails for c < 32 or c not a multiple of 32 (a common slip in U-Net sketches)."""
    for g in (32, 16, 8, 4, 2):
        if c % g == 0 and c // g >= 4:
            return g
    return 1


def group_norm(c: int) -> nn.GroupNorm:
    return nn.GroupNorm(norm_groups(c), c)


def timestep_embedding(t: Tensor, dim: int, max_period: float = 10000.0) -> Tensor:
    """Transformer sinusoidal embedding (Vaswani et al. 2017) of t: (B,) -> (B, dim)."""
    half = dim // 2
    freqs = torch.exp(-math.log(max_period) * torch.arange(half, device=t.device, dtype=torch.float32) / half)
    args = t.float()[:, None] * freqs[None]
    emb = torch.cat([torch.cos(args), torch.sin(args)], dim=-1)
    return F.pad(emb, (0, dim % 2))


class ResBlock(nn.Module):
    """GN-SiLU-conv, + time (scale, shift), GN-SiLU-dropout-conv, with a residual 1x1 projection."""

    def __init__(self, c_in: int, c_out: int, emb_dim: int, dropout: float):
        super().__init__()
        self.norm1, self.conv1 = group_norm(c_in), nn.Conv2d(c_in, c_out, 3, padding=1)
        self.emb = nn.Linear(emb_dim, 2 * c_out)  # FiLM: scale and shift (improved DDPM's AdaGN)
        self.norm2, self.drop = group_norm(c_out), nn.Dropout(dropout)
        self.conv2 = nn.Conv2d(c_out, c_out, 3, padding=1)
        nn.init.zeros_(self.conv2.weight)  # each block starts as the identity
        nn.init.zeros_(self.conv2.bias)
        self.skip = nn.Conv2d(c_in, c_out, 1) if c_in != c_out else nn.Identity()

    def forward(self, x: Tensor, emb: Tensor) -> Tensor:
        h = self.conv1(F.silu(self.norm1(x)))
        scale, shift = self.emb(F.silu(emb))[:, :, None, None].chunk(2, dim=1)
        h = self.norm2(h) * (1 + scale) + shift
        h = self.conv2(self.drop(F.silu(h)))
        return self.skip(x) + h


class Upsample(nn.Module):
    """Nearest upsampling to the skip connection's size (x2, or odd sizes), then a 3x3 conv."""

    def __init__(self, c: int):
        super().__init__()
        self.conv = nn.Conv2d(c, c, 3, padding=1)

    def forward(self, x: Tensor, size: torch.Size) -> Tensor:
        return self.conv(F.interpolate(x, size=size, mode="nearest"))


class Attention(nn.Module):
    """Multi-head self-attention over the H*W positions, via scaled_dot_product_attention."""

    def __init__(self, c: int, head_dim: int = 32):
        super().__init__()
        self.heads = max(1, c // head_dim)
        self.norm, self.qkv, self.out = group_norm(c), nn.Conv2d(c, 3 * c, 1), nn.Conv2d(c, c, 1)
        nn.init.zeros_(self.out.weight)
        nn.init.zeros_(self.out.bias)

    def forward(self, x: Tensor) -> Tensor:
        B, C, H, W = x.shape
        qkv = self.qkv(self.norm(x)).reshape(B, 3, self.heads, C // self.heads, H * W)
        qkv = qkv.transpose(-1, -2)  # (B, 3, heads, HW, C/heads)
        # CUDA's flash and memory-efficient kernels need the head dim contiguous (strided q, k, v take the math path,
        # in fp32). On the CPU (2 threads, forward + backward, B = 128, 2 heads of 32 at 4x4) the flash kernel pays
        # in fp32 (2.2 against 5.2 ms) but its bf16 backward is 6x slower than the math path on strided views (10.4
        # against 1.7 ms): there bf16 stays strided
        if qkv.is_cuda or qkv.dtype == torch.float32:
            qkv = qkv.contiguous()
        q, k, v = qkv.unbind(1)  # each (B, heads, HW, C/heads)
        h = F.scaled_dot_product_attention(q, k, v)
        return x + self.out(h.transpose(-1, -2).reshape(B, C, H, W))


@dataclass
class UNetConfig:
    in_channels: int = 1
    channels: int = 64
    channel_mult: tuple[int, ...] = (1, 2, 2)
    num_res_blocks: int = 2
    attn_resolutions: tuple[int, ...] = (7,)
    dropout: float = 0.1
    num_classes: int = 0  # 0: unconditional; else labels 0..num_classes-1 and num_classes = null
    head_dim: int = 32
    out_channels: int | None = None  # default in_channels; 2x for a learned variance
    image_size: int = 28  # to know where attention sits


class UNet(nn.Module):
    """U-Net eps/x0/v network; see module docstring for shapes."""

    def __init__(self, cfg: UNetConfig):
        super().__init__()
        self.cfg = cfg
        ch, emb_dim = cfg.channels, 4 * cfg.channels
        self.time_mlp = nn.Sequential(nn.Linear(ch, emb_dim), nn.SiLU(), nn.Linear(emb_dim, emb_dim))
        self.class_emb = nn.Embedding(cfg.num_classes + 1, emb_dim) if cfg.num_classes > 0 else None
        self.conv_in = nn.Conv2d(cfg.in_channels, ch, 3, padding=1)
        res, chans, level_res = cfg.image_size, [ch], []
        self.down = nn.ModuleList()
        c = ch
        for level, mult in enumerate(cfg.channel_mult):
            level_res.append(res)
            for _ in range(cfg.num_res_blocks):
                blk = nn.ModuleList([ResBlock(c, ch * mult, emb_dim, cfg.dropout)])
                c = ch * mult
                if res in cfg.attn_resolutions:
                    blk.append(Attention(c, cfg.head_dim))
                self.down.append(blk)
                chans.append(c)
            if level < len(cfg.channel_mult) - 1:
                self.down.append(nn.ModuleList([nn.Conv2d(c, c, 3, stride=2, padding=1)]))
                chans.append(c)
                res = (res + 1) // 2
        self.mid = nn.ModuleList([ResBlock(c, c, emb_dim, cfg.dropout), Attention(c, cfg.head_dim),
                                  ResBlock(c, c, emb_dim, cfg.dropout)])
        self.up = nn.ModuleList()
        for level, mult in reversed(list(enumerate(cfg.channel_mult))):
            for i in range(cfg.num_res_blocks + 1):
                blk = nn.ModuleList([ResBlock(c + chans.pop(), ch * mult, emb_dim, cfg.dropout)])
                c = ch * mult
                if level_res[level] in cfg.attn_resolutions:
                    blk.append(Attention(c, cfg.head_dim))
                if level > 0 and i == cfg.num_res_blocks:
                    blk.append(Upsample(c))
                self.up.append(blk)
        self.norm_out = group_norm(c)
        self.conv_out = nn.Conv2d(c, cfg.out_channels or cfg.in_channels, 3, padding=1)
        nn.init.zeros_(self.conv_out.weight)
        nn.init.zeros_(self.conv_out.bias)

    def forward(self, x: Tensor, t: Tensor, y: Tensor | None = None) -> Tensor:
        emb = self.time_mlp(timestep_embedding(t, self.cfg.channels))
        if self.class_emb is not None:
            if y is None:  # unconditional call of a conditional model: the null class
                y = torch.full((x.shape[0],), self.cfg.num_classes, device=x.device, dtype=torch.long)
            emb = emb + self.class_emb(y)
        h = self.conv_in(x)
        hs = [h]
        for blk in self.down:
            for layer in blk:
                h = layer(h, emb) if isinstance(layer, ResBlock) else layer(h)
            hs.append(h)
        for layer in self.mid:
            h = layer(h, emb) if isinstance(layer, ResBlock) else layer(h)
        for blk in self.up:
            h = torch.cat([h, hs.pop()], dim=1)
            for layer in blk:
                if isinstance(layer, ResBlock):
                    h = layer(h, emb)
                elif isinstance(layer, Upsample):
                    h = layer(h, hs[-1].shape[-2:])  # the next skip's size
                else:
                    h = layer(h)
        return self.conv_out(F.silu(self.norm_out(h)))
