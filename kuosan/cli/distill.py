"""``kuosan distill RUN --method cd|ect --out NEW_RUN``: a consistency model from a trained diffusion or flow run.

cd: consistency distillation (Song et al. 2023 Alg. 2), one step of a deterministic sampler of RUN as the ODE
solver (--teacher-sampler); ect: easy consistency tuning (Geng et al. 2024), starting from RUN's own network (an
edm-preconditioned RUN, whose network inputs are the consistency model's). The student's config is built from
RUN's: the same [data] and [net] tables, path.kind = ve with σ_max = min(80, RUN's largest σ̃),
objective.prediction = consistency (objective.sigma_data from an edm RUN), [consistency] method, teacher (RUN's
checkpoint folder) and teacher_sampler; [optim], [log], [run] and the rest start from the defaults. Then the
flags of ``kuosan train`` that do not redefine the model (network, optimisation, run, --tensorboard, --set
TABLE.KEY=VALUE, --stop-at) apply in that order. The run continues with ``kuosan train --resume NEW_RUN``.
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path
from typing import Any

from .common import UsageError, add_quiet, positive_int

# keys distill sets itself: a flag or --set naming one is refused, never silently overridden
FIXED_KEYS = ("data.name", "data.class_cond", "path.kind", "objective.prediction", "consistency.method",
              "consistency.teacher", "log.out")
COPIED_TABLES = ("data", "net")  # the student's tables taken from RUN's config
STUDENT_SIGMA_MAX = 80.0  # Karras et al. 2022's σ_max (the ve path's default), lowered to the teacher's reach

EPILOG = """\
Examples:
  kuosan distill runs/digits --method cd --out runs/digits-cd --steps 2000
  kuosan distill runs/edm --method ect --out runs/edm-ect --set consistency.p_std=2.0
  kuosan sample runs/digits-cd --steps 2          two-step consistency sampling
One step of a multistep solver (dpm++2m/3m, unipc) is its first-order start (DDIM); heun and dpm2s are second
order in one step, ode is the adaptive solver."""


def add_parser(sub: Any, help: str) -> None:
    from .train import GROUPS, add_key_flag

    p = sub.add_parser("distill", help=help,
                       description="Distil a trained run into a consistency model (1- to few-step sampling); writes "
                                   "a run folder as `kuosan train` does.",
                       epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("run", metavar="RUN", help="the teacher: a trained run or checkpoint folder (not a consistency "
                                              "model)")
    d = p.add_argument_group("distillation")
    d.add_argument("--method", required=True, choices=("cd", "ect"), metavar="{cd|ect}",
                   help="cd: consistency distillation with the teacher's ODE steps; ect: consistency tuning from "
                        "the teacher's weights (an edm-preconditioned teacher)")
    d.add_argument("--out", required=True, metavar="NEW_RUN", help="the new run folder (absent or empty)")
    from ..families.distill import usable_sampler
    from ..sampling import SAMPLERS

    usable = [k for k in SAMPLERS if usable_sampler(k) is None]
    d.add_argument("--teacher-sampler", default=None, metavar="{" + "|".join(usable) + "}",
                   help="cd: the deterministic sampler whose one step is the teacher's ODE step (default: heun)")
    for title, (table, flags) in GROUPS.items():
        keep = [(names, key) for names, key in flags if key not in FIXED_KEYS and not key.startswith("path.")]
        if not keep:
            continue
        g = p.add_argument_group(title)
        for names, key in keep:  # copied tables show the teacher's value as the default, not the config's
            add_key_flag(g, names, key, "RUN's" if table in COPIED_TABLES else None)
        if table == "run":
            g.add_argument("--set", dest="overrides", action="append", default=[], metavar="TABLE.KEY=VALUE",
                           help="set any other config key (repeatable; applied after the flags above)")
            g.add_argument("--stop-at", type=positive_int, metavar="STEP",
                           help="stop (and checkpoint) at this step, before optim.steps")
            add_quiet(g)


def student_config(teacher_cfg: Any, teacher: str, method: str, sampler: str | None, sigma_max: float) -> Any:
    """The consistency model's config from the teacher's (see the module docstring)."""
    import copy

    from ..config import Config

    cfg = Config()
    for table in COPIED_TABLES:
        setattr(cfg, table, copy.deepcopy(getattr(teacher_cfg, table)))
    cfg.path.kind, cfg.path.sigma_max = "ve", sigma_max
    cfg.objective.prediction = "consistency"
    if teacher_cfg.objective.prediction == "edm":  # the same c_in, so ECT/CD can start from the teacher's F
        cfg.objective.sigma_data = teacher_cfg.objective.sigma_data
    cfg.consistency.method, cfg.consistency.teacher = method, teacher
    if method == "cd" and sampler is not None:
        cfg.consistency.teacher_sampler = sampler
    return cfg


def _check_out(out: str) -> None:
    p = Path(out)
    if os.path.lexists(p) and not p.is_dir():
        raise UsageError(f"--out {out!r} is a file, not a run folder")
    if p.is_dir() and any(p.iterdir()):
        raise UsageError(f"--out {out!r} exists and is not empty; name a new run folder")


def run(args: argparse.Namespace) -> int:
    from ..build import load_denoiser, make_path_from
    from ..checkpoint import resolve
    from ..config import apply_overrides
    from ..families.distill import check_teacher, init_reason, largest_ve_sigma, usable_sampler
    from .common import check_device
    from .train import overrides_of

    overrides = overrides_of(args)
    for item in overrides:
        key = item.split("=", 1)[0].strip()
        if key in FIXED_KEYS:
            raise UsageError(f"{key} is set by distill (from RUN, --method and --out); it cannot be changed here")
    if args.method != "cd" and args.teacher_sampler is not None:
        raise UsageError("--teacher-sampler applies to --method cd only (ect has no teacher steps)")
    _check_out(args.out)
    ckpt = resolve(args.run)
    _, meta, tcfg = load_denoiser(ckpt)  # every check of a trained checkpoint, before any work
    if tcfg.objective.prediction == "consistency":
        raise UsageError(f"{args.run!r} is a consistency model; distil from a diffusion or flow run")
    top = largest_ve_sigma(make_path_from(tcfg))
    cfg = student_config(tcfg, str(Path(ckpt).resolve()), args.method, args.teacher_sampler,
                         min(STUDENT_SIGMA_MAX, top))
    cfg = apply_overrides(cfg, [*overrides, f"log.out={args.out}"])
    if args.method == "cd":
        reason = usable_sampler(cfg.consistency.teacher_sampler)
        if reason is not None:
            raise UsageError(f"--teacher-sampler: {reason}")
    check_teacher(tcfg, meta, cfg, meta["shape"], what=f"teacher {args.run!r}")
    if args.method == "ect":
        reason = init_reason(cfg, tcfg)
        if reason is not None:
            raise UsageError(f"ect tunes the teacher's own network, and here it cannot: {reason} (use --method cd)")
    check_device(cfg.run.device, allow_auto=True)
    from ..train import train

    run_dir = train(cfg.validate(), stop_at=args.stop_at, progress=not args.quiet)
    print(f"run folder: {run_dir}")
    return 0
