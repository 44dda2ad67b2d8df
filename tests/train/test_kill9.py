"""kill -9 at the worst moments of a checkpoint write (a real SIGKILL of a training process): the run folder
still loads, holds no half checkpoint under a step name, and resuming it reaches the uninterrupted run's
weights bit for bit; the temporary entries the killed process left are removed by the next start."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from kuosan.checkpoint import load_checkpoint
from kuosan.train import train

from train_helpers import same_weights, temp_entries

HERE = Path(__file__).resolve().parent

# The child trains the tiny run and SIGKILLs itself at POINT while step 10's checkpoint is written.
CHILD = r"""
import os, signal, sys
sys.path.insert(0, sys.argv[3])
import kuosan.checkpoint.layout as layout, kuosan.checkpoint.write as w
from kuosan.train import train
from train_helpers import tiny
run, point = sys.argv[1], sys.argv[2]
die = lambda: os.kill(os.getpid(), signal.SIGKILL)
real_save, real_json, real_text, real_remove = w.save_file, w.write_json, w.write_text_atomic, layout._remove
n = {"files": 0}
def save_file(t, p):
    real_save(t, p)
    if "step_0000010" in p:
        n["files"] += 1
        if point == "files" and n["files"] == 2: die()   # 2 of the 4 tensor files written
def write_json(p, obj):
    if point == "state" and p.name == "state.json" and "step_0000010" in str(p): die()  # all but state.json
    real_json(p, obj)
def write_text_atomic(p, text):
    if point == "pointer" and text.strip() == "step_0000010": die()  # renamed into place, latest not updated
    real_text(p, text)
def remove(p):
    if point == "prune" and ".trash-step_0000005" in str(p): die()  # (at step 15) renamed away, not deleted
    real_remove(p)
w.save_file, w.write_json, w.write_text_atomic, layout._remove = save_file, write_json, write_text_atomic, remove
train(tiny(run, optim__steps=20), progress=False)
"""


def _killed_run(tmp_path: Path, point: str) -> Path:
    run = tmp_path / "r"
    p = subprocess.run([sys.executable, "-c", CHILD, str(run), point, str(HERE)], capture_output=True, text=True,
                       env={**os.environ, "OMP_NUM_THREADS": "1"}, timeout=300)
    assert p.returncode == -9, p.stderr[-2000:]
    return run


@pytest.mark.parametrize("point,step,left", [
    ("files", 5, [".tmp-step_0000010"]),
    pytest.param("state", 5, [".tmp-step_0000010"], marks=pytest.mark.slow),
    pytest.param("pointer", 10, [], marks=pytest.mark.slow),
    pytest.param("prune", 15, [".trash-step_0000005"], marks=pytest.mark.slow),
])
def test_kill9_during_a_checkpoint_write_then_exact_resume(tmp_path, straight, point, step, left):
    run = _killed_run(tmp_path, point)
    assert [e.rsplit("-", 1)[0] for e in temp_entries(run)] == left
    assert load_checkpoint(run).state["step"] == step  # the newest complete checkpoint, verified
    names = sorted(p.name for p in (run / "checkpoints").glob("step_*"))
    assert all(load_checkpoint(run / "checkpoints" / n) for n in names)  # every step folder is whole
    train(None, resume=run, progress=False)
    assert temp_entries(run) == []  # the leftovers of the killed process are gone
    assert same_weights(run, straight(20))
