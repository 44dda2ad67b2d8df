"""A small time-conditioned classifier f(x, c_noise) -> logits (B, num_classes) for p(y | x_t, t): the noisy
classifier of classifier guidance (Dhariwal & Nichol 2021 §4, there the U-Net's encoder half). Images (B, C, H, W):
FiLM residual blocks (the U-Net's) with a stride-2 convolution after each level, global average pooling, a linear
head. Vectors (B, D): the MLP's FiLM residual blocks and a linear head. The time enters as a sinusoidal embedding of
c_noise (see kuosan.guidance.classifier.NoisyClassifier for what c_noise and the input scaling are)."""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any

import torch.nn.functional as F
from torch import Tensor, nn

from .mlp import MLPBlock
from .unet import ResBlock, group_norm, timestep_embedding


@dataclass(frozen=True)
class ClassifierConfig:
    shape: tuple[int, ...]  # one example: (C, H, W) images or (D,) vectors
    num_classes: int
    width: int = 32  # first level's channels (images, doubled per level up to 4x) or the hidden width (vectors)
    depth: int = 2  # image levels (each halves H, W) or residual blocks (vectors)
    emb_dim: int = 64
    dropout: float = 0.0

    def validate(self) -> "ClassifierConfig":
        if len(self.shape) not in (1, 3) or not all(isinstance(d, int) and d > 0 for d in self.shape):
            raise ValueError(f"a classifier needs examples of shape (C, H, W) or (D,), got {self.shape!r}")
        if self.num_classes < 2:
            raise ValueError(f"a classifier needs at least 2 classes, got {self.num_classes}")
        for name in ("width", "depth", "emb_dim"):
            if not (isinstance(getattr(self, name), int) and getattr(self, name) > 0):
                raise ValueError(f"classifier {name} must be a positive integer, got {getattr(self, name)!r}")
        if not 0 <= self.dropout < 1:
            raise ValueError(f"classifier dropout must be in [0, 1), got {self.dropout!r}")
        return self

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "shape": list(self.shape)}

    @staticmethod
    def from_dict(d: dict[str, Any]) -> "ClassifierConfig":
        return ClassifierConfig(**{**d, "shape": tuple(d["shape"])}).validate()


class ClassifierNet(nn.Module):
    """(x (B, *shape), c_noise (B,)) -> logits (B, num_classes)."""

    def __init__(self, cfg: ClassifierConfig):
        super().__init__()
        self.cfg = cfg.validate()
        e = cfg.emb_dim
        self.time_mlp = nn.Sequential(nn.Linear(e, e), nn.SiLU(), nn.Linear(e, e), nn.SiLU())
        self.image = len(cfg.shape) == 3
        if self.image:
            c = cfg.width
            self.stem = nn.Conv2d(cfg.shape[0], c, 3, padding=1)
            self.blocks = nn.ModuleList()
            self.downs = nn.ModuleList()
            for i in range(cfg.depth):
                out = cfg.width * min(2**i, 4)
                self.blocks.append(ResBlock(c, out, e, cfg.dropout))
                self.downs.append(nn.Conv2d(out, out, 3, stride=2, padding=1))
                c = out
            self.head = nn.Sequential(group_norm(c), nn.SiLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
                                      nn.Linear(c, cfg.num_classes))
        else:
            self.stem = nn.Linear(math.prod(cfg.shape), cfg.width)
            self.blocks = nn.ModuleList(MLPBlock(cfg.width, e, cfg.dropout) for _ in range(cfg.depth))
            self.head = nn.Sequential(nn.LayerNorm(cfg.width), nn.SiLU(), nn.Linear(cfg.width, cfg.num_classes))

    def forward(self, x: Tensor, c_noise: Tensor) -> Tensor:
        emb = self.time_mlp(timestep_embedding(c_noise, self.cfg.emb_dim))  # (B, emb_dim)
        if not self.image:
            h = self.stem(x.flatten(1))
            for blk in self.blocks:
                h = blk(h, emb)
            return self.head(h)
        h = self.stem(x)
        for blk, down in zip(self.blocks, self.downs):
            h = down(F.silu(blk(h, emb)))  # (B, c, H/2^i, W/2^i)
        return self.head(h)
