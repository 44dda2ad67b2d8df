"""``kuosan sweep-guidance RUN --scales 0,1,2,4,8``: the quality↔diversity curve of a guidance scale (Ho & Salimans
2022, Fig. 1). Per scale, --n samples with the same seeds (common random numbers: the curve shows the scale, not noise),
classes in equal shares, scored with kuosan eval's feature network (kuosan.metrics.features): the accuracy of the
classes asked for (its classifier, independent of classifier guidance's own), FD, precision and recall (also density
and coverage), beside the real-vs-real row (held-out split against training split). A table, JSON and a plot.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Any

from .common import (MAX_SAMPLES, UsageError, add_quiet, check_device, n_samples, positive_int, resolve_device,
                     run_splits, seed_int, write_atomic)
from .guidance_options import KINDS, interval_arg


def scales_arg(s: str) -> list[float]:
    """--scales: comma-separated finite numbers >= 0, at least one."""
    import math

    try:
        v = [float(x) for x in s.split(",") if x.strip()]
    except ValueError:
        v = []
    if not v or not all(math.isfinite(x) and x >= 0 for x in v):
        raise argparse.ArgumentTypeError(f"must be comma-separated scales >= 0 such as 0,1,2,4,8, got {s!r}")
    return list(dict.fromkeys(v))


def add_parser(sub: Any, help: str) -> None:
    from .sample import _samplers

    names = list(_samplers())
    p = sub.add_parser("sweep-guidance", help=help, formatter_class=argparse.RawDescriptionHelpFormatter,
                       description="Sample a run at several guidance scales and score each: class accuracy, FD, "
                                   "precision, recall (kuosan eval's feature network), with a plot of the curve.",
                       epilog="Examples:\n  kuosan sweep-guidance runs/digits-cond --scales 0,1,2,4,8\n"
                              "  kuosan sweep-guidance runs/digits-cond --kind auto --guide-run "
                              "runs/digits-cond/checkpoints/step_500 --scales 1,1.5,2,3")
    p.add_argument("checkpoint", metavar="RUN_OR_CHECKPOINT")
    p.add_argument("--scales", type=scales_arg, default=[0.0, 1.0, 2.0, 4.0, 8.0], metavar="W1,W2,...",
                   help="guidance scales (default: 0,1,2,4,8); cfg and auto: 1 = unguided; classifier: 0 = unguided")
    p.add_argument("--kind", choices=KINDS, default="cfg", metavar="{" + "|".join(KINDS) + "}",
                   help="classifier-free (default), autoguidance (needs --guide-run) or classifier guidance")
    p.add_argument("--interval", type=interval_arg, default=None, metavar="LO,HI",
                   help="guide only where λ ∈ [LO, HI] (write --interval=-2,4 when LO is negative)")
    p.add_argument("--guide-run", default=None, metavar="RUN", help="--kind auto: the weaker model")
    p.add_argument("--classifier", default=None, metavar="RUN_OR_DIR",
                   help="--kind classifier: the classifier folder (default: the run's classifier/)")
    p.add_argument("--sampler", default="ddim", choices=names, metavar="{" + "|".join(names) + "}",
                   help="the sampler (default: ddim)")
    p.add_argument("--steps", type=positive_int, default=25, help="sampling steps (default: 25)")
    p.add_argument("--n", type=n_samples, default=1000, help=f"samples per scale, up to {MAX_SAMPLES} (default: 1000)")
    p.add_argument("--seed", type=seed_int, default=0, help="seed of the samples (the same at every scale)")
    p.add_argument("--batch-size", type=positive_int, default=256, help="samples per network batch (default: 256)")
    p.add_argument("--k", type=positive_int, default=5, help="nearest neighbours of precision/recall (default: 5)")
    p.add_argument("--no-ema", action="store_true", help="use the raw weights instead of the EMA")
    p.add_argument("--device", default="cpu", help="cpu, cuda, cuda:N or auto (default: cpu)")
    p.add_argument("--out", default=None, metavar="SWEEP.json",
                   help="the JSON (default: RUN/guidance_sweep_KIND.json); the plot is written beside it (.png)")
    p.add_argument("--feature-cache", default=None, metavar="DIR", help="feature networks' cache (as kuosan eval)")
    add_quiet(p)


def _check(args: argparse.Namespace) -> None:
    if args.kind == "auto" and args.guide_run is None:
        raise UsageError("--kind auto needs --guide-run RUN (the weaker model to guide with)")
    if args.guide_run is not None and args.kind != "auto":
        raise UsageError(f"--guide-run applies only to --kind auto, not --kind {args.kind}")
    if args.classifier is not None and args.kind != "classifier":
        raise UsageError(f"--classifier applies only to --kind classifier, not --kind {args.kind}")
    if args.out is not None and (Path(args.out).suffix.lower() != ".json" or not Path(args.out).parent.is_dir()):
        raise UsageError(f"--out must name a .json file in an existing folder, got {args.out!r}")


def _scores(f: Any, probs: Any, real: Any, f_train: Any, train_y: Any, C: int, y: Any, k: int) -> dict[str, Any]:
    from ..metrics import class_stats, frechet_distance, prdc

    pr = prdc(real, f, k=k)
    row = {"fd": frechet_distance(f_train, f, n_boot=0).value, "precision": pr.precision, "recall": pr.recall,
           "density": pr.density, "coverage": pr.coverage, "accuracy": None, "confidence": None}
    if probs is not None:
        cs = class_stats(probs, train_y, C, y)
        row.update(accuracy=cs.accuracy, confidence=cs.mean_confidence, class_kl=cs.kl)
    return row


def run(args: argparse.Namespace) -> int:
    import warnings

    import torch

    from ..build import load_denoiser
    from ..checkpoint import resolve
    from ..checkpoint.layout import run_of
    from ..denoiser import Counting
    from ..guidance import guide, load_classifier
    from ..metrics import FeatureConfig, check_sample_count, feature_dim, feature_extractor
    from ..sampling import sample
    from .guidance_options import load_guide

    _check(args)
    device = resolve_device(check_device(args.device, allow_auto=True))
    ckpt = resolve(args.checkpoint)
    D, meta, cfg = load_denoiser(ckpt, use_ema=not args.no_ema, device=device)
    shape, C = tuple(meta["shape"]), int(meta.get("num_classes") or 0)
    conditional = bool(cfg.data.class_cond) and C > 0
    if args.kind == "cfg" and not conditional:
        raise UsageError("--kind cfg needs a class-conditional run (trained with --class-cond); this one is "
                         "unconditional (--kind auto works)")
    if args.kind == "cfg" and not cfg.data.p_uncond > 0:
        raise UsageError("--kind cfg: this run was trained without label dropout (data.p_uncond = 0), so its null "
                         "class is untrained")
    if args.kind == "classifier" and C < 2:
        raise UsageError(f"--kind classifier needs labelled data; the run's data {meta.get('name')!r} has none")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        check_sample_count(args.n, feature_dim(shape), "samples per scale (--n)")
    out = Path(args.out) if args.out else (run_of(ckpt) or ckpt) / f"guidance_sweep_{args.kind}.json"
    weak = load_guide(args.guide_run, D, meta, cfg, device, not args.no_ema) if args.kind == "auto" else None
    clf = None
    if args.kind == "classifier":
        clf, _ = load_classifier(args.classifier or str(run_of(ckpt) or ckpt), D.path, shape=shape, num_classes=C,
                                 device=device)
    train, held = run_splits(cfg, meta)
    labelled = train.y is not None and C > 1
    features = feature_extractor(train.x, train.y if labelled else None, C if labelled else 0, FeatureConfig(),
                                 cache_dir=args.feature_cache, progress=not args.quiet)
    y = torch.arange(args.n) % C if labelled and (conditional or args.kind == "classifier") else None
    cond = None if y is None else {"y": y}
    f_train = features.features(train.x)
    g = torch.Generator().manual_seed(args.seed + 3)
    real = f_train if len(f_train) <= 10_000 else f_train[torch.randperm(len(f_train), generator=g)[:10_000]]
    rows = []
    base = None
    if len(held) > max(args.k, feature_dim(shape)):
        base = _scores(features.features(held.x), features.probs(held.x) if labelled else None, real, f_train,
                       train.y, C, held.y if labelled else None, args.k)
    for s in args.scales:
        counters = [Counting(D)] + ([Counting(weak)] if weak is not None else [])  # network evaluations, not calls
        Dg = guide(counters[0], args.kind, s, null_label=C, weak=counters[-1] if weak is not None else None,
                   classifier=clf, conditional_model=conditional, interval=args.interval)  # type: ignore[arg-type]
        t0, stats = time.perf_counter(), {}
        x = sample(Dg, args.sampler, (args.n, *shape), args.steps, seed=args.seed, batch_size=args.batch_size,
                   device=torch.device(device), cond=cond, progress=not args.quiet, stats=stats)
        seconds = time.perf_counter() - t0
        row = _scores(features.features(x), features.probs(x) if labelled else None, real, f_train, train.y, C, y,
                      args.k)
        nfe = sum(c.nfe for c in counters) / len(stats["nfe_per_batch"])  # per sample (every batch steps alike)
        rows.append({"scale": s, **row, "nfe": nfe, "seconds": seconds})
    report = {"run": str(ckpt), "data": cfg.data.name, "kind": args.kind, "interval": args.interval,
              "guide_run": args.guide_run, "sampler": args.sampler, "steps": args.steps, "n": args.n,
              "seed": args.seed, "features": features.info, "rows": rows, "real_vs_real": base,
              "note": "accuracy: the feature classifier's agreement with the class asked for; FD, precision, recall "
                      "in kuosan's feature space (not comparable with published FIDs)"}
    print(format_sweep(report))
    write_atomic(out, lambda tmp: tmp.write_text(json.dumps(report, indent=1, default=str)))
    png = out.with_suffix(".png")
    write_atomic(png, lambda tmp: plot_sweep(report, tmp))
    print(f"wrote {out} and {png}")
    return 0


def format_sweep(report: dict[str, Any]) -> str:
    """The sweep as a text table, one row per scale and the real-vs-real row."""
    def f(v: Any) -> str:
        return "—" if v is None else f"{v:.4g}"

    cols = ("fd", "precision", "recall", "accuracy")
    head = f"{'scale':>8}  " + "  ".join(f"{c:>9}" for c in cols)
    lines = [f"guidance sweep ({report['kind']}, {report['sampler']} {report['steps']} steps, n = {report['n']}"
             + (f", λ interval {report['interval']}" if report.get("interval") else "") + ")", head]
    lines += [f"{r['scale']:>8g}  " + "  ".join(f"{f(r[c]):>9}" for c in cols) for r in report["rows"]]
    if report.get("real_vs_real"):
        lines.append(f"{'real':>8}  " + "  ".join(f"{f(report['real_vs_real'][c]):>9}" for c in cols))
    return "\n".join(lines)


def plot_sweep(report: dict[str, Any], path: Path) -> None:
    """Left: precision against recall, one point per scale (quality↔diversity); right: FD and accuracy by scale."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows, base = report["rows"], report.get("real_vs_real")
    fig, (a, b) = plt.subplots(1, 2, figsize=(10, 4))
    a.plot([r["recall"] for r in rows], [r["precision"] for r in rows], "o-", color="C0")
    for r in rows:
        a.annotate(f"{r['scale']:g}", (r["recall"], r["precision"]), textcoords="offset points", xytext=(4, 4))
    if base:
        a.plot([base["recall"]], [base["precision"]], "*", color="C3", ms=12, label="held-out data")
        a.legend(loc="lower left")
    a.set(xlabel="recall (diversity)", ylabel="precision (quality)", title=f"{report['kind']} guidance")
    scales = [r["scale"] for r in rows]
    b.plot(scales, [r["fd"] for r in rows], "o-", color="C0", label="FD")
    b.set(xlabel="guidance scale", ylabel="FD (lower is better)")
    if any(r["accuracy"] is not None for r in rows):
        c = b.twinx()
        c.plot(scales, [r["accuracy"] for r in rows], "s--", color="C2", label="class accuracy")
        c.set_ylabel("class accuracy", color="C2")
    fig.tight_layout()
    fig.savefig(path, dpi=100, format="png")
    plt.close(fig)
