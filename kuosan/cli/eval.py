"""``kuosan eval RUN``: how good a trained run's samples are, on its own data, with error bars and no download.

Generates ``--n`` samples with any registered sampler (or reads ``--samples file.npz``), trains or reuses kuosan's
feature network on the run's training split (:mod:`kuosan.metrics.features`), and prints FD, KID, precision /
recall / density / coverage, class statistics, memorisation and, for the built-in toys with a known density, the
exact metrics — each beside the real-vs-real baseline (the run's held-out split against its training split).
``--out report.json`` writes everything as JSON, and for image data a PNG of the most copy-like samples beside
their nearest training examples. Bad input is a one-line error (exit code 2) before any sampling.
"""

from __future__ import annotations

import argparse
import json
import time
import warnings
from pathlib import Path
from typing import Any

from .common import (MAX_SAMPLES, UsageError, add_quiet, check_device, default_grid_of, n_samples, positive_int,
                     resolve_device, run_splits, seed_int, write_atomic)

DEFAULT_N = 2000
SAMPLER_DEFAULTS = {"sampler": "ddim", "steps": 50}  # the grid: the path's (sampling.default_grid)


def add_parser(sub: Any, help: str = "sample quality of a trained run: FD, KID, PRDC, memorisation, exact metrics"
               ) -> None:
    from ..sampling.grids import SPACINGS
    from .sample import GRIDS, _samplers, add_sampler_options

    samplers = _samplers()
    p = sub.add_parser("eval", help=help,
                       description="Sample quality of a trained run on its own data, each figure beside the "
                                   "real-vs-real baseline (held-out split vs training split). The feature-space "
                                   "figures compare models on the same data; they are not comparable with published "
                                   "FIDs.",
                       formatter_class=argparse.RawDescriptionHelpFormatter,
                       epilog="Examples:\n  kuosan eval runs/digits --sampler dpm++2m --steps 10 --n 2000 "
                              "--out report.json\n  kuosan eval runs/digits --samples x.npz --out report.json\n"
                              "  kuosan eval runs/ring --nll")
    p.add_argument("checkpoint", metavar="RUN_OR_CHECKPOINT")
    g = p.add_argument_group("sampler (when generating; not with --samples)")
    names = list(samplers)
    g.add_argument("--sampler", default=None, choices=names, metavar="{" + "|".join(names) + "}",
                   help="the sampler (default: ddim)")
    g.add_argument("--steps", type=positive_int, default=None, help="sampling steps (default: 50)")
    g.add_argument("--grid", default=None, choices=GRIDS, metavar="{" + "|".join(GRIDS) + "}",
                   help="time grid (default: karras on the ve path, uniform on every other)")
    g.add_argument("--spacing", default=None, choices=SPACINGS, metavar="{" + "|".join(SPACINGS) + "}",
                   help="spacing of the uniform grid (default: trailing)")
    add_sampler_options(p, samplers, "sampler options (when generating; forwarded only when given)")
    s = p.add_argument_group("samples")
    s.add_argument("--samples", default=None, metavar="FILE.npz",
                   help="evaluate these samples (array x, as `kuosan sample --out x.npz` writes; optional y: the "
                        "classes a conditional model was asked for) instead of generating")
    s.add_argument("--n", type=n_samples, default=None,
                   help=f"samples to generate, 1 to {MAX_SAMPLES} (default: {DEFAULT_N}); with --samples: use the "
                        "first N of the file (default: all)")
    s.add_argument("--seed", type=seed_int, default=0, help="seed of the samples and the metrics (default: 0)")
    s.add_argument("--batch-size", type=positive_int, default=256, help="samples per network batch (default: 256)")
    s.add_argument("--no-ema", action="store_true", help="use the raw weights instead of the EMA")
    s.add_argument("--device", default="cpu", help="cpu, cuda, cuda:N or auto (default: cpu)")
    m = p.add_argument_group("metrics and output")
    m.add_argument("--nll", action="store_true", help="add the model's own NLL (bits/dim) on held-out examples "
                                                      "(the variational bound on discrete VP paths, else the ODE)")
    m.add_argument("--nll-n", type=positive_int, default=None, metavar="N",
                   help="--nll: held-out examples (default: 256, at most the held-out split)")
    m.add_argument("--boot", type=positive_int, default=100, metavar="B",
                   help="bootstrap resamples of the FD's standard error (default: 100)")
    m.add_argument("--k", type=positive_int, default=5, help="nearest neighbours of PRDC's balls (default: 5)")
    m.add_argument("--feature-cache", default=None, metavar="DIR",
                   help="feature networks' cache (default: $KUOSAN_CACHE/features or ~/.cache/kuosan/features)")
    m.add_argument("--no-feature-cache", action="store_true", help="train the feature network afresh, store nothing")
    m.add_argument("--out", default=None, metavar="REPORT.json",
                   help="write the report as JSON (and, for images, REPORT_memorisation.png beside it)")
    add_quiet(m)


def _check_flags(args: argparse.Namespace) -> None:
    """Flags that mean nothing together are errors, never silently dropped."""
    from .sample import sampler_options

    sampling = [f"--{k}" for k in ("sampler", "steps", "grid", "spacing", "analytic_n")
                if getattr(args, k) is not None] + [f"--{k.replace('_', '-')}" for k in sampler_options(args)]
    if args.samples is not None and sampling:
        raise UsageError(f"{sampling[0]} applies when generating, not with --samples")
    if args.nll_n is not None and not args.nll:
        raise UsageError("--nll-n applies only with --nll")
    if args.feature_cache is not None and args.no_feature_cache:
        raise UsageError("--feature-cache and --no-feature-cache exclude each other")
    if args.out is not None:
        out = Path(args.out)
        if out.suffix.lower() != ".json":
            raise UsageError(f"--out must end in .json, got {args.out!r}")
        if out.is_dir() or not (out.parent if str(out.parent) else Path(".")).is_dir():
            raise UsageError(f"--out {args.out!r}: name a .json file in an existing folder")


def read_samples(path: str | Path, shape: tuple[int, ...], n: int | None) -> tuple[Any, Any]:
    """x (N, *shape) float32 and optional y (N,) from an .npz; uint8 images are mapped to [-1, 1]."""
    import numpy as np
    import torch

    p = Path(path)
    if not p.is_file():
        raise UsageError(f"--samples {str(p)!r} is not a file")
    try:
        with np.load(p, allow_pickle=False) as z:
            arrays = {k: z[k] for k in z.files}
    except Exception as e:  # noqa: BLE001 - a corrupt zip, object arrays, not an npz at all
        raise UsageError(f"--samples {str(p)!r}: cannot read it as .npz ({' '.join(str(e).split())})") from None
    y = arrays.pop("y", None)
    if not arrays:
        raise UsageError(f"--samples {str(p)!r} holds no sample array (expected x, as `kuosan sample --out x.npz` "
                         "writes)")
    x = arrays["x"] if "x" in arrays else next(iter(arrays.values()))
    if x.ndim < 1 or tuple(x.shape[1:]) != tuple(shape):
        raise UsageError(f"--samples {str(p)!r}: samples of shape {tuple(x.shape[1:])} but the run's data has "
                         f"{tuple(shape)}")
    if x.dtype.kind not in "biuf":
        raise UsageError(f"--samples {str(p)!r}: unsupported dtype {x.dtype}")
    if n is not None and len(x) < n:
        raise UsageError(f"--n {n}: --samples {str(p)!r} holds only {len(x)} samples")
    x = x[:n] if n is not None else x
    xt = torch.from_numpy(x.astype(np.float32) / 127.5 - 1 if x.dtype == np.uint8 else x.astype(np.float32))
    yt = None
    if y is not None:
        if y.shape != (len(arrays.get("x", x)),) or y.dtype.kind not in "iu":
            raise UsageError(f"--samples {str(p)!r}: y must hold one integer class per sample")
        yt = torch.from_numpy(y[: len(xt)].astype(np.int64))
    return xt, yt


def _generate(args: argparse.Namespace, D: Any, ckpt: Path, shape: tuple[int, ...], device: str, cond: Any,
              progress: bool, data: Any) -> tuple[Any, dict[str, Any]]:
    """Samples (n, *D) from the run, as ``kuosan sample`` draws them; returns them and the sampler settings."""
    import torch

    from ..sampling import check_denoiser_kind, make_grid, sample
    from .sample import _samplers, check_options, sampler_options

    consistency_model = getattr(D, "kind", None) == "consistency"
    if consistency_model:  # it runs the consistency sampler only, by default on its own noise levels, 2 steps
        args.sampler, args.steps = args.sampler or "consistency", args.steps or 2
    levels = args.sampler == "consistency" and args.grid is None
    for k, v in SAMPLER_DEFAULTS.items():
        setattr(args, k, getattr(args, k) or v)
    args.grid = "levels" if levels else default_grid_of(args, D.path)
    spec = _samplers()[args.sampler]
    check_denoiser_kind(D, args.sampler)  # a consistency model runs the consistency sampler only
    opts = sampler_options(args)
    check_options(args.sampler, spec, opts, args)
    if opts.get("variance") == "learned_range" and not getattr(D, "learns_variance", False):
        raise UsageError("--variance learned_range needs a model trained with objective.learn_variance = true")
    reason = spec.supports(D.path)
    if reason is not None:
        raise UsageError(f"sampler {args.sampler!r} cannot run on this model's {D.path.kind} path: {reason}")
    settings = {"sampler": args.sampler, "steps": args.steps, "grid": args.grid, "spacing": args.spacing,
                "options": {k: v for k, v in opts.items()}, "seed": args.seed, "ema": not args.no_ema}
    if args.grid == "optimised":
        from ..sampling.tuning import bespoke_params, grid_for

        if args.sampler == "bespoke":
            ts, opts["coeffs"] = bespoke_params(D, args.steps, ckpt / "grids", seed=args.seed, shape=shape,
                                                device=device, progress=progress)
        else:
            ts = grid_for(D, args.sampler, args.steps, ckpt / "grids", seed=args.seed, shape=shape, device=device,
                          progress=progress)
    elif levels:
        ts = spec.default_grid(D, args.steps)
    else:
        ts = make_grid(D.path, args.steps, args.grid, args.spacing or "trailing")
    if opts.get("variance") == "analytic":  # Bao et al. 2022: Γ_t from training examples
        from ..likelihood import estimate_analytic_table

        calib = data.x[: args.analytic_n or 256].to(device)
        opts["analytic_table"] = estimate_analytic_table(D, calib, ts[:-1][ts[:-1] > 0],
                                                         half_range=1.0 if len(shape) == 4 else None,
                                                         progress=progress)
    stats: dict[str, Any] = {}
    x = sample(D, args.sampler, shape, args.steps, seed=args.seed, batch_size=args.batch_size,
               device=torch.device(device), ts=ts, progress=progress, stats=stats, cond=cond, **opts)
    settings["nfe"] = stats.get("nfe")
    return x, settings


def _model_nll(D: Any, held: Any, args: argparse.Namespace, meta: dict[str, Any], device: str, mixture: Any,
               progress: bool) -> dict[str, Any]:
    """The model's NLL (bits/dim) on held-out examples; with a known density, the true one beside it."""
    import math

    import torch

    from ..likelihood import mean_stderr, ode_nll, vlb
    from ..paths import DiscreteVP

    x = held[: args.nll_n or 256]
    g = torch.Generator(device=device).manual_seed(args.seed)
    bits = meta.get("bits")
    xs = x.to(device).split(args.batch_size)
    if isinstance(D.path, DiscreteVP):
        method = "vlb"
        per = torch.cat([vlb(D, xb, variance="beta", bits=bits, generator=g, max_batch=4096,
                             progress=progress).per_sample_bpd.cpu() for xb in xs])
    else:
        method = "ode"
        probes = None if x[0].numel() <= 16 else 1  # exact trace for small dimensions
        per = torch.cat([ode_nll(D, xb, probes=probes, dequantise_bits=bits, generator=g,
                                 progress=progress).per_sample_bpd.cpu() for xb in xs])
    mean, se = mean_stderr(per)
    out = {"method": method, "bits_per_dim": mean, "stderr": se, "n": len(x), "bits": bits, "data": "held-out"}
    if mixture is not None and bits is None:
        from ..metrics.exact import log_density

        true = -log_density(x.flatten(1), mixture) / (x[0].numel() * math.log(2))
        out["true_density_bits_per_dim"], out["true_density_stderr"] = mean_stderr(true)
    return out


def run(args: argparse.Namespace) -> int:
    import torch

    from ..build import load_denoiser
    from ..checkpoint import resolve
    from ..metrics import (FeatureConfig, check_sample_count, evaluate, feature_dim, feature_extractor, format_table,
                           to_json)
    from ..metrics.exact import known_mixture
    from ..metrics.memorisation import save_worst_png

    _check_flags(args)
    device = resolve_device(check_device(args.device, allow_auto=True))
    progress = not args.quiet
    ckpt = resolve(args.checkpoint)
    D, meta, cfg = load_denoiser(ckpt, use_ema=not args.no_ema, device=device)
    shape = tuple(meta["shape"])
    samples = requested = None
    if args.samples is not None:  # read first: a bad file is refused before any training
        samples, requested = read_samples(args.samples, shape, args.n)
    train, held = run_splits(cfg, meta, ", and eval compares samples with the data the run was trained on")
    if requested is not None and (train.y is None or int(requested.min()) < 0
                                  or int(requested.max()) >= train.num_classes):
        raise UsageError(f"--samples {args.samples!r}: y must be classes 0..{train.num_classes - 1} of the run's data"
                         if train.y is not None else f"--samples {args.samples!r} holds classes y, but the run's data "
                                                     "has no labels")
    n = len(samples) if samples is not None else (args.n or DEFAULT_N)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # only the refusal here, before any work; the report carries the warning
        check_sample_count(n, feature_dim(shape), "samples (--n)")
    if args.nll and getattr(D, "kind", None) == "consistency":
        raise UsageError("--nll: " + "a consistency model gives the PF-ODE endpoint, not E[x_0|x_t]: "
                                     "it has no likelihood by the bound or the ODE")
    if args.nll and len(held.x) < 2:
        raise UsageError("--nll needs held-out examples, but the run kept fewer than 2 (data.val_fraction)")
    features = feature_extractor(train.x, train.y, train.num_classes, FeatureConfig(),
                                 cache_dir=args.feature_cache, use_cache=not args.no_feature_cache, progress=progress)
    class_cond = bool(cfg.data.class_cond) and train.y is not None
    t0 = time.perf_counter()
    if samples is None:
        cond = None
        if class_cond:  # classes drawn like the training labels, so the class histogram can match the data's
            freq = torch.bincount(train.y, minlength=train.num_classes).double()
            requested = torch.multinomial(freq, n, replacement=True, generator=torch.Generator().manual_seed(args.seed))
            cond = {"y": requested.to(device)}
        samples, settings = _generate(args, D, ckpt, (n, *shape), device, cond, progress, train)
    else:
        settings = {"samples": str(args.samples)}
    seconds = time.perf_counter() - t0
    mixture = known_mixture(cfg.data.name) if meta.get("kind") == "vector" else None
    report = evaluate(samples, train.x, train.y, held.x, held.y, features, mixture=mixture,
                      requested=requested, n_boot=args.boot, seed=args.seed, k=args.k)
    if args.nll:
        report["model_nll"] = _model_nll(D, held.x, args, meta, device, mixture, progress)
    report = {"run": str(ckpt), "data": cfg.data.name, "generation": {**settings, "seconds": seconds}, **report}
    mem = report.get("_memorisation")
    title = (f"kuosan eval {ckpt}: " + (f"{settings['sampler']}, {settings['steps']} steps, {settings['grid']} grid"
                                        if "sampler" in settings else f"samples from {args.samples}"))
    print(format_table(report, title))
    if "model_nll" in report:
        r = report["model_nll"]
        true = (f"; true density {r['true_density_bits_per_dim']:.4f}" if "true_density_bits_per_dim" in r else "")
        print(f"model NLL ({r['method']}, {r['n']} held-out examples): {r['bits_per_dim']:.4f} ± {r['stderr']:.2g} "
              f"bits/dim{true}")
    if args.out is not None:
        out = Path(args.out)
        if mem is not None and samples.ndim == 4:
            png = out.with_name(out.stem + "_memorisation.png")
            write_atomic(png, lambda tmp: save_worst_png(mem, samples, train.x, tmp))
            report["memorisation"]["png"] = str(png)
            print(f"wrote the most copy-like samples beside their nearest training examples to {png}")
        write_atomic(out, lambda tmp: tmp.write_text(json.dumps(to_json(report), indent=1)))
        print(f"wrote the report to {out}")
    return 0
