"""Checkpoints: atomic writes, the nested config with its format version, old flat configs migrated on load."""

from __future__ import annotations

import json

import pytest
import torch

import kuosan.checkpoint as ck
from kuosan.checkpoint import CONFIG_FORMAT, CheckpointError, load_checkpoint, resolve, save_checkpoint
from kuosan.config import Config, ConfigError, from_dict, to_dict


def test_checkpoint_write_is_atomic(tmp_path, monkeypatch):
    sd = {"w": torch.ones(3)}
    save_checkpoint(tmp_path, 1, to_dict(Config()), {"data": {}}, sd)
    real = ck.save_file
    calls = []

    def crash_on_second(tensors, path):
        calls.append(path)
        if len(calls) == 2:
            raise OSError("disk full (simulated)")
        real(tensors, path)

    monkeypatch.setattr(ck, "save_file", crash_on_second)
    with pytest.raises(OSError):
        save_checkpoint(tmp_path, 2, to_dict(Config()), {"data": {}}, {"w": torch.zeros(3)}, ema={"w": torch.zeros(3)})
    got = load_checkpoint(tmp_path)  # the latest is still the complete step-1 checkpoint
    assert got.state["step"] == 1 and torch.equal(got.model["w"], torch.ones(3))


def test_nested_config_round_trips_with_its_format_version(tmp_path):
    cfg = from_dict({"net": {"channels": 12}, "path": {"kind": "flow"}, "objective": {"prediction": "velocity"}})
    p = save_checkpoint(tmp_path, 3, to_dict(cfg), {"data": {"shape": [2]}}, {"w": torch.ones(1)},
                        extra={"imp_count": torch.arange(3)})
    got = load_checkpoint(tmp_path)
    assert got.path == p == resolve(tmp_path) == resolve(p)
    assert got.state["config_format"] == CONFIG_FORMAT == 2 and from_dict(got.config) == cfg
    assert torch.equal(got.extra["imp_count"], torch.arange(3)) and got.optim is None and got.ema is None
    assert sorted(f.name for f in p.iterdir()) == ["config.json", "extra.safetensors", "model.safetensors",
                                                   "state.json"]  # JSON and safetensors only: nothing pickled


def test_keeps_the_newest_two(tmp_path):
    for step in (1, 2, 3):
        save_checkpoint(tmp_path, step, {}, {}, {"w": torch.ones(1)})
    assert sorted(p.name for p in (tmp_path / "checkpoints").glob("step_*")) == ["step_0000002", "step_0000003"]


def test_old_flat_config_is_migrated_and_a_gone_key_refused(tmp_path):
    p = save_checkpoint(tmp_path, 1, {}, {}, {"w": torch.ones(1)})
    state = json.loads((p / "state.json").read_text())
    del state["config_format"]  # as the first half wrote it
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


def test_broken_checkpoints_are_one_line_errors(tmp_path):
    p = save_checkpoint(tmp_path, 1, {}, {}, {"w": torch.ones(1)})
    (p / "model.safetensors").write_bytes(b"not safetensors")
    with pytest.raises(CheckpointError, match="corrupt weights"):
        load_checkpoint(tmp_path)
    (p / "state.json").write_text("{")
    with pytest.raises(CheckpointError, match="unreadable state/config"):
        load_checkpoint(tmp_path)
    (p / "state.json").write_text(json.dumps({"format": "other"}))
    with pytest.raises(CheckpointError, match="is not a kuosan-checkpoint-1 checkpoint"):
        load_checkpoint(tmp_path)
