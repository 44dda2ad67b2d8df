"""``kuosan train``: every config key through ``--set table.key=value``, the common ones as short flags, and
``--process vp|edm|flow|consistency``, the family preset (kuosan.families.presets).

Precedence, lowest first: the defaults (or, with --resume, the run's saved config), the --process preset, --config
FILE, the short flags, then --set in the order given. A short flag is only forwarded when given, so a config file's
value stands unless the command line names the key; a preset fills only keys that nothing above it sets.
``--path`` sets path.kind alone; ``--process`` picks a whole family (path, prediction, weighting, times).
"""

from __future__ import annotations

import argparse
import textwrap
from typing import TYPE_CHECKING, Any, get_args, get_origin

from .common import UsageError, add_quiet, any_int, check_device, finite_float, positive_int

if TYPE_CHECKING:
    from ..config import Config

# group title -> (config table, its short flags as (flags, "table.key"))
GROUPS: dict[str, tuple[str, list[tuple[tuple[str, ...], str]]]] = {
    "data": ("data", [(("--data",), "data.name"), (("--class-cond",), "data.class_cond")]),
    "path (the Gaussian process x_t = α(t) x_0 + σ(t) ε)": (
        "path", [(("--path",), "path.kind"), (("--schedule",), "path.schedule")]),
    "network": ("net", [(("--channels",), "net.channels"), (("--channel-mult",), "net.channel_mult")]),
    "objective": ("objective", [(("--prediction",), "objective.prediction")]),
    "optimisation": ("optim", [(("--steps",), "optim.steps"), (("--batch-size",), "optim.batch_size"),
                               (("--lr",), "optim.lr")]),
    "logging and checkpoints": ("log", [(("--out",), "log.out"), (("--tensorboard",), "log.tensorboard")]),
    "run": ("run", [(("--seed",), "run.seed"), (("--device",), "run.device"), (("--threads",), "run.threads"),
                    (("--precision",), "run.precision"), (("--compile",), "run.compile")]),
}

EPILOG = """\
Precedence, lowest first: defaults < --process preset < --config FILE < short flags < --set (a preset never
overrides a key set explicitly). Families (--process): vp (default), edm, flow, consistency.
Any config key: --set TABLE.KEY=VALUE (repeatable; e.g. --set net.channels=64 --set run.precision=fp32).
`kuosan train --list-keys` prints every key with its type, allowed values, default and meaning.
Examples:
  kuosan train                                       digits, U-Net, 1000 steps
  kuosan train --data moons --process flow           flow matching: linear path, velocity, logit-normal t
  kuosan train --data moons --process edm --set objective.sigma_data=0.7
  kuosan train --config my.toml --lr 1e-3 --set optim.warmup=50
  kuosan train --resume runs/digits --steps 2000     continue exactly where the run stopped"""


def _type_name(hint: Any) -> str:
    if get_origin(hint) is tuple:
        return "INTS"  # comma-separated
    args = [a for a in get_args(hint) if a is not type(None)]
    base = args[0] if args else hint
    return {int: "INT", float: "FLOAT", str: "TEXT", bool: "BOOL"}.get(base, "MODE")


def _key_synopsis(spec: Any) -> str:
    """'loss={l2|l1|huber}' for a mode, 'warmup=INT' otherwise."""
    return f"{spec.name}={{{'|'.join(spec.choices)}}}" if spec.choices else f"{spec.name}={_type_name(spec.type)}"


def _value_help(spec: Any) -> str:
    """'one of a, b, c; default: a' — the allowed values of a mode, not only its default."""
    if spec.choices is not None:
        return f"one of {', '.join(spec.choices)}; default: {spec.default}"
    if get_origin(spec.type) is tuple:
        d = ",".join(map(str, spec.default)) or "none"
        return f"comma-separated integers; default: {d}"
    d = spec.default
    return f"default: {'none' if d is None else str(d).lower() if isinstance(d, bool) else d}"


def _key_type(spec: Any) -> Any:
    """The argparse type of a short flag (a number is checked here, naming the flag; ranges in Config.validate)."""
    return {int: any_int, float: finite_float}.get(spec.type, str)


def add_key_flag(g: Any, names: tuple[str, ...], key: str, default_text: str | None = None) -> None:
    """The short flag ``names`` of config key ``key`` (forwarded only when given, as "key:table.name");
    ``default_text`` replaces the default shown in the help (e.g. "RUN's" where another run's value stands)."""
    from ..config import KEYS

    spec = KEYS[key]
    dest, metavar = "key:" + key, names[0][2:].upper().replace("-", "_")
    if spec.type is bool:
        shown = default_text or ("on" if spec.default else "off")
        g.add_argument(*names, dest=dest, action=argparse.BooleanOptionalAction, default=None,
                       help=f"{spec.help} (default: {shown})")
    elif spec.choices is not None:
        values = _value_help(spec) if default_text is None else \
            f"one of {', '.join(spec.choices)}; default: {default_text}"
        g.add_argument(*names, dest=dest, default=None, choices=spec.choices, metavar=metavar,
                       help=f"{spec.help} ({values})")
    else:
        suffix = f" (default: {default_text})" if default_text is not None else \
            f" ({_value_help(spec)})" if spec.default != "" else ""
        g.add_argument(*names, dest=dest, default=None, type=_key_type(spec), metavar=metavar,
                       help=f"{spec.help}{suffix}")


def add_parser(sub: Any, help: str) -> None:
    from ..config import KEYS

    p = sub.add_parser("train", help=help,
                       description="Train a diffusion model; writes a run folder (config.toml, log.csv, loss.png, "
                                   "samples.png, checkpoints/).",
                       epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    used = {key for _, (_, flags) in GROUPS.items() for _, key in flags}
    for title, (table, flags) in GROUPS.items():
        rest = [_key_synopsis(s) for k, s in KEYS.items() if s.table == table and k not in used]
        desc = textwrap.fill(f"more keys, --set {table}.KEY=VALUE: {', '.join(rest)}", 78,
                             break_on_hyphens=False, break_long_words=False) if rest else None
        g = p.add_argument_group(title, desc)
        if table == "path":
            from ..families.presets import PROCESS_HELP, PROCESSES

            g.add_argument("--process", default=None, choices=PROCESSES, metavar="{" + "|".join(PROCESSES) + "}",
                           help="the family preset; it fills the keys not set by --config, flags or --set: "
                                + "; ".join(f"{k}: {v}" for k, v in PROCESS_HELP.items()))
        for names, key in flags:
            add_key_flag(g, names, key)
        if table == "run":
            g.add_argument("--config", metavar="FILE", help="TOML or JSON file of config tables (an old flat "
                                                            "file is migrated)")
            g.add_argument("--set", dest="overrides", action="append", default=[], metavar="TABLE.KEY=VALUE",
                           help="set any config key (repeatable; applied after the flags above)")
            g.add_argument("--resume", metavar="RUN", help="continue the run (or checkpoint) RUN exactly; "
                                                          "flags and --set change its saved config")
            g.add_argument("--stop-at", type=positive_int, metavar="STEP",
                           help="stop (and checkpoint) at this step, before optim.steps")
            g.add_argument("--list-keys", action="store_true", help="print every config key and exit")
            add_quiet(g)


def overrides_of(args: argparse.Namespace) -> list[str]:
    """The short flags that were given, then --set, as "table.key=value" strings."""
    out = []
    for dest, v in vars(args).items():
        if dest.startswith("key:") and v is not None:
            key = dest[4:]
            if isinstance(v, bool):
                v = "true" if v else "false"
            out.append(f"{key}={v}")
    for item in args.overrides:
        if "=" not in item:
            raise UsageError(f"--set needs TABLE.KEY=VALUE, got {item!r}")
        out.append(item)
    return out


def list_keys() -> str:
    from ..config import KEYS

    lines, table = [], None
    for key, spec in KEYS.items():
        if spec.table != table:
            table = spec.table
            lines.append(f"[{table}]")
        lines.append(f"  {key:28s} {_type_name(spec.type):5s} {_value_help(spec)}")
        if spec.help:
            lines.append(f"  {'':28s} {spec.help}")
    return "\n".join(lines)


def config_of(args: argparse.Namespace) -> "Config":
    """The Config a new run of these arguments trains (not validated): defaults < --process preset < --config <
    short flags < --set. Unknown keys and unreadable values fail here, before any work."""
    from ..config import Config, apply_overrides, from_dict, load_config

    base = Config()
    if args.process:
        from ..families.presets import apply_preset

        base = apply_preset(base, args.process)
    if args.config:
        base = from_dict(load_config(args.config), where=args.config, base=base)
    return apply_overrides(base, overrides_of(args))


def run(args: argparse.Namespace) -> int:
    if args.list_keys:
        print(list_keys())
        return 0
    overrides = overrides_of(args)
    if args.resume and args.config:
        raise UsageError("--config cannot be combined with --resume: the run's saved config is used "
                         "(change keys with flags or --set)")
    if args.resume and args.process:
        raise UsageError("--process cannot be combined with --resume: the run's saved config names its family "
                         "(change keys with flags or --set)")
    cfg = config_of(args)
    if not args.resume or any(o.startswith("run.device=") for o in overrides):
        check_device(cfg.run.device, allow_auto=True)
    from ..train import train

    if args.resume:  # the saved config with these overrides; train() checks it
        run_dir = train(None, resume=args.resume, overrides=overrides, stop_at=args.stop_at, progress=not args.quiet)
    else:
        run_dir = train(cfg.validate(), stop_at=args.stop_at, progress=not args.quiet)
    print(f"run folder: {run_dir}")
    return 0
