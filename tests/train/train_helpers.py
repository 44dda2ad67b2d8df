"""Shared by the training tests: a tiny moons config (an MLP of width 16: a step takes ~1 ms, a run < 1 s), weights
compared bit for bit, temporary files found."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from kuosan.checkpoint import load_checkpoint
from kuosan.config import Config, apply_overrides

TINY_MOONS = {"data.name": "moons", "data.n": 256, "net.mlp_hidden": 16, "net.mlp_depth": 1, "optim.batch_size": 16,
              "optim.warmup": 2, "log.log_every": 5, "log.val_every": 10, "log.ckpt_every": 5, "log.n_samples": 8,
              "log.sample_steps": 2, "run.threads": 1, "net.dropout": 0.1}


def tiny(out: Path, **over: Any) -> Config:
    """The tiny moons config writing to ``out`` (keys as "table.key" with "." replaced by "__")."""
    return apply_overrides(Config(), {**TINY_MOONS, **{k.replace("__", "."): v for k, v in over.items()},
                                      "log.out": str(out)}).validate()


def weights(run: Path) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor], int]:
    ck = load_checkpoint(run)
    assert ck.ema is not None
    return ck.model, ck.ema, ck.state["step"]


def same_weights(a: Path, b: Path) -> bool:
    """Model and EMA weights of the two runs' newest checkpoints equal bit for bit (and at the same step)."""
    ma, ea, sa = weights(a)
    mb, eb, sb = weights(b)
    return sa == sb and all(torch.equal(ma[k], mb[k]) and torch.equal(ea[k], eb[k]) for k in ma)


def temp_entries(run: Path) -> list[str]:
    """Temporary or trash entries left anywhere in a run folder."""
    return sorted(p.name for p in run.rglob(".*") if p.name.startswith((".tmp-", ".trash-", ".latest-")))


