"""Command line: ``kuosan train``, ``kuosan sample``, ``kuosan nll``.

Bad input gives one line on stderr and exit code 2, never a traceback."""

from __future__ import annotations

import argparse
import sys
from dataclasses import fields
from pathlib import Path
from typing import Any, Sequence

from .config import Config, ConfigError, from_dict, load_file


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # one line, no usage dump
        raise ConfigError(message)


def _train_parser(sub: Any) -> None:
    p = sub.add_parser("train", help="train a diffusion model (defaults: sklearn digits, ~1 min on 2 cores)")
    p.add_argument("--config", help="TOML or JSON file of config keys")
    p.add_argument("--resume", metavar="RUN", help="continue the run (or checkpoint) RUN exactly")
    p.add_argument("--stop-at", type=int, metavar="STEP", help="stop (and checkpoint) at this step")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    for f in fields(Config):
        p.add_argument(f"--{f.name.replace('_', '-')}", dest=f"cfg_{f.name}", metavar=f.name.upper(), default=None,
                       help=f"(default: {f.default!r})")


def _sample_parser(sub: Any) -> None:
    from .samplers import SAMPLERS

    p = sub.add_parser("sample", help="draw samples from a trained run or checkpoint")
    p.add_argument("checkpoint", metavar="RUN_OR_CHECKPOINT")
    p.add_argument("--sampler", default="ddim", help=f"one of {', '.join(SAMPLERS)}")
    p.add_argument("--steps", type=int, default=50, help="number of sampling steps")
    p.add_argument("--grid", default="uniform", help="uniform, logsnr, karras or optimised (saved with the checkpoint)")
    p.add_argument("--spacing", default="trailing", help="leading, trailing or linspace (uniform grids)")
    p.add_argument("--eta", type=float, default=0.0, help="DDIM stochasticity (0: deterministic, 1: DDPM)")
    p.add_argument("--variance", default="beta_tilde",
                   help="DDPM variance: beta_tilde, beta, learned_range (learn_variance models) or analytic")
    p.add_argument("--analytic-n", type=int, default=256, help="analytic variance: data for the Γ table")
    p.add_argument("--clip", type=float, default=None, help="clip x0_hat to [-clip, clip]")
    p.add_argument("--n", type=int, default=64, help="number of samples")
    p.add_argument("--batch-size", type=int, default=256)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--no-ema", action="store_true", help="use the raw weights instead of the EMA")
    p.add_argument("--device", default="cpu")
    p.add_argument("--out", default="samples.png", help=".png grid or .npz arrays")


def _nll_parser(sub: Any) -> None:
    p = sub.add_parser("nll", help="negative log-likelihood (bits/dim) of a trained model on its data")
    p.add_argument("checkpoint", metavar="RUN_OR_CHECKPOINT")
    p.add_argument("--method", default="vlb", help="vlb (variational bound) or ode (probability-flow ODE)")
    p.add_argument("--variance", default="beta", help="vlb: beta_tilde, beta, learned_range or analytic")
    p.add_argument("--n", type=int, default=256, help="number of data examples")
    p.add_argument("--t-samples", type=int, default=None, help="vlb: sample K timesteps (unbiased) instead of all T")
    p.add_argument("--bits", default="auto", help="bit depth of the discretised decoder; auto: the data's; none")
    p.add_argument("--probes", type=int, default=1, help="ode: Hutchinson probes (see --exact-trace)")
    p.add_argument("--exact-trace", action="store_true", help="ode: exact divergence (small dimensions)")
    p.add_argument("--analytic-n", type=int, default=128, help="analytic variance: data for the Γ table")
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--no-ema", action="store_true")
    p.add_argument("--device", default="cpu")


def _train(args: argparse.Namespace) -> int:
    from .train import train

    overrides = {k[4:]: v for k, v in vars(args).items() if k.startswith("cfg_") and v is not None}
    if args.resume:
        train(None, resume=args.resume, overrides=overrides, stop_at=args.stop_at,  # type: ignore[arg-type]
              progress=not args.quiet)
        return 0
    base = from_dict(load_file(args.config), where=args.config) if args.config else Config()
    cfg = from_dict(overrides, where="the command line", base=base).validate()
    run = train(cfg, stop_at=args.stop_at, progress=not args.quiet)
    print(f"run folder: {run}")
    return 0


def _sample(args: argparse.Namespace) -> int:
    import numpy as np
    import torch

    from .model import load_denoiser
    from .samplers import BESPOKE_CALIB_N, SAMPLERS, bespoke_params, make_grid, sample
    from .viz import save_samples

    if args.n < 1 or args.batch_size < 1:
        raise ConfigError(f"--n and --batch-size must be positive, got {args.n} and {args.batch_size}")
    out = Path(args.out)
    if out.suffix not in (".png", ".npz"):
        raise ConfigError(f"--out must end in .png or .npz, got {str(out)!r}")
    if args.sampler not in SAMPLERS:
        raise ConfigError(f"unknown sampler {args.sampler!r}; choose one of {', '.join(SAMPLERS)}")
    D, meta, cfg = load_denoiser(args.checkpoint, use_ema=not args.no_ema, device=args.device)
    from .checkpoint import resolve
    from .data import load_dataset
    from .variance import estimate_analytic_table

    if args.sampler == "ddpm" and args.variance == "learned_range" and not cfg.learn_variance:
        raise ConfigError("variance 'learned_range' needs a model trained with learn_variance = true")
    shape = (args.n, *meta["shape"])
    opts: dict[str, Any] = {"eta": args.eta, "variance": args.variance, "clip": args.clip}
    grid_dir = resolve(args.checkpoint) / "grids"
    if args.sampler == "bespoke" and args.grid == "optimised":  # fitted times and coefficients, saved together
        ts, opts["coeffs"] = bespoke_params(D, args.steps, grid_dir, BESPOKE_CALIB_N, args.seed, shape, args.device)
    else:
        ts = make_grid(D, args.steps, args.grid, args.spacing, sampler=args.sampler, seed=args.seed, shape=shape,
                       grid_dir=grid_dir, device=args.device)
    if args.sampler == "ddpm" and args.variance == "analytic":  # Bao et al. 2022: Γ_t on the grid, from data
        data = load_dataset(cfg.data, n=args.analytic_n, seed=args.seed + 1).x.to(args.device)
        opts["analytic_table"] = estimate_analytic_table(D, data, D.schedule, ts[:-1],
                                                         half_range=1.0 if meta["kind"] == "image" else None)
    stats: dict[str, Any] = {}
    x = sample(D, args.sampler, shape, args.steps, seed=args.seed, batch_size=args.batch_size,
               device=torch.device(args.device), progress=True, ts=ts, stats=stats, **opts)
    print(f"{args.sampler} on the {args.grid} grid: {args.steps} steps, {stats['nfe']} network evaluations per batch")
    if out.suffix == ".npz":
        np.savez(out, x=x.numpy())
    else:
        save_samples(x, out)
    print(f"wrote {args.n} samples to {out}")
    return 0


def _nll(args: argparse.Namespace) -> int:
    import torch

    from .data import load_dataset
    from .likelihood import ode_nll, vlb
    from .model import load_denoiser
    from .variance import VARIANCE_KINDS, estimate_analytic_table

    if args.method not in ("vlb", "ode"):
        raise ConfigError(f"unknown method {args.method!r}; choose vlb or ode")
    if args.variance not in VARIANCE_KINDS:
        raise ConfigError(f"unknown variance {args.variance!r}; choose one of {', '.join(VARIANCE_KINDS)}")
    if args.n < 1 or args.batch_size < 1 or args.analytic_n < 1:
        raise ConfigError("--n, --batch-size and --analytic-n must be positive")
    if args.probes < 1:
        raise ConfigError(f"--probes must be a positive integer, got {args.probes}")
    D, meta, cfg = load_denoiser(args.checkpoint, use_ema=not args.no_ema, device=args.device)
    bits = meta.get("bits") if args.bits == "auto" else None if args.bits.lower() == "none" else int(args.bits)
    data = load_dataset(cfg.data, n=args.n + args.analytic_n, seed=args.seed + 1).x.to(args.device)
    x, calib = data[: args.n], data[args.n:]
    g = torch.Generator(device=args.device).manual_seed(args.seed)
    T = D.schedule.T
    if args.method == "vlb":
        kw: dict[str, Any] = {}
        if args.variance == "analytic":  # Bao et al. 2022: Γ_t from the model on held-out data
            kw["analytic_table"] = estimate_analytic_table(
                D, calib, D.schedule, torch.arange(1, T + 1, dtype=torch.float64), generator=g,
                half_range=1.0 if meta["kind"] == "image" else None)
        if args.variance == "learned_range":
            kw["net_variance"] = lambda xt, t: D.with_v(xt, t)[1]
        rows = []
        for xb in x.split(args.batch_size):
            rows.append(vlb(D, xb, variance=args.variance, bits=bits, t_samples=args.t_samples, generator=g,
                            max_batch=4096, **kw))
        per = torch.cat([r.per_sample_bpd for r in rows])
        w = [len(r.per_sample_bpd) / len(per) for r in rows]
        parts = {k: sum(wi * getattr(r, k) for wi, r in zip(w, rows)) for k in ("prior_bpd", "diffusion_bpd",
                                                                                   "decoder_bpd")}
        print(f"vlb ({args.variance}, bits={bits}, {'all T' if args.t_samples is None else args.t_samples} "
              f"timesteps, n={len(per)}): {per.mean():.4f} ± {per.std() / len(per) ** 0.5:.4f} bits/dim")
        print(f"  L_T (prior) {parts['prior_bpd']:.3g}   sum L_t-1 {parts['diffusion_bpd']:.4f}   "
              f"L_0 (decoder) {parts['decoder_bpd']:.4f}")
        return 0
    res = [ode_nll(D, xb, probes=None if args.exact_trace else args.probes, dequantise_bits=bits, generator=g)
           for xb in x.split(args.batch_size)]
    per = torch.cat([r.per_sample_bpd for r in res])
    pv = sum(r.probe_var for r in res) / len(res)
    print(f"ode ({'exact trace' if args.exact_trace else f'{args.probes} probes'}, dequantised bits={bits}, "
          f"n={len(per)}): {per.mean():.4f} ± {per.std() / len(per) ** 0.5:.4f} bits/dim; "
          f"probe variance {pv:.4g}; NFE {sum(r.nfe for r in res)}")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    from .checkpoint import CheckpointError
    from .data import DataError
    from .train import TrainingError

    parser = _Parser(prog="kuosan", description="kuosan (扩散): denoising diffusion models")
    sub = parser.add_subparsers(dest="command", parser_class=_Parser)
    _train_parser(sub)
    _sample_parser(sub)
    _nll_parser(sub)
    try:
        args = parser.parse_args(argv)
        if args.command is None:
            parser.print_help()
            return 2
        return {"train": _train, "sample": _sample, "nll": _nll}[args.command](args)
    except (ConfigError, DataError, CheckpointError, TrainingError, ValueError, FileNotFoundError) as e:
        print(f"kuosan: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt as e:
        print(f"kuosan: {e or 'interrupted'}", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
