"""The automatic thread count: torch's default on an idle machine, fewer as the load leaves fewer CPUs idle, at
least 1; recorded in the checkpoint and reused on resume (the count changes the weights, so resume stays exact)."""

from __future__ import annotations

import json

import pytest
import torch

import kuosan.train.loop as loop_mod
import kuosan.train.threads as th
from kuosan.train import train

from train_helpers import same_weights, tiny


@pytest.fixture
def machine(monkeypatch):
    """machine(cpus, load, torch_default=cpus): a fake machine for the automatic choice."""

    def set_(cpus: int, load: float, torch_default: int | None = None) -> None:
        monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
        monkeypatch.setattr(th, "available_cpus", lambda: cpus)
        monkeypatch.setattr(th.os, "cpu_count", lambda: cpus)
        monkeypatch.setattr(th, "current_load", lambda: load)
        monkeypatch.setattr(th, "TORCH_DEFAULT", torch_default or cpus)

    return set_


@pytest.mark.parametrize("cpus,load,want", [
    (2, 0.0, 2), (2, 0.4, 2), (2, 0.6, 1), (2, 1.0, 1), (2, 5.0, 1),  # the 2-core machine of the README
    (16, 0.2, 8), (16, 4.0, 8), (16, 9.0, 7), (16, 15.7, 1), (16, 40.0, 1),  # torch's default is 8 (physical) here
])
def test_auto_threads_leave_busy_cpus_alone(machine, cpus, load, want):
    machine(cpus, load, torch_default=min(cpus, 8))
    assert th.auto_threads() == want


def test_an_explicit_omp_num_threads_is_kept(machine, monkeypatch):
    machine(16, 15.0, torch_default=6)
    monkeypatch.setenv("OMP_NUM_THREADS", "6")
    assert th.auto_threads() == 6


def test_pick_threads(machine):
    machine(4, 0.0)
    assert th.pick_threads(3, 2) == (3, "run.threads")  # asked for: always
    assert th.pick_threads(0, 2)[0] == 2  # the resumed checkpoint's count
    assert th.pick_threads(0, 8) == (4, "auto")  # recorded on a larger machine: not this one anyway
    assert th.pick_threads(0, None) == (4, "auto")


def test_current_load_reads_the_machine():
    load = th.current_load(samples=3, interval=0.0)
    assert 0 <= load < 10_000 and th.available_cpus() >= 1


def test_a_run_records_its_automatic_count_and_its_resume_reuses_it(tmp_path, monkeypatch, straight):
    """auto picked 1 thread at the start; on resume the machine looks idle (auto would say 2), but the resume uses
    the recorded 1 and reaches the uninterrupted 1-thread run bit for bit; torch's count is restored after."""
    run = tmp_path / "r"
    before = torch.get_num_threads()
    monkeypatch.setattr(th, "auto_threads", lambda: 1)
    train(tiny(run, optim__steps=20, run__threads=0), stop_at=10, progress=False)
    state = json.loads((run / "checkpoints" / "step_0000010" / "state.json").read_text())
    assert state["threads"] == 1 and torch.get_num_threads() == before
    monkeypatch.setattr(th, "auto_threads", lambda: 2)
    monkeypatch.setattr(th, "available_cpus", lambda: 2)
    used = []
    real = loop_mod.torch.set_num_threads
    monkeypatch.setattr(loop_mod.torch, "set_num_threads", lambda n: (used.append(n), real(n)))
    train(None, resume=run, progress=False)
    assert used[0] == 1
    assert same_weights(run, straight(20))  # straight(20) ran with run.threads = 1
