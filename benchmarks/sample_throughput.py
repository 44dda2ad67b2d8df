"""Sampling throughput (samples/s at 10 NFE, CPU): diffusers' pipeline against kuosan.sampling with the same network
and scheduler, and kuosan with its own U-Net, for digits (8x8) and MNIST (28x28); same process, interleaved rounds.

Per size one diffusers ``UNet2DModel`` and kuosan's U-Net of the same layout (random seeded weights: throughput
only), one β table (diffusers' default: linear, T = 1000) and one grid: ``timestep_spacing="trailing"`` in every
scheduler, i.e. diffusers' timesteps 999, 899, ..., 99, which is ``uniform_grid(path, 10, "trailing")`` (kuosan's
t = diffusers' t + 1; checked). Three ways to draw B samples with one sampler:
- diffusers: DDIM is ``DDIMPipeline(unet, DDIMScheduler(...))(batch_size=B, output_type="pt")`` ("pt" does the
  least post-processing: (x/2 + 1/2).clamp(0, 1); "np" adds a permute and a copy, "pil" images). DDIMPipeline
  converts any scheduler to DDIMScheduler in its __init__, so DPM-Solver++(2M) and UniPC-2 run diffusers'
  documented loop ``for t in s.timesteps: x = s.step(unet(x, t).sample, t, x).prev_sample`` (x_T by randn_tensor).
- kuosan+d-net: the same UNet2DModel as a Denoiser (kuosan.adapters.from_diffusers_unet, ε) through
  ``kuosan.sampling.sample`` (ddim, dpm++2m, unipc), x_T from its per-sample noise streams included.
- kuosan: kuosan's own U-Net (kuosan.build.build_net + make_denoiser, the default config's v-prediction) on the
  same path through ``kuosan.sampling.sample``: the user-facing path.
DDIMScheduler clips x̂_0 to [-1, 1] by default (clip_sample=True); here clip_sample=False, as kuosan's ddim does not
clip, and thresholding is off everywhere. A DDIM agreement check runs the pipeline and kuosan's ddim with the same
UNet from the same x_T. Usage: python benchmarks/sample_throughput.py [--sizes digits,mnist] [--threads N] [--quick]
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import statistics
import time
from pathlib import Path as Path_
from typing import Any, Callable, Sequence

import torch
from torch import Tensor, nn
from tqdm import tqdm

from kuosan.adapters import from_diffusers_unet, path_from_diffusers
from kuosan.build import make_denoiser
from kuosan.config import from_dict
from kuosan.paths import Path, make_path
from kuosan.sampling import ddim, sample, uniform_grid

SHAPES = {"digits": (1, 8, 8), "mnist": (1, 28, 28)}
SCHEDULERS = {"ddim": "DDIMScheduler", "dpm++2m": "DPMSolverMultistepScheduler", "unipc": "UniPCMultistepScheduler"}


def _unet_throughput() -> Any:
    """benchmarks/unet_throughput.py, which builds both libraries' nets of each size (benchmarks/ is no package)."""
    spec = importlib.util.spec_from_file_location("bench_unet_throughput",
                                                  Path_(__file__).with_name("unet_throughput.py"))
    mod = importlib.util.module_from_spec(spec)  # type: ignore[arg-type]
    spec.loader.exec_module(mod)  # type: ignore[union-attr]
    return mod


def build_nets(size: str, with_diffusers: bool) -> tuple[nn.Module, nn.Module | None]:
    """(kuosan's U-Net, diffusers' UNet2DModel or None) for ``size``, as unet_throughput.py builds them (digits: the
    default Config's net, c = 32; mnist: c = 64), seeded; kuosan's all-zero tensors (last conv of each block and of the
    net, attention outputs, biases) are drawn N(0, 0.02²): no trained net has them."""
    ut = _unet_throughput()
    torch.manual_seed(0)
    c = ut.SIZES[size]["channels"]
    own = ut.kuosan_unet(size, c)
    dnet = ut.diffusers_unet(size, c).net if with_diffusers else None  # .net: the UNet2DModel inside SampleOut
    with torch.no_grad():
        for p in own.parameters():
            if not p.any():
                p.normal_(0, 0.02)
    return own.eval(), (dnet.eval() if dnet is not None else None)


def n_params(net: nn.Module) -> int:
    return sum(p.numel() for p in net.parameters())


def make_scheduler(name: str) -> Any:
    import diffusers

    extra = {"clip_sample": False} if name == "ddim" else {}  # DDIM clips x̂_0 by default; kuosan does not
    return getattr(diffusers, SCHEDULERS[name])(timestep_spacing="trailing", **extra)


def diffusers_loop(unet: nn.Module, sched: Any, x: Tensor, steps: int) -> Tensor:
    """diffusers' documented sampling loop (the body of DDIMPipeline.__call__ for any scheduler), raw x_0."""
    sched.set_timesteps(steps)
    x = x * sched.init_noise_sigma
    for t in sched.timesteps:
        x = sched.step(unet(sched.scale_model_input(x, t), t).sample, t, x).prev_sample
    return x


def diffusers_sampler(unet: nn.Module, name: str, batch: int, steps: int, shape: tuple[int, ...]) -> Callable[[], Any]:
    from diffusers import DDIMPipeline
    from diffusers.utils.torch_utils import randn_tensor

    sched = make_scheduler(name)
    if name == "ddim":
        pipe = DDIMPipeline(unet, sched)
        pipe.set_progress_bar_config(disable=True)
        return lambda: pipe(batch_size=batch, num_inference_steps=steps, output_type="pt",
                            generator=torch.Generator().manual_seed(0)).images
    return lambda: diffusers_loop(unet, sched, randn_tensor((batch, *shape), torch.Generator().manual_seed(0)), steps)


def check_grid_matches(path: Path, steps: int) -> None:
    """kuosan's trailing grid is every scheduler's timesteps + 1 (then 0): the same model times, step for step."""
    ours = uniform_grid(path, steps, "trailing")[:-1] - 1
    for name in SCHEDULERS:
        s = make_scheduler(name)
        s.set_timesteps(steps)
        if not torch.equal(ours, s.timesteps.to(torch.float64)):
            raise AssertionError(f"{name}: kuosan's trailing grid - 1 = {ours.tolist()}, diffusers' timesteps = "
                                 f"{s.timesteps.tolist()}")


@torch.inference_mode()
def ddim_agreement(unet: nn.Module, path: Path, shape: tuple[int, ...], steps: int, n: int = 4) -> dict[str, float]:
    """DDIMPipeline and kuosan's ddim on the same UNet from the same x_T (fp32): largest differences of the
    pipeline's [0, 1] images and, unclamped, of x_0 against diffusers' loop (relative to max |x_0|)."""
    from diffusers import DDIMPipeline
    from diffusers.utils.torch_utils import randn_tensor

    pipe = DDIMPipeline(unet, make_scheduler("ddim"))
    pipe.set_progress_bar_config(disable=True)
    images = pipe(batch_size=n, num_inference_steps=steps, output_type="pt",
                  generator=torch.Generator().manual_seed(1)).images
    x_T = randn_tensor((n, *shape), torch.Generator().manual_seed(1))  # the pipeline's own draw
    ours = ddim(from_diffusers_unet(unet, path, "eps"), x_T, uniform_grid(path, steps, "trailing"))
    ref = diffusers_loop(unet, make_scheduler("ddim"), x_T, steps)
    scale = ref.abs().max().item()
    return {"image_diff": (ours / 2 + 0.5).clamp(0, 1).sub(images).abs().max().item(),
            "raw_diff": (ours - ref).abs().max().item() / scale, "raw_scale": scale}


def timed_rounds(calls: dict[str, Callable[[], Any]], bf16: bool, batch: int, rounds: int,
                 warmup: bool, desc: str = "") -> dict[str, list[float]]:
    """samples/s of every call per round; rounds alternate A,B,C then C,B,A so drift hits all alike. A progress bar
    on stderr counts the timed calls (a full CPU run takes many minutes)."""
    rates: dict[str, list[float]] = {k: [] for k in calls}
    with torch.inference_mode(), torch.autocast("cpu", torch.bfloat16, enabled=bf16), \
            tqdm(total=rounds * len(calls), desc=desc, leave=False) as bar:
        for f in calls.values() if warmup else ():
            f()  # oneDNN primitives for these shapes and dtype
        for r in range(rounds):
            for name in list(calls) if r % 2 == 0 else list(reversed(calls)):
                t0 = time.perf_counter()
                calls[name]()
                rates[name].append(batch / (time.perf_counter() - t0))
                bar.update()
    return rates


def parse(argv: Sequence[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--sizes", default="digits,mnist", help="comma-separated: digits, mnist")
    p.add_argument("--batch-digits", type=int, default=256)
    p.add_argument("--batch-mnist", type=int, default=64)
    p.add_argument("--steps", type=int, default=10, help="sampling steps = NFE (all three samplers: 1 per step)")
    p.add_argument("--rounds", type=int, default=3, help="interleaved timed rounds; the median is reported")
    p.add_argument("--samplers", default=",".join(SCHEDULERS), help=f"comma-separated: {', '.join(SCHEDULERS)}")
    p.add_argument("--dtype", default="both", choices=["fp32", "bf16", "both"], help="bf16 = bf16 autocast")
    p.add_argument("--threads", type=int, default=0, help="torch intra-op threads (0: torch's default)")
    p.add_argument("--no-diffusers", action="store_true", help="time kuosan alone")
    p.add_argument("--quick", action="store_true", help="batch 2, 2 steps, 1 round: a smoke test, not a measurement")
    args = p.parse_args(argv)
    args.sizes, args.samplers = args.sizes.split(","), args.samplers.split(",")
    for what, got, known in (("size", args.sizes, SHAPES), ("sampler", args.samplers, SCHEDULERS)):
        if any(g not in known for g in got):
            raise ValueError(f"unknown {what} in {got}; choose from {', '.join(known)}")
    for k in ("batch_digits", "batch_mnist", "steps", "rounds"):
        if getattr(args, k) < 1:
            raise ValueError(f"--{k.replace('_', '-')} must be a positive integer, got {getattr(args, k)}")
    if args.threads < 0:
        raise ValueError(f"--threads must be >= 0, got {args.threads}")
    if args.quick:
        args.batch_digits = args.batch_mnist = args.steps = 2
        args.rounds = 1
    return args


def print_table(rows: list[dict[str, Any]]) -> None:
    print(f"{'size':<7} {'dtype':<5} {'sampler':<8} {'impl':<13} {'batch':>5} {'samples/s':>10} {'spread':>7} "
          f"{'kuosan/diffusers':>16}")
    for r in rows:
        ratio = "-" if r["ratio"] is None else format(r["ratio"], ".3f")
        print(f"{r['size']:<7} {r['dtype']:<5} {r['sampler']:<8} {r['impl']:<13} {r['batch']:>5} "
              f"{r['samples_per_s']:>10.1f} {'±' + format(100 * r['spread'], '.0f') + '%':>7} {ratio:>16}")


def main(argv: Sequence[str] | None = None) -> list[dict[str, Any]]:
    """Timing rows (kind "timing") and, with diffusers, one DDIM agreement row per size (kind "agreement")."""
    args = parse(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    has_d = not args.no_diffusers and importlib.util.find_spec("diffusers") is not None
    print(f"torch {torch.__version__}, threads: {torch.get_num_threads()} "
          f"({'--threads' if args.threads else 'torch default'}), load average {os.getloadavg()[0]:.2f}, "
          f"{args.steps} steps, {args.rounds} interleaved rounds")
    if has_d:
        import diffusers

        print(f"diffusers {diffusers.__version__}; grid: trailing (diffusers' timesteps "
              f"{[int(t) - 1 for t in uniform_grid(make_path('discrete_vp'), args.steps)[:-1]]})")
    elif not args.no_diffusers:
        print("diffusers is not installed (pip install 'kuosan[bench]'): timing kuosan alone")
    # diffusers' default β table, from its scheduler; kuosan's own linear chain (the same β) without diffusers
    path = path_from_diffusers(make_scheduler("ddim")) if has_d else make_path("discrete_vp", schedule="linear")
    if has_d:
        check_grid_matches(path, args.steps)
    rows: list[dict[str, Any]] = []
    for size in args.sizes:
        shape, batch = SHAPES[size], getattr(args, f"batch_{size}")
        own, dnet = build_nets(size, has_d)
        print(f"{size}: kuosan U-Net {n_params(own):,} params" +
              (f", diffusers UNet2DModel {n_params(dnet):,}" if dnet is not None else "") + f"; batch {batch}")
        if dnet is not None:
            agree = ddim_agreement(dnet, path, shape, args.steps)
            print(f"  DDIM agreement, fp32, same x_T: pipeline images vs kuosan max |diff| = "
                  f"{agree['image_diff']:.2e}; unclamped x_0 vs diffusers' loop max |diff| / max |x_0| = "
                  f"{agree['raw_diff']:.2e} (max |x_0| = {agree['raw_scale']:.3g})")
            rows.append({"kind": "agreement", "size": size, **agree})
        own_D = make_denoiser(own, from_dict({}), path)
        for bf16 in [False, True] if args.dtype == "both" else [args.dtype == "bf16"]:
            for i, name in enumerate(args.samplers):
                calls = {"diffusers": diffusers_sampler(dnet, name, batch, args.steps, shape)} if dnet is not None \
                    else {}
                if dnet is not None:
                    d_D = from_diffusers_unet(dnet, path, "eps")
                    calls["kuosan+d-net"] = lambda D=d_D: sample(D, name, (batch, *shape), args.steps,
                                                                   batch_size=batch, spacing="trailing")
                calls["kuosan"] = lambda: sample(own_D, name, (batch, *shape), args.steps, batch_size=batch,
                                                 spacing="trailing")
                rates = timed_rounds(calls, bf16, batch, args.rounds, warmup=i == 0,
                                     desc=f"{size} {'bf16' if bf16 else 'fp32'} {name}")
                for impl, rs in rates.items():
                    med = statistics.median(rs)
                    # paired per round, so slow drift of the machine cancels
                    ratio = statistics.median(a / b for a, b in zip(rs, rates["diffusers"])) \
                        if "diffusers" in rates and impl != "diffusers" else None
                    rows.append({"kind": "timing", "size": size, "dtype": "bf16" if bf16 else "fp32",
                                 "sampler": name, "impl": impl, "batch": batch, "samples_per_s": med,
                                 "spread": (max(rs) - min(rs)) / (2 * med), "ratio": ratio})
    print_table([r for r in rows if r["kind"] == "timing"])
    return rows


if __name__ == "__main__":
    main()
