"""Training-step and inference throughput (samples/s) of kuosan's MNIST-sized U-Net against diffusers'
UNet2DModel of (almost) the same architecture and parameter count, same input, same process, interleaved.

Both nets: 3 levels at 28 -> 14 -> 7 with widths (c, 2c, 2c), 2 residual blocks a level (3 on the way up),
self-attention (head dim 32) at 7x7 and in the middle, time embedding 4c with scale/shift (FiLM) injection.
Usage: python benchmarks/unet_throughput.py [--device auto|cpu|cuda] [--dtype fp32|bf16|both] [--threads N]
"""

from __future__ import annotations

import argparse
import statistics
import time
from typing import Any, Callable, Literal, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from kuosan.build import build_net
from kuosan.config import from_dict

Mode = Literal["train", "infer"]
MNIST_META = {"kind": "image", "shape": [1, 28, 28], "num_classes": 0}
# per-device defaults: a CPU step of batch 128 takes seconds, so the CPU runs smaller and fewer
DEFAULTS = {"cpu": {"batch": 32, "iters": 3, "warmup": 1, "repeats": 3},
            "cuda": {"batch": 128, "iters": 50, "warmup": 10, "repeats": 7},  # launch-bound: long rounds
            "quick": {"batch": 2, "iters": 1, "warmup": 1, "repeats": 1}}


def kuosan_unet(channels: int) -> nn.Module:
    """The default MNIST U-Net: widths (c, 2c, 2c), 2 res blocks a level, attention at 7x7, no dropout."""
    cfg = from_dict({"data": {"name": "mnist5k"}, "net": {"channels": channels, "channel_mult": (1, 2, 2),
                                                          "num_res_blocks": 2, "attn_resolutions": (7,), "dropout": 0.0}})
    return build_net(cfg, MNIST_META)


class SampleOut(nn.Module):
    """diffusers returns a UNet2DOutput; this returns its .sample tensor (B, 1, 28, 28), like kuosan's net."""

    def __init__(self, net: nn.Module):
        super().__init__()
        self.net = net

    def forward(self, x: Tensor, t: Tensor) -> Tensor:
        return self.net(x, t).sample


def diffusers_unet(channels: int) -> nn.Module | None:
    """diffusers' UNet2DModel with kuosan's layout (scale_shift = FiLM); None when diffusers is missing."""
    try:
        from diffusers import UNet2DModel
    except ImportError:
        return None
    net = UNet2DModel(sample_size=28, in_channels=1, out_channels=1, block_out_channels=(channels, 2 * channels,
                      2 * channels), layers_per_block=2, down_block_types=("DownBlock2D", "DownBlock2D",
                      "AttnDownBlock2D"), up_block_types=("AttnUpBlock2D", "UpBlock2D", "UpBlock2D"),
                      attention_head_dim=32, resnet_time_scale_shift="scale_shift",
                      norm_num_groups=min(32, channels), dropout=0.0)
    return SampleOut(net)


def n_params(net: nn.Module) -> int:
    return sum(p.numel() for p in net.parameters())


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def make_step(net: nn.Module, mode: Mode, bf16: bool, x: Tensor, t: Tensor, target: Tensor,
              opt: torch.optim.Optimizer | None) -> Callable[[], None]:
    """One training step (forward + MSE backward + AdamW step) or one no-grad forward, as a closure."""
    dev = x.device.type

    def train_step() -> None:
        with torch.autocast(dev, dtype=torch.bfloat16, enabled=bf16):
            out = net(x, t)
        F.mse_loss(out.float(), target).backward()
        opt.step()  # type: ignore[union-attr]
        opt.zero_grad(set_to_none=True)  # type: ignore[union-attr]

    @torch.no_grad()
    def infer_step() -> None:
        with torch.autocast(dev, dtype=torch.bfloat16, enabled=bf16):
            net(x, t)

    return train_step if mode == "train" else infer_step


def timed(step: Callable[[], None], iters: int, device: torch.device) -> float:
    """Seconds for ``iters`` calls, device work included (synchronised before and after)."""
    _sync(device)
    t0 = time.perf_counter()
    for _ in range(iters):
        step()
    _sync(device)
    return time.perf_counter() - t0


def compare(nets: dict[str, nn.Module], device: torch.device, mode: Mode, bf16: bool, batch: int, iters: int,
            warmup: int, repeats: int, channels_last: bool) -> list[dict[str, Any]]:
    """Interleaved timing of every net on one input: rounds of A,B then B,A, ... so drift hits all alike."""
    g = torch.Generator().manual_seed(0)
    x = torch.randn(batch, 1, 28, 28, generator=g).to(device)
    t = (torch.rand(batch, generator=g) * 999).to(device)  # float times, as kuosan's NetDenoiser passes them
    target = torch.randn(batch, 1, 28, 28, generator=g).to(device)
    if channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    steps = {}
    for name, net in nets.items():
        net.train(mode == "train")
        opt = torch.optim.AdamW(net.parameters(), lr=1e-5) if mode == "train" else None
        steps[name] = make_step(net, mode, bf16, x, t, target, opt)
    for step in steps.values():
        timed(step, warmup, device)  # autotuning, torch.compile, AdamW state allocation
    rates: dict[str, list[float]] = {name: [] for name in nets}
    for r in range(repeats):
        order = list(steps) if r % 2 == 0 else list(reversed(steps))
        for name in order:
            rates[name].append(batch * iters / timed(steps[name], iters, device))
    first = next(iter(nets))
    rows = []
    for name, rs in rates.items():
        med = statistics.median(rs)
        # the ratio is paired per round, so slow drift of the machine cancels
        ratio = statistics.median(a / b for a, b in zip(rates[first], rs))
        rows.append({"model": name, "params": n_params(nets[name]), "device": device.type, "mode": mode,
                     "dtype": "bf16" if bf16 else "fp32", "samples_per_s": med,
                     "spread": (max(rs) - min(rs)) / (2 * med), "ratio": ratio})
    return rows


def print_table(rows: list[dict[str, Any]]) -> None:
    print(f"{'model':<10} {'params':>10} {'device':<6} {'mode':<6} {'dtype':<5} {'samples/s':>11} {'spread':>7} "
          f"{'kuosan/diffusers':>16}")
    for r in rows:
        print(f"{r['model']:<10} {r['params']:>10,} {r['device']:<6} {r['mode']:<6} {r['dtype']:<5} "
              f"{r['samples_per_s']:>11.1f} {'±' + format(100 * r['spread'], '.0f') + '%':>7} "
              f"{'-' if r['model'] == 'kuosan' else format(r['ratio'], '.3f'):>16}")


def parse(argv: Sequence[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"],
                   help="auto: the CPU, then CUDA when available")
    p.add_argument("--dtype", default="both", choices=["fp32", "bf16", "both"], help="bf16 = bf16 autocast")
    p.add_argument("--mode", default="both", choices=["train", "infer", "both"])
    p.add_argument("--batch", type=int, help="default 32 on CPU, 128 on CUDA")
    p.add_argument("--iters", type=int, help="timed steps per round (default 3 CPU, 50 CUDA)")
    p.add_argument("--warmup", type=int, help="untimed steps before timing (default 1 CPU, 10 CUDA)")
    p.add_argument("--repeats", type=int, help="interleaved rounds; the median is reported (default 3 CPU, 7 CUDA)")
    p.add_argument("--channels", type=int, help="base width c (default 64; --quick: 16)")
    p.add_argument("--threads", type=int, default=0, help="torch intra-op threads (0: torch's default)")
    p.add_argument("--channels-last", action="store_true", help="channels_last memory format for nets and input")
    p.add_argument("--compile", action="store_true", help="torch.compile both nets (warm-up includes compiling)")
    p.add_argument("--no-diffusers", action="store_true", help="time kuosan alone")
    p.add_argument("--quick", action="store_true", help="tiny sizes, one step each: a smoke test, not a measurement")
    args = p.parse_args(argv)
    for k in ("batch", "iters", "repeats", "channels"):
        if getattr(args, k) is not None and getattr(args, k) < 1:
            raise ValueError(f"--{k} must be a positive integer, got {getattr(args, k)}")
    if args.warmup is not None and args.warmup < 0:
        raise ValueError(f"--warmup must be >= 0, got {args.warmup}")
    if args.threads < 0:
        raise ValueError(f"--threads must be >= 0, got {args.threads}")
    return args


def main(argv: Sequence[str] | None = None) -> list[dict[str, Any]]:
    args = parse(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    devices = ["cpu", "cuda"] if args.device == "auto" else [args.device]
    if "cuda" in devices and not torch.cuda.is_available():
        if args.device == "cuda":
            raise ValueError("--device cuda was asked for, but CUDA is not available")
        devices.remove("cuda")
    channels = args.channels or (16 if args.quick else 64)
    dtypes = [False, True] if args.dtype == "both" else [args.dtype == "bf16"]
    modes: list[Mode] = ["train", "infer"] if args.mode == "both" else [args.mode]
    print(f"torch {torch.__version__}, threads: {torch.get_num_threads()} "
          f"({'--threads' if args.threads else 'torch default'}), base width c={channels}, "
          f"channels_last={args.channels_last}, compile={args.compile}")
    if not args.no_diffusers:
        try:
            import diffusers
            print(f"diffusers {diffusers.__version__}")
        except ImportError:
            print("diffusers is not installed (pip install 'kuosan[bench]'): timing kuosan alone")
    rows: list[dict[str, Any]] = []
    for dev_name in devices:
        device = torch.device(dev_name)
        d = DEFAULTS["quick" if args.quick else dev_name]
        batch, iters, warmup, repeats = (d[k] if getattr(args, k) is None else getattr(args, k)
                                         for k in ("batch", "iters", "warmup", "repeats"))
        torch.manual_seed(0)
        nets = {"kuosan": kuosan_unet(channels)}
        other = None if args.no_diffusers else diffusers_unet(channels)
        if other is not None:
            nets["diffusers"] = other
        for name, net in list(nets.items()):
            net = net.to(device, memory_format=torch.channels_last if args.channels_last else torch.preserve_format)
            nets[name] = torch.compile(net) if args.compile else net
        if device.type == "cuda":
            torch.backends.cudnn.benchmark = True  # for both nets alike
            print(f"cuda: {torch.cuda.get_device_name(device)}")
        print(f"{dev_name}: batch {batch}, {iters} timed steps x {repeats} interleaved rounds, {warmup} warm-up")
        for bf16 in dtypes:
            for mode in modes:
                rows += compare(nets, device, mode, bf16, batch, iters, warmup, repeats, args.channels_last)
    if len(rows) > 1 and rows[1]["model"] == "diffusers":
        a, b = rows[0]["params"], rows[1]["params"]
        print(f"parameters: kuosan {a:,}, diffusers {b:,} ({100 * (b / a - 1):+.2f}%)")
    print_table(rows)
    return rows


if __name__ == "__main__":
    main()
