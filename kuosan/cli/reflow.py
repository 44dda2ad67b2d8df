"""``kuosan reflow RUN --pairs N --out NEW_RUN``: the next rectified flow of a flow run (Liu et al. 2023 Alg. 1).

Draws N (noise, sample) couplings with RUN's deterministic ODE sampler (``--sampler``, ``--sampler-steps``; seed
``--pairs-seed``), writes NEW_RUN/pairs.npz, trains on them from RUN's EMA weights with RUN's config (training options
as in ``kuosan train``: the same flags and ``--set``, from cli/train.py), then measures straightness S before and after
and Liu et al.'s Thm 3.3, E∫||v||² dt <= E||X_1 - X_0||², and writes them to NEW_RUN/reflow.json.
``--steps`` is the training's optim.steps, as in ``kuosan train``; the sampler's steps are ``--sampler-steps``.
Everything is checked before any work; a stopped training continues with ``kuosan train --resume NEW_RUN``.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from .common import UsageError, check_device, check_sample_size, positive_int, resolve_device, seed_int

# keys a reflow keeps from RUN: its weights fix the network and what it predicts, the path is the flow's, and the
# data are the pairs (data.n may take a subset of them)
FIXED = ("data.name", "data.class_cond", "path.", "net.model", "net.channels", "net.channel_mult", "net.num_res_blocks",
         "net.attn_resolutions", "net.mlp_hidden", "net.mlp_depth", "objective.prediction", "objective.learn_variance")
HIDDEN = ("process", "config", "resume", "stop_at")  # train's non-key options that do not apply
EVAL_SEED_OFFSET = 7919  # the straightness noises: another stream than the pairs'
DESCRIPTION = ("The next rectified flow of a flow run (Liu et al. 2023): draw N (noise, sample) couplings with RUN's "
               "ODE sampler, write NEW_RUN/pairs.npz, train on them from RUN's weights, report straightness before "
               "and after in NEW_RUN/reflow.json. Training options as in kuosan train (--steps is training steps).")
EPILOG = (f"Example:\n  kuosan reflow runs/flow --pairs 50000 --out runs/flow2 --sampler heun --sampler-steps 50 "
          f"--steps 2000\nRUN's path, network, prediction and data are kept: their flags and --set keys "
          f"({', '.join(FIXED)}) are refused. Training keys not given keep RUN's values (the defaults shown are "
          "kuosan train's).")


class _Into:
    """Hands cli/train.py's ``add_parser`` this verb's parser, so reflow takes exactly train's options."""

    def __init__(self, parser: argparse.ArgumentParser):
        self.parser = parser

    def add_parser(self, name: str, **kwargs: Any) -> argparse.ArgumentParser:
        return self.parser


def add_parser(sub: Any, help: str) -> None:
    from ..sampling import SAMPLERS
    from .sample import COMPUTED_OPTIONS
    from .train import add_parser as add_train_options

    p = sub.add_parser("reflow", help=help, description=DESCRIPTION, epilog=EPILOG,
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("run", metavar="RUN", help="a flow run (trained with --process flow) or checkpoint")
    g = p.add_argument_group("reflow")
    g.add_argument("--pairs", type=positive_int, required=True, metavar="N", help="couplings to draw and train on")
    # deterministic samplers that need nothing computed for the model first (bespoke needs fitted coefficients)
    names = [k for k, s in SAMPLERS.items() if s.deterministic and not s.options & COMPUTED_OPTIONS]
    g.add_argument("--sampler", default="heun", choices=names, metavar="{" + "|".join(names) + "}",
                   help="deterministic ODE sampler drawing the couplings (default: heun)")
    g.add_argument("--sampler-steps", type=positive_int, default=50, metavar="K",
                   help="its steps (default: 50)")
    g.add_argument("--pairs-seed", type=seed_int, default=0, metavar="SEED",
                   help="seed of the pairs' noise (sample i's stream, as kuosan sample; default: 0)")
    g.add_argument("--eval-n", type=positive_int, default=1024, metavar="N",
                   help="noises for the straightness estimates (default: 1024)")
    g.add_argument("--eval-steps", type=positive_int, default=64, metavar="K",
                   help="Heun steps of the straightness integrals (default: 64)")
    add_train_options(_Into(p), help)  # --out (log.out) is NEW_RUN
    # train's flags that reflow refuses (run() says why) are hidden from the help; argparse cannot remove them
    for action in p._actions:
        if action.dest in HIDDEN or (action.dest.startswith("key:") and action.dest[4:].startswith(FIXED)):
            action.help = argparse.SUPPRESS
        elif action.dest == "key:log.out":
            action.help, action.metavar = "the new run folder (required; new or empty)", "NEW_RUN"
    for group in p._action_groups:
        if group.title and group.title.startswith("path"):  # every path key is RUN's: no "more keys" hint
            group.description = None


def _refuse_inapplicable(args: argparse.Namespace, overrides: list[str]) -> None:
    if args.resume:
        raise UsageError("--resume does not apply to reflow; continue a stopped reflow's training with "
                         "kuosan train --resume NEW_RUN")
    if args.config:
        raise UsageError("--config does not apply to reflow: it starts from RUN's config (change keys with flags or "
                         "--set)")
    if getattr(args, "process", None):
        raise UsageError("--process does not apply to reflow: the new run is RUN's flow family")
    if args.stop_at is not None:
        raise UsageError("--stop-at does not apply to reflow (it reports after the full training; set --steps)")
    for kv in overrides:
        key = kv.split("=", 1)[0].strip()
        if key.startswith(FIXED):
            raise UsageError(f"{key} does not apply to reflow: RUN's weights fix the network and prediction, the path "
                             "is the flow's and the data are the pairs")
    if not getattr(args, "key:log.out", None):
        raise UsageError("name the new run folder: --out NEW_RUN")


def _new_run_folder(out: Path, ckpt: Path) -> None:
    """NEW_RUN is a new (or empty) folder, not RUN (nor a folder holding it)."""
    if ckpt.resolve().is_relative_to(out.resolve()):
        raise UsageError(f"--out {str(out)!r} is RUN's own folder; name a new run folder")
    if out.exists() and not out.is_dir():
        raise UsageError(f"--out {str(out)!r} is a file, not a run folder")
    if out.is_dir() and any(out.iterdir()):
        raise UsageError(f"--out {str(out)!r} is not empty; reflow writes a new run folder (continue a stopped "
                         f"reflow's training with kuosan train --resume {out})")


def run(args: argparse.Namespace) -> int:
    import torch

    from ..build import data_meta, load_denoiser
    from ..checkpoint import resolve, write_text_atomic
    from ..config import apply_overrides
    from ..data import load_dataset
    from ..families.reflow import (PAIRS_FILE, check_flow, check_sampler, draw_pairs, flow_report, reflow_config,
                                   write_init, write_pairs)
    from ..train import train
    from .train import list_keys, overrides_of

    if args.list_keys:
        print(list_keys())
        return 0
    overrides = overrides_of(args)
    _refuse_inapplicable(args, overrides)
    out = Path(getattr(args, "key:log.out"))
    ckpt = resolve(args.run)
    _new_run_folder(out, ckpt)
    D, meta, cfg = load_denoiser(ckpt)
    check_flow(cfg, D)
    check_sampler(args.sampler, args.sampler_steps, D)
    new_cfg = apply_overrides(reflow_config(cfg, out / PAIRS_FILE, out), overrides).validate()
    device = resolve_device(check_device(new_cfg.run.device, allow_auto=True))  # pairs and training alike
    D.to(device)
    check_sample_size(args.pairs, tuple(meta["shape"]), flag="--pairs")
    run_data = load_dataset(cfg.data.name, n=cfg.data.n, seed=cfg.run.seed)  # for Thm 3.3; unreadable: now
    progress = not args.quiet

    out.mkdir(parents=True, exist_ok=True)
    z, x0 = draw_pairs(D, (args.pairs, *meta["shape"]), sampler=args.sampler, steps=args.sampler_steps,
                       seed=args.pairs_seed, device=device, progress=progress)
    write_pairs(out / PAIRS_FILE, z, x0)
    print(f"wrote {args.pairs} pairs ({args.sampler}, {args.sampler_steps} steps) to {out / PAIRS_FILE}")
    pairs = load_dataset(new_cfg.data.name, n=new_cfg.data.n, seed=new_cfg.run.seed)
    weights = {k: v.detach() for k, v in D.net.state_dict().items()}  # RUN's EMA weights (load_denoiser's default)
    write_init(out, new_cfg, weights, data_meta(pairs))
    train(None, resume=out, progress=progress)

    eval_seed = args.pairs_seed + EVAL_SEED_OFFSET
    x1 = torch.randn((args.eval_n, *meta["shape"]), generator=torch.Generator().manual_seed(eval_seed))
    x1 = x1.to(device) * D.path.prior_std  # the same noises for both flows
    before = flow_report(D, x1, run_data, steps=args.eval_steps)
    D2, _, _ = load_denoiser(out, device=device)
    after = flow_report(D2, x1, pairs, steps=args.eval_steps)
    ratio = after["straightness"] / before["straightness"] if before["straightness"] > 0 else None
    report = {"run": str(ckpt), "new_run": str(out), "pairs": args.pairs, "sampler": args.sampler,
              "sampler_steps": args.sampler_steps, "pairs_seed": args.pairs_seed, "eval_seed": eval_seed,
              "init": "network and EMA from RUN's EMA weights (step 0 of NEW_RUN), AdamW state fresh",
              "before": before, "after": after, "straightness_ratio": ratio}
    write_text_atomic(out / "reflow.json", json.dumps(report, indent=1) + "\n")
    for name, r in (("before (RUN)", before), ("after (NEW_RUN)", after)):
        print(_summary(name, r))
    print(f"wrote {out / 'reflow.json'}; run folder: {out}")
    return 0


def _summary(name: str, r: dict[str, Any]) -> str:
    """One line: S with its standard error, and Thm 3.3's inequality as measured."""
    rel = {"holds": "<=", "within 2 standard errors": "> (within 2 standard errors)"}.get(r["thm_3_3"], "> (violated)")
    return (f"{name}: straightness S = {r['straightness']:.4g} ± {r['straightness_se']:.2g}; E∫||v||²dt = "
            f"{r['kinetic']:.4g} {rel} E||X1-X0||² = {r['training_cost']:.4g} ({r['training_coupling']} coupling)")
