"""Guidance flags shared by the sampling verbs: ``add_guidance_options(parser)`` adds them, ``apply_guidance`` checks
them against the loaded run and returns the guided denoiser and the labels to sample.

--class N|all             the class to draw (all: the same number of each, one grid row per class)
--guidance W              cfg / auto: w, 1 = unguided, 0 = unconditional (diffusers' guidance_scale; Ho & Salimans'
                          w is W - 1); --guidance-kind classifier: Dhariwal & Nichol's s, 0 = unguided
--guidance-kind K         cfg (default), auto (default with --guide-run), classifier
--guidance-interval LO,HI guide only where λ = log(α²/σ²) ∈ [LO, HI] (Kynkäänniemi et al. 2024); it limits
                          --guidance and --classifier-guidance alike
--guide-run RUN           autoguidance's weaker model (an earlier checkpoint or a smaller run, same data and path)
--classifier-guidance S   classifier guidance on top (of the model, or of --guidance's cfg / auto), scale S
--classifier RUN_OR_DIR   the classifier (default: the run's classifier/, written by `kuosan train-classifier`)
Every inconsistency is a UsageError (one line, exit code 2) naming the flag.
"""

from __future__ import annotations

import argparse
import math
from typing import Any

from .common import UsageError, nonneg_float

KINDS = ("cfg", "auto", "classifier")


def class_arg(s: str) -> int | str:
    """--class: 'all' or an integer >= 0 (its range is checked against the run)."""
    if s.strip().lower() == "all":
        return "all"
    try:
        v = int(s.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be a class index (an integer >= 0) or 'all', got {s!r}") from None
    if v < 0:
        raise argparse.ArgumentTypeError(f"must be a class index (an integer >= 0) or 'all', got {s!r}")
    return v


def interval_arg(s: str) -> tuple[float, float]:
    """--guidance-interval: LO,HI in λ with LO <= HI (inf and -inf allowed)."""
    parts = s.split(",")
    try:
        lo, hi = (float(p) for p in parts) if len(parts) == 2 else (math.nan, math.nan)
    except ValueError:
        lo = hi = math.nan
    if math.isnan(lo) or math.isnan(hi) or lo > hi:
        raise argparse.ArgumentTypeError(f"must be LO,HI in λ = log(α²/σ²) with LO <= HI (e.g. =-2,4), got {s!r}")
    return lo, hi


def add_guidance_options(p: Any) -> None:
    """The guidance flags, in their own help group."""
    g = p.add_argument_group("guidance (Ho & Salimans 2022; Karras et al. 2024; Dhariwal & Nichol 2021)")
    g.add_argument("--class", dest="class_label", type=class_arg, default=None, metavar="N|all",
                   help="draw class N (0-based), or all classes with --n a multiple of their number (one grid row "
                        "per class); needs a class-conditional run or classifier guidance")
    g.add_argument("--guidance", type=nonneg_float, default=None, metavar="W",
                   help="guidance scale >= 0: cfg and auto: 1 = unguided, 0 = unconditional, > 1 guides "
                        "(diffusers' guidance_scale; Ho & Salimans' w = W - 1); classifier: 0 = unguided")
    g.add_argument("--guidance-kind", choices=KINDS, default=None, metavar="{" + "|".join(KINDS) + "}",
                   help="what --guidance does: classifier-free (cfg, the default), autoguidance with --guide-run "
                        "(auto, the default when --guide-run is given), or classifier guidance (classifier)")
    g.add_argument("--guidance-interval", type=interval_arg, default=None, metavar="LO,HI",
                   help="guide only where λ = log(α²/σ²) is in [LO, HI], unguided elsewhere "
                        "(Kynkäänniemi et al. 2024), for --guidance and --classifier-guidance alike; write "
                        "--guidance-interval=-2,4 when LO is negative; inf and -inf allowed")
    g.add_argument("--guide-run", default=None, metavar="RUN",
                   help="autoguidance: the weaker model, a run or checkpoint folder of the same data and path (an "
                        "earlier checkpoint, e.g. RUN/checkpoints/step_500, or a smaller run)")
    g.add_argument("--classifier-guidance", type=nonneg_float, default=None, metavar="S",
                   help="add classifier guidance with scale S >= 0 (0 = none, 1 = the classifier's posterior) to "
                        "the model, or to --guidance's cfg or auto")
    g.add_argument("--classifier", default=None, metavar="RUN_OR_DIR",
                   help="classifier guidance's classifier folder (default: the run's classifier/, written by "
                        "`kuosan train-classifier RUN`)")


def guidance_kind(args: argparse.Namespace) -> str | None:
    """The kind --guidance means (None without --guidance)."""
    if args.guidance is None:
        return None
    return args.guidance_kind or ("auto" if args.guide_run is not None else "cfg")


def check_guidance_flags(args: argparse.Namespace) -> None:
    """Flags that mean nothing together, before anything is loaded."""
    kind = guidance_kind(args)
    if args.guidance is None:
        for flag, v in (("--guidance-kind", args.guidance_kind), ("--guide-run", args.guide_run)):
            if v is not None:
                raise UsageError(f"{flag} applies only with --guidance W")
        if args.guidance_interval is not None and args.classifier_guidance is None:
            raise UsageError("--guidance-interval applies only with --guidance W or --classifier-guidance S")
    if args.guide_run is not None and kind != "auto":
        raise UsageError(f"--guide-run applies only to autoguidance, not --guidance-kind {kind}")
    if kind == "auto" and args.guide_run is None:
        raise UsageError("--guidance-kind auto needs --guide-run RUN (the weaker model to guide with)")
    if kind == "classifier" and args.classifier_guidance is not None:
        raise UsageError("--guidance-kind classifier and --classifier-guidance both set the classifier guidance "
                         "scale: give one")
    if args.classifier is not None and kind != "classifier" and args.classifier_guidance is None:
        raise UsageError("--classifier applies only with classifier guidance (--classifier-guidance S or "
                         "--guidance-kind classifier)")


def class_labels(label: int | str, num_classes: int, n: int) -> Any:
    """(n,) int64 labels: label everywhere, or for 'all' n/C of each class in blocks (one grid row each)."""
    import torch

    if label == "all":
        if n % num_classes:
            raise UsageError(f"--class all draws the same number of each of the {num_classes} classes: --n must be a "
                             f"multiple of {num_classes}, got {n} (e.g. --n {num_classes * max(1, n // num_classes)})")
        return torch.arange(num_classes).repeat_interleave(n // num_classes)
    return torch.full((n,), int(label), dtype=torch.long)


def grid_row_length(args: argparse.Namespace, meta: dict[str, Any], n: int) -> int | None:
    """Images per grid row: n/C with --class all (one row per class), else None (the grid's own choice)."""
    c = int(meta.get("num_classes") or 0)
    return n // c if getattr(args, "class_label", None) == "all" and c > 0 else None


def load_guide(where: str, D: Any, meta: dict[str, Any], cfg: Any, device: str, use_ema: bool) -> Any:
    """The weaker model of --guide-run, checked to share the model's data shape, path and conditioning."""
    from ..build import load_denoiser
    from ..checkpoint import resolve

    weak, wmeta, wcfg = load_denoiser(resolve(where), use_ema=use_ema, device=device)
    if list(wmeta["shape"]) != list(meta["shape"]):
        raise UsageError(f"--guide-run {where!r} draws samples of shape {tuple(wmeta['shape'])}, the model "
                         f"{tuple(meta['shape'])}: the guide must be trained on the same data")
    if weak.path.fingerprint() != D.path.fingerprint():
        raise UsageError(f"--guide-run {where!r} is on another path ({weak.path.kind}, {weak.path.fingerprint()}) "
                         f"than the model ({D.path.kind}, {D.path.fingerprint()}): the guide must share it")
    cond_m = bool(cfg.data.class_cond) and int(meta.get("num_classes") or 0)
    cond_w = bool(wcfg.data.class_cond) and int(wmeta.get("num_classes") or 0)
    if cond_m != cond_w:
        def what(c: int) -> str:
            return f"class-conditional ({c} classes)" if c else "unconditional"

        raise UsageError(f"--guide-run {where!r} is {what(cond_w)} but the model is {what(cond_m)}: autoguidance "
                         "needs a guide conditioned the same way")
    return weak


def default_classifier(args: argparse.Namespace) -> str:
    """--classifier, else the classifier/ folder of the run that args.checkpoint names."""
    if args.classifier is not None:
        return args.classifier
    from ..checkpoint import resolve
    from ..checkpoint.layout import run_of

    ckpt = resolve(args.checkpoint)
    return str(run_of(ckpt) or ckpt)


def apply_guidance(args: argparse.Namespace, D: Any, meta: dict[str, Any], cfg: Any, n: int, device: str
                   ) -> tuple[Any, dict[str, Any] | None]:
    """(the denoiser to sample with, cond with the labels (n,) or None) for the guidance flags in ``args``."""
    from ..guidance import guide, load_classifier

    check_guidance_flags(args)
    kind = guidance_kind(args)
    C = int(meta.get("num_classes") or 0)
    conditional = bool(cfg.data.class_cond) and C > 0
    uses_classifier = kind == "classifier" or args.classifier_guidance is not None
    label = args.class_label
    if label is not None:
        if C == 0:
            raise UsageError(f"--class {label}: the run's data {meta.get('name')!r} has no class labels")
        if not conditional and not uses_classifier:
            raise UsageError(f"--class {label}: this run is unconditional (trained without --class-cond); use a "
                             "class-conditional run or classifier guidance (--classifier-guidance S)")
        if label != "all" and label >= C:
            raise UsageError(f"--class {label} is out of range: the run's data has classes 0..{C - 1}")
    if kind == "cfg" and not conditional:
        raise UsageError("--guidance: classifier-free guidance needs a class-conditional run (trained with "
                         "--class-cond); this one is unconditional (autoguidance works: --guide-run RUN)")
    if kind == "cfg" and not cfg.data.p_uncond > 0:
        raise UsageError("--guidance: this run was trained without label dropout (data.p_uncond = 0), so its null "
                         "class is untrained and classifier-free guidance has no unconditional model to use")
    if (kind in ("cfg", "classifier") or args.classifier_guidance is not None) and label is None:
        raise UsageError("guidance towards a class needs --class N or --class all")
    classifier = None
    if uses_classifier:
        classifier, _ = load_classifier(default_classifier(args), D.path, shape=tuple(meta["shape"]), num_classes=C,
                                        device=device)
    if kind is not None:
        weak = (load_guide(args.guide_run, D, meta, cfg, device, not getattr(args, "no_ema", False))
                if kind == "auto" else None)
        D = guide(D, kind, args.guidance, null_label=C, weak=weak, classifier=classifier,  # type: ignore[arg-type]
                  conditional_model=conditional, interval=args.guidance_interval)
    if args.classifier_guidance is not None:
        D = guide(D, "classifier", args.classifier_guidance, classifier=classifier, conditional_model=conditional,
                  interval=args.guidance_interval)
    if label is None:
        return D, None
    return D, {"y": class_labels(label, C, n).to(device)}

