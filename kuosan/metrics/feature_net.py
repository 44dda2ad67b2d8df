"""The feature network of kuosan.metrics.features: its config (all of which enters the cache key), a small
convolutional encoder, and the classifier / autoencoder / MLP-classifier heads that train it."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

import torch
from torch import Tensor, nn

FeatureKind = Literal["auto", "classifier", "autoencoder", "identity"]


@dataclass(frozen=True)
class FeatureConfig:
    """How the feature network is built and trained (all of it enters the cache key)."""

    kind: FeatureKind = "auto"  # auto: classifier (labelled images), autoencoder (unlabelled images), identity
    dim: int = 32  # penultimate / code width: the feature dimension d of FD, KID, PRDC
    width: int = 16  # channels of the first convolution (doubled per stride-2 level, at most 4x)
    steps: int = 800  # Adam steps
    batch_size: int = 128
    lr: float = 2e-3
    seed: int = 0

    def validate(self) -> "FeatureConfig":
        if self.kind not in ("auto", "classifier", "autoencoder", "identity"):
            raise ValueError(f"feature kind must be auto, classifier, autoencoder or identity, got {self.kind!r}")
        for name in ("dim", "width", "steps", "batch_size"):
            if not (isinstance(getattr(self, name), int) and getattr(self, name) > 0):
                raise ValueError(f"feature {name} must be a positive integer, got {getattr(self, name)!r}")
        if not (math.isfinite(self.lr) and self.lr > 0):
            raise ValueError(f"feature lr must be a finite number > 0, got {self.lr!r}")
        return self



class ConvEncoder(nn.Module):
    """(B, C, H, W) -> (B, dim): 3x3 convolutions, stride 2 until the map is at most 4x4, then a linear layer."""

    def __init__(self, shape: tuple[int, int, int], width: int, dim: int):
        super().__init__()
        c, h, w = shape
        layers: list[nn.Module] = [nn.Conv2d(c, width, 3, padding=1), nn.SiLU()]
        ch = width
        while max(h, w) > 4:
            out = min(2 * ch, 4 * width)
            layers += [nn.Conv2d(ch, out, 3, stride=2, padding=1), nn.SiLU()]
            ch, h, w = out, (h + 1) // 2, (w + 1) // 2
        self.conv = nn.Sequential(*layers)
        self.fc = nn.Linear(ch * h * w, dim)

    def forward(self, x: Tensor) -> Tensor:
        return self.fc(self.conv(x).flatten(1))


class FeatureNet(nn.Module):
    """Encoder + head: a classifier's logits (features after SiLU) or an autoencoder's decoder (features = code)."""

    def __init__(self, kind: Literal["classifier", "autoencoder", "mlp_classifier"], shape: tuple[int, ...],
                 num_classes: int, cfg: FeatureConfig):
        super().__init__()
        self.kind, self.shape = kind, tuple(shape)
        numel = math.prod(shape)
        if kind == "mlp_classifier":  # vectors (D,): only the class statistics use it
            self.encoder: nn.Module = nn.Sequential(nn.Linear(numel, 4 * cfg.width), nn.SiLU(),
                                                    nn.Linear(4 * cfg.width, cfg.dim))
        else:
            self.encoder = ConvEncoder(shape, cfg.width, cfg.dim)  # type: ignore[arg-type]
        if kind == "autoencoder":
            self.head: nn.Module = nn.Sequential(nn.Linear(cfg.dim, 8 * cfg.width), nn.SiLU(),
                                                 nn.Linear(8 * cfg.width, numel))
        else:
            self.head = nn.Linear(cfg.dim, num_classes)
        self.register_buffer("feat_mean", torch.zeros(cfg.dim))
        self.register_buffer("feat_std", torch.ones(cfg.dim))

    def raw_features(self, x: Tensor) -> Tensor:
        """Penultimate activations (B, dim): SiLU of the encoder output for classifiers, the code otherwise."""
        z = self.encoder(x)
        return z if self.kind == "autoencoder" else nn.functional.silu(z)

    def loss(self, x: Tensor, y: Tensor | None) -> Tensor:
        f = self.raw_features(x)
        if self.kind == "autoencoder":
            return (torch.tanh(self.head(f)) - x.flatten(1)).square().mean()
        return nn.functional.cross_entropy(self.head(f), y)
