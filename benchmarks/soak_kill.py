"""Soak test of crash safety: N trainings of a tiny model, each killed with SIGKILL (kill -9) at random moments
(1 to --max-kills times, the later kills hitting the resumed process), then resumed to the end; the final weights
(model, EMA and optimizer state) are compared bit for bit with an uninterrupted run.

Every process is the real command line (``python -m kuosan.cli train``), so the kills land anywhere: start-up,
a training step, a checkpoint write (checkpoints every --ckpt-every steps make that frequent), the pointer update,
pruning. After each kill the run folder is inspected: temporary folders left (``.tmp-*``, ``.trash-*``: invisible,
removed by the next start), whether its newest checkpoint loads (verified against its manifest). A run killed
before its first checkpoint is started again from scratch.

Usage: python benchmarks/soak_kill.py [--trials 20] [--steps 300] [--ckpt-every 3] [--max-kills 2] [--hidden 128]
                                      [--seed 0] [--out DIR] [--keep]
Prints one row per trial and a summary; exit status 1 if any resume was not exact, a checkpoint did not load, or
a temporary folder survived a resume.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

from kuosan.checkpoint import CheckpointError, load_checkpoint

TEMP = (".tmp-", ".trash-", ".latest-")


def command(args: argparse.Namespace, run: Path, resume: bool) -> list[str]:
    base = [sys.executable, "-m", "kuosan.cli", "train", "--quiet"]
    if resume:
        return base + ["--resume", str(run)]
    return base + ["--data", "moons", "--steps", str(args.steps), "--batch-size", "32", "--threads", "1",
                   "--out", str(run), "--set", "data.n=512", "--set", f"net.mlp_hidden={args.hidden}", "--set",
                   "net.mlp_depth=2", "--set", f"log.ckpt_every={args.ckpt_every}", "--set", "log.log_every=10",
                   "--set", "log.val_every=100", "--set", "log.n_samples=16", "--set", "log.sample_steps=2",
                   "--set", "optim.warmup=10", "--set", "net.dropout=0.1"]


def temp_entries(run: Path) -> list[str]:
    """Temporary entries in the run folder and its checkpoints/ folder."""
    out = []
    for d in (run, run / "checkpoints"):
        if d.is_dir():
            out += [n for n in os.listdir(d) if n.startswith(TEMP)]
    return sorted(out)


def holder(run: Path) -> int | None:
    """The PID the run's lock file names (the process training it), if any."""
    try:
        return json.loads((run / ".lock").read_text()).get("pid")
    except (OSError, ValueError, AttributeError):
        return None


def state(run: Path) -> tuple[str, int | None]:
    """('ok', step) if the newest checkpoint loads, ('none', None) without one, ('BAD', None) if it fails."""
    if not (run / "checkpoints").is_dir() or not any((run / "checkpoints").glob("step_*")):
        return "none", None
    try:
        return "ok", load_checkpoint(run).state["step"]
    except CheckpointError:
        return "BAD", None


def tensors(run: Path) -> dict[str, torch.Tensor]:
    ck = load_checkpoint(run)
    out = {f"model.{k}": v for k, v in ck.model.items()}
    out.update({f"ema.{k}": v for k, v in (ck.ema or {}).items()})
    for pid, st in (ck.optim or {"state": {}})["state"].items():
        out.update({f"optim.{pid}.{k}": v for k, v in st.items() if isinstance(v, torch.Tensor)})
    return out


def run_to_end(args: argparse.Namespace, run: Path) -> None:
    st, step = state(run)
    if step == args.steps:  # killed after its final checkpoint (while drawing the pictures): nothing to resume
        return
    resume = st == "ok"
    p = subprocess.run(command(args, run, resume), capture_output=True, text=True, env=ENV)
    if p.returncode != 0:
        raise SystemExit(f"resume of {run} failed ({p.returncode}): {p.stderr.strip()[-500:]}")


def kill_once(args: argparse.Namespace, run: Path, rng: random.Random, span: float) -> bool:
    """Start (or resume) the run and SIGKILL it after a random time once it is past start-up; False if it
    finished first."""
    st, step = state(run)
    if step == args.steps:
        return False
    resume = st == "ok"
    p = subprocess.Popen(command(args, run, resume), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=ENV)
    deadline = time.time() + 120
    while holder(run) != p.pid and p.poll() is None and time.time() < deadline:
        time.sleep(0.01)  # the lock names the process once it has started training this folder
    time.sleep(rng.uniform(0, span))
    if p.poll() is not None:
        return False
    p.send_signal(signal.SIGKILL)
    p.wait()
    return True


ENV = {**os.environ, "OMP_NUM_THREADS": "1"}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--trials", type=int, default=20)
    ap.add_argument("--steps", type=int, default=300)
    ap.add_argument("--ckpt-every", type=int, default=3)
    ap.add_argument("--max-kills", type=int, default=2)
    ap.add_argument("--hidden", type=int, default=128, help="MLP width (128: checkpoints of ~1 MB)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", default=None, help="working folder (default: a temporary one)")
    ap.add_argument("--keep", action="store_true", help="keep the run folders")
    args = ap.parse_args()
    rng = random.Random(args.seed)
    out = Path(args.out or tempfile.mkdtemp(prefix="soak-"))
    out.mkdir(parents=True, exist_ok=True)
    ref = out / "reference"
    shutil.rmtree(ref, ignore_errors=True)
    t0 = time.time()
    p = subprocess.Popen(command(args, ref, False), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=ENV)
    while holder(ref) != p.pid and p.poll() is None:
        time.sleep(0.01)
    t1 = time.time()
    final = ref / "checkpoints" / f"step_{args.steps:07d}"
    while not final.exists() and p.poll() is None:
        time.sleep(0.01)
    span = time.time() - t1  # from taking the run folder's lock to the final checkpoint: where kills are drawn
    if p.wait() != 0:
        raise SystemExit(f"the reference run failed: {p.stderr.read().decode()[-500:]}")
    want = tensors(ref)
    print(f"reference: {args.steps} steps, {time.time() - t0:.1f} s in all, {span:.1f} s from taking the lock to "
          f"the final checkpoint; kills drawn uniformly in that span; checkpoints every {args.ckpt_every} steps")
    print(f"{'trial':>5} {'kills':>5} {'in write':>8} {'temp left':>9} {'loadable':>8} {'resumed from':>12} "
          f"{'exact':>5} {'temp at end':>11}")
    tot = {"kills": 0, "in_write": 0, "temp": 0, "bad": 0, "exact": 0, "temp_end": 0}
    for i in range(args.trials):
        run = out / f"trial{i:02d}"
        shutil.rmtree(run, ignore_errors=True)
        kills = in_write = temp_left = bad = 0
        resumed_from = []
        for _ in range(rng.randint(1, args.max_kills)):
            if not kill_once(args, run, rng, span):
                break
            kills += 1
            left = temp_entries(run)
            temp_left += len(left)
            in_write += any(n.startswith((".tmp-step", ".trash-", ".tmp-latest")) for n in left)
            st, step = state(run)
            bad += st == "BAD"
            resumed_from.append("-" if step is None else str(step))
        run_to_end(args, run)
        exact = all(torch.equal(want[k], v) for k, v in tensors(run).items()) and set(tensors(run)) == set(want)
        end_left = len(temp_entries(run))
        print(f"{i:>5} {kills:>5} {in_write:>8} {temp_left:>9} {'no' if bad else 'yes':>8} "
              f"{','.join(resumed_from) or '-':>12} {'yes' if exact else 'NO':>5} {end_left:>11}", flush=True)
        tot["kills"] += kills
        tot["in_write"] += in_write
        tot["temp"] += temp_left
        tot["bad"] += bad
        tot["exact"] += exact
        tot["temp_end"] += end_left
        if not args.keep:
            shutil.rmtree(run, ignore_errors=True)
    print(f"summary: {args.trials} trials, {tot['kills']} kills ({tot['in_write']} inside a checkpoint write or "
          f"prune), exact resumes {tot['exact']}/{args.trials}, temp entries left by kills {tot['temp']} (all "
          f"removed at the next start: {tot['temp_end']} left at the end), unloadable checkpoints {tot['bad']}")
    if not args.keep and args.out is None:
        shutil.rmtree(out, ignore_errors=True)
    return 0 if tot["exact"] == args.trials and tot["bad"] == 0 and tot["temp_end"] == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
