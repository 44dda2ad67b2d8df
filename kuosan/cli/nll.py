"""``kuosan nll RUN``: the negative log-likelihood (bits/dim) of a trained model on examples of its data.

``--method vlb``: the discrete variational bound term by term (discrete VP paths only); ``--method ode``: the
probability-flow ODE likelihood (any path). Flags that belong to the other method are errors, not ignored.
"""

from __future__ import annotations

import argparse
from typing import Any

from .common import (MAX_SAMPLES, UsageError, add_quiet, bits_arg, check_device, n_samples, positive_float,
                     positive_int, resolve_device, seed_int)

METHODS = ("vlb", "ode")
VLB_ONLY = ("variance", "t_samples", "analytic_n")
ODE_ONLY = ("probes", "exact_trace", "rtol", "atol")


def add_parser(sub: Any, help: str) -> None:
    from ..likelihood import VARIANCE_KINDS

    p = sub.add_parser("nll", help=help,
                       description="Negative log-likelihood in bits/dim of a trained run on examples of its data "
                                   "set, with the standard error over examples.",
                       formatter_class=argparse.RawDescriptionHelpFormatter,
                       epilog="Examples:\n  kuosan nll runs/digits --method vlb --variance analytic\n"
                              "  kuosan nll runs/digits --method ode --probes 4")
    p.add_argument("checkpoint", metavar="RUN_OR_CHECKPOINT")
    p.add_argument("--method", default="vlb", choices=METHODS, metavar="{vlb|ode}",
                   help="vlb: the variational bound (discrete VP chain); ode: the probability-flow ODE "
                        "(default: vlb)")
    p.add_argument("--n", type=n_samples, default=256, help=f"data examples, 1 to {MAX_SAMPLES} (default: 256)")
    p.add_argument("--bits", type=bits_arg, default="auto",
                   help="bit depth of the data for the discretised decoder (vlb) or dequantisation (ode): an "
                        "integer, auto (the data's) or none (continuous density) (default: auto)")
    p.add_argument("--batch-size", type=positive_int, default=64, help="examples per batch (default: 64)")
    p.add_argument("--seed", type=seed_int, default=0, help="seed, >= 0 (default: 0)")
    p.add_argument("--no-ema", action="store_true", help="use the raw weights instead of the EMA")
    p.add_argument("--device", default="cpu", help="cpu, cuda, cuda:N or auto (default: cpu)")
    add_quiet(p)
    v = p.add_argument_group("vlb")
    v.add_argument("--variance", default=None, choices=VARIANCE_KINDS, metavar="{" + "|".join(VARIANCE_KINDS) + "}",
                   help="reverse variance σ² (default: beta)")
    v.add_argument("--t-samples", type=positive_int, default=None, metavar="K",
                   help="draw K timesteps per example (unbiased) instead of summing all T terms")
    v.add_argument("--analytic-n", type=positive_int, default=None, metavar="N",
                   help="--variance analytic: held-out examples for the Γ table (default: 128)")
    o = p.add_argument_group("ode")
    o.add_argument("--probes", type=positive_int, default=None, metavar="K",
                   help="Hutchinson probes of the divergence (default: 1)")
    o.add_argument("--exact-trace", action="store_true", default=None,
                   help="exact divergence (d backward passes: small dimensions)")
    o.add_argument("--rtol", type=positive_float, default=None, help="ODE solver relative tolerance (default: 1e-5)")
    o.add_argument("--atol", type=positive_float, default=None, help="ODE solver absolute tolerance (default: 1e-5)")


def _check_method_flags(args: argparse.Namespace) -> None:
    other, method = (ODE_ONLY, "ode") if args.method == "vlb" else (VLB_ONLY, "vlb")
    for name in other:
        if getattr(args, name) is not None:
            raise UsageError(f"--{name.replace('_', '-')} applies to --method {method}, not --method {args.method}")
    if args.analytic_n is not None and args.variance != "analytic":
        raise UsageError("--analytic-n applies only with --variance analytic")
    if args.exact_trace and args.probes is not None:
        raise UsageError("--probes and --exact-trace exclude each other")


def run(args: argparse.Namespace) -> int:
    import torch

    from ..build import load_denoiser
    from ..data import load_dataset
    from ..paths import require_discrete

    _check_method_flags(args)
    device = resolve_device(check_device(args.device, allow_auto=True))
    D, meta, cfg = load_denoiser(args.checkpoint, use_ema=not args.no_ema, device=device)
    if getattr(D, "kind", None) == "consistency":
        raise UsageError("a consistency model gives the PF-ODE endpoint, not E[x_0|x_t]: "
                         "it has no likelihood by the bound or the ODE")
    variance = args.variance or "beta"
    if args.method == "vlb":
        require_discrete(D.path, "the variational bound (--method vlb; use --method ode on this path)")
        if variance == "learned_range" and not getattr(D, "learns_variance", False):
            raise UsageError("--variance learned_range needs a model trained with objective.learn_variance = true")
    bits = meta.get("bits") if args.bits == "auto" else args.bits
    analytic_n = (args.analytic_n or 128) if variance == "analytic" and args.method == "vlb" else 0
    data = load_dataset(cfg.data.name, n=args.n + analytic_n, seed=args.seed + 1).x.to(device)
    x, calib = data[: args.n], data[args.n:]
    if analytic_n and len(calib) == 0:
        raise UsageError(f"data set {cfg.data.name!r} has only {len(data)} examples, none left for the analytic "
                         "variance's table: lower --n")
    g = torch.Generator(device=device).manual_seed(args.seed)
    progress = not args.quiet
    if args.method == "vlb":
        _vlb(D, x, calib, variance, bits, args, g, meta, progress)
    else:
        _ode(D, x, bits, args, g, progress)
    return 0


def _batches(x: Any, size: int, progress: bool, desc: str) -> Any:
    """The examples in batches, with one bar over all examples (not restarting per batch)."""
    if not (progress and len(x) > size):
        yield from x.split(size)
        return
    from tqdm.auto import tqdm

    with tqdm(total=len(x), desc=desc, unit="example", leave=False, dynamic_ncols=True) as bar:
        for xb in x.split(size):
            yield xb
            bar.update(len(xb))


def _vlb(D: Any, x: Any, calib: Any, variance: str, bits: int | None, args: argparse.Namespace, g: Any,
         meta: dict[str, Any], progress: bool) -> None:
    import torch

    from ..likelihood import estimate_analytic_table, mean_stderr, vlb

    kw: dict[str, Any] = {}
    if variance == "analytic":  # Bao et al. 2022: Γ_t from the model on held-out examples
        kw["analytic_table"] = estimate_analytic_table(
            D, calib, torch.arange(1, D.path.T + 1, dtype=torch.float64), generator=g,
            half_range=1.0 if meta["kind"] == "image" else None, progress=progress)
    rows = [vlb(D, xb, variance=variance, bits=bits, t_samples=args.t_samples, generator=g, max_batch=4096,
                progress=progress, **kw)
            for xb in _batches(x, args.batch_size, progress, "vlb")]
    per = torch.cat([r.per_sample_bpd for r in rows])
    w = [len(r.per_sample_bpd) / len(per) for r in rows]
    parts = {k: sum(wi * getattr(r, k) for wi, r in zip(w, rows)) for k in ("prior_bpd", "diffusion_bpd",
                                                                               "decoder_bpd")}
    mean, se = mean_stderr(per)
    terms = "all T" if args.t_samples is None else args.t_samples
    print(f"vlb ({variance}, bits={bits}, {terms} timesteps, n={len(per)}): {mean:.4f} ± {se:.4f} bits/dim")
    print(f"  L_T (prior) {parts['prior_bpd']:.3g}   sum L_t-1 {parts['diffusion_bpd']:.4f}   "
          f"L_0 (decoder) {parts['decoder_bpd']:.4f}")


def _ode(D: Any, x: Any, bits: int | None, args: argparse.Namespace, g: Any, progress: bool) -> None:
    import torch

    from ..likelihood import mean_stderr, ode_nll

    probes = None if args.exact_trace else (args.probes or 1)
    tol = {k: v for k, v in (("rtol", args.rtol), ("atol", args.atol)) if v is not None}
    res = [ode_nll(D, xb, probes=probes, dequantise_bits=bits, generator=g, progress=progress, **tol)
           for xb in _batches(x, args.batch_size, progress, "ode nll")]
    per = torch.cat([r.per_sample_bpd for r in res])
    mean, se = mean_stderr(per)
    pv = sum(r.probe_var * len(r.per_sample_bpd) for r in res) / len(per)
    how = "exact trace" if probes is None else f"{probes} probe{'s' * (probes > 1)}"
    print(f"ode ({how}, dequantised bits={bits}, n={len(per)}): {mean:.4f} ± {se:.4f} bits/dim; "
          f"probe variance {pv:.4g}; NFE {sum(r.nfe for r in res)}")
