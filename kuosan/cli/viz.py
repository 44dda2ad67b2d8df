"""``kuosan viz WHAT``: pictures of diffusion — a curve diffusing, covariances, coloured noise, schedules, a 2-D
model's trajectories, an image model's denoising steps, a run's training panels (kuosan.viz draws them).

Every subcommand writes a PNG (--out), an animated GIF where motion helps (--gif) and, with --save-data, the
arrays behind the picture (.npz). Every input is checked before any work; bad input is one line, exit code 2.
"""

from __future__ import annotations

import argparse
from pathlib import Path as FilePath
from typing import Any

from .common import UsageError, bounded_int, check_out, default_grid_of, seed_int, write_atomic

WHAT = {  # subcommand -> help
    "curve": "a smooth curve (or your 1-D signal) diffusing step by step beside the histogram of its values",
    "covariance": "Σ_t = α²Σ_0 + σ²I beside the empirical covariance, and the eigen-spectra of signal and noise",
    "colour-noise": "white noise coloured to a covariance by eigen-decomposition and by Cholesky",
    "schedule": "α, σ, SNR and λ = log(α²/σ²) of every path and schedule kind (and a run's) on t / t_max",
    "trajectory": "particles of a 2-D model moving from noise to data (exact ODE paths for known mixtures)",
    "denoise": "an image model's x_t and x̂_0 across the steps of a sampler",
    "training": "a run's training panels from its log.csv: loss and validation loss, learning rate, gradient norm",
}
PATH_KINDS = ("discrete_vp", "vp_cosine", "vp_linear", "ve", "flow")
SCHEDULES = ("linear", "scaled_linear", "cosine", "sigmoid")
GRIDS = ("uniform", "logsnr", "karras")


def _fractions(s: str) -> list[float]:
    try:
        v = [float(x) for x in s.split(",") if x.strip()]
    except ValueError:
        v = []
    if not v or len(v) > 8 or not all(0 <= x <= 1 for x in v):
        raise argparse.ArgumentTypeError(f"must be 1 to 8 comma-separated fractions of t_max in [0, 1], got {s!r}")
    return v


def _file(value: str | None, flag: str, suffix: str) -> FilePath | None:
    """An optional output file (kuosan.cli.common.check_out with one suffix)."""
    return None if value is None else check_out(value, flag, (suffix,))


def _path_options(p: Any, run_too: bool = True) -> None:
    g = p.add_argument_group("path (default: discrete_vp with the cosine schedule, as kuosan train)")
    g.add_argument("--path", choices=PATH_KINDS, default=None, help="the Gaussian path (a kuosan.paths kind)")
    g.add_argument("--schedule", choices=SCHEDULES, default=None, help="discrete_vp: the β table (default cosine)")
    g.add_argument("--zero-terminal-snr", action="store_true", default=None, help="discrete_vp: ᾱ_T = 0")
    if run_too:
        g.add_argument("--run", default=None, help="take the path (and data) of this run instead")


def _common(p: Any, gif: bool = False) -> None:
    o = p.add_argument_group("output")
    o.add_argument("--out", default=f"{p.prog.split()[-1]}.png", help="the picture, .png")
    if gif:
        o.add_argument("--gif", default=None, help="also an animation, .gif")
    o.add_argument("--save-data", default=None, metavar="FILE.npz", help="the arrays behind the picture, .npz")
    o.add_argument("--seed", type=seed_int, default=0, help="seed of every random draw (default: 0)")


def _sampler_options(p: Any) -> None:
    from .sample import _samplers, add_sampler_options

    s = _samplers()
    names = [k for k in s if k != "bespoke"]
    g = p.add_argument_group("sampler")
    g.add_argument("--sampler", default="ddim", choices=names, metavar="{" + "|".join(names) + "}",
                   help="the sampler (default: ddim)")
    g.add_argument("--steps", type=bounded_int(1, 1000), default=20, help="sampling steps (default: 20)")
    g.add_argument("--grid", default=None, choices=GRIDS,
                   help="time grid (default: karras on the ve path, uniform on every other)")
    g.add_argument("--spacing", default=None, choices=("leading", "trailing", "linspace"),
                   help="--grid uniform: its spacing (default: trailing)")
    add_sampler_options(p, {k: v for k, v in s.items() if k in names}, "sampler options (forwarded when given)")


def add_parser(sub: Any, help: str) -> None:
    from .common import Parser

    p = sub.add_parser("viz", help=help, description="Pictures of diffusion; `kuosan viz WHAT --help` for each.")
    w = p.add_subparsers(dest="what", metavar="{" + ",".join(WHAT) + "}", parser_class=Parser)
    c = w.add_parser("curve", help=WHAT["curve"], description=WHAT["curve"] + "; frames at equal steps of t/t_max")
    c.add_argument("--signal", default=None, help="your 1-D signal, .npy or .csv (default: a built-in smooth curve)")
    c.add_argument("--length", type=bounded_int(8, 2048), default=None, help="built-in curve: points (default 256)")
    c.add_argument("--raw", action="store_true", help="--signal: keep its scale (default: mean 0, std 0.5)")
    c.add_argument("--frames", type=bounded_int(2, 200), default=40, help="frames from t = 0 to t_max (default 40)")
    _path_options(c)
    _common(c, gif=True)
    v = w.add_parser("covariance", help=WHAT["covariance"], description=WHAT["covariance"])
    v.add_argument("--data", default=None, help="curves (default, exact Σ_0), vectors .npy/.csv, or any kuosan data "
                                                "set (images: patches)")
    v.add_argument("--patch", type=bounded_int(1, 16), default=None, help="image data: patch size (default 4)")
    v.add_argument("--times", type=_fractions, default=[0.0, 0.1, 0.3, 1.0], help="t / t_max (default 0,0.1,0.3,1)")
    v.add_argument("--n", type=bounded_int(2, 200_000), default=4000,
                   help="draws for the empirical Σ_t (default 4000)")
    _path_options(v)
    _common(v)
    n = w.add_parser("colour-noise", help=WHAT["colour-noise"], description=WHAT["colour-noise"])
    n.add_argument("--cov", default=None, help="target covariance (D, D), .npy or .csv (default: the curves')")
    n.add_argument("--dim", type=bounded_int(2, 512), default=None, help="built-in target: dimension (default 64)")
    n.add_argument("--n", type=bounded_int(2, 200_000), default=4000, help="white-noise draws (default 4000)")
    _common(n)
    s = w.add_parser("schedule", help=WHAT["schedule"], description=WHAT["schedule"])
    s.add_argument("--kinds", default=None, help="comma-separated subset (default: all): linear, scaled_linear, "
                                                 "cosine, sigmoid, zero_snr, vp_cosine, vp_linear, ve, flow")
    s.add_argument("--run", default=None, help="add this run's own path")
    _common(s)
    t = w.add_parser("trajectory", help=WHAT["trajectory"], description=WHAT["trajectory"])
    t.add_argument("run", metavar="RUN")
    t.add_argument("--compare", default=None, metavar="RUN2", help="a second run side by side, same x_T (reflow)")
    t.add_argument("--n", type=bounded_int(1, 2000), default=128, help="particles (default 128)")
    t.add_argument("--no-exact", action="store_true", help="skip the exact ODE paths of a known mixture")
    _sampler_options(t)
    _common(t, gif=True)
    d = w.add_parser("denoise", help=WHAT["denoise"], description=WHAT["denoise"])
    d.add_argument("run", metavar="RUN")
    d.add_argument("--n", type=bounded_int(1, 16), default=4, help="samples, two rows each (default 4)")
    d.add_argument("--columns", type=bounded_int(2, 20), default=8, help="steps shown (default 8)")
    _sampler_options(d)
    _common(d)
    r = w.add_parser("training", help=WHAT["training"], description=WHAT["training"])
    r.add_argument("run", metavar="RUN")
    _common(r)


def _make_path(args: Any) -> Any:
    """--path/--schedule/--zero-terminal-snr as a path (an option that does not apply is an error)."""
    from ..paths import make_path

    kind = args.path or "discrete_vp"
    if kind != "discrete_vp" and (args.schedule is not None or args.zero_terminal_snr):
        raise UsageError(f"--schedule and --zero-terminal-snr apply to --path discrete_vp, not {kind}")
    if kind != "discrete_vp":
        return make_path(kind)
    return make_path("discrete_vp", schedule=args.schedule or "cosine", zero_terminal_snr=bool(args.zero_terminal_snr))


def _path_or_run(args: Any) -> tuple[Any, Any]:
    """(path, run dict or None): the run's path with --run (which excludes the path flags)."""
    from ..viz.sources import load_run

    if getattr(args, "run", None) is None:
        return _make_path(args), None
    if args.path is not None or args.schedule is not None or args.zero_terminal_snr:
        raise UsageError("--run takes the run's own path: leave out --path, --schedule and --zero-terminal-snr")
    run = load_run(args.run, weights=False)
    return run["path"], run


def _sampler_opts(args: Any, path: Any) -> dict[str, Any]:
    from .sample import sampler_options

    if args.spacing is not None and args.grid not in (None, "uniform"):
        raise UsageError(f"--spacing applies only to --grid uniform, not --grid {args.grid}")
    if args.analytic_n is not None:
        raise UsageError("--analytic-n applies to --variance analytic, which kuosan viz does not take")
    return dict(grid=default_grid_of(args, path), spacing=args.spacing or "trailing", options=sampler_options(args))


def run(args: argparse.Namespace) -> int:
    if args.what is None:
        raise UsageError(f"name a picture: kuosan viz {{{','.join(WHAT)}}} (kuosan viz --help)")
    out, data_out = _file(args.out, "--out", ".png"), _file(args.save_data, "--save-data", ".npz")
    gif = _file(getattr(args, "gif", None), "--gif", ".gif")
    from ..viz import render

    arrays = globals()["_" + args.what.replace("-", "_")](args, out, gif)
    if data_out is not None:
        write_atomic(data_out, lambda tmp: render.save_npz(tmp, arrays))
    print(f"wrote {out}" + (f", {gif}" if gif else "") + (f", {data_out}" if data_out else ""))
    return 0


def _curve(args: Any, out: FilePath, gif: FilePath | None) -> dict[str, Any]:
    from ..viz import curve, render, sources

    if args.signal is not None and args.length is not None:
        raise UsageError("--length sets the built-in curve; --signal brings its own")
    if args.raw and args.signal is None:
        raise UsageError("--raw applies to --signal")
    path, _ = _path_or_run(args)
    if args.signal is None:
        x0 = curve.smooth_curve(args.length or 256, args.seed)
    else:
        x0 = sources.load_signal(args.signal)
        x0 = x0 if args.raw else curve.standardise(x0)
    data = curve.curve_story(x0, path, args.frames, args.seed)
    write_atomic(out, lambda tmp: curve.draw_curve(data, tmp))
    if gif is not None:
        write_atomic(gif, lambda tmp: render.save_gif(curve.curve_gif_frames(data), tmp))
    return data


def _covariance(args: Any, out: FilePath, gif: Any) -> dict[str, Any]:
    from ..viz import covariance, sources

    path, run = _path_or_run(args)
    if run is not None and args.data is not None:
        raise UsageError("--run takes the run's own data: leave out --data")
    spec = run["cfg"].data.name if run is not None else (args.data or "curves")
    x0, sigma0, what = sources.covariance_data(spec, args.n, args.patch, args.seed)
    data = covariance.covariance_story(x0, sigma0, path, args.times, args.seed)
    data["source"] = what
    write_atomic(out, lambda tmp: covariance.draw_covariance(
        data, tmp, f"covariance of {what}, diffused on the {data['path']} path"))
    return data


def _colour_noise(args: Any, out: FilePath, gif: Any) -> dict[str, Any]:
    import torch

    from ..viz import colour_noise, sources

    if args.cov is not None and args.dim is not None:
        raise UsageError("--dim sets the built-in target; --cov brings its own")
    if args.cov is not None:
        target = sources.load_covariance(args.cov)
    else:
        from ..data import curves_covariance

        target = torch.as_tensor(curves_covariance(args.dim or 64), dtype=torch.float64)
    data = colour_noise.colour_noise_story(target, args.n, args.seed)
    write_atomic(out, lambda tmp: colour_noise.draw_colour_noise(data, tmp))
    return data


def _schedule(args: Any, out: FilePath, gif: Any) -> dict[str, Any]:
    from ..viz import schedule, sources

    names = [k.strip() for k in args.kinds.split(",") if k.strip()] if args.kinds else list(schedule.SCHEDULES)
    run_path, label = None, ""
    if args.run is not None:
        r = sources.load_run(args.run, weights=False)
        run_path = r["path"]
        label = f"run {FilePath(args.run).name}: {run_path.kind}" + (
            f" {r['cfg'].path.schedule}" if run_path.kind == "discrete_vp" else "")
    data = schedule.schedule_story(names, run_path, label)
    write_atomic(out, lambda tmp: schedule.draw_schedules(data, tmp))
    return data


def _states(args: Any, run: Any) -> dict[str, Any]:
    from ..viz.steps import sampler_states

    n = args.n
    return sampler_states(run["D"], args.sampler, args.steps, (n, *run["meta"]["shape"]), seed=args.seed,
                          **_sampler_opts(args, run["path"]))


def _trajectory(args: Any, out: FilePath, gif: FilePath | None) -> dict[str, Any]:
    from ..metrics import known_mixture
    from ..viz import render, sources, trajectory

    runs = [sources.load_run(r) for r in [args.run] + ([args.compare] if args.compare else [])]
    for name, r in zip([args.run, args.compare], runs):
        if r["meta"].get("kind") != "vector" or list(r["meta"].get("shape", [])) != [2]:
            raise UsageError(f"trajectory needs a model of 2-D data; run {name!r} has samples of shape "
                             f"{tuple(r['meta'].get('shape', []))}")
    # each run's own data decides its exact paths: a reflow run trains on pairs.npz, whose ODE is not the data's
    mixtures = [None if args.no_exact else known_mixture(r["cfg"].data.name) for r in runs]
    stories = [trajectory.trajectory_story(_states(args, r), r["path"], m) for r, m in zip(runs, mixtures)]
    mixture = mixtures[0]
    names = [f"{FilePath(n).name}: {args.sampler}, {args.steps} steps" for n in [args.run, args.compare][:len(runs)]]
    ds = None if mixture is not None else sources.load_data(runs[0]["cfg"].data.name, 1500, args.seed)
    ref = trajectory.reference_points(mixture, None if ds is None else ds.x)
    write_atomic(out, lambda tmp: trajectory.draw_trajectories(stories, names, tmp, ref))
    if gif is not None:
        write_atomic(gif, lambda tmp: render.save_gif(trajectory.trajectory_frames(stories, names, ref), tmp, fps=4))
    data = {k: v for k, v in stories[0].items()}
    if len(stories) > 1:
        data.update({f"compare_{k}": v for k, v in stories[1].items()})
    return data


def _denoise(args: Any, out: FilePath, gif: Any) -> dict[str, Any]:
    from ..viz import denoise, sources

    r = sources.load_run(args.run)
    if r["meta"].get("kind") != "image":
        raise UsageError(f"denoise needs an image model; run {args.run!r} has vector data (for 2-D data: kuosan viz "
                         "trajectory)")
    data = denoise.denoise_story(_states(args, r), r["path"], args.columns)
    title = f"{FilePath(args.run).name}: {args.sampler}, {args.steps} steps, {default_grid_of(args, r['path'])} grid"
    write_atomic(out, lambda tmp: denoise.draw_denoise(data, tmp, title))
    return data


def _training(args: Any, out: FilePath, gif: Any) -> dict[str, Any]:
    from ..viz import panels

    log = FilePath(args.run) / "log.csv"
    if not log.is_file():
        raise UsageError(f"run {args.run!r} has no log.csv (name a run folder)")
    cols = panels.read_log(log)
    if len(cols["step"]) == 0:
        raise UsageError(f"{str(log)!r} has no rows yet")
    write_atomic(out, lambda tmp: panels.draw_panels(cols, tmp))
    return cols
