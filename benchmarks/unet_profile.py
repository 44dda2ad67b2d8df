"""Where a U-Net training step's time goes: torch.profiler over a few steps of unet_throughput's timed step
(kuosan's net, or diffusers' twin), its kernels by device time and the step's wall time against the sum of them.

Usage: python benchmarks/unet_profile.py [--size cifar] [--device cuda] [--batch 128] [--bf16] [--model kuosan]
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import Sequence

import torch
from torch.autograd import DeviceType
from torch.profiler import ProfilerActivity, profile

sys.path.insert(0, str(Path(__file__).parent))  # benchmarks/ is no package: its sibling script as a module
import unet_throughput as ut  # noqa: E402


def main(argv: Sequence[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--size", default="cifar", choices=["mnist", "digits", "cifar"])
    p.add_argument("--device", default="cuda", choices=["cpu", "cuda"])
    p.add_argument("--model", default="kuosan", choices=["kuosan", "diffusers"])
    p.add_argument("--batch", type=int, default=128)
    p.add_argument("--bf16", action="store_true", help="bf16 autocast")
    p.add_argument("--channels-last", action="store_true")
    p.add_argument("--compile", choices=["default", "max-autotune-no-cudagraphs"],
                   help="torch.compile the net in this mode first (modes without CUDA graphs, whose kernels the "
                        "profiler sees)")
    p.add_argument("--steps", type=int, default=5, help="profiled steps (after 5 warm-up steps)")
    p.add_argument("--rows", type=int, default=25, help="kernels listed")
    p.add_argument("--threads", type=int, default=0, help="torch intra-op threads (0: torch's default)")
    a = p.parse_args(argv)
    for k in ("batch", "steps"):
        if getattr(a, k) < 1:
            raise ValueError(f"--{k} must be a positive integer, got {getattr(a, k)}")
    if a.device == "cuda" and not torch.cuda.is_available():
        raise ValueError("--device cuda was asked for, but CUDA is not available (--device cpu profiles the CPU)")
    if a.threads:
        torch.set_num_threads(a.threads)
    dev = torch.device(a.device)
    if dev.type == "cuda":
        torch.backends.cudnn.benchmark = True
    c = ut.SIZES[a.size]["channels"]
    net = (ut.kuosan_unet if a.model == "kuosan" else ut.diffusers_unet)(a.size, c)
    if net is None:
        raise ValueError("--model diffusers needs diffusers (pip install 'kuosan[bench]')")
    fmt = torch.channels_last if a.channels_last else torch.preserve_format
    net = net.to(dev, memory_format=fmt)
    shape = (ut.SIZES[a.size].get("in_ch", 1), ut.SIZES[a.size]["side"], ut.SIZES[a.size]["side"])
    x, t, target = torch.randn(a.batch, *shape, device=dev), torch.rand(a.batch, device=dev) * 999, \
        torch.randn(a.batch, *shape, device=dev)
    if a.channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    net.train()
    raw = net
    if a.compile:
        net = torch.compile(net, mode=a.compile)  # type: ignore[assignment]
    step = ut.make_step(net, "train", a.bf16, x, t, target, ut.updater(a.model, raw, "default",
                                                                          ut.kuosan_cfg(a.size, c)))
    ut.timed(step, 5, dev)  # warm-up: cuDNN's choice, AdamW's state, compiling
    wall = ut.timed(step, a.steps, dev) / a.steps
    acts = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if dev.type == "cuda" else [])
    with profile(activities=acts) as prof:
        ut.timed(step, a.steps, dev)
    key = "self_device_time_total" if dev.type == "cuda" else "self_cpu_time_total"
    print(prof.key_averages().table(sort_by=key, row_limit=a.rows, max_name_column_width=70))
    events = prof.key_averages()
    # the kernels' own rows only: an operator's row repeats the time of the kernels it launched
    dev_total = sum(e.self_device_time_total for e in events if e.device_type == DeviceType.CUDA) / 1e6 / a.steps
    launches = sum(e.count for e in events if e.key.startswith(("cudaLaunchKernel", "cuLaunchKernel"))) / a.steps
    print(f"{a.model} {a.size} batch {a.batch} bf16={a.bf16} channels_last={a.channels_last} compile={a.compile}: "
          f"{1e3 * wall:.2f} ms a step (unprofiled), "
          f"{1e3 * dev_total:.2f} ms of device kernels, {launches:.0f} kernel launches a step, "
          f"{a.batch / wall:.0f} samples/s")


if __name__ == "__main__":
    t0 = time.perf_counter()
    try:
        main()
    except ValueError as err:  # bad arguments: one line, exit code 2
        print(f"unet_profile.py: error: {err}", file=sys.stderr)
        sys.exit(2)
    print(f"({time.perf_counter() - t0:.0f} s)")
