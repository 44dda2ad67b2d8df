"""The command line: ``kuosan train``, ``kuosan sample``, ``kuosan nll`` (one module per verb).

Bad input — a bad flag or value, an unknown config key, a missing run, unreadable data, a sampler option the
sampler does not take — is one line on stderr, ``kuosan: error: ...``, and exit code 2, never a traceback.
Ctrl-C is one line and exit code 130. An unexpected exception (a bug) is one line and exit code 1; set
KUOSAN_DEBUG=1 to see its traceback.
"""

from __future__ import annotations

import os
import signal
import threading
import sys
from typing import Sequence

from ..train.signals import raise_on_stop_signals  # imports no torch
from .common import Parser, UsageError

__all__ = ["main", "UsageError"]

VERBS = {  # verb -> one-line help (the verb's module builds its parser; only the verb asked for is imported)
    "train": "train a diffusion model (default: the 8x8 digits, ~1 min on 2 cores)",
    "sample": "draw samples from a trained run or checkpoint",
    "nll": "negative log-likelihood (bits/dim) of a trained model on its data",
    "eval": "sample quality of a trained run on its own data: FD, KID, PRDC, memorisation, exact metrics (no download)",
    "train-classifier": "train the noisy classifier p(y | x_t, t) of classifier guidance on a run's data and path",
    "sweep-guidance": "the quality-diversity curve of a guidance scale: class accuracy, FD, precision, recall",
    "serve": "a local explorer page for a run: generate step by step, the forward process and its covariance",
    "reflow": "the next rectified flow of a flow run: couplings from its ODE, trained on; straightness before/after",
    "distill": "a consistency model from a trained run: consistency distillation (cd) or tuning (ect)",
    "viz": "pictures of diffusion: a curve diffusing, covariances, coloured noise, schedules, trajectories, denoising",
}


def _module(verb: str) -> str:
    """The module of a verb: "train-classifier" -> "train_classifier"."""
    return verb.replace("-", "_")


def build_parser(verb: str | None = None) -> Parser:
    """The parser; ``verb``'s sub-parser complete (the others as names only, for the top-level help)."""
    import importlib

    parser = Parser(prog="kuosan", description="kuosan (扩散): denoising diffusion models — train, sample, "
                                               "likelihood. `kuosan VERB --help` for each verb's options.")
    sub = parser.add_subparsers(dest="command", metavar="{" + ",".join(VERBS) + "}", parser_class=Parser)
    for name, help in VERBS.items():
        if name == verb:
            importlib.import_module(f"{__name__}.{_module(name)}").add_parser(sub, help)
        else:
            sub.add_parser(name, help=help)
    return parser


def _run(argv: Sequence[str] | None) -> int:
    import importlib

    argv = list(sys.argv[1:] if argv is None else argv)
    verb = argv[0] if argv and argv[0] in VERBS else None
    parser = build_parser(verb)
    args = parser.parse_args(argv)
    if args.command is None:
        raise UsageError(f"name a command: {', '.join(VERBS)} (kuosan --help)")
    return importlib.import_module(f"{__name__}.{_module(args.command)}").run(args)


def _expected_errors() -> tuple[type[BaseException], ...]:
    """Errors that mean bad input or a bad environment, not a bug: printed as one line, exit code 2."""
    errs: list[type[BaseException]] = [ValueError, OSError]  # ConfigError, CheckpointError, DataError, PathError
    try:
        from ..train import TrainingError  # a training run that cannot go on (e.g. the loss stays non-finite)

        errs.append(TrainingError)
    except Exception:  # pragma: no cover - the training package failed to import; its error shows when used
        pass
    try:
        from ..sampling import NonFiniteSamplesError  # a sampler diverged: said, never returned silently

        errs.append(NonFiniteSamplesError)
    except Exception:  # pragma: no cover
        pass
    try:
        import torch

        errs.append(torch.cuda.OutOfMemoryError)
    except Exception:  # pragma: no cover
        pass
    return tuple(errs)


def _one_line(e: BaseException) -> str:
    if isinstance(e, OSError) and e.strerror:  # "Permission denied: /root/x", not "[Errno 13] ...: '/root/x'"
        return f"{e.strerror}: {e.filename}" if e.filename is not None else e.strerror
    return " ".join(str(e).split()) or type(e).__name__


def main(argv: Sequence[str] | None = None) -> int:
    """Run one command; returns the exit code (0 ok, 2 bad input, 130 interrupted, 1 a bug)."""
    debug = os.environ.get("KUOSAN_DEBUG", "") not in ("", "0")
    main_thread = threading.current_thread() is threading.main_thread()
    saved = {s: signal.getsignal(s) for s in (signal.SIGTERM, signal.SIGUSR1)} if main_thread else {}
    raise_on_stop_signals()  # SIGTERM/SIGUSR1 before training installs its own handlers: one line, not a silent death
    try:
        return _run(argv)
    except KeyboardInterrupt as e:  # training says where it saved its checkpoint
        print(f"kuosan: {_one_line(e) if str(e) else 'interrupted'}", file=sys.stderr)
        return int(getattr(e, "exit_code", 130))  # 130 SIGINT, 143 SIGTERM, 138 SIGUSR1 (128 + signal number)
    except BrokenPipeError:  # `kuosan train --list-keys | head`
        sys.stderr.close()
        return 0
    except SystemExit as e:  # argparse's --help exits 0 through here
        return e.code if isinstance(e.code, int) else (0 if e.code is None else 2)
    except Exception as e:  # noqa: BLE001 - the one place that turns exceptions into exit codes
        if debug:
            raise
        if isinstance(e, _expected_errors()):
            print(f"kuosan: error: {_one_line(e)}", file=sys.stderr)
            return 2
        print(f"kuosan: error: internal error ({type(e).__name__}: {_one_line(e)}); "
              "rerun with KUOSAN_DEBUG=1 for the traceback", file=sys.stderr)
        return 1
    finally:
        for sig, handler in saved.items():
            signal.signal(sig, handler)
