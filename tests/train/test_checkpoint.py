"""Checkpoints: complete or invisible (atomic writes, a manifest of sizes and SHA-256 checked on load, pruning by
rename), the nested config with its format version, old flat configs migrated on load."""

from __future__ import annotations

import errno
import hashlib
import json
import os

import pytest
import torch

import kuosan.checkpoint.write as write_mod
from kuosan.checkpoint import (CONFIG_FORMAT, FORMAT, CheckpointError, DiskFullError, clean_temp, load_checkpoint,
                               resolve, save_checkpoint)
from kuosan.config import Config, ConfigError, from_dict, to_dict

META = {"data": {"kind": "vector", "shape": [2], "num_classes": 0, "name": "toy", "bits": None}}


def _save(root, step, w=1.0, **kw):
    return save_checkpoint(root, step, to_dict(Config()), META, {"w": torch.full((3,), w)}, **kw)


def test_checkpoint_write_is_atomic(tmp_path, monkeypatch):
    _save(tmp_path, 1)
    real, calls = write_mod.save_file, []

    def crash_on_second(tensors, path):
        calls.append(path)
        if len(calls) == 2:
            raise OSError("disk fault (simulated)")
        real(tensors, path)

    monkeypatch.setattr(write_mod, "save_file", crash_on_second)
    with pytest.raises(OSError, match="disk fault"):
        _save(tmp_path, 2, 0.0, ema={"w": torch.zeros(3)})
    got = load_checkpoint(tmp_path)  # the latest is still the complete step-1 checkpoint
    assert got.state["step"] == 1 and torch.equal(got.model["w"], torch.ones(3))
    assert sorted(os.listdir(tmp_path / "checkpoints")) == ["latest", "step_0000001"]  # no temp folder left


def test_manifest_lists_every_file_with_its_size_and_sha256(tmp_path):
    p = _save(tmp_path, 3, ema={"w": torch.zeros(3)}, extra={"imp_count": torch.arange(3)},
              optim={"state": {0: {"step": torch.tensor(3.0), "exp_avg": torch.zeros(3), "exp_avg_sq": torch.ones(3)}},
                     "param_groups": [{"lr": 0.1, "params": [0]}]})
    state = json.loads((p / "state.json").read_text())
    assert state["format"] == FORMAT == "kuosan-checkpoint-2"
    files = sorted(f.name for f in p.iterdir())
    assert files == ["config.json", "ema.safetensors", "extra.safetensors", "model.safetensors",
                     "optim.safetensors", "state.json"]  # JSON and safetensors only: nothing pickled
    assert sorted(state["manifest"]) == [f for f in files if f != "state.json"]
    for name, entry in state["manifest"].items():
        data = (p / name).read_bytes()
        assert entry == {"size": len(data), "sha256": hashlib.sha256(data).hexdigest()}


def test_nested_config_round_trips_with_its_format_version(tmp_path):
    cfg = from_dict({"net": {"channels": 12}, "path": {"kind": "flow"}, "objective": {"prediction": "velocity"}})
    p = save_checkpoint(tmp_path, 3, to_dict(cfg), META, {"w": torch.ones(1)}, extra={"imp_count": torch.arange(3)})
    got = load_checkpoint(tmp_path)
    assert got.path == p == resolve(tmp_path) == resolve(p) == resolve(tmp_path / "checkpoints")
    assert got.state["config_format"] == CONFIG_FORMAT == 2 and from_dict(got.config) == cfg
    assert torch.equal(got.extra["imp_count"], torch.arange(3)) and got.optim is None and got.ema is None


def test_keeps_the_newest_two_pruning_by_rename(tmp_path, monkeypatch):
    """Pruning renames a checkpoint away before deleting it: a deletion cut short leaves a trash name that never
    loads (and the next start removes), never a half checkpoint under its step name."""
    for step in (1, 2, 3):
        _save(tmp_path, step)
    root = tmp_path / "checkpoints"
    assert sorted(p.name for p in root.glob("step_*")) == ["step_0000002", "step_0000003"]
    import kuosan.checkpoint.layout as layout

    monkeypatch.setattr(layout, "_remove", lambda p: (p / "optim.safetensors").write_text("half deleted"))
    _save(tmp_path, 4)
    assert sorted(p.name for p in root.glob("step_*")) == ["step_0000003", "step_0000004"]
    assert [n.rsplit("-", 1)[0] for n in os.listdir(root) if n.startswith(".")] == [".trash-step_0000002"]
    monkeypatch.undo()
    assert [n.rsplit("-", 1)[0] for n in clean_temp(root)] == [".trash-step_0000002"]
    assert sorted(os.listdir(root)) == ["latest", "step_0000003", "step_0000004"]


def test_newest_complete_checkpoint_wins_over_a_stale_pointer(tmp_path):
    """Killed between renaming step 2 into place and updating `latest`: the run continues from step 2."""
    _save(tmp_path, 1)
    _save(tmp_path, 2, 2.0)
    (tmp_path / "checkpoints" / "latest").write_text("step_0000001\n")
    assert load_checkpoint(tmp_path).state["step"] == 2
    (tmp_path / "checkpoints" / "latest").unlink()  # no pointer at all: the newest step folder
    assert load_checkpoint(tmp_path).state["step"] == 2
    os.mkdir(tmp_path / "checkpoints" / "step_0000009")  # an empty folder (no state.json) is not a checkpoint
    assert load_checkpoint(tmp_path).state["step"] == 2


def test_no_space_for_a_checkpoint(tmp_path, monkeypatch):
    _save(tmp_path, 1)

    def full(tensors, path):
        with open(path, "wb") as f:
            f.write(b"partial")
        raise OSError(errno.ENOSPC, "No space left on device", path)

    monkeypatch.setattr(write_mod, "save_file", full)
    with pytest.raises(DiskFullError, match=r"no space left on the device writing checkpoint .*step_0000002' \(it "
                                            r"needs about 1.0 MiB; .* free\); the latest checkpoint .*step_0000001' "
                                            r"is intact"):
        _save(tmp_path, 2)
    assert sorted(os.listdir(tmp_path / "checkpoints")) == ["latest", "step_0000001"]


def test_old_flat_config_is_migrated_and_a_gone_key_refused(tmp_path):
    """A first-format checkpoint (no manifest, no config_format) loads with its flat config migrated."""
    p = _save(tmp_path, 1)
    state = json.loads((p / "state.json").read_text())
    del state["config_format"], state["manifest"]  # as the first half wrote it
    state["format"] = "kuosan-checkpoint-1"
    (p / "state.json").write_text(json.dumps(state))
    (p / "config.json").write_text(json.dumps({"schedule": "linear", "T": 50, "target": "eps"}))
    got = load_checkpoint(tmp_path)
    assert got.config["path"] == {"kind": "discrete_vp", "schedule": "linear", "T": 50}
    assert got.config["objective"] == {"prediction": "eps"}
    (p / "config.json").write_text(json.dumps({"schedule": "linear", "sampler": "ddim"}))
    with pytest.raises(ConfigError, match="old-format config key 'sampler' .* no longer exists"):
        load_checkpoint(tmp_path)
    state["config_format"] = 9
    (p / "state.json").write_text(json.dumps(state))
    with pytest.raises(CheckpointError, match="config of unknown format 9"):
        load_checkpoint(tmp_path)
    state["config_format"] = 1
    state["optim"] = {"param_groups": [{"params": [0]}], "scalars": {}}  # its optimizer file is gone
    (p / "state.json").write_text(json.dumps(state))
    with pytest.raises(CheckpointError, match="incomplete: optim.safetensors is missing"):
        load_checkpoint(tmp_path)


def test_broken_checkpoints_are_one_line_errors(tmp_path):
    p = _save(tmp_path, 1)
    (p / "model.safetensors").write_bytes(b"not safetensors")
    with pytest.raises(CheckpointError, match="is damaged: model.safetensors has 15 bytes"):
        load_checkpoint(tmp_path)
    (p / "state.json").write_text("{")
    with pytest.raises(CheckpointError, match="state.json' is unreadable"):
        load_checkpoint(tmp_path)
    (p / "state.json").write_text(json.dumps({"format": "other"}))
    with pytest.raises(CheckpointError, match="is not a kuosan-checkpoint-2 checkpoint"):
        load_checkpoint(tmp_path)
    with pytest.raises(CheckpointError, match="does not exist"):
        load_checkpoint(tmp_path / "missing")
    (tmp_path / "file").write_text("")
    with pytest.raises(CheckpointError, match="is a file, not a run or checkpoint folder"):
        load_checkpoint(tmp_path / "file")
    (tmp_path / "run2" / "checkpoints").mkdir(parents=True)
    with pytest.raises(CheckpointError, match="has no checkpoint yet"):
        load_checkpoint(tmp_path / "run2")
