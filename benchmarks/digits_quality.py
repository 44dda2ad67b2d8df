"""Steps and training seconds until ``kuosan train`` (defaults) draws recognisable digits, judged by a
classifier fitted on the same data: mean max-probability of the samples >= 0.9 and every class present.

Training runs in chunks (``train(cfg, stop_at=k)``, then ``train(None, resume=run, stop_at=k2)``; resume is
exact, so the chunks equal one run); after each chunk n samples (DDIM, 50 steps) from the EMA weights are
scored. Train seconds are the training loops' own clock (log.csv elapsed_s), so neither the evaluation nor
the per-chunk checkpoint/preview at each chunk's end is counted.
Usage: python benchmarks/digits_quality.py [--chunk 250] [--max-steps N] [--threads N] [--set table.key=value ...]
"""

from __future__ import annotations

import argparse
import csv
import sys
import time
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np
import torch

from kuosan.build import load_denoiser
from kuosan.config import Config, apply_overrides
from kuosan.data import load_dataset
from kuosan.guidance.cfg import classifier_free
from kuosan.sampling import SAMPLERS, sample
from kuosan.train import train
from kuosan.viz import save_samples


def _logreg() -> Any:
    from sklearn.linear_model import LogisticRegression

    return LogisticRegression(C=1.0, max_iter=5000)


def _mlp() -> Any:
    from sklearn.neural_network import MLPClassifier

    return MLPClassifier((128,), alpha=1.0, max_iter=1000, random_state=0)


# classifiers on flattened images in kuosan's [-1, 1] scaling; both are well calibrated on digits
# (held-out real digits score mean max-prob ~0.94, uniform noise ~0.4-0.6)
CLASSIFIERS: dict[str, Callable[[], Any]] = {"logreg": _logreg, "mlp": _mlp}


def fit_classifier(cfg: Config, kind: str, confident: float) -> tuple[Any, dict[str, float], int]:
    """Fit on 75% of cfg's (labelled, image) data set; returns the classifier, held-out scores, class count."""
    from sklearn.model_selection import train_test_split

    # the very tensors (and scaling) kuosan trains on
    ds = load_dataset(cfg.data.name, n=cfg.data.n, seed=cfg.run.seed)
    if ds.y is None or ds.kind != "image":
        raise ValueError(f"data set {cfg.data.name!r} needs labelled images to be judged by a classifier")
    X, y = ds.x.reshape(len(ds), -1).numpy(), ds.y.numpy()
    Xtr, Xte, ytr, yte = train_test_split(X, y, test_size=0.25, random_state=0, stratify=y)
    clf = CLASSIFIERS[kind]().fit(Xtr, ytr)
    held = score(clf, torch.from_numpy(Xte), ds.num_classes, confident)
    noise = score(clf, torch.rand(500, X.shape[1], generator=torch.Generator().manual_seed(0)) * 2 - 1,
                  ds.num_classes, confident)
    ref = {"accuracy": float(clf.score(Xte, yte)), "real_mean_maxp": held["mean_maxp"],
           "real_confident": held["confident"], "noise_mean_maxp": noise["mean_maxp"]}
    return clf, ref, ds.num_classes


def score(clf: Any, x: torch.Tensor, num_classes: int, confident: float,
          y: torch.Tensor | None = None) -> dict[str, Any]:
    """Mean max-probability, share of confident samples, class histogram of samples x (n, ...) in [-1, 1]; with
    the asked labels y (n,), the share of samples assigned to their own class.

    A class counts as present when at least one sample is assigned to it with probability > ``confident``."""
    p = np.zeros((len(x), num_classes))
    p[:, clf.classes_] = clf.predict_proba(x.clamp(-1, 1).reshape(len(x), -1).numpy())
    maxp, label = p.max(1), p.argmax(1)
    hist = np.bincount(label, minlength=num_classes)
    present = np.unique(label[maxp > confident])
    return {"mean_maxp": float(maxp.mean()), "confident": float((maxp > confident).mean()),
            "hist": hist.tolist(), "present": len(present), "min_share": float(hist.min() / len(x)),
            "label_acc": float("nan") if y is None else float((label == y.numpy()).mean())}


def loop_seconds(log_csv: Path, step: int) -> float:
    """elapsed_s of the log row at ``step``: that chunk's training loop time (excludes its final save/preview)."""
    with open(log_csv, newline="") as f:
        rows = [r for r in csv.DictReader(f) if int(r["step"]) == step]
    if not rows:
        raise ValueError(f"{log_csv} has no row for step {step}")
    return float(rows[-1]["elapsed_s"])


def parse(argv: Sequence[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--chunk", type=int, default=250, help="training steps between evaluations")
    p.add_argument("--max-steps", type=int, help="stop here (default: the config's steps; must be <= steps)")
    p.add_argument("--threads", type=int, default=0, help="torch intra-op threads (0: torch's default)")
    p.add_argument("--set", action="append", default=[], metavar="TABLE.KEY=VALUE",
                   help="config override (e.g. optim.steps=2000), repeatable")
    p.add_argument("--out", help="output folder (default runs/digits-quality-<time>); the run goes to OUT/run")
    p.add_argument("--n", type=int, default=500, help="samples scored per evaluation")
    p.add_argument("--sampler", default="ddim", choices=sorted(SAMPLERS))
    p.add_argument("--sample-steps", type=int, default=50)
    p.add_argument("--seed", type=int, default=0, help="sampling seed (the same x_T at every evaluation)")
    p.add_argument("--classifier", default="logreg", choices=sorted(CLASSIFIERS))
    p.add_argument("--threshold", type=float, default=0.9, help="mean max-probability the criterion needs")
    p.add_argument("--confident", type=float, default=0.9, help="p above which a sample counts as confident")
    p.add_argument("--until-reached", action="store_true", help="stop once the criterion is met")
    p.add_argument("--guidance", type=float, help="class-conditional runs (--set data.class_cond=true) sample class "
                                                  "i mod 10 for sample i, with classifier-free guidance of scale w "
                                                  "(1: unguided, the default); the table adds the share of samples "
                                                  "the judge assigns to the asked class")
    args = p.parse_args(argv)
    for k in ("chunk", "n", "sample_steps"):
        if getattr(args, k) < 1:
            raise ValueError(f"--{k.replace('_', '-')} must be a positive integer, got {getattr(args, k)}")
    if args.threads < 0:
        raise ValueError(f"--threads must be >= 0, got {args.threads}")
    if args.guidance is not None and not args.guidance >= 0:
        raise ValueError(f"--guidance must be a number >= 0, got {args.guidance}")
    return args


def make_config(args: argparse.Namespace) -> Config:
    cfg = apply_overrides(Config(), args.set, where="--set")
    if args.threads:
        cfg.run.threads = args.threads
    out = Path(args.out or f"runs/digits-quality-{time.strftime('%Y%m%d-%H%M%S')}")
    cfg.log.out = str(out / "run")
    if (out / "run" / "checkpoints").exists():
        raise ValueError(f"{out / 'run'} already holds a run; choose another --out")
    return cfg.validate()


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    args = parse(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    cfg = make_config(args)
    if args.guidance is not None and not cfg.data.class_cond:
        raise ValueError("--guidance needs a class-conditional run: add --set data.class_cond=true")
    max_steps = cfg.optim.steps if args.max_steps is None else args.max_steps
    if not 0 < max_steps <= cfg.optim.steps:
        raise ValueError(f"--max-steps must be in [1, steps={cfg.optim.steps}] (lengthen with --set optim.steps=N), "
                         f"got {max_steps}")
    out, run = Path(cfg.log.out).parent, Path(cfg.log.out)
    clf, ref, ncls = fit_classifier(cfg, args.classifier, args.confident)
    print(f"torch {torch.__version__}, threads: {torch.get_num_threads()} "
          f"({'--threads' if args.threads else 'torch default'}); data {cfg.data.name}, steps {cfg.optim.steps}, "
          f"batch {cfg.optim.batch_size}, unet c={cfg.net.channels} mult={cfg.net.channel_mult}; "
          f"eval: {args.n} samples, {args.sampler} {args.sample_steps} steps, EMA weights")
    print(f"classifier {args.classifier}: held-out accuracy {ref['accuracy']:.3f}; mean max-prob on held-out real "
          f"images {ref['real_mean_maxp']:.3f} ({100 * ref['real_confident']:.0f}% > {args.confident}), "
          f"on uniform noise {ref['noise_mean_maxp']:.3f}")
    print(f"criterion: mean max-prob >= {args.threshold} and all {ncls} classes present "
          f"(>= 1 sample with p > {args.confident})")
    print(f"{'step':>6} {'train s':>8} {'wall s':>8} {'eval s':>7} {'mean maxp':>9} {'conf':>5} {'classes':>7} "
          f"{'min share':>9} {'label acc':>9}  class histogram", flush=True)
    stops = list(range(args.chunk, max_steps, args.chunk)) + [max_steps]
    rows: list[dict[str, Any]] = []
    reached = None
    train_s = wall_s = 0.0
    x = torch.empty(0)
    for k in stops:
        t0 = time.perf_counter()
        if k == stops[0]:
            train(cfg, stop_at=k, progress=False)
        else:
            train(None, resume=run, stop_at=k, progress=False)
        wall_s += time.perf_counter() - t0
        train_s += loop_seconds(run / "log.csv", k)
        t0 = time.perf_counter()
        D, meta, _ = load_denoiser(run)
        y = torch.arange(args.n) % ncls if cfg.data.class_cond else None
        if y is not None and args.guidance not in (None, 1.0):  # the null label is num_classes (train/step.py)
            D = classifier_free(D, args.guidance, null_label=ncls)
        x = sample(D, args.sampler, (args.n, *meta["shape"]), args.sample_steps, seed=args.seed,
                   cond=None if y is None else {"y": y})
        s = score(clf, x, ncls, args.confident, y)
        row = {"step": k, "train_s": train_s, "wall_s": wall_s, "eval_s": time.perf_counter() - t0, **s}
        rows.append(row)
        print(f"{k:>6} {train_s:>8.1f} {wall_s:>8.1f} {row['eval_s']:>7.1f} {s['mean_maxp']:>9.3f} "
              f"{s['confident']:>5.2f} {s['present']:>4}/{ncls:<2} {s['min_share']:>9.3f} {s['label_acc']:>9.3f}  "
              f"{s['hist']}", flush=True)
        if reached is None and s["mean_maxp"] >= args.threshold and s["present"] == ncls:
            reached = row
            if args.until_reached:
                break
    grid = out / "samples_final.png"
    save_samples(x[:100], grid)
    with open(out / "quality.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["step", "train_s", "wall_s", "mean_maxp", "confident", "present", "min_share", "label_acc",
                    "hist"])
        for r in rows:
            w.writerow([r["step"], f"{r['train_s']:.2f}", f"{r['wall_s']:.2f}", f"{r['mean_maxp']:.4f}",
                        f"{r['confident']:.4f}", r["present"], f"{r['min_share']:.4f}", f"{r['label_acc']:.4f}",
                        " ".join(map(str, r["hist"]))])
    if reached is None:
        print(f"criterion not reached in {rows[-1]['step']} steps ({train_s:.1f} s of training)")
    else:
        print(f"criterion reached at step {reached['step']} after {reached['train_s']:.1f} s of training "
              f"({reached['wall_s']:.1f} s wall incl. set-up, checkpoints, previews)")
    print(f"final samples (first 100): {grid}; table: {out / 'quality.csv'}; run: {run}")
    return {"rows": rows, "reached": reached, "classifier": ref, "grid": grid, "run": run}


if __name__ == "__main__":
    try:
        main()
    except ValueError as err:  # bad arguments or config (ConfigError too): one line, exit code 2
        print(f"digits_quality.py: error: {err}", file=sys.stderr)
        sys.exit(2)
