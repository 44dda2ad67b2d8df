"""The quality↔diversity curve of every guidance kind on class-conditional digits
(issue 11; Ho & Salimans 2022, Fig. 1).

- **Models.** ``kuosan train --data digits --class-cond`` with its defaults (1000 steps, label dropout p_uncond = 0.1,
  checkpoints at steps 500 and 1000) in OUT/run; autoguidance's weaker models (Karras et al. 2024): the same run's
  step-500 checkpoint ("auto-early") and a smaller, shorter run (``--channels 16``, half the steps, "auto-small");
  classifier guidance's noisy classifier from ``kuosan train-classifier OUT/run`` (2000 steps). Existing folders
  are reused, so a second call only re-samples.
- **Sweeps.** ``kuosan sweep-guidance`` for each method at 5 scales, the same seeds at every scale (common random
  numbers), classes in equal shares: cfg (w = 1 unguided), cfg restricted to λ ∈ [-3.4, 2.5] (Kynkäänniemi et al.
  2024's σ ∈ (0.28, 5.42] for EDM2, as λ = -2 ln σ), auto-early and auto-small (w = 1 unguided), classifier
  (s = 0 unguided). Scored by kuosan eval's feature network: the accuracy of the class asked for (its classifier,
  not the guidance classifier), FD, precision and recall against the training split, beside held-out data.
- **Output.** OUT/results.json (every row), OUT/table.md, OUT/curve.png (precision against recall and class accuracy
  against FD, one line per method), and each sweep's own JSON and plot in OUT/sweeps/.

Cost (2 busy CPU cores): training ~2 min, classifier ~1 min, then 25 sweep points of --n samples × 2 network
evaluations × --sample-steps (about 15-30 s each at the defaults).

Usage: python benchmarks/guidance_sweep.py [--out benchmarks/results/guidance] [--n 1000] [--sample-steps 25]
       [--sampler ddim] [--device cpu] [--smoke]
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Any, Sequence

from kuosan.cli import main as kuosan

INTERVAL = "-3.4,2.5"  # λ = -2 ln σ for Kynkäänniemi et al.'s σ ∈ (0.28, 5.42]
METHODS: dict[str, dict[str, Any]] = {  # name -> sweep-guidance flags and scales
    "cfg": {"kind": "cfg", "scales": "1,1.5,2,3,5"},
    "cfg-interval": {"kind": "cfg", "scales": "1,1.5,2,3,5", "extra": [f"--interval={INTERVAL}"]},
    "auto-early": {"kind": "auto", "scales": "1,1.5,2,3,5", "guide": "early"},
    "auto-small": {"kind": "auto", "scales": "1,1.5,2,3,5", "guide": "small"},
    "classifier": {"kind": "classifier", "scales": "0,0.5,1,2,4"},
}
SMOKE_TRAIN = ["--channels", "8", "--set", "net.channel_mult=1,2", "--batch-size", "16", "--set", "data.n=150",
               "--set", "log.n_samples=4", "--set", "log.sample_steps=2", "--set", "log.ckpt_every=2"]


def _check(code: int, what: str) -> None:
    if code != 0:
        raise SystemExit(f"{what} failed (exit code {code})")


def build_models(out: Path, smoke: bool, threads: list[str]) -> dict[str, Path]:
    """The main run, the two guides and the classifier (reused when present)."""
    run, small = out / "run", out / "guide_small"
    tiny = SMOKE_TRAIN if smoke else []
    if not (run / "checkpoints").is_dir():
        _check(kuosan(["train", "--data", "digits", "--class-cond", *tiny, *(["--steps", "4"] if smoke else []),
                       *threads, "--quiet", "--out", str(run)]), "training the main run")
    early = sorted((run / "checkpoints").glob("step_*"))[0]  # keep=2: steps 500 and 1000 at the defaults
    if not (small / "checkpoints").is_dir():
        _check(kuosan(["train", "--data", "digits", "--class-cond", *tiny, "--channels", "8" if smoke else "16",
                       "--steps", "2" if smoke else "500", *threads, "--quiet", "--out", str(small)]),
               "training the small guide")
    if not (run / "classifier" / "classifier.json").is_file():
        _check(kuosan(["train-classifier", str(run), "--steps", "5" if smoke else "2000", "--quiet"]),
               "training the classifier")
    return {"run": run, "early": early, "small": small}


def sweep(name: str, spec: dict[str, Any], models: dict[str, Path], out: Path, args: argparse.Namespace
          ) -> dict[str, Any]:
    """One method's sweep through ``kuosan sweep-guidance``; returns its JSON report."""
    path = out / "sweeps" / f"{name}.json"
    argv = ["sweep-guidance", str(models["run"]), "--kind", spec["kind"], "--scales",
            "1,3" if args.smoke and spec["kind"] != "classifier" else "0,2" if args.smoke else spec["scales"],
            "--n", str(args.n), "--steps", str(args.sample_steps), "--sampler", args.sampler, "--seed", "0",
            "--device", args.device, "--out", str(path), "--quiet", *spec.get("extra", [])]
    if "guide" in spec:
        argv += ["--guide-run", str(models[spec["guide"]])]
    if args.feature_cache:
        argv += ["--feature-cache", args.feature_cache]
    t0 = time.perf_counter()
    _check(kuosan(argv), f"the {name} sweep")
    report = json.loads(path.read_text())
    report["wall_s"] = time.perf_counter() - t0
    return report


def table(results: dict[str, dict[str, Any]]) -> str:
    """One markdown table: method, scale, accuracy, FD, precision, recall (and held-out data)."""
    f = lambda v: "—" if v is None else f"{v:.3f}"  # noqa: E731
    lines = ["| method | scale | class accuracy | FD | precision | recall |", "|---|---|---|---|---|---|"]
    for name, rep in results.items():
        lines += [f"| {name} | {r['scale']:g} | {f(r['accuracy'])} | {f(r['fd'])} | {f(r['precision'])} | "
                  f"{f(r['recall'])} |" for r in rep["rows"]]
    base = next(iter(results.values())).get("real_vs_real")
    if base:
        lines.append(f"| held-out data | — | {f(base['accuracy'])} | {f(base['fd'])} | {f(base['precision'])} | "
                     f"{f(base['recall'])} |")
    return "\n".join(lines)


def plot(results: dict[str, dict[str, Any]], path: Path) -> None:
    """Precision against recall, and class accuracy against FD, one line per method (scales annotated)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (a, b) = plt.subplots(1, 2, figsize=(11, 4.5))
    for i, (name, rep) in enumerate(results.items()):
        rows = rep["rows"]
        for ax, (xk, yk) in ((a, ("recall", "precision")), (b, ("fd", "accuracy"))):
            if any(r[yk] is None for r in rows):
                continue
            ax.plot([r[xk] for r in rows], [r[yk] for r in rows], "o-", color=f"C{i}", label=name)
            for r in rows:
                ax.annotate(f"{r['scale']:g}", (r[xk], r[yk]), fontsize=7, textcoords="offset points", xytext=(3, 3))
    base = next(iter(results.values())).get("real_vs_real")
    if base:
        a.plot([base["recall"]], [base["precision"]], "*", color="k", ms=11, label="held-out data")
        if base.get("accuracy") is not None:
            b.plot([base["fd"]], [base["accuracy"]], "*", color="k", ms=11, label="held-out data")
    a.set(xlabel="recall (diversity)", ylabel="precision (quality)", title="quality ↔ diversity")
    b.set(xlabel="FD (lower is better)", ylabel="class accuracy", title="class accuracy ↔ FD")
    a.legend(fontsize=8)
    b.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--out", default="benchmarks/results/guidance", help="output folder (models are reused)")
    p.add_argument("--n", type=int, default=1000, help="samples per scale (default: 1000)")
    p.add_argument("--sample-steps", type=int, default=25, help="sampling steps (default: 25)")
    p.add_argument("--sampler", default="ddim", help="sampler (default: ddim)")
    p.add_argument("--methods", default=",".join(METHODS), help=f"subset of {','.join(METHODS)}")
    p.add_argument("--threads", type=int, default=None, help="training threads (default: kuosan's choice)")
    p.add_argument("--device", default="cpu")
    p.add_argument("--feature-cache", default=None, help="feature networks' cache (default: kuosan's)")
    p.add_argument("--smoke", action="store_true", help="tiny models and 2 scales a method: checks that it runs")
    args = p.parse_args(argv)
    methods = [m for m in args.methods.split(",") if m]
    unknown = sorted(set(methods) - set(METHODS))
    if unknown:
        p.error(f"unknown methods {unknown}; choose from {', '.join(METHODS)}")
    out = Path(args.out)
    (out / "sweeps").mkdir(parents=True, exist_ok=True)
    threads = ["--threads", str(args.threads)] if args.threads else []
    t0 = time.perf_counter()
    models = build_models(out, args.smoke, threads)
    print(f"models ready in {time.perf_counter() - t0:.0f} s: {models['run']} (guides {models['early'].name}, "
          f"{models['small']})")
    results = {name: sweep(name, METHODS[name], models, out, args) for name in methods}
    md = table(results)
    print(md)
    summary = {"models": {k: str(v) for k, v in models.items()}, "n": args.n, "sample_steps": args.sample_steps,
               "sampler": args.sampler, "interval": INTERVAL, "results": results}
    (out / "results.json").write_text(json.dumps(summary, indent=1, default=str))
    (out / "table.md").write_text(md + "\n")
    plot(results, out / "curve.png")
    print(f"wrote {out / 'results.json'}, {out / 'table.md'} and {out / 'curve.png'}")
    return summary


if __name__ == "__main__":
    main()
