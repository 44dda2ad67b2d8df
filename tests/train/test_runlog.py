"""kuosan.train.runlog: the training panels and the optional TensorBoard log (the same numbers as log.csv;
a missing tensorboard package stops a run before its first step, in one line)."""

from __future__ import annotations

import csv
import sys

import pytest

from kuosan.cli import main
from kuosan.train import train
from kuosan.train.runlog import TB_TAGS, RunLog, TensorBoardUnavailable, check_tensorboard
from train_helpers import tiny


def tb_scalars(run):
    """{tag: [(step, value), ...]} from the event files in run/tb/."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(run / "tb"))
    acc.Reload()
    return {tag: [(e.step, e.value) for e in acc.Scalars(tag)] for tag in acc.Tags()["scalars"]}


def log_rows(run):
    with open(run / "log.csv", newline="") as f:
        return list(csv.DictReader(f))


def test_a_missing_tensorboard_is_one_error_before_training(tmp_path, monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "torch.utils.tensorboard", None)  # import fails as without the package
    check_tensorboard(False)  # not asked for: nothing to check
    with pytest.raises(TensorBoardUnavailable, match=r"needs the tensorboard package: pip install 'kuosan\[tens"):
        RunLog(tmp_path, 0, 10, 16, True, False, tensorboard=True)
    run = tmp_path / "r"
    assert main(["train", "--data", "moons", "--steps", "3", "--tensorboard", "--quiet", "--out", str(run),
                 "--set", "net.mlp_hidden=16", "--set", "net.mlp_depth=1", "--set", "data.n=64"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("kuosan: error: log.tensorboard = true") and "\n" not in err
    assert not (run / "checkpoints").exists() and not (run / "tb").exists()


def test_runlog_rows_go_to_tensorboard(tmp_path):
    pytest.importorskip("tensorboard")
    log = RunLog(tmp_path, 0, 4, 8, True, False, tensorboard=True)
    for step, (loss, gn) in enumerate([(1.0, 3.0), (0.5, 1.0), (0.25, 2.0), (0.25, 2.0)], start=1):
        log.add(loss, gn)
        if step % 2 == 0:
            log.row(step, lr=1e-3 * step, val=0.4 if step == 4 else None)
    log.close()
    s = tb_scalars(tmp_path)
    assert set(s) == set(TB_TAGS.values())
    assert s["loss/train"] == [(2, 0.75), (4, 0.25)] and s["optim/grad_norm"] == [(2, 2.0), (4, 2.0)]
    assert s["loss/validation"] == [(4, pytest.approx(0.4))] and [v for _, v in s["optim/lr"]] == pytest.approx(
        [2e-3, 4e-3])


def test_a_run_and_its_resume_log_each_step_once(tmp_path):
    pytest.importorskip("tensorboard")
    run = tmp_path / "r"
    train(tiny(run, optim__steps=10, log__tensorboard=True), progress=False, stop_at=5)
    train(None, resume=run, overrides={"optim.steps": 10}, progress=False)
    s = tb_scalars(run)
    rows = log_rows(run)
    assert [st for st, _ in s["loss/train"]] == [int(r["step"]) for r in rows] == [5, 10]
    assert [v for _, v in s["loss/train"]] == pytest.approx([float(r["loss"]) for r in rows], rel=1e-5)
    assert [v for _, v in s["loss/validation"]] == pytest.approx(
        [float(r["val_loss"]) for r in rows if r["val_loss"]], rel=1e-5)
    assert (run / "loss.png").is_file()
