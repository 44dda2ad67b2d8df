"""Training throughput (images/s) against the intra-op thread count, on a quiet machine and beside competing
busy processes: what the automatic thread count (run.threads = 0, kuosan.train.threads) is chosen from.

Each measurement is a fresh process (``python -m kuosan.cli train``, digits, the default U-Net and batch unless
--set says otherwise) with --threads N for N in --threads (0 = the automatic choice; "torch" = torch's own default,
what kuosan used before); img/s is the median of log.csv's samples_per_s rows after the first (warm-up) row. The
competition is --busy K processes each spinning one core (``while True: pass``), started before the training
and stopped after it; the table also gives the 1-minute load average when the training started (it includes
other users of the machine).

Usage: python benchmarks/train_threads.py [--threads 0,1,2,torch] [--busy 0,1,2] [--steps 25] [--set KEY=VALUE]
"""

from __future__ import annotations

import argparse
import csv
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

BUSY = "while True: pass"


def torch_default() -> int:
    out = subprocess.run([sys.executable, "-c", "import torch; print(torch.get_num_threads())"], capture_output=True,
                         text=True, env=_env(), check=True)
    return int(out.stdout)


def _env() -> dict[str, str]:
    env = dict(os.environ)
    env.pop("OMP_NUM_THREADS", None)  # torch's own default, as a user's shell would have it
    return env


def measure(threads: str, steps: int, sets: list[str], out: Path) -> tuple[float, int, float]:
    """(img/s, threads used, load average at start) of one short training run."""
    n = str(torch_default()) if threads == "torch" else threads
    cmd = [sys.executable, "-m", "kuosan.cli", "train", "--quiet", "--threads", n, "--steps", str(steps),
           "--out", str(out), "--set", "log.log_every=5", "--set", f"log.val_every={steps}",
           "--set", f"log.ckpt_every={steps}", "--set", "log.n_samples=4", "--set", "log.sample_steps=2"]
    for kv in sets:
        cmd += ["--set", kv]
    load = os.getloadavg()[0]
    subprocess.run(cmd, check=True, capture_output=True, env=_env())
    with open(out / "log.csv") as f:
        rates = [float(r["samples_per_s"]) for r in csv.DictReader(f)][1:]
    import json

    used = json.loads(next((out / "checkpoints").glob("step_*/state.json")).read_text()).get("threads", int(n))
    return statistics.median(rates), used, load


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--threads", default="0,1,2,torch", help="comma-separated: N, 0 (auto) or torch (its default)")
    ap.add_argument("--busy", default="0,1,2", help="comma-separated numbers of competing busy processes")
    ap.add_argument("--steps", type=int, default=25)
    ap.add_argument("--set", dest="sets", action="append", default=[], metavar="KEY=VALUE")
    args = ap.parse_args()
    cpus = len(os.sched_getaffinity(0))
    print(f"{cpus} CPUs available, torch's default {torch_default()} threads; digits, {args.steps} steps; "
          f"{' '.join(args.sets) or 'default config'}")
    print(f"{'busy procs':>10} {'--threads':>9} {'used':>4} {'load at start':>13} {'img/s':>8}")
    with tempfile.TemporaryDirectory() as tmp:
        for k in [int(b) for b in args.busy.split(",")]:
            hogs = [subprocess.Popen([sys.executable, "-c", BUSY]) for _ in range(k)]
            try:
                time.sleep(2.0 if k else 0.0)  # the hogs are running (and the load average starts to show them)
                for i, t in enumerate(args.threads.split(",")):
                    rate, used, load = measure(t.strip(), args.steps, args.sets, Path(tmp) / f"b{k}t{i}")
                    label = {"0": "0 (auto)", "torch": "torch"}.get(t.strip(), t.strip())
                    print(f"{k:>10} {label:>9} {used:>4} {load:>13.2f} {rate:>8.1f}", flush=True)
            finally:
                for h in hogs:
                    h.kill()
                    h.wait()
    return 0


if __name__ == "__main__":
    sys.exit(main())
