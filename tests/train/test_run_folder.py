"""A run folder holds one run whose checkpoints only move forward: leftovers of killed processes are removed at
start, a fresh run never overwrites another, a resume never goes back behind the newest checkpoint, and a
checkpoint outside any run folder is continued only into a folder named for it."""

from __future__ import annotations

import shutil

import pytest

from kuosan.checkpoint import CheckpointError, load_checkpoint
from kuosan.train import train

from train_helpers import same_weights, temp_entries, tiny


def test_leftovers_of_earlier_processes_are_removed_at_start(tmp_path, straight):
    run = tmp_path / "r"
    train(tiny(run, optim__steps=20), stop_at=10, progress=False)
    ck = run / "checkpoints"
    shutil.copytree(ck / "step_0000010", ck / ".tmp-step_0000013-4242")  # a write cut short by kill -9
    shutil.copytree(ck / "step_0000005", ck / ".trash-step_0000005-4242")  # a prune cut short
    (ck / ".tmp-latest-4242").write_text("step_0000013\n")
    (run / ".tmp-config.toml-4242").write_text("[data]\n")
    (run / "samples").mkdir()
    (run / "samples" / ".tmp-4242-step_0000010.png").write_bytes(b"\x89PNG")
    assert len(temp_entries(run)) == 5 and load_checkpoint(run).state["step"] == 10  # invisible to loading
    train(None, resume=run, progress=False)
    assert temp_entries(run) == []
    assert same_weights(run, straight(20))


def test_a_fresh_run_does_not_overwrite_another(tmp_path):
    run = tmp_path / "r"
    train(tiny(run, optim__steps=4), progress=False)
    with pytest.raises(CheckpointError, match=r"already holds a run \(checkpoint step_0000004\); continue it with "
                                              "--resume"):
        train(tiny(run, optim__steps=8, run__seed=3), progress=False)
    assert load_checkpoint(run).state["step"] == 4


def test_resume_never_goes_back_behind_the_newest_checkpoint(tmp_path, straight):
    run = tmp_path / "r"
    train(tiny(run, optim__steps=20), stop_at=10, progress=False)
    with pytest.raises(CheckpointError, match=r"has a newer checkpoint \(step_0000010\) than the one to resume "
                                              r"\(step_0000005\)"):
        train(None, resume=run / "checkpoints" / "step_0000005", progress=False)
    branch = train(None, resume=run / "checkpoints" / "step_0000005", overrides={"log.out": str(tmp_path / "b")},
                   progress=False)  # into a new folder: fine, and exact
    assert branch == tmp_path / "b" and same_weights(branch, straight(20))
    assert load_checkpoint(run).state["step"] == 10


def test_a_loose_checkpoint_continues_only_into_a_named_folder(tmp_path, straight):
    run = tmp_path / "r"
    train(tiny(run, optim__steps=20), stop_at=10, progress=False)
    loose = shutil.copytree(run / "checkpoints" / "step_0000010", tmp_path / "copied")
    with pytest.raises(CheckpointError, match="is not inside a run folder .*--set log.out=DIR"):
        train(None, resume=loose, progress=False)
    assert not (tmp_path / "checkpoints").exists()  # nothing written beside it
    out = train(None, resume=loose, overrides=[f"log.out={tmp_path / 'c'}"], progress=False)
    assert same_weights(out, straight(20))
