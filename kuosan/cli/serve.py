"""``kuosan serve RUN``: the explorer page of a trained run, on http://127.0.0.1:8000/ by default (kuosan.serve).

Everything is checked before the server starts: the ``serve`` extra is installed, RUN loads, --host is an IP
address (or localhost) of this machine and the port can be bound; each failure is one line and exit code 2. The
socket bound by that check is the one uvicorn serves, so nothing can take the port in between.
"""

from __future__ import annotations

import argparse
import errno
import ipaddress
import os
import socket
import sys
import tempfile
from pathlib import Path
from typing import Any

from .common import UsageError, _typed, _int, check_device, nonneg_int, positive_int, resolve_device

port_int = _typed("port", _int, lambda v: 0 <= v <= 65535, "a port number in 0..65535 (0: any free port)")
MAX_WORKERS = 8
LOCAL_NAMES = ["127.0.0.1", "localhost", "[::1]", "::1"]  # Host headers a page bound to a loopback address answers


def add_parser(sub: Any, help: str) -> None:
    p = sub.add_parser("serve", help=help, formatter_class=argparse.RawDescriptionHelpFormatter,
                       description="A local page to explore a trained run: pick a sampler, steps, grid, seed (and "
                                   "class for class-conditional runs), generate and watch x̂_0 step by step; move "
                                   "a slider for t to see the data diffuse beside its covariance. Needs the serve "
                                   "extra: pip install 'kuosan[serve]'.",
                       epilog="Examples:\n  kuosan serve runs/digits            # then open http://127.0.0.1:8000/\n"
                              "  kuosan serve runs/digits --port 0   # any free port (printed)")
    p.add_argument("run", metavar="RUN_OR_CHECKPOINT")
    p.add_argument("--host", default="127.0.0.1",
                   help="address to listen on (default: 127.0.0.1, this machine only; 0.0.0.0 opens the page, "
                        "which has no login, to the network)")
    p.add_argument("--port", type=port_int, default=8000, help="port (default: 8000; 0: any free port)")
    p.add_argument("--out", default=None, metavar="DIR",
                   help="existing folder for the generated samples (default: a temporary folder, removed at exit)")
    p.add_argument("--device", default="cpu", help="cpu, cuda, cuda:N or auto (default: cpu)")
    p.add_argument("--no-ema", action="store_true", help="use the raw weights instead of the EMA")
    p.add_argument("--workers", type=positive_int, default=2,
                   help=f"generations running at once, 1 to {MAX_WORKERS} (default: 2); network calls take turns")
    p.add_argument("--threads", type=nonneg_int, default=0,
                   help="torch threads; 0: as many as the machine's idle CPUs (default)")


def _need_extra() -> None:
    try:
        import fastapi  # noqa: F401
        import uvicorn  # noqa: F401
    except ImportError as e:
        raise UsageError(f"kuosan serve needs the serve extra ({e.name} is missing): "
                         "pip install 'kuosan[serve]'") from None


def check_host(host: str) -> str:
    """--host: an IP address or ``localhost`` (no name lookups: a typo fails at once, not after a DNS timeout)."""
    if host == "localhost":
        return "127.0.0.1"
    try:
        return str(ipaddress.ip_address(host))
    except ValueError:
        raise UsageError(f"--host must be an IP address (127.0.0.1, 0.0.0.0, ::1) or localhost, got {host!r}") \
            from None


def bind(host: str, port: int) -> socket.socket:
    """A listening TCP socket on (host, port), or a one-line UsageError naming why it cannot be had."""
    sock = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # restarts despite TIME_WAIT; never a live port
        sock.bind((host, port))
        sock.listen(128)
    except OSError as e:
        sock.close()
        if e.errno == errno.EADDRINUSE:
            raise UsageError(f"--port {port}: {host}:{port} is already in use (choose another --port, or 0 for "
                             "any free one)") from None
        if e.errno == errno.EADDRNOTAVAIL:
            raise UsageError(f"--host {host}: not an address of this machine") from None
        if e.errno == errno.EACCES:
            raise UsageError(f"--port {port}: permission denied (ports below 1024 need privileges)") from None
        raise UsageError(f"cannot listen on {host}:{port}: {e.strerror or e}") from None
    return sock


def _out_dir(out: str | None) -> tuple[Path, Any]:
    """The outputs folder, and the TemporaryDirectory that owns it (None when the user named one)."""
    if out is None:
        tmp = tempfile.TemporaryDirectory(prefix="kuosan-serve-")
        return Path(tmp.name), tmp
    p = Path(out)
    if not p.is_dir():
        raise UsageError(f"--out {out!r} is not an existing folder")
    if not os.access(p, os.W_OK | os.X_OK):
        raise UsageError(f"--out {out!r} is not writable")
    return p, None


def _url(host: str, port: int) -> str:
    shown = "127.0.0.1" if host == "0.0.0.0" else "[::1]" if host == "::" else f"[{host}]" if ":" in host else host
    return f"http://{shown}:{port}/"


def run(args: argparse.Namespace) -> int:
    _need_extra()
    import torch
    import uvicorn

    from ..serve import create_app, load_run

    host = check_host(args.host)
    if args.workers > MAX_WORKERS:
        raise UsageError(f"--workers must be at most {MAX_WORKERS}, got {args.workers}")
    device = resolve_device(check_device(args.device, allow_auto=True))
    out_dir, owner = _out_dir(args.out)
    if args.threads:
        torch.set_num_threads(args.threads)
    else:
        from ..train.threads import auto_threads

        torch.set_num_threads(auto_threads())
    served = load_run(args.run, device=device, use_ema=not args.no_ema)
    sock = bind(host, args.port)
    try:
        loopback = ipaddress.ip_address(host).is_loopback
        app = create_app(served, out_dir, workers=args.workers, hosts=LOCAL_NAMES if loopback else None)
        port = sock.getsockname()[1]
        print(f"kuosan serve: {args.run} on {_url(host, port)} (samples in {out_dir}; Ctrl-C to stop)", flush=True)
        if not loopback:
            print(f"kuosan serve: warning: listening on {host}; the page has no login, anyone who can reach this "
                  "port can use it", file=sys.stderr, flush=True)
        uvicorn.Server(uvicorn.Config(app, log_level="warning", timeout_graceful_shutdown=2)).run(sockets=[sock])
    finally:
        sock.close()
        if owner is not None:
            owner.cleanup()
    return 0
