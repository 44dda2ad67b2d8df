"""Where a run trains: the device run.device names, and whether bf16 autocast pays there."""

from __future__ import annotations

import torch


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
