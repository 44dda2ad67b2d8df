"""The evaluation report: every metric of a sample set beside the real-vs-real baseline (the held-out split
against the training split), as a JSON-able dict and as a printed table.

The baseline says what "good" is on this data with this feature network: a model whose samples were as good as
new data would score about the baseline. The baseline has the held-out split's size, and FD (biased upward by
O(d/n), see :mod:`.fd`), PRDC and the class histogram depend on the number of samples, so for those the model is
also scored on random subsets of that size ("model_at_baseline_n"): that column compares like with like. KID is
unbiased and the memorisation ratios are per sample, so they need no matching. For the exact metrics the baseline
is a fresh draw of the samples' size from the true density.
"""

from __future__ import annotations

import math
import warnings
from typing import TYPE_CHECKING, Any

import torch
from torch import Tensor

from .classes import class_stats
from .fd import check_sample_count, frechet_distance
from .kid import kid
from .memorisation import memorisation
from .prdc import prdc

if TYPE_CHECKING:
    from ..exact import GaussianMixture
    from .features import Features

NOTE = ("These figures compare models on the same data with kuosan's own feature network; they are not comparable "
        "with published FIDs.")
MAX_REAL = 10_000  # PRDC's real set (its k-NN radii cost N²): a seeded subset beyond this
MATCHED_REPEATS = 10  # random subsets of the samples, of the held-out split's size, averaged


def _row(model: float | None, baseline: float | None, better: str, model_se: float | None = None,
         baseline_se: float | None = None, matched: float | None = None, **extra: Any) -> dict[str, Any]:
    """One metric: the model's figure, at the baseline's sample size when it depends on n, and the baseline."""
    return {"model": model, "model_stderr": model_se, "model_at_baseline_n": matched, "baseline": baseline,
            "baseline_stderr": baseline_se, "better": better, **extra}


def _subset(x: Tensor, n: int, g: torch.Generator) -> Tensor:
    return x if len(x) <= n else x[torch.randperm(len(x), generator=g)[:n]]


def feature_metrics(f_train: Tensor, f_samples: Tensor, f_held: Tensor, *, n_boot: int = 100, seed: int = 0,
                    k: int = 5, notes: list[str]) -> dict[str, dict[str, Any]]:
    """FD, KID, precision/recall/density/coverage of the samples against the training split; baselines from f_held.

    FD and PRDC depend on the number of samples (FD's O(d/n) bias; the k-NN balls of the fakes and the share of
    reals a set of fakes can cover), so when there are more samples than held-out examples they are also given
    averaged over MATCHED_REPEATS random subsets of the held-out split's size: that column compares like with
    like. KID is unbiased, so its figure needs no matching."""
    d, n_held = f_train.shape[1], len(f_held)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        check_sample_count(len(f_samples), d)  # refuses n <= d
    notes += [str(w.message) for w in caught]
    fd_ok, prdc_ok = n_held > d, n_held > k
    if n_held and not fd_ok:
        notes.append(f"the held-out split has {n_held} examples, not more than the {d} feature dimensions: no FD "
                     "baseline")
    g = torch.Generator().manual_seed(seed + 3)
    real = _subset(f_train, MAX_REAL, g)  # PRDC's reference: its k-NN radii cost N²
    subsets = ([_subset(f_samples, n_held, g) for _ in range(MATCHED_REPEATS)]
               if prdc_ok and len(f_samples) > n_held else [])

    fd = frechet_distance(f_train, f_samples, n_boot=n_boot, seed=seed)
    fd_b = frechet_distance(f_train, f_held, n_boot=n_boot, seed=seed + 1) if fd_ok else None
    fd_m = (sum(frechet_distance(f_train, s, n_boot=0).value for s in subsets) / len(subsets)
            if subsets and fd_ok else None)
    out = {"fd": _row(fd.value, fd_b and fd_b.value, "lower", fd.stderr, fd_b and fd_b.stderr, fd_m,
                      n=len(f_samples), baseline_n=n_held)}
    kd = kid(f_train, f_samples, seed=seed)
    kd_b = kid(f_train, f_held, seed=seed + 1) if n_held >= 4 else None
    out["kid"] = _row(kd.value, kd_b and kd_b.value, "lower", kd.stderr, kd_b and kd_b.stderr, m=kd.m,
                      baseline_m=kd_b and kd_b.m)
    pr = prdc(real, f_samples, k=k)
    pr_b = prdc(real, f_held, k=k) if prdc_ok else None
    pr_m = [prdc(real, s, k=k) for s in subsets]
    for name in ("precision", "recall", "density", "coverage"):
        matched = sum(getattr(r, name) for r in pr_m) / len(pr_m) if pr_m else None
        out[name] = _row(getattr(pr, name), pr_b and getattr(pr_b, name), "higher", matched=matched, k=k)
    return out


def exact_metrics(samples: Tensor, mixture: "GaussianMixture", *, seed: int = 0, w2: bool = True,
                  notes: list[str]) -> dict[str, dict[str, Any]]:
    """NLL under the true density, W2, MMD, energy distance and mode weights; baseline: a fresh draw of size n."""
    from . import exact as ex

    x = samples.detach().to("cpu", torch.float64).flatten(1)
    g = torch.Generator().manual_seed(seed + 10)
    ref, fresh = mixture.sample(len(x), generator=g), mixture.sample(len(x), generator=g)
    out: dict[str, dict[str, Any]] = {}
    nll, nll_se = ex.mean_nll(x, mixture)
    nll_b, nll_b_se = ex.mean_nll(fresh, mixture)
    out["nll_true_density"] = _row(nll, nll_b, "baseline", nll_se, nll_b_se, unit="nats/sample")
    if w2:
        try:
            out["w2"] = _row(ex.w2(x, ref), ex.w2(fresh, ref), "lower")
        except ImportError as e:
            notes.append(f"W2 skipped: {e}")
    value, h = ex.mmd(x, ref)
    out["mmd2"] = _row(value, ex.mmd(fresh, ref, bandwidth=h)[0], "lower", bandwidth=h)
    out["energy_distance"] = _row(ex.energy_distance(x, ref), ex.energy_distance(fresh, ref), "lower")
    mw, mw_b = ex.mode_weights(x, mixture), ex.mode_weights(fresh, mixture)
    out["mode_weights_tv"] = _row(mw.total_variation, mw_b.total_variation, "lower", estimated=mw.estimated,
                                  true=mw.true)
    out["missing_modes"] = _row(mw.missing_modes, mw_b.missing_modes, "lower")
    return out


def evaluate(samples: Tensor, train_x: Tensor, train_y: Tensor | None, held_x: Tensor, held_y: Tensor | None,
             features: "Features", *, mixture: "GaussianMixture | None" = None, requested: Tensor | None = None,
             n_boot: int = 100, seed: int = 0, k: int = 5, w2: bool = True) -> dict[str, Any]:
    """Every metric of ``samples`` (n, *D) against the training split, beside the held-out baseline."""
    if tuple(samples.shape[1:]) != tuple(train_x.shape[1:]):
        raise ValueError(f"samples have shape {tuple(samples.shape[1:])} per example but the data has "
                         f"{tuple(train_x.shape[1:])}")
    samples = samples.detach().cpu()
    if not torch.isfinite(samples).all():
        raise ValueError("the samples contain NaN or infinite values")
    notes: list[str] = []
    if len(held_x) == 0:
        notes.append("the run kept no held-out split (data.val_fraction = 0): no real-vs-real baseline and no "
                     "memorisation scale")
    report: dict[str, Any] = {"note": NOTE, "n": {"samples": len(samples), "train": len(train_x),
                                                  "heldout": len(held_x)},
                              "features": features.info}
    f_train, f_samples, f_held = (features.features(x) for x in (train_x, samples, held_x))
    report["metrics"] = feature_metrics(f_train, f_samples, f_held, n_boot=n_boot, seed=seed, k=k, notes=notes)
    probs = features.probs(samples)
    if probs is not None and train_y is not None:
        base = class_stats(features.probs(held_x), train_y, features.num_classes, held_y) if len(held_x) else None
        model = class_stats(probs, train_y, features.num_classes, requested)
        report["classes"] = {"model": model.to_dict(), "baseline": base and base.to_dict()}
        g = torch.Generator().manual_seed(seed + 4)
        matched = ([class_stats(_subset(probs, len(held_x), g), train_y, features.num_classes)
                    for _ in range(MATCHED_REPEATS)] if base is not None and len(probs) > len(held_x) else [])
        mean = lambda name: sum(getattr(c, name) for c in matched) / len(matched) if matched else None  # noqa: E731
        m = report["metrics"]
        m["class_kl"] = _row(model.kl, base and base.kl, "lower", matched=mean("kl"))
        m["missing_classes"] = _row(model.missing_classes, base and base.missing_classes, "lower",
                                    matched=mean("missing_classes"))
        m["confidence"] = _row(model.mean_confidence, base and base.mean_confidence, "higher")
        m["class_accuracy"] = _row(model.accuracy, base and base.accuracy, "higher",
                                   note="conditional samples: the class asked for; baseline: the classifier on "
                                        "held-out labels")
    if len(held_x):
        mem = memorisation(samples, train_x, held_x)
        report["memorisation"] = mem.to_dict()
        report["metrics"]["near_copies"] = _row(mem.near_copy_fraction, mem.baseline_near_copy_fraction, "lower",
                                                threshold=mem.threshold)
        report["metrics"]["nn_ratio_median"] = _row(float(mem.ratio.median()), float(mem.heldout_ratio.median()),
                                                    "baseline")
        report["_memorisation"] = mem  # for the PNG; removed by to_json
    if mixture is not None:
        report["exact"] = exact_metrics(samples, mixture, seed=seed, w2=w2, notes=notes)
    report["notes"] = notes
    return report


def to_json(report: dict[str, Any]) -> dict[str, Any]:
    """The report without in-memory objects (keys starting with '_'), infinities as strings."""
    def clean(v: Any) -> Any:
        if isinstance(v, dict):
            return {k: clean(x) for k, x in v.items() if not str(k).startswith("_")}
        if isinstance(v, (list, tuple)):
            return [clean(x) for x in v]
        if isinstance(v, float) and not math.isfinite(v):
            return str(v)
        return v
    return clean(report)


LABELS = {"fd": "FD", "kid": "KID", "precision": "precision",
          "recall": "recall", "density": "density", "coverage": "coverage", "class_kl": "class KL (nats)",
          "missing_classes": "classes never sampled", "confidence": "classifier confidence",
          "class_accuracy": "class accuracy (conditional)", "near_copies": "near-copies (ratio < 1/3)",
          "nn_ratio_median": "NN-distance ratio (median)", "nll_true_density": "NLL under true density",
          "w2": "W2", "mmd2": "MMD² (Gaussian kernel)", "energy_distance": "energy distance",
          "mode_weights_tv": "mode weights (TV)", "missing_modes": "modes never sampled"}
BETTER = {"lower": "lower", "higher": "higher", "baseline": "≈ baseline"}


def _fmt(v: Any, se: Any = None) -> str:
    if v is None:
        return "—"
    if isinstance(v, int):
        return str(v)
    s = f"{v:.4g}" if abs(v) >= 1e-3 or v == 0 else f"{v:.3e}"
    if isinstance(se, float):
        s += f" ± {se:.2g}" if math.isfinite(se) else " ± ?"  # ?: the variance estimate came out negative
    return s


def format_table(report: dict[str, Any], title: str = "") -> str:
    """The report as a fixed-width table: metric, model, model at the baseline's n, real-vs-real, better."""
    n = report["n"]
    feats = report["features"]
    lines = [title] if title else []
    lines += [report["note"],
              f"samples {n['samples']}, training split {n['train']}, held-out split {n['heldout']}; features: "
              f"{feats.get('kind')} ({feats.get('dim')}-d)", ""]
    rows = [("metric", f"model (n={n['samples']})", f"model (n={n['heldout']})", f"real-vs-real (n={n['heldout']})",
             "better")]
    sections = [("", report["metrics"])] + ([("exact (true density known; baseline: a fresh draw of the same n)",
                                              report["exact"])] if "exact" in report else [])
    for head, table in sections:
        if head:
            rows.append((f"-- {head}", "", "", "", ""))
        for key, r in table.items():
            rows.append((LABELS.get(key, key), _fmt(r["model"], r["model_stderr"]),
                         _fmt(r["model_at_baseline_n"]) if r["model_at_baseline_n"] is not None else "",
                         _fmt(r["baseline"], r["baseline_stderr"]), BETTER.get(r["better"], r["better"])))
    widths = [max(len(r[i]) for r in rows if not r[0].startswith("-- ")) for i in range(5)]
    for r in rows:
        lines.append(r[0] if r[0].startswith("-- ") else "  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip())
    for note in report.get("notes", []):
        lines.append(f"note: {note}")
    return "\n".join(lines)
