"""Training-step and inference throughput (samples/s) of kuosan's U-Nets against diffusers' UNet2DModel of the same
layout and parameter count (same input and process, interleaved), with FLOPs a sample and the share of the
dtype's peak (the better of a large square matmul and a large 3x3 convolution, fp32 and bf16) each step reaches.

mnist (28x28): widths (c, 2c, 2c), c = 64, 2 res blocks a level, attention at 7x7 and in the middle; digits (8x8):
kuosan's default net, widths (c, 2c), c = 32, 1 res block a level, attention in the middle; cifar (3x32x32, for a
GPU): DDPM's CIFAR-10 layout (Ho et al. 2020, appendix B), widths (c, 2c, 2c, 2c), c = 128, 2 res blocks a level,
attention at 16x16 and in the middle, dropout 0.1 (38.3M parameters with FiLM; DDPM's additive injection: 35.7M).
All: FiLM time injection, head dim 32, >= 4 channels a GroupNorm group. --optim default times each library's
default update. --spec-peak T adds MFU: achieved FLOP/s over a datasheet peak of T TFLOP/s (H100 SXM bf16: 989).
Usage: python benchmarks/unet_throughput.py [--device auto|cpu|cuda] [--size mnist|digits|cifar|both] [--threads N]
"""

from __future__ import annotations

import argparse
import statistics
import time
from typing import Any, Callable, Literal, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.nn.attention import SDPBackend, sdpa_kernel
from torch.utils.flop_counter import FlopCounterMode

from kuosan.build import build_net
from kuosan.config import Config, from_dict
from kuosan.nets.unet import norm_groups
from kuosan.train.ema import EMA
from kuosan.train.step import adamw

Mode = Literal["train", "infer"]
# per size: kuosan's net config, input side, default base width; the CPU batch is kuosan's training batch for digits
SIZES: dict[str, dict[str, Any]] = {
    "mnist": {"net": {"channel_mult": (1, 2, 2), "num_res_blocks": 2, "attn_resolutions": (7,), "dropout": 0.0},
              "data": {"name": "mnist5k"}, "side": 28, "channels": 64, "cpu_batch": 32},
    "digits": {"net": {}, "data": {}, "side": 8, "channels": 32, "cpu_batch": 128},
    "cifar": {"net": {"channel_mult": (1, 2, 2, 2), "num_res_blocks": 2, "attn_resolutions": (16,), "dropout": 0.1},
              "data": {}, "side": 32, "channels": 128, "cpu_batch": 8, "in_ch": 3}}
# per-device defaults: a CPU step of batch 128 at 28x28 takes seconds, so the CPU runs smaller and fewer
DEFAULTS = {"cpu": {"iters": 3, "warmup": 1, "repeats": 3, "peak_sizes": (2048, 4096), "peak_repeats": 3,
                    "peak_conv_c": 256},
            "cuda": {"batch": 128, "iters": 50, "warmup": 10, "repeats": 7,  # launch-bound: long rounds
                     "peak_sizes": (4096, 8192), "peak_repeats": 5, "peak_conv_c": 512},
            "quick": {"batch": 2, "iters": 1, "warmup": 1, "repeats": 1, "peak_sizes": (128,), "peak_repeats": 1,
                      "peak_conv_c": 8}}


def kuosan_cfg(size: str, channels: int) -> Config:
    return from_dict({"data": SIZES[size]["data"], "net": {**SIZES[size]["net"], "channels": channels}})


def kuosan_unet(size: str, channels: int) -> nn.Module:
    """kuosan's U-Net of that size (digits: the default Config's net) at base width ``channels``."""
    side, ch = SIZES[size]["side"], SIZES[size].get("in_ch", 1)
    return build_net(kuosan_cfg(size, channels), {"kind": "image", "shape": [ch, side, side], "num_classes": 0})


class SampleOut(nn.Module):
    """diffusers returns a UNet2DOutput; this returns its .sample tensor (B, C, H, W), like kuosan's net."""

    def __init__(self, net: nn.Module):
        super().__init__()
        self.net = net

    def forward(self, x: Tensor, t: Tensor) -> Tensor:
        return self.net(x, t).sample


def diffusers_unet(size: str, channels: int) -> nn.Module | None:
    """diffusers' UNet2DModel with kuosan's layout (scale_shift = FiLM); None when diffusers is missing."""
    try:
        from diffusers import UNet2DModel
    except ImportError:
        return None
    c, g = channels, norm_groups(channels)  # one group count for all widths: >= 4 channels a group at the narrowest
    if size == "mnist":
        layout = dict(block_out_channels=(c, 2 * c, 2 * c), layers_per_block=2,
                      down_block_types=("DownBlock2D", "DownBlock2D", "AttnDownBlock2D"),
                      up_block_types=("AttnUpBlock2D", "UpBlock2D", "UpBlock2D"))
    elif size == "cifar":  # attention at the second level (16x16), as kuosan's attn_resolutions = (16,)
        layout = dict(block_out_channels=(c, 2 * c, 2 * c, 2 * c), layers_per_block=2,
                      down_block_types=("DownBlock2D", "AttnDownBlock2D", "DownBlock2D", "DownBlock2D"),
                      up_block_types=("UpBlock2D", "UpBlock2D", "AttnUpBlock2D", "UpBlock2D"))
    else:
        layout = dict(block_out_channels=(c, 2 * c), layers_per_block=1, down_block_types=("DownBlock2D",) * 2,
                      up_block_types=("UpBlock2D",) * 2)
    # attn_norm_num_groups: with scale_shift the middle attention has no GroupNorm unless asked; kuosan's has one
    ch = SIZES[size].get("in_ch", 1)
    return SampleOut(UNet2DModel(sample_size=SIZES[size]["side"], in_channels=ch, out_channels=ch,
                                 attention_head_dim=32, resnet_time_scale_shift="scale_shift", norm_num_groups=g,
                                 attn_norm_num_groups=g, dropout=SIZES[size]["net"].get("dropout", 0.0), **layout))


def n_params(net: nn.Module) -> int:
    return sum(p.numel() for p in net.parameters())


def updater(name: str, net: nn.Module, optim: str, cfg: Config) -> Callable[[], None]:
    """What follows backward. "same": plain torch AdamW alone, on both. "default": each library's default, kuosan's
    ``train_step`` + loop (clip to optim.grad_clip, ``adamw(cfg)``: fused, ``EMA.update``) or diffusers'
    train_unconditional example (clip to 1, ``torch.optim.AdamW`` as torch builds it, ``EMAModel.step``)."""
    params = list(net.parameters())
    ema_step: Callable[[int], Any] | None = None
    if optim == "same":
        opt, clip = torch.optim.AdamW(params, lr=1e-5), None
    elif name == "kuosan":
        opt, clip, ema = adamw(cfg, net), cfg.optim.grad_clip, EMA(net, cfg.optim.ema_decay, cfg.optim.ema_warmup)
        ema_step = lambda n: ema.update(net, n)  # noqa: E731
    else:
        from diffusers.training_utils import EMAModel  # the example's defaults (lr, betas, EMA schedule) below
        opt, clip = torch.optim.AdamW(params, lr=1e-4, betas=(0.95, 0.999), weight_decay=1e-6, eps=1e-8), 1.0
        ema_model = EMAModel(params, decay=0.9999, use_ema_warmup=True, inv_gamma=1.0, power=3 / 4)
        ema_step = lambda n: ema_model.step(params)  # noqa: E731
    n_updates = [0]

    def update() -> None:
        if clip:
            nn.utils.clip_grad_norm_(params, clip)
        opt.step()
        opt.zero_grad(set_to_none=True)
        if ema_step is not None:
            ema_step(n_updates[0])
        n_updates[0] += 1

    return update


def make_step(net: nn.Module, mode: Mode, bf16: bool, x: Tensor, t: Tensor, target: Tensor,
              update: Callable[[], None] | None) -> Callable[[], None]:
    """One training step (forward + MSE backward + ``update``) or one no-grad forward, as a closure."""
    dev = x.device.type

    def train_step() -> None:
        with torch.autocast(dev, dtype=torch.bfloat16, enabled=bf16):
            out = net(x, t)
        F.mse_loss(out.float(), target).backward()
        update()  # type: ignore[misc]

    @torch.no_grad()
    def infer_step() -> None:
        with torch.autocast(dev, dtype=torch.bfloat16, enabled=bf16):
            net(x, t)

    return train_step if mode == "train" else infer_step


def timed(step: Callable[[], Any], iters: int, device: torch.device) -> float:
    """Seconds for ``iters`` calls, device work included (synchronised before and after)."""
    sync = (lambda: torch.cuda.synchronize(device)) if device.type == "cuda" else (lambda: None)
    sync()
    t0 = time.perf_counter()
    for _ in range(iters):
        step()
    sync()
    return time.perf_counter() - t0


def matmul_peak(device: torch.device, dtype: torch.dtype, sizes: Sequence[int], repeats: int) -> float:
    """GFLOP/s (2n³ a product) of the best of ``repeats`` timed n x n matmuls, over ``sizes``."""
    best, iters = 0.0, 10 if device.type == "cuda" else 1
    for n in sizes:
        a, b = (torch.randn(n, n, device=device).to(dtype) for _ in range(2))
        out = torch.mm(a, b)  # warm-up: library dispatch, kernel selection
        for _ in range(repeats):
            best = max(best, 2 * n**3 * iters / timed(lambda: torch.mm(a, b, out=out), iters, device) / 1e9)
    return best


def conv_peak(device: torch.device, dtype: torch.dtype, c: int, repeats: int) -> float:
    """GFLOP/s of the best of ``repeats`` timed 3x3 convolutions, c -> c channels at 28x28, batch 32 (forward).

    On the CPU torch's matmul is MKL's and its convolutions are oneDNN's own kernels; on an AMD EPYC (Zen) MKL's
    sgemm reached 194 GFLOP/s where this convolution reached 421 (2 threads), so a matmul alone is no peak there."""
    x = torch.randn(32, c, 28, 28, device=device).to(dtype)
    w = torch.randn(c, c, 3, 3, device=device).to(dtype)
    flops, iters = 2 * c * c * 9 * 32 * 28 * 28, 10 if device.type == "cuda" else 1
    F.conv2d(x, w, padding=1)  # warm-up: oneDNN's primitive
    return max(flops * iters / timed(lambda: F.conv2d(x, w, padding=1), iters, device) / 1e9 for _ in range(repeats))


def peak(device: torch.device, dtype: torch.dtype, d: dict[str, Any]) -> tuple[float, float, float]:
    """(peak, matmul's, convolution's) GFLOP/s of ``dtype``: the reachable peak is the better of the two."""
    mm = matmul_peak(device, dtype, d["peak_sizes"], d["peak_repeats"])
    conv = conv_peak(device, dtype, d["peak_conv_c"], d["peak_repeats"])
    return max(mm, conv), mm, conv


def count_flops(net: nn.Module, shape: tuple[int, int, int], mode: Mode, device: torch.device) -> float:
    """Matmul and conv FLOPs a sample of one step (train: forward + backward), by FlopCounterMode; attention runs
    through SDPA's math path here so its two (backward: four) batched matmuls are counted on every device."""
    x, t = torch.randn(2, *shape, device=device), torch.full((2,), 500.0, device=device)
    net.train(mode == "train")
    with sdpa_kernel(SDPBackend.MATH), FlopCounterMode(display=False) as fc:
        if mode == "train":
            net(x, t).square().mean().backward()
        else:
            with torch.no_grad():
                net(x, t)
    net.zero_grad(set_to_none=True)
    return fc.get_total_flops() / 2


def compare(nets: dict[str, nn.Module], raws: dict[str, nn.Module], cfg: Config, optim: str, device: torch.device,
            mode: Mode, bf16: bool, shape: tuple[int, int, int], batch: int, iters: int, warmup: int, repeats: int,
            channels_last: bool) -> list[dict[str, Any]]:
    """Interleaved timing of every net on one input: rounds of A,B then B,A, ... so drift hits all alike."""
    g = torch.Generator().manual_seed(0)
    x = torch.randn(batch, *shape, generator=g).to(device)
    t = (torch.rand(batch, generator=g) * 999).to(device)  # float times, as kuosan's NetDenoiser passes them
    target = torch.randn(batch, *shape, generator=g).to(device)
    if channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    steps = {}
    for name, net in nets.items():
        net.train(mode == "train")  # a fresh optimiser (and EMA) for each timed combination
        upd = updater(name, raws[name], optim, cfg) if mode == "train" else None
        steps[name] = make_step(net, mode, bf16, x, t, target, upd)
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
        rows.append({"model": name, "params": n_params(raws[name]), "device": device.type, "mode": mode,
                     "dtype": "bf16" if bf16 else "fp32", "optim": optim if mode == "train" else "-",
                     "samples_per_s": med, "spread": (max(rs) - min(rs)) / (2 * med), "ratio": ratio})
    return rows


def print_table(rows: list[dict[str, Any]]) -> None:
    print(f"{'size':<6} {'model':<10} {'params':>10} {'device':<6} {'mode':<6} {'dtype':<5} {'samples/s':>11} "
          f"{'spread':>7} {'MFLOP/sample':>12} {'GFLOP/s':>8} {'% peak':>7} {'kuosan/diffusers':>16}")
    for r in rows:
        print(f"{r['size']:<6} {r['model']:<10} {r['params']:>10,} {r['device']:<6} {r['mode']:<6} {r['dtype']:<5} "
              f"{r['samples_per_s']:>11.1f} {'±' + format(100 * r['spread'], '.0f') + '%':>7} "
              f"{r['flops_per_sample'] / 1e6:>12.1f} {r['gflops']:>8.1f} {100 * r['peak_fraction']:>6.1f}% "
              f"{'-' if r['model'] == 'kuosan' else format(r['ratio'], '.3f'):>16}")


def parse(argv: Sequence[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"],
                   help="auto: the CPU, then CUDA when available")
    p.add_argument("--size", default="both", choices=["mnist", "digits", "cifar", "both"],
                   help="mnist: 28x28, c = 64; digits: kuosan's default 8x8 net, c = 32; cifar: DDPM's CIFAR-10 "
                        "layout, c = 128 (both: mnist and digits)")
    p.add_argument("--dtype", default="both", choices=["fp32", "bf16", "both"], help="bf16 = bf16 autocast")
    p.add_argument("--mode", default="both", choices=["train", "infer", "both"])
    p.add_argument("--optim", default="default", choices=["default", "same"],
                   help="default: each library's AdamW + EMA (+ clipping); same: plain torch AdamW alone on both")
    p.add_argument("--batch", type=int, help="default on CPU 32 (mnist), 128 (digits); 128 on CUDA")
    p.add_argument("--iters", type=int, help="timed steps per round (default 3 CPU, 50 CUDA)")
    p.add_argument("--warmup", type=int, help="untimed steps before timing (default 1 CPU, 10 CUDA)")
    p.add_argument("--repeats", type=int, help="interleaved rounds; the median is reported (default 3 CPU, 7 CUDA)")
    p.add_argument("--channels", type=int, help="base width c of every size (default 64 mnist, 32 digits; --quick 16)")
    p.add_argument("--threads", type=int, default=0, help="torch intra-op threads (0: torch's default)")
    p.add_argument("--channels-last", action="store_true", help="channels_last memory format for nets and input")
    p.add_argument("--compile", nargs="?", const="default",
                   choices=["default", "reduce-overhead", "max-autotune", "max-autotune-no-cudagraphs"],
                   help="torch.compile both nets in this mode (no mode: default; reduce-overhead: CUDA graphs); the "
                        "warm-up includes compiling")
    p.add_argument("--spec-peak", type=float, help="datasheet peak in TFLOP/s of the dtype timed: adds MFU lines")
    p.add_argument("--no-diffusers", action="store_true", help="time kuosan alone")
    p.add_argument("--quick", action="store_true", help="tiny sizes, one step each: a smoke test, not a measurement")
    args = p.parse_args(argv)
    if args.spec_peak is not None and not args.spec_peak > 0:  # nan too
        raise ValueError(f"--spec-peak must be > 0 TFLOP/s, got {args.spec_peak}")
    for k, low in (("batch", 1), ("iters", 1), ("repeats", 1), ("channels", 1), ("warmup", 0), ("threads", 0)):
        if getattr(args, k) is not None and getattr(args, k) < low:
            raise ValueError(f"--{k} must be an integer >= {low}, got {getattr(args, k)}")
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
    sizes = ["mnist", "digits"] if args.size == "both" else [args.size]
    dtypes = [False, True] if args.dtype == "both" else [args.dtype == "bf16"]
    modes: list[Mode] = ["train", "infer"] if args.mode == "both" else [args.mode]
    print(f"torch {torch.__version__}, threads: {torch.get_num_threads()} "
          f"({'--threads' if args.threads else 'torch default'}), optim={args.optim}, "
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
        iters, warmup, repeats = (d[k] if getattr(args, k) is None else getattr(args, k)
                                  for k in ("iters", "warmup", "repeats"))
        if device.type == "cuda":
            torch.backends.cudnn.benchmark = True  # for both nets alike
            print(f"cuda: {torch.cuda.get_device_name(device)}")
        peaks = {name: peak(device, dt, d) for name, dt in (("fp32", torch.float32), ("bf16", torch.bfloat16))}
        pk = {name: v[0] for name, v in peaks.items()}
        print(f"{dev_name} peak, the better of a square matmul (n = {', '.join(map(str, d['peak_sizes']))}) and a "
              f"3x3 convolution ({d['peak_conv_c']} channels, 28x28, batch 32), best of {d['peak_repeats']}: " +
              ", ".join(f"{name} {v[0]:.1f} GFLOP/s (matmul {v[1]:.1f}, conv {v[2]:.1f})" for name, v in peaks.items()))
        for size in sizes:
            shape = (SIZES[size].get("in_ch", 1), SIZES[size]["side"], SIZES[size]["side"])
            channels = args.channels or (16 if args.quick else SIZES[size]["channels"])
            batch = args.batch or d.get("batch", SIZES[size]["cpu_batch"])
            torch.manual_seed(0)
            raws = {"kuosan": kuosan_unet(size, channels)}
            other = None if args.no_diffusers else diffusers_unet(size, channels)
            if other is not None:
                raws["diffusers"] = other
                a, b = n_params(raws["kuosan"]), n_params(other)
                print(f"{size} parameters: kuosan {a:,}, diffusers {b:,} ({100 * (b / a - 1):+.2f}%)")
            fmt = torch.channels_last if args.channels_last else torch.preserve_format
            raws = {name: net.to(device, memory_format=fmt) for name, net in raws.items()}
            flops = {(name, m): count_flops(net, shape, m, device) for name, net in raws.items() for m in modes}
            nets = {name: torch.compile(net, mode=args.compile) if args.compile else net for name, net in raws.items()}
            print(f"{dev_name} {size}: c={channels}, batch {batch}, {iters} timed steps x {repeats} interleaved "
                  f"rounds, {warmup} warm-up")
            for bf16 in dtypes:
                for mode in modes:
                    for r in compare(nets, raws, kuosan_cfg(size, channels), args.optim, device, mode, bf16, shape,
                                     batch, iters, warmup, repeats, args.channels_last):
                        f = flops[(r["model"], mode)]
                        rows.append({"size": size, **r, "flops_per_sample": f, "gflops": f * r["samples_per_s"] / 1e9,
                                     "peak_fraction": f * r["samples_per_s"] / 1e9 / pk[r["dtype"]]})
    print_table(rows)
    if args.spec_peak:  # MFU (Chowdhery et al. 2022): model FLOPs achieved over the datasheet peak
        for r in rows:
            r["mfu"] = r["gflops"] / (1e3 * args.spec_peak)
            print(f"MFU {r['size']} {r['model']} {r['mode']} {r['dtype']}: {100 * r['mfu']:.1f}% of "
                  f"{args.spec_peak:g} TFLOP/s ({r['gflops'] / 1e3:.1f} TFLOP/s achieved)")
    return rows


if __name__ == "__main__":
    main()
