"""``kuosan sample RUN``: samples from a trained run with any registered sampler, grid and options.

Everything is checked before any work: the flags' values, --out, the device, the sampler's options (an option
the sampler does not take is an error naming both), the grid against the sampler, the memory the samples need.
Sampler options are forwarded only when given, so each sampler keeps its own defaults. A consistency model samples
with the consistency sampler (the default for it, and the only one it runs), on --levels or its default levels.
"""

from __future__ import annotations

import argparse
from typing import Any

from .common import (MAX_SAMPLES, UsageError, add_quiet, any_int, check_device, check_out, check_sample_size,
                     default_grid_of, finite_float, n_samples, nonneg_float, nonneg_int, positive_float, positive_int,
                     resolve_device, seed_int, write_atomic)

GRIDS = ("uniform", "logsnr", "karras", "optimised")
DEFAULT_STEPS = 50
CONSISTENCY_STEPS = 2  # multistep consistency sampling's usual budget (one step: --steps 1)
# options the CLI computes itself (never flags): the Analytic-DPM table, the bespoke solver's coefficients
COMPUTED_OPTIONS = frozenset({"analytic_table", "coeffs"})


# help of the options with a meaning worth a sentence; the others say which samplers take them
OPTION_HELP = {
    "eta": "DDIM stochasticity: 0 deterministic, 1 the ancestral posterior step",
    "variance": "reverse variance σ²: β̃, β, the network's learned range, or Analytic-DPM (Bao et al. 2022, "
                "estimated on --analytic-n data examples)",
    "clip": "clip x̂_0 to [-CLIP, CLIP] (a finite number > 0)",
    "r": "intermediate point of the singlestep solver, 0 < r < 1",
    "corrector": "the UniC corrector",
    "variant": "UniPC's B(h)",
    "rtol": "relative tolerance of the adaptive solver",
    "atol": "absolute tolerance of the adaptive solver",
    "method": "Runge–Kutta pair",
    "snr": "Langevin corrector's signal-to-noise ratio",
    "corrector_steps": "Langevin corrector steps per step",
    "predictor": "predictor step",
}


def _samplers() -> dict[str, Any]:
    """The registry, with the bespoke solver (registered by importing kuosan.sampling.tuning)."""
    from ..sampling import SAMPLERS
    from ..sampling import tuning  # noqa: F401

    return SAMPLERS


def _option_hint(name: str, samplers: dict[str, Any]) -> Any:
    """The annotation of option ``name`` in the first sampler function that takes it."""
    import functools
    import typing

    for spec in samplers.values():
        if name in spec.options:
            fn = spec.fn.func if isinstance(spec.fn, functools.partial) else spec.fn
            try:
                return typing.get_type_hints(fn).get(name)
            except Exception:  # noqa: BLE001 - an unresolvable annotation: read the value as text
                return None
    return None


def _option_default(name: str, spec: Any) -> str:
    """The sampler function's default of option ``name``, as text ('none' for None)."""
    import inspect

    try:
        d = inspect.signature(spec.fn).parameters[name].default
    except (KeyError, TypeError, ValueError):
        return "?"
    return "?" if d is inspect.Parameter.empty else "none" if d is None else str(d).lower() if isinstance(d, bool) \
        else str(d)


def _option_argument(name: str, samplers: dict[str, Any]) -> dict[str, Any]:
    """argparse settings for a sampler option, from its function's annotation (Literal -> choices, bool -> flag)."""
    from typing import Literal, get_args, get_origin

    from ..likelihood import VARIANCE_KINDS

    takers = [k for k, spec in samplers.items() if name in spec.options]
    defaults = {_option_default(name, samplers[k]) for k in takers}
    default = f"; default: {defaults.pop()}" if len(defaults) == 1 else ""
    help = f"{OPTION_HELP.get(name, '')}{'; ' if name in OPTION_HELP else ''}taken by {', '.join(takers)}{default}"
    hint = _option_hint(name, samplers)
    args = [a for a in get_args(hint) if a is not type(None)]
    base = args[0] if (args and get_origin(hint) is not Literal) else hint
    choices = VARIANCE_KINDS if name == "variance" else get_args(hint) if get_origin(hint) is Literal else None
    if name == "clip":
        return dict(type=positive_float, metavar="CLIP", help=help)
    if choices:
        return dict(choices=choices, metavar="{" + "|".join(map(str, choices)) + "}", help=help)
    if base is bool:
        return dict(action=argparse.BooleanOptionalAction, help=help)
    if base is int:
        return dict(type=any_int, metavar="INT", help=help)
    if base is float:
        return dict(type=nonneg_float if name == "eta" else finite_float, metavar=name.upper(), help=help)
    return dict(type=str, metavar="VALUE", help=help)


def add_sampler_options(p: Any, samplers: dict[str, Any], title: str) -> None:
    """One flag per option any registered sampler takes (dest ``opt:NAME``, default None = not given), and
    --analytic-n; shared by ``sample`` and ``eval``."""
    o = p.add_argument_group(title)
    for name in sorted(set().union(*(spec.options for spec in samplers.values())) - COMPUTED_OPTIONS):
        o.add_argument(f"--{name.replace('_', '-')}", dest=f"opt:{name}", default=None,
                       **_option_argument(name, samplers))
    o.add_argument("--analytic-n", type=positive_int, default=None, metavar="N",
                   help="--variance analytic: data examples for the Γ table (default: 256)")


def add_parser(sub: Any, help: str) -> None:
    from ..sampling.grids import SPACINGS

    SAMPLERS = _samplers()

    p = sub.add_parser("sample", help=help,
                       description="Draw samples from a trained run (its latest checkpoint) or a checkpoint folder. "
                                   "Sample i depends only on (--seed, i), whatever --batch-size.",
                       formatter_class=argparse.RawDescriptionHelpFormatter,
                       epilog="Examples:\n  kuosan sample runs/digits --sampler dpm++2m --steps 10 --grid optimised "
                              "--out grid.png\n  kuosan sample runs/digits --sampler ddpm --variance analytic "
                              "--steps 100 --out x.npz")
    p.add_argument("checkpoint", metavar="RUN_OR_CHECKPOINT")
    g = p.add_argument_group("sampler")
    names = list(SAMPLERS)
    g.add_argument("--sampler", default=None, choices=names, metavar="{" + "|".join(names) + "}",
                   help="the sampler (default: ddim; consistency for a consistency model, which runs no other)")
    g.add_argument("--steps", type=positive_int, default=None,
                   help=f"sampling steps (default: {DEFAULT_STEPS}; {CONSISTENCY_STEPS} for a consistency model)")
    g.add_argument("--grid", default=None, choices=GRIDS, metavar="{" + "|".join(GRIDS) + "}",
                   help="time grid (default: karras on the ve path, uniform on every other; the consistency "
                        "sampler: its default noise levels, see "
                        "--levels); optimised: fitted for this model, sampler and --steps on calibration draws "
                        "(deterministic samplers), saved with the checkpoint and reused")
    g.add_argument("--levels", type=levels_arg, default=None, metavar="S0,S1,...",
                   help="consistency sampler: its noise levels σ, decreasing, the first the path's largest (80 on "
                        "ve), e.g. 80,0.821 (two steps; default for two steps: 80, 1.642·σ_d)")
    g.add_argument("--spacing", default=None, choices=SPACINGS, metavar="{" + "|".join(SPACINGS) + "}",
                   help="spacing of the uniform grid (default: trailing)")
    add_sampler_options(p, SAMPLERS, "sampler options (forwarded only when given; a sampler that does not take "
                                      "one refuses it)")
    from .constraint_options import add_constraint_options
    from .guidance_options import add_guidance_options

    add_guidance_options(p)
    add_constraint_options(p)
    s = p.add_argument_group("output")
    s.add_argument("--n", type=n_samples, default=64, help=f"number of samples, 1 to {MAX_SAMPLES} (default: 64)")
    s.add_argument("--seed", type=seed_int, default=0, help="seed, >= 0 (default: 0)")
    s.add_argument("--first-index", type=nonneg_int, default=0, metavar="I",
                   help="index of the first sample (default: 0); samples I..I+n-1 of the seed's stream")
    s.add_argument("--batch-size", type=positive_int, default=256, help="samples per network batch (default: 256)")
    s.add_argument("--out", default="samples.png",
                   help=".png (image grid or plot) or .npz (array x); its folder must exist; an existing file is "
                        "replaced once the samples are complete (default: samples.png)")
    s.add_argument("--no-ema", action="store_true", help="use the raw weights instead of the EMA")
    s.add_argument("--device", default="cpu", help="cpu, cuda, cuda:N or auto (default: cpu)")
    add_quiet(s)


def levels_arg(s: str) -> list[float]:
    """--levels: comma-separated noise levels (checked against the path once the run is loaded)."""
    try:
        levels = [float(v) for v in s.split(",") if v.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be comma-separated numbers such as 80,0.821, got {s!r}") from None
    if not levels:
        raise argparse.ArgumentTypeError(f"must be at least one noise level (NFE >= 1), got {s!r}")
    return levels


def sampler_options(args: argparse.Namespace) -> dict[str, Any]:
    """The sampler options given on the command line (name -> value)."""
    return {k[4:]: v for k, v in vars(args).items() if k.startswith("opt:") and v is not None}


def check_options(sampler: str, spec: Any, opts: dict[str, Any], args: argparse.Namespace) -> None:
    """An option the sampler does not take, or a flag that means nothing here, is an error (never dropped)."""
    for name in opts:
        if name not in spec.options:
            takes = ", ".join(f"--{o.replace('_', '-')}" for o in sorted(spec.options - COMPUTED_OPTIONS)) or "none"
            raise UsageError(f"sampler {sampler!r} does not take option --{name.replace('_', '-')} "
                             f"(its options: {takes})")
    if args.analytic_n is not None and opts.get("variance") != "analytic":
        raise UsageError("--analytic-n applies only with --variance analytic")
    if args.spacing is not None and (args.grid or "uniform") != "uniform":
        raise UsageError(f"--spacing applies only to --grid uniform, not --grid {args.grid}")
    if getattr(args, "levels", None) is not None and (sampler != "consistency" or args.grid is not None):
        raise UsageError("--levels is the consistency sampler's grid: it takes neither another sampler nor --grid")
    if args.grid == "optimised" and not (spec.deterministic and spec.nfe(args.steps) is not None):
        fit = ", ".join(k for k, s in _samplers().items() if s.deterministic and s.nfe(args.steps) is not None)
        raise UsageError(f"--grid optimised needs a deterministic fixed-step sampler ({fit}), not {sampler!r}")


def run(args: argparse.Namespace) -> int:
    import torch

    from ..build import load_denoiser
    from ..checkpoint import resolve
    from ..paths import ve_sigma
    from ..sampling import check_denoiser_kind, levels_grid, make_grid, sample

    out = check_out(args.out)
    device = resolve_device(check_device(args.device, allow_auto=True))
    ckpt = resolve(args.checkpoint)
    D, meta, cfg = load_denoiser(ckpt, use_ema=not args.no_ema, device=device)
    consistency_model = getattr(D, "kind", None) == "consistency"
    if args.sampler is None:
        args.sampler = "consistency" if consistency_model else "ddim"
    check_denoiser_kind(D, args.sampler)  # a consistency model runs the consistency sampler only
    spec = _samplers()[args.sampler]
    if args.levels is not None and args.steps is not None and args.steps != len(args.levels):
        raise UsageError(f"--steps {args.steps} disagrees with the {len(args.levels)} noise levels of --levels")
    args.steps = len(args.levels) if args.levels is not None else args.steps or (
        CONSISTENCY_STEPS if consistency_model else DEFAULT_STEPS)
    opts = sampler_options(args)
    check_options(args.sampler, spec, opts, args)
    from .constraint_options import apply_constraints, check_constraint_options

    check_constraint_options(args, args.sampler)
    levels_ts = None
    if args.levels is not None:
        levels_ts = levels_grid(D.path, args.levels)
    elif args.sampler == "consistency" and args.grid is None:
        levels_ts = spec.default_grid(D, args.steps)
    args.grid = "levels" if levels_ts is not None else default_grid_of(args, D.path)
    shape = (args.n, *meta["shape"])
    check_sample_size(args.n, tuple(meta["shape"]), out)
    if opts.get("variance") == "learned_range" and not getattr(D, "learns_variance", False):
        raise UsageError("--variance learned_range needs a model trained with objective.learn_variance = true")
    reason = spec.supports(D.path)
    if reason is not None:
        raise UsageError(f"sampler {args.sampler!r} cannot run on this model's {D.path.kind} path: {reason}")
    from ..denoiser import Counting
    from .guidance_options import apply_guidance, grid_row_length

    counted = Counting(D)  # network calls, whatever guidance adds to each step
    G, cond = apply_guidance(args, counted, meta, cfg, args.n, device)  # every guidance check (and load) first
    progress = not args.quiet

    grid_dir = ckpt / "grids"
    if levels_ts is not None:
        ts = levels_ts
    elif args.grid == "optimised":
        from ..sampling.tuning import bespoke_params, grid_for

        if args.sampler == "bespoke":  # fitted times and coefficients, saved together
            ts, opts["coeffs"] = bespoke_params(D, args.steps, grid_dir, seed=args.seed, shape=shape, device=device,
                                                progress=progress)
        else:
            ts = grid_for(D, args.sampler, args.steps, grid_dir, seed=args.seed, shape=shape, device=device,
                          progress=progress)
    else:
        ts = make_grid(D.path, args.steps, args.grid, args.spacing or "trailing")
    if opts.get("variance") == "analytic":  # Bao et al. 2022: Γ_t on the grid's model times, from data
        from ..data import load_dataset
        from ..likelihood import estimate_analytic_table

        data = load_dataset(cfg.data.name, n=args.analytic_n or 256, seed=args.seed + 1).x.to(device)
        opts["analytic_table"] = estimate_analytic_table(
            D, data, ts[:-1][ts[:-1] > 0], half_range=1.0 if meta["kind"] == "image" else None,
            progress=progress)
    con = apply_constraints(args, G, meta, shape, ts, seed=args.seed, first_index=args.first_index)
    stats: dict[str, Any] = {}
    x = sample(con.denoiser, args.sampler, shape, args.steps, seed=args.seed, first_index=args.first_index,
               batch_size=args.batch_size, device=torch.device(device), ts=ts, progress=progress, stats=stats,
               cond={**(cond or {}), **con.cond} or None, callback=con.callback, **opts)
    x = con.finish(x)
    if con.denoiser is not counted and stats.get("nfe_per_batch"):  # network calls a sample: guidance and
        stats["nfe"] = max(counted.nfe // len(stats["nfe_per_batch"]), 1)  # RePaint's re-steps add some
    where = f"noise levels {', '.join(f'{float(ve_sigma(D.path, t)):g}' for t in ts[:-1])}" if args.grid == "levels" \
        else f"the {args.grid} grid"
    print(f"{args.sampler} on {where}: {args.steps} steps, {stats['nfe']} network evaluations per sample")
    if con.note is not None:
        print(con.note(x))
    if con.save is not None:
        con.save(x, out)
    else:
        _save(x, out, cond, grid_row_length(args, meta, args.n))
    print(f"wrote {args.n} samples to {out}")
    return 0


def _save(x: Any, out: Any, cond: Any = None, nrow: int | None = None) -> None:
    if out.suffix.lower() == ".npz":  # with the classes asked for: `kuosan eval --samples` scores their accuracy
        import numpy as np

        y = {} if cond is None else {"y": cond["y"].cpu().numpy()}
        write_atomic(out, lambda tmp: np.savez(tmp, x=x.cpu().numpy(), **y))
    else:
        from ..viz import save_samples

        write_atomic(out, lambda tmp: save_samples(x, tmp, nrow=nrow))