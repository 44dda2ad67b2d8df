"""A full disk: a checkpoint write that runs out of space (or would not fit) is one line naming the checkpoint and
the space needed, the previous checkpoint stays whole and no temporary file stays; a picture or a log line that
cannot be written is a warning and the run goes on."""

from __future__ import annotations

import errno
import shutil
from collections import namedtuple

import pytest

import kuosan.checkpoint.write as write_mod
import kuosan.train.runlog as runlog_mod
from kuosan.checkpoint import DiskFullError, load_checkpoint
from kuosan.train import train

from train_helpers import same_weights, temp_entries, tiny

ENOSPC = OSError(errno.ENOSPC, "No space left on device")
Usage = namedtuple("Usage", "total used free")


def _no_space(*a, **k):
    raise OSError(errno.ENOSPC, "No space left on device")


@pytest.mark.parametrize("nth", [1, 3])
def test_disk_full_during_a_checkpoint_write(tmp_path, monkeypatch, straight, nth):
    """The nth tensor file of step 10's checkpoint hits ENOSPC (after writing half of itself)."""
    run = tmp_path / "r"
    real, n = write_mod.save_file, {"files": 0}

    def save_file(tensors, path):
        if "step_0000010" in path:
            n["files"] += 1
            if n["files"] == nth:
                with open(path, "wb") as f:
                    f.write(b"\0" * 100)  # a partial file, then the disk is full
                raise OSError(errno.ENOSPC, "No space left on device")
        real(tensors, path)

    monkeypatch.setattr(write_mod, "save_file", save_file)
    with pytest.raises(DiskFullError) as e:
        train(tiny(run, optim__steps=20), progress=False)
    msg = str(e.value)
    assert "\n" not in msg and str(run / "checkpoints" / "step_0000010") in msg and "needs about" in msg
    assert "free" in msg and "step_0000005' is intact" in msg and e.value.strerror is None
    assert temp_entries(run) == [] and load_checkpoint(run).state["step"] == 5
    assert sorted(p.name for p in (run / "checkpoints").iterdir()) == ["latest", "step_0000005"]
    monkeypatch.setattr(write_mod, "save_file", real)  # space freed: the run resumes exactly
    train(None, resume=run, progress=False)
    assert same_weights(run, straight(20))


def test_checkpoint_that_would_not_fit_is_not_started(tmp_path, monkeypatch):
    run = tmp_path / "r"
    train(tiny(run, optim__steps=20), stop_at=5, progress=False)
    import kuosan.train.loop as loop_mod

    monkeypatch.setattr(shutil, "disk_usage", lambda p: Usage(10**9, 10**9 - 1000, 1000))
    monkeypatch.setattr(loop_mod, "check_disk", lambda *a: None)  # past the start-up check
    with pytest.raises(DiskFullError, match=r"not enough space for checkpoint .*step_0000010.*: it needs about "
                                            r"[0-9.]+ MiB, 1000 B free; the latest checkpoint .*step_0000005' is "
                                            "intact"):
        train(None, resume=run, progress=False)
    assert temp_entries(run) == [] and load_checkpoint(run).state["step"] == 5


def test_full_disk_at_start(tmp_path, monkeypatch):
    """Not room for one checkpoint: refused before anything is trained; a config.toml that cannot be written is
    the same one line."""
    run = tmp_path / "r"
    monkeypatch.setattr(shutil, "disk_usage", lambda p: Usage(10**9, 10**9, 0))
    with pytest.raises(DiskFullError, match=r"not enough space in .* for a checkpoint: it needs about .*, 0 B is free"):
        train(tiny(run, optim__steps=4), progress=False)
    assert not (run / "checkpoints").exists() and not (run / ".lock").exists()
    monkeypatch.undo()
    real_open = open

    def full_open(path, mode="r", *a, **k):
        if "config.toml" in str(path) and "w" in mode:
            raise OSError(errno.ENOSPC, "No space left on device", str(path))
        return real_open(path, mode, *a, **k)

    monkeypatch.setattr(write_mod, "open", full_open, raising=False)
    with pytest.raises(DiskFullError, match=r"no space left on the device to write .*config.toml.*needs"):
        train(tiny(run, optim__steps=4), progress=False)
    assert temp_entries(run) == [] and not (run / "config.toml").exists()


def test_pictures_and_log_lines_that_cannot_be_written_are_warnings(tmp_path, monkeypatch, capsys, straight):
    run = tmp_path / "r"
    import kuosan.viz as viz

    def half_png(x, path, reference=None):
        with open(path, "wb") as f:
            f.write(b"\x89PNG half")
        raise OSError(errno.ENOSPC, "No space left on device", str(path))

    monkeypatch.setattr(viz, "save_samples", half_png)
    monkeypatch.setattr(viz, "plot_loss", _no_space)
    monkeypatch.setattr(runlog_mod.RunLog, "_write", lambda self, mode, row: _no_space())
    train(tiny(run, optim__steps=20, log__sample_every=10), progress=False)
    err = capsys.readouterr().err
    warnings = [line for line in err.splitlines() if "warning" in line]
    assert len(warnings) == 3, err  # once per kind: log.csv, samples.png, loss.png
    assert all(line.startswith("kuosan: warning: could not write ") and "training goes on" in line
               for line in warnings)
    assert "No space left on device" in warnings[0]
    assert temp_entries(run) == [] and not (run / "samples.png").exists() and not (run / "loss.png").exists()
    assert same_weights(run, straight(20))  # the training itself is untouched


def test_a_log_csv_that_is_a_folder_is_a_warning(tmp_path, capsys):
    run = tmp_path / "r"
    (run / "log.csv").mkdir(parents=True)
    train(tiny(run, optim__steps=6), progress=False)
    assert "could not write log.csv" in capsys.readouterr().err
    assert load_checkpoint(run).state["step"] == 6 and (run / "loss.png").is_file() is False
