"""Stop signals: SIGTERM, SIGINT and SIGUSR1 finish the step, write a checkpoint, say where in one line and carry
the exit code 128 + signum; resuming from that checkpoint is exact. A signal during start-up, during a checkpoint
write or during the final save leaves a consistent run folder."""

from __future__ import annotations

import os
import signal
import threading

import pytest

import kuosan.checkpoint.write as write_mod
import kuosan.train.loop as loop_mod
import kuosan.train.signals as signals_mod
from kuosan.checkpoint import load_checkpoint
from kuosan.train import Interrupted, train
from kuosan.train.signals import StopSignals, raise_on_stop_signals

from train_helpers import same_weights, temp_entries, tiny


def _kill(sig: int):
    return lambda: os.kill(os.getpid(), sig)


def _names(run):
    return sorted(p.name for p in (run / "checkpoints").iterdir())


@pytest.mark.parametrize("sig,code", [(signal.SIGTERM, 143), (signal.SIGINT, 130), (signal.SIGUSR1, 138)])
def test_signal_mid_run_saves_the_step_and_resume_is_exact(tmp_path, at_step, straight, sig, code):
    run = tmp_path / "r"
    at_step(7, _kill(sig))  # arrives during step 8 (index 7): that step completes, then the run stops
    with pytest.raises(Interrupted) as e:
        train(tiny(run, optim__steps=20), progress=False)
    msg = str(e.value)
    assert e.value.exit_code == code and e.value.signum == sig
    assert "\n" not in msg and f"stopped by {signals_mod.signal_name(sig)} after step 8" in msg
    assert str(run / "checkpoints" / "step_0000008") in msg and "--resume" in msg
    assert load_checkpoint(run).state["step"] == 8 and temp_entries(run) == []
    assert _names(run) == ["latest", "step_0000005", "step_0000008"]
    assert not (run / ".lock").exists()
    assert signal.getsignal(signal.SIGTERM) is signal.SIG_DFL  # the handlers are restored
    train(None, resume=run, progress=False)
    assert same_weights(run, straight(20))


def test_repeated_sigterm_still_saves(tmp_path, at_step, straight):
    """timeout(1) and process-group kills can deliver SIGTERM twice: the second does not skip the checkpoint."""
    run = tmp_path / "r"
    at_step(3, lambda: (os.kill(os.getpid(), signal.SIGTERM), os.kill(os.getpid(), signal.SIGTERM)))
    with pytest.raises(Interrupted, match="after step 4; checkpoint saved"):
        train(tiny(run, optim__steps=20), progress=False)
    train(None, resume=run, progress=False)
    assert same_weights(run, straight(20))


def test_second_ctrl_c_stops_at_once_without_saving(tmp_path, at_step, monkeypatch):
    monkeypatch.setattr(signals_mod, "FORCE_AFTER", 0.0)
    run = tmp_path / "r"
    at_step(7, lambda: (os.kill(os.getpid(), signal.SIGINT), os.kill(os.getpid(), signal.SIGINT)))
    with pytest.raises(Interrupted) as e:
        train(tiny(run, optim__steps=20), progress=False)
    assert e.value.exit_code == 130 and "second SIGINT during step 8, which was not saved" in str(e.value)
    assert str(run / "checkpoints" / "step_0000005") in str(e.value)  # names the checkpoint actually kept
    assert load_checkpoint(run).state["step"] == 5 and temp_entries(run) == []


@pytest.mark.parametrize("call", [1, 2, 3])
def test_signal_during_a_checkpoint_write_lets_it_complete(tmp_path, monkeypatch, straight, call):
    """SIGINT while step 10's checkpoint is being written (after its 1st, 2nd, 3rd tensor file): the write
    completes, ``latest`` points at it, the older checkpoint is whole, and the run stops there."""
    run = tmp_path / "r"
    real, n = write_mod.save_file, {"calls": 0}

    def save_file(tensors, path):
        real(tensors, path)
        if "step_0000010" in path:
            n["calls"] += 1
            if n["calls"] == call:
                os.kill(os.getpid(), signal.SIGINT)

    monkeypatch.setattr(write_mod, "save_file", save_file)
    with pytest.raises(Interrupted, match="after step 10; checkpoint saved in .*step_0000010"):
        train(tiny(run, optim__steps=20), progress=False)
    assert (run / "checkpoints" / "latest").read_text().strip() == "step_0000010"
    assert _names(run) == ["latest", "step_0000005", "step_0000010"] and temp_entries(run) == []
    assert load_checkpoint(run / "checkpoints" / "step_0000005").state["step"] == 5  # whole, verified
    train(None, resume=run, progress=False)
    assert same_weights(run, straight(20))


def test_signal_during_the_final_save(tmp_path, monkeypatch, straight):
    run = tmp_path / "r"
    real = write_mod.save_file

    def save_file(tensors, path):
        real(tensors, path)
        if "step_0000020" in path:
            os.kill(os.getpid(), signal.SIGTERM)

    monkeypatch.setattr(write_mod, "save_file", save_file)
    with pytest.raises(Interrupted, match=r"after the last step \(20\); the final checkpoint is in .*step_0000020"):
        train(tiny(run, optim__steps=20), progress=False)
    assert (run / "checkpoints" / "latest").read_text().strip() == "step_0000020" and temp_entries(run) == []
    assert same_weights(run, straight(20))


def test_signal_during_start_up(tmp_path, monkeypatch):
    """During start-up (loading data, building the net) a signal stops at once: one line, nothing written, the
    lock released; on a resume the message names the checkpoint kept and the folder is unchanged."""
    run = tmp_path / "r"
    real = loop_mod.load_dataset

    def load(*a, **k):
        os.kill(os.getpid(), signal.SIGTERM)
        return real(*a, **k)

    monkeypatch.setattr(loop_mod, "load_dataset", load)
    with pytest.raises(Interrupted) as e:
        train(tiny(run, optim__steps=20), progress=False)
    assert e.value.exit_code == 143 and "during start-up" in str(e.value) and "no checkpoint" in str(e.value)
    assert not (run / "checkpoints").exists() and not (run / ".lock").exists() and temp_entries(run) == []
    monkeypatch.setattr(loop_mod, "load_dataset", real)
    train(tiny(run, optim__steps=20), stop_at=10, progress=False)
    monkeypatch.setattr(loop_mod, "load_dataset", load)
    with pytest.raises(Interrupted, match=r"during start-up.*last good checkpoint is .*step_0000010"):
        train(None, resume=run, progress=False)
    assert load_checkpoint(run).state["step"] == 10 and _names(run) == ["latest", "step_0000005", "step_0000010"]


def test_signal_while_loading_the_checkpoint_to_resume(tmp_path, monkeypatch, straight):
    run = tmp_path / "r"
    train(tiny(run, optim__steps=20), stop_at=10, progress=False)
    import kuosan.checkpoint.read as read_mod

    real = read_mod.read_tensors

    def read(p, what):
        os.kill(os.getpid(), signal.SIGINT)
        return real(p, what)

    monkeypatch.setattr(read_mod, "read_tensors", read)
    with pytest.raises(Interrupted, match="during start-up; nothing was written") as e:
        train(None, resume=run, progress=False)
    assert e.value.exit_code == 130
    monkeypatch.setattr(read_mod, "read_tensors", real)
    train(None, resume=run, progress=False)
    assert same_weights(run, straight(20))


def test_ignored_signals_stay_ignored_and_threads_install_nothing(tmp_path, at_step, straight):
    old = signal.signal(signal.SIGUSR1, signal.SIG_IGN)  # as under nohup for SIGHUP, or a background job
    try:
        at_step(3, _kill(signal.SIGUSR1))
        train(tiny(tmp_path / "r", optim__steps=20), progress=False)
        assert signal.getsignal(signal.SIGUSR1) is signal.SIG_IGN
    finally:
        signal.signal(signal.SIGUSR1, old)
    assert same_weights(tmp_path / "r", straight(20))
    seen = []
    th = threading.Thread(target=lambda: (StopSignals().install(), seen.append(signal.getsignal(signal.SIGTERM))))
    th.start()
    th.join()
    assert seen == [signal.SIG_DFL]  # outside the main thread nothing is installed (Python could not deliver)


def test_raise_on_stop_signals_for_a_commands_start():
    old = {s: signal.getsignal(s) for s in (signal.SIGTERM, signal.SIGUSR1)}
    try:
        raise_on_stop_signals()
        for sig, code in ((signal.SIGTERM, 143), (signal.SIGUSR1, 138)):
            with pytest.raises(KeyboardInterrupt) as e:
                os.kill(os.getpid(), sig)
                signal.sigtimedwait([], 0.01) if hasattr(signal, "sigtimedwait") else None
            assert e.value.exit_code == code and str(e.value) == f"stopped by {signals_mod.signal_name(sig)}"
    finally:
        for s, h in old.items():
            signal.signal(s, h)


DDP_CHILD = r"""
import os, signal, sys
sys.path.insert(0, sys.argv[2])
import kuosan.train.loop as L
from train_helpers import tiny
real = L.train_step
def step(cfg, net, fn, obj, batch, opt, i, *a, **kw):
    if i == 6 and os.environ["RANK"] == "1":
        os.kill(os.getpid(), signal.SIGTERM)  # only process 1 is signalled
    return real(cfg, net, fn, obj, batch, opt, i, *a, **kw)
L.train_step = step
try:
    L.train(tiny(sys.argv[1], optim__steps=40, data__val_fraction=0.0), progress=False)
except KeyboardInterrupt as e:
    # one write(2) of the whole line: print may write the text and its newline apart (unbuffered stdout), and the
    # two processes share the pipe, so their lines could interleave
    os.write(1, f"rank {os.environ['RANK']}: {e.exit_code}: {e}\n".encode())
"""


@pytest.mark.slow
def test_ddp_processes_agree_to_stop_after_the_same_step(tmp_path):
    """Under torchrun a signal reaching one process stops all of them after the same step (the flag travels in
    the step's all-reduce); process 0 writes the checkpoint of that step."""
    import subprocess
    import sys
    from pathlib import Path

    (tmp_path / "child.py").write_text(DDP_CHILD)
    run = tmp_path / "r"
    p = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port",
                        "29519", str(tmp_path / "child.py"), str(run), str(Path(__file__).parent)],
                       capture_output=True, text=True, env={**os.environ, "OMP_NUM_THREADS": "1"}, timeout=300)
    lines = sorted(line for line in p.stdout.splitlines() if line.startswith("rank"))
    assert len(lines) == 2, p.stdout + p.stderr[-3000:]
    # signalled during step 7 (after it sent its flag): the flag travels in step 8's all-reduce
    assert lines[0].startswith("rank 0: 143: stopped by a signal after step 8; checkpoint saved in"), lines
    assert lines[1].startswith("rank 1: 143: stopped by SIGTERM after step 8; process 0 saved the checkpoint"), lines
    ck = load_checkpoint(run)
    assert ck.state["step"] == 8 and ck.state["world_size"] == 2 and temp_entries(run) == []
