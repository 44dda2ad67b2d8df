"""``kuosan train-classifier RUN``: the noisy classifier p(y | x_t, t) of classifier guidance, trained on the run's
own training split and path with the run's time sampler (kuosan.guidance.train_classifier), saved (safetensors +
JSON, replaced atomically) in RUN/classifier/ or --out, with its held-out accuracy at five noise levels."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from .common import (UsageError, add_quiet, check_device, positive_float, positive_int, resolve_device, run_splits,
                     seed_int)


def add_parser(sub: Any, help: str) -> None:
    p = sub.add_parser("train-classifier", help=help,
                       description="Train the time-conditioned classifier p(y | x_t, t) that classifier guidance "
                                   "(kuosan sample --classifier-guidance S) differentiates, on the run's labelled "
                                   "data noised along its path at times drawn by its time sampler.",
                       formatter_class=argparse.RawDescriptionHelpFormatter,
                       epilog="Example:\n  kuosan train-classifier runs/digits --steps 2000")
    p.add_argument("checkpoint", metavar="RUN_OR_CHECKPOINT")
    p.add_argument("--steps", type=positive_int, default=2000, help="training steps (default: 2000)")
    p.add_argument("--batch-size", type=positive_int, default=128, help="examples per step (default: 128)")
    p.add_argument("--lr", type=positive_float, default=2e-3, help="peak learning rate, cosine decay (default: 2e-3)")
    p.add_argument("--width", type=positive_int, default=32,
                   help="first level's channels (images) or hidden width (vectors) (default: 32)")
    p.add_argument("--depth", type=positive_int, default=2,
                   help="levels (images, each halves the size) or residual blocks (vectors) (default: 2)")
    p.add_argument("--seed", type=seed_int, default=0, help="seed of the weights and batches (default: 0)")
    p.add_argument("--out", default=None, metavar="DIR",
                   help="folder to write (replaced whole; default: RUN/classifier, where sampling looks for it)")
    p.add_argument("--device", default="cpu", help="cpu, cuda, cuda:N or auto (default: cpu)")
    add_quiet(p)


def run_data(cfg: Any, meta: dict[str, Any]) -> tuple[Any, Any]:
    """The run's training and held-out splits, as training made them, with their labels."""
    train, held = run_splits(cfg, meta)
    if train.y is None or train.num_classes < 2:
        raise UsageError(f"the run's data {cfg.data.name!r} has no class labels: a classifier needs labelled data "
                         "(digits, mnist5k, moons, ring, image folders with one sub-folder per class, .npz with y)")
    return train, held


def _out(args: argparse.Namespace, ckpt: Path) -> Path:
    from ..checkpoint.layout import run_of

    out = Path(args.out) if args.out is not None else (run_of(ckpt) or ckpt) / "classifier"
    if out.exists() and not out.is_dir():
        raise UsageError(f"--out {str(out)!r} exists and is not a folder")
    if not out.parent.is_dir():
        raise UsageError(f"--out {str(out)!r}: folder {str(out.parent)!r} does not exist")
    return out


def run(args: argparse.Namespace) -> int:
    from ..build import load_denoiser, time_kwargs
    from ..checkpoint import resolve
    from ..guidance import ClassifierTraining, accuracy_by_noise, classifier_times, save_classifier, train_classifier
    from ..nets.classifier import ClassifierConfig

    device = resolve_device(check_device(args.device, allow_auto=True))
    ckpt = resolve(args.checkpoint)
    out = _out(args, ckpt)
    D, meta, cfg = load_denoiser(ckpt, device="cpu")
    train, held = run_data(cfg, meta)
    times = classifier_times(cfg.objective.time_sampling, D.path, **time_kwargs(cfg))
    net_cfg = ClassifierConfig(tuple(meta["shape"]), train.num_classes, width=args.width, depth=args.depth)
    clf, summary = train_classifier(train.x, train.y, train.num_classes, D.path, times, net_cfg,
                                    ClassifierTraining(steps=args.steps, batch_size=args.batch_size, lr=args.lr,
                                                       min_lr=min(1e-4, args.lr), seed=args.seed),
                                    device=device, progress=not args.quiet)
    evald, split_name = (held, "held-out") if len(held) else (train, "training (no held-out split)")
    acc = accuracy_by_noise(clf, evald.x, evald.y, seed=args.seed)
    shares = train.y.bincount(minlength=train.num_classes).double() / len(train.y)
    info = {"run": str(ckpt), "data": meta, **summary, "accuracy_by_noise": acc, "accuracy_split": split_name,
            "largest_class_share": float(shares.max())}
    save_classifier(clf.cpu(), out, info)
    print(f"classifier p(y | x_t, t): {train.num_classes} classes, {args.steps} steps on {len(train)} examples "
          f"({times.kind} times on the {D.path.kind} path); final loss {summary['final_loss']:.4f}")
    print(f"accuracy on the {split_name} split (largest class share {float(shares.max()):.3f}):")
    print(f"  {'t':>10}  {'λ':>8}  accuracy")
    for r in acc:
        print(f"  {r['t']:>10.4g}  {r['log_snr']:>8.3f}  {r['accuracy']:.3f}")
    print(f"wrote the classifier to {out}")
    return 0
