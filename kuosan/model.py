"""Building a model from its config: the schedule, the network for the data's shape, a trained denoiser."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from .checkpoint import load_checkpoint, load_weights
from .config import Config, from_dict
from .data import Dataset
from .denoiser import NetDenoiser
from .nets import MLP, MLPConfig, UNet, UNetConfig
from .schedules import Schedule, make_schedule


def make_schedule_from(cfg: Config) -> Schedule:
    kw = {"beta_start": cfg.beta_start, "beta_end": cfg.beta_end} if cfg.schedule == "linear" else {}
    return make_schedule(cfg.schedule, cfg.T, **kw)


def data_meta(ds: Dataset) -> dict[str, Any]:
    """What a checkpoint must know of its data to rebuild the network and sample: shape, kind, classes."""
    return {"kind": ds.kind, "shape": list(ds.x.shape[1:]), "num_classes": ds.num_classes, "name": ds.name,
            "bits": ds.bits}


class MLPFlat(nn.Module):
    """Lets the MLP serve data of any per-sample shape by flattening (B, *D) -> (B, prod D) and back."""

    def __init__(self, mlp: nn.Module):
        super().__init__()
        self.mlp = mlp

    def forward(self, x: Tensor, t: Tensor, y: Tensor | None = None) -> Tensor:
        out = self.mlp(x.flatten(1), t, y)  # (B, k·D), k = 2 with a learned variance
        return out.reshape(x.shape[0], -1, *x.shape[2:]) if x.ndim > 2 else out


def build_net(cfg: Config, meta: dict[str, Any]) -> nn.Module:
    """U-Net for images (C, H, W), MLP (on flattened samples) for vectors (D,), per cfg.model."""
    shape, kind = meta["shape"], cfg.model
    if kind == "auto":
        kind = "unet" if meta["kind"] == "image" else "mlp"
    ncls = meta["num_classes"] if cfg.class_cond else 0
    out_mult = 2 if cfg.learn_variance else 1  # mean and variance halves
    if kind == "unet":
        if len(shape) != 3:
            raise ValueError(f"the unet needs image data (C, H, W), got samples of shape {tuple(shape)}")
        return UNet(UNetConfig(in_channels=shape[0], channels=cfg.channels, channel_mult=tuple(cfg.channel_mult),
                               num_res_blocks=cfg.num_res_blocks, attn_resolutions=tuple(cfg.attn_resolutions),
                               dropout=cfg.dropout, num_classes=ncls, image_size=shape[-1],
                               out_channels=out_mult * shape[0]))
    dim = math.prod(shape)
    return MLPFlat(MLP(MLPConfig(dim=dim, hidden=cfg.mlp_hidden, depth=cfg.mlp_depth, dropout=cfg.dropout,
                                 num_classes=ncls, out_dim=out_mult * dim)))


def load_denoiser(path: str | Path, *, use_ema: bool = True, device: str | torch.device = "cpu"
                  ) -> tuple[NetDenoiser, dict[str, Any], Config]:
    """Rebuild the trained denoiser of a run or checkpoint folder (EMA weights by default), in eval mode."""
    ckpt = load_checkpoint(path, with_optim=False)
    cfg = from_dict(ckpt.config, where=f"checkpoint {ckpt.path}").validate()
    meta = ckpt.state.get("data")
    if not isinstance(meta, dict) or "shape" not in meta:
        raise ValueError(f"checkpoint {ckpt.path} does not record its data shape")
    net = build_net(cfg, meta)
    weights = ckpt.ema if (use_ema and ckpt.ema is not None) else ckpt.model
    load_weights(net, {k: v.to(net.state_dict()[k].dtype) if k in net.state_dict() else v
                       for k, v in weights.items()}, f"checkpoint {ckpt.path}")
    net.to(device).eval()
    return NetDenoiser(net, make_schedule_from(cfg), cfg.target), meta, cfg
