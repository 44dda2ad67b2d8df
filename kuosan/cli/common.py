"""What the verbs share: the one-line-error parser, argument types that name their flag, checks of --device
and --out made before any work, an atomic writer for samples, and the progress switch.

Every check here raises :class:`UsageError` (a ValueError) with a one-line message; ``kuosan.cli.main``
prints it as ``kuosan: error: ...`` and exits with code 2.
"""

from __future__ import annotations

import argparse
import math
import os
import re
from pathlib import Path
from typing import Any, Callable

MAX_SAMPLES = 100_000  # --n of `sample` (and `nll`): more is almost certainly a typo
MAX_SAMPLE_BYTES = 4 * 2**30  # n·numel·4 bytes of float32 results held in memory
MAX_PNG_IMAGES = 4096  # a .png grid of more images is tens of thousands of pixels wide: write .npz
OUT_SUFFIXES = (".png", ".npz")


class UsageError(ValueError):
    """Bad command-line input; printed as one line, exit code 2."""


class Parser(argparse.ArgumentParser):
    """argparse with one-line errors: no usage dump, the message raised as UsageError."""

    def error(self, message: str) -> None:  # type: ignore[override]
        m = re.match(r"argument ([^:]+): (must be .*)", message)
        if m:  # our argument types: "--bits must be an integer, 'auto' or 'none', got 'abc'"
            message = f"{m.group(1).split('/')[0]} {m.group(2)}"
        if message.startswith("unrecognized arguments") and any(
                w.lower() in ("true", "false", "yes", "no", "on", "off", "1", "0") for w in message.split()[2:]):
            message += " (a boolean is a flag: --class-cond or --no-class-cond, never --class-cond true)"
        raise UsageError(message)


def _typed(name: str, conv: Callable[[str], Any], ok: Callable[[Any], bool], want: str) -> Callable[[str], Any]:
    """An argparse type: convert, check, and on failure say what the flag wants (argparse adds the flag)."""

    def parse(s: str) -> Any:
        try:
            v = conv(s)
        except (TypeError, ValueError):
            raise argparse.ArgumentTypeError(f"must be {want}, got {s!r}") from None
        if not ok(v):
            raise argparse.ArgumentTypeError(f"must be {want}, got {s!r}")
        return v

    parse.__name__ = name  # argparse names the type in some messages
    return parse


def _int(s: str) -> int:
    return int(s.strip())


positive_int = _typed("positive_int", _int, lambda v: v > 0, "a positive integer")
nonneg_int = _typed("nonneg_int", _int, lambda v: v >= 0, "an integer >= 0")
seed_int = _typed("seed", _int, lambda v: 0 <= v < 2**63, "an integer in [0, 2^63)")
any_int = _typed("int", _int, lambda v: True, "an integer")
finite_float = _typed("float", float, math.isfinite, "a finite number")
positive_float = _typed("positive_float", float, lambda v: math.isfinite(v) and v > 0, "a finite number > 0")
nonneg_float = _typed("nonneg_float", float, lambda v: math.isfinite(v) and v >= 0, "a finite number >= 0")


def n_samples(s: str) -> int:
    """--n: a positive integer, at most MAX_SAMPLES."""
    n = positive_int(s)
    if n > MAX_SAMPLES:
        raise argparse.ArgumentTypeError(f"must be at most {MAX_SAMPLES}, got {n} (run several seeds/processes "
                                         "for more: sample i depends only on (seed, i))")
    return n


def bits_arg(s: str) -> int | str | None:
    """--bits: a positive integer, 'auto' (the data's bit depth) or 'none' (continuous data)."""
    low = s.strip().lower()
    if low == "auto":
        return "auto"
    if low == "none":
        return None
    try:
        b = int(low)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be an integer, 'auto' or 'none', got {s!r}") from None
    if not 1 <= b <= 16:
        raise argparse.ArgumentTypeError(f"must be an integer in [1, 16], 'auto' or 'none', got {s!r}")
    return b


def check_device(name: str, *, allow_auto: bool = False, flag: str = "--device") -> str:
    """Refuse a device torch does not know or this machine does not have, before any work is done."""
    import torch

    if allow_auto and name == "auto":
        return name
    try:
        dev = torch.device(name)
    except (RuntimeError, ValueError):
        auto = "auto, " if allow_auto else ""
        raise UsageError(f"{flag} {name!r} is not a device; use {auto}cpu, cuda or cuda:N") from None
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise UsageError(f"{flag} {name!r}: CUDA is not available on this machine (use --device cpu)")
        if dev.index is not None and dev.index >= torch.cuda.device_count():
            raise UsageError(f"{flag} {name!r}: this machine has {torch.cuda.device_count()} CUDA device(s)")
    elif dev.type == "mps":
        if not (getattr(torch.backends, "mps", None) and torch.backends.mps.is_available()):
            raise UsageError(f"{flag} {name!r}: MPS is not available on this machine")
    elif dev.type != "cpu":
        raise UsageError(f"{flag} {name!r}: kuosan runs on cpu, cuda or mps, not {dev.type!r}")
    return name


def resolve_device(name: str) -> str:
    """'auto' -> cuda when available, else cpu; other names as given (already checked)."""
    if name != "auto":
        return name
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


def check_out(out: str, flag: str = "--out", suffixes: tuple[str, ...] = OUT_SUFFIXES) -> Path:
    """--out (or ``flag``): ends in one of ``suffixes``, its folder exists and is writable, and it is not a folder.

    An existing file is replaced (atomically, when the new one is complete): re-running a command with the
    same --out is the common case, and a half-written file never replaces a good one."""
    p, kinds = Path(out), " or ".join(suffixes)
    if p.is_dir():
        raise UsageError(f"{flag} {out!r} is a folder; name a {kinds} file in it")
    if p.suffix.lower() not in suffixes:
        raise UsageError(f"{flag} must end in {kinds}, got {out!r}")
    parent = p.parent if str(p.parent) else Path(".")
    if not parent.is_dir():
        raise UsageError(f"{flag} {out!r}: folder {str(parent)!r} does not exist")
    if not os.access(parent, os.W_OK | os.X_OK):
        raise UsageError(f"{flag} {out!r}: folder {str(parent)!r} is not writable")
    if p.exists() and not os.access(p, os.W_OK):
        raise UsageError(f"{flag} {out!r} exists and is not writable")
    return p


def bounded_int(lo: int, hi: int) -> Callable[[str], int]:
    """An argparse type: an integer in [lo, hi] (lo >= 1)."""
    def parse(s: str) -> int:
        v = positive_int(s)
        if not lo <= v <= hi:
            raise argparse.ArgumentTypeError(f"must be an integer in [{lo}, {hi}], got {s!r}")
        return v
    return parse


def check_sample_size(n: int, shape: tuple[int, ...], out: Path | None = None, flag: str = "--n") -> None:
    """Refuse a request whose float32 results alone exceed MAX_SAMPLE_BYTES, or a .png grid too large to view."""
    numel = math.prod(shape)
    need = n * numel * 4
    if need > MAX_SAMPLE_BYTES:
        raise UsageError(f"{flag} {n} samples of shape {tuple(shape)} need {need / 2**30:.1f} GiB; at most "
                         f"{MAX_SAMPLE_BYTES // 2**30} GiB ({MAX_SAMPLE_BYTES // (numel * 4)} samples) per command")
    if out is not None and out.suffix.lower() == ".png" and len(shape) == 3 and n > MAX_PNG_IMAGES:
        raise UsageError(f"{flag} {n}: a .png grid holds at most {MAX_PNG_IMAGES} images; write .npz for more")


def write_atomic(path: Path, write: Callable[[Path], None]) -> None:
    """write(tmp) into a temporary file next to ``path``, then rename it over ``path``."""
    tmp = path.with_name(f".{path.stem}.tmp-{os.getpid()}{path.suffix}")
    try:
        write(tmp)
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()


def default_grid_of(args: argparse.Namespace, path: Any) -> str:
    """The grid of --grid and --spacing on ``path`` (``sampling.grids.grid_kind``)."""
    from ..sampling.grids import grid_kind

    return grid_kind(path, args.grid, args.spacing)


def add_quiet(p: argparse.ArgumentParser | Any) -> None:
    p.add_argument("--quiet", action="store_true", help="no progress bars")


def run_splits(cfg: Any, meta: dict[str, Any], why: str = "") -> tuple[Any, Any]:
    """The run's training and held-out splits, exactly as training made them; UsageError (one line) when its data
    cannot be loaded (``why``: what the command needs it for) or now has another sample shape."""
    from ..data import load_dataset, split

    try:
        ds = load_dataset(cfg.data.name, n=cfg.data.n, seed=cfg.run.seed)
    except ValueError as e:
        raise UsageError(f"the run's data {cfg.data.name!r} cannot be loaded{why}: {' '.join(str(e).split())}") \
            from None
    if list(ds.x.shape[1:]) != list(meta["shape"]):
        raise UsageError(f"the run's data {cfg.data.name!r} now has samples of shape {tuple(ds.x.shape[1:])} but the "
                         f"run was trained on {tuple(meta['shape'])}")
    return split(ds, cfg.data.val_fraction, cfg.run.seed)
