"""Command line: ``kuosan train``, ``kuosan sample``. Bad input gives one line on stderr and exit code 2."""

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
    p.add_argument("--spacing", default="trailing", help="leading, trailing or linspace (uniform grids)")
    p.add_argument("--eta", type=float, default=0.0, help="DDIM stochasticity (0: deterministic, 1: DDPM)")
    p.add_argument("--variance", default="beta_tilde", help="DDPM variance: beta_tilde or beta")
    p.add_argument("--clip", type=float, default=None, help="clip x0_hat to [-clip, clip]")
    p.add_argument("--n", type=int, default=64, help="number of samples")
    p.add_argument("--batch-size", type=int, default=256)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--no-ema", action="store_true", help="use the raw weights instead of the EMA")
    p.add_argument("--device", default="cpu")
    p.add_argument("--out", default="samples.png", help=".png grid or .npz arrays")


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

    from .samplers import SAMPLERS, sample
    from .train import load_denoiser
    from .viz import save_samples

    if args.n < 1 or args.batch_size < 1:
        raise ConfigError(f"--n and --batch-size must be positive, got {args.n} and {args.batch_size}")
    out = Path(args.out)
    if out.suffix not in (".png", ".npz"):
        raise ConfigError(f"--out must end in .png or .npz, got {str(out)!r}")
    if args.sampler not in SAMPLERS:
        raise ConfigError(f"unknown sampler {args.sampler!r}; choose one of {', '.join(SAMPLERS)}")
    D, meta, _ = load_denoiser(args.checkpoint, use_ema=not args.no_ema, device=args.device)
    opts = {"eta": args.eta, "variance": args.variance, "clip": args.clip, "spacing": args.spacing}
    x = sample(D, args.sampler, (args.n, *meta["shape"]), args.steps, seed=args.seed, batch_size=args.batch_size,
               device=torch.device(args.device), progress=True, **opts)
    if out.suffix == ".npz":
        np.savez(out, x=x.numpy())
    else:
        save_samples(x, out)
    print(f"wrote {args.n} samples to {out}")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    from .checkpoint import CheckpointError
    from .data import DataError
    from .train import TrainingError

    parser = _Parser(prog="kuosan", description="kuosan (扩散): denoising diffusion models")
    sub = parser.add_subparsers(dest="command", parser_class=_Parser)
    _train_parser(sub)
    _sample_parser(sub)
    try:
        args = parser.parse_args(argv)
        if args.command is None:
            parser.print_help()
            return 2
        return {"train": _train, "sample": _sample}[args.command](args)
    except (ConfigError, DataError, CheckpointError, TrainingError, ValueError, FileNotFoundError) as e:
        print(f"kuosan: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt as e:
        print(f"kuosan: {e or 'interrupted'}", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
