"""An MLP denoiser network for vector data (2-D toys, 1-D curves): x (B, D), t (B,) -> (B, D)."""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .unet import timestep_embedding


@dataclass
class MLPConfig:
    dim: int = 2
    hidden: int = 256
    depth: int = 4
    emb_dim: int = 64
    dropout: float = 0.0
    num_classes: int = 0  # as in UNetConfig: num_classes is the null label
    out_dim: int | None = None


class MLPBlock(nn.Module):
    """Pre-LayerNorm residual block with FiLM time conditioning."""

    def __init__(self, hidden: int, emb_dim: int, dropout: float):
        super().__init__()
        self.norm, self.lin1, self.lin2 = nn.LayerNorm(hidden), nn.Linear(hidden, hidden), nn.Linear(hidden, hidden)
        self.emb, self.drop = nn.Linear(emb_dim, 2 * hidden), nn.Dropout(dropout)
        nn.init.zeros_(self.lin2.weight)
        nn.init.zeros_(self.lin2.bias)

    def forward(self, h: Tensor, emb: Tensor) -> Tensor:
        scale, shift = self.emb(emb).chunk(2, dim=-1)
        u = F.silu(self.lin1(self.norm(h) * (1 + scale) + shift))
        return h + self.lin2(self.drop(u))


class MLP(nn.Module):
    def __init__(self, cfg: MLPConfig):
        super().__init__()
        self.cfg = cfg
        self.time_mlp = nn.Sequential(nn.Linear(cfg.emb_dim, cfg.emb_dim), nn.SiLU(),
                                      nn.Linear(cfg.emb_dim, cfg.emb_dim), nn.SiLU())
        self.class_emb = nn.Embedding(cfg.num_classes + 1, cfg.emb_dim) if cfg.num_classes > 0 else None
        self.inp = nn.Linear(cfg.dim, cfg.hidden)
        self.blocks = nn.ModuleList(MLPBlock(cfg.hidden, cfg.emb_dim, cfg.dropout) for _ in range(cfg.depth))
        self.out = nn.Sequential(nn.LayerNorm(cfg.hidden), nn.SiLU(), nn.Linear(cfg.hidden, cfg.out_dim or cfg.dim))

    def forward(self, x: Tensor, t: Tensor, y: Tensor | None = None) -> Tensor:
        emb = self.time_mlp(timestep_embedding(t, self.cfg.emb_dim))
        if self.class_emb is not None:
            if y is None:
                y = torch.full((x.shape[0],), self.cfg.num_classes, device=x.device, dtype=torch.long)
            emb = emb + self.class_emb(y)
        h = self.inp(x)
        for blk in self.blocks:
            h = blk(h, emb)
        return self.out(h)
