"""Checks made before a run allocates or writes anything: the network's size (built on the meta device, nothing
allocated) against the memory there is, one batch against it too, and a checkpoint's size against the free disk
space. Each failure is one line naming the number needed and the number available."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any, Callable

import torch
from torch import nn

from ..checkpoint import DiskFullError, checkpoint_bytes, human_bytes
from ..config import Config

STATE_COPIES = 6  # weights, gradients, two AdamW moments, the EMA and the EMA network: float32 each


def meta_net(build: Callable[[], nn.Module]) -> nn.Module:
    """The network on the meta device: shapes and dtypes, no memory, the global RNG untouched."""
    with torch.random.fork_rng(devices=[]), torch.device("meta"):
        return build()


def available_memory(device: torch.device) -> int | None:
    """Bytes free for this process on ``device`` (None when unknown)."""
    if device.type == "cuda":
        try:
            return int(torch.cuda.mem_get_info(device)[0])
        except Exception:  # noqa: BLE001 - unknown is fine: the check is skipped
            return None
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    return None


def check_memory(cfg: Config, probe: nn.Module, meta: dict[str, Any], device: torch.device) -> None:
    """Refuse a network or batch whose float32 training state alone exceeds the free memory."""
    n_params = sum(p.numel() for p in probe.parameters())
    numel = 1
    for d in meta["shape"]:
        numel *= int(d)
    need_net = STATE_COPIES * 4 * n_params
    need_batch = 4 * 4 * numel * cfg.optim.batch_size  # x_0, ε, x_t and the output: activations come on top
    free = available_memory(device)
    if free is None:
        return
    if need_net > free:
        raise ValueError(f"the network has {n_params:,} parameters: its training state needs at least "
                         f"{human_bytes(need_net)} on {device}, {human_bytes(free)} is free (lower net.channels, "
                         "net.channel_mult or net.mlp_hidden)")
    if need_batch > free:
        raise ValueError(f"optim.batch_size {cfg.optim.batch_size} needs at least {human_bytes(need_batch)} on "
                         f"{device} for one batch, {human_bytes(free)} is free")


def check_disk(run_dir: Path, probe: nn.Module, extra_tensors: int = 0) -> None:
    """Refuse to start when the run folder's disk cannot hold one checkpoint (model, EMA, two AdamW moments)."""
    sd = probe.state_dict()
    need = checkpoint_bytes(sd, sd, sd, sd) + extra_tensors
    try:
        free = shutil.disk_usage(run_dir).free
    except OSError:
        return
    if free < need:
        raise DiskFullError(f"not enough space in {str(run_dir)!r} for a checkpoint: it needs about "
                            f"{human_bytes(need)}, {human_bytes(free)} is free")
