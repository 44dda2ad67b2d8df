"""Where a run trains: the device run.device names, whether bf16 autocast pays there, and the network compiled
for it (run.compile)."""

from __future__ import annotations

import torch
from torch import nn

from ..config.tables import CompileMode


def bf16_is_fast(device: torch.device) -> bool:
    """bf16 autocast pays on CPUs with native bf16 (AVX512-BF16 or AMX: ~20% per digits step on Sapphire Rapids)
    and on bf16 GPUs; elsewhere bf16 is emulated and slower, so fp32 is kept."""
    if device.type == "cuda":
        return torch.cuda.is_bf16_supported()
    try:
        with open("/proc/cpuinfo") as f:
            flags = f.read()
    except OSError:
        return False
    return "avx512_bf16" in flags or "amx_bf16" in flags


def pick_device(name: str, local_rank: int) -> torch.device:
    """run.device -> a torch device (auto: this process's GPU if there is one, else the CPU)."""
    if name == "auto":
        return torch.device(f"cuda:{local_rank}" if torch.cuda.is_available() else "cpu")
    dev = torch.device(name)
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ValueError("device 'cuda' was asked for, but CUDA is not available")
    return torch.device(f"cuda:{local_rank}") if dev.type == "cuda" and dev.index is None else dev


def compiled(net: nn.Module, mode: CompileMode, device: torch.device) -> nn.Module:
    """``net`` under torch.compile for run.compile = default / reduce-overhead (CUDA graphs: on CUDA only, where
    they remove the launch cost of a small network's ~1000 kernels a step); ``net`` itself for off."""
    if mode == "off":
        return net
    if mode == "reduce-overhead" and device.type != "cuda":
        raise ValueError(f"run.compile = reduce-overhead needs CUDA graphs, but the run trains on {device.type}; "
                         f"use run.compile = default or off")
    return torch.compile(net, mode=None if mode == "default" else mode)  # type: ignore[return-value]
