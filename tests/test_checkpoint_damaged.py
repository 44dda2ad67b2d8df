"""Damaged and hostile checkpoints: each is refused with a one-line error (a ValueError: CheckpointError or
ConfigError), both when sampling (load_denoiser) and when resuming (train --resume), and nothing is allocated,
followed or written on their say-so. Many variants also fix the manifest up (a consistent forgery), so the
check behind the checksums is what refuses them."""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
from pathlib import Path
from typing import Callable

import pytest
import torch
from safetensors.torch import load_file, save_file

from kuosan.build import load_denoiser
from kuosan.checkpoint import load_checkpoint
from kuosan.config import Config, apply_overrides
from kuosan.train import train

TINY = {"data.name": "moons", "data.n": 128, "net.mlp_hidden": 16, "net.mlp_depth": 1, "optim.batch_size": 16,
        "optim.warmup": 2, "optim.steps": 10, "log.log_every": 5, "log.val_every": 10, "log.ckpt_every": 5,
        "log.n_samples": 8, "log.sample_steps": 2, "run.threads": 1}
CK = "checkpoints/step_0000010"


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> Path:
    run = tmp_path_factory.mktemp("damaged") / "good"
    train(apply_overrides(Config(), {**TINY, "log.out": str(run)}).validate(), progress=False)
    other = run.parent / "other"  # a second run, for pointers and symlinks into another folder
    train(apply_overrides(Config(), {**TINY, "log.out": str(other), "run.seed": 1}).validate(), progress=False)
    return run


def remanifest(ck: Path) -> None:
    """Make state.json's manifest match the files as they are now (what a forger would do)."""
    state = json.loads((ck / "state.json").read_text())
    for name in list(state["manifest"]) + [n for n in ("ema.safetensors", "extra.safetensors") if (ck / n).is_file()]:
        if (ck / name).is_file():
            data = (ck / name).read_bytes()
            state["manifest"][name] = {"size": len(data), "sha256": hashlib.sha256(data).hexdigest()}
    (ck / "state.json").write_text(json.dumps(state))


def edit_json(name: str, fn: Callable[[dict], object], fix: bool = True) -> Callable[[Path], None]:
    def go(ck: Path) -> None:
        d = json.loads((ck / name).read_text())
        out = fn(d)
        (ck / name).write_text(json.dumps(d if out is None else out))
        if fix and name != "state.json":
            remanifest(ck)
    return go


def edit_tensors(name: str, fn: Callable[[dict], dict]) -> Callable[[Path], None]:
    def go(ck: Path) -> None:
        t = load_file(str(ck / name))
        save_file(fn(t), str(ck / name))
        remanifest(ck)
    return go


def first(t: dict) -> str:
    return sorted(t)[0]


def raw_safetensors(header: dict, data: bytes) -> bytes:
    h = json.dumps(header).encode()
    return len(h).to_bytes(8, "little") + h + data


def write_bytes(name: str, data: bytes, fix: bool = True) -> Callable[[Path], None]:
    def go(ck: Path) -> None:
        (ck / name).write_bytes(data)
        if fix:
            remanifest(ck)
    return go


def drop(*keys: str) -> Callable[[dict], None]:
    """d[k1][k2]... removed."""
    def go(d: dict) -> None:
        for k in keys[:-1]:
            d = d[k]
        del d[keys[-1]]
    return go


def deeply_nested(ck: Path) -> None:
    text = (ck / "state.json").read_text()
    (ck / "state.json").write_text(text.replace('"data": {', '"deep": ' + "[" * 100_000 + "]" * 100_000
                                                + ', "data": {', 1))


def state_set(**kv) -> Callable[[Path], None]:
    return edit_json("state.json", lambda d: d.update(kv))


def flip_byte(name: str) -> Callable[[Path], None]:
    def go(ck: Path) -> None:
        b = bytearray((ck / name).read_bytes())
        b[-3] ^= 0xFF
        (ck / name).write_bytes(bytes(b))
    return go


def in_run(fn: Callable[[Path], None]) -> Callable[[Path], None]:
    """A mutation of the run folder (the checkpoints/ folder, the pointer) rather than of the checkpoint."""
    fn.in_run = True  # type: ignore[attr-defined]
    return fn


def truncate(name: str) -> Callable[[Path], None]:
    def go(ck: Path) -> None:
        b = (ck / name).read_bytes()
        (ck / name).write_bytes(b[: len(b) // 2])
    return go


def remove(name: str) -> Callable[[Path], None]:
    return lambda ck: os.unlink(ck / name)


def make_folder(name: str) -> Callable[[Path], None]:
    def go(ck: Path) -> None:
        os.unlink(ck / name)
        (ck / name).mkdir()
    return go


def symlink_to_other(name: str) -> Callable[[Path], None]:
    def go(ck: Path) -> None:
        os.unlink(ck / name)
        os.symlink(ck.parents[2] / "other" / CK / name, ck / name)
    return go


def pointer(text: str) -> Callable[[Path], None]:
    @in_run
    def go(run: Path) -> None:
        (run / "checkpoints" / "latest").write_text(text)
    return go


@in_run
def pointer_symlink(run: Path) -> None:
    os.unlink(run / "checkpoints" / "latest")
    os.symlink(run.parent / "other" / "checkpoints" / "latest", run / "checkpoints" / "latest")


@in_run
def pointer_folder(run: Path) -> None:
    os.unlink(run / "checkpoints" / "latest")
    (run / "checkpoints" / "latest").mkdir()


@in_run
def step_folder_symlink(run: Path) -> None:
    shutil.rmtree(run / "checkpoints" / "step_0000005")
    shutil.rmtree(run / CK)
    os.symlink(run.parent / "other" / CK, run / CK)


@in_run
def checkpoints_symlink(run: Path) -> None:
    shutil.rmtree(run / "checkpoints")
    os.symlink(run.parent / "other" / "checkpoints", run / "checkpoints")


def huge_tensor(ck: Path) -> None:
    t = load_file(str(ck / "model.safetensors"))
    k = first(t)
    header = {k: {"dtype": "F32", "shape": [10**12], "data_offsets": [0, 4 * 10**12]}}
    (ck / "model.safetensors").write_bytes(raw_safetensors(header, b"\0" * 64))
    remanifest(ck)


BOTH, SAMPLE, RESUME = ("sample", "resume"), ("sample",), ("resume",)
CASES: list[tuple[str, Callable[[Path], None], str, tuple[str, ...]]] = [
    # files missing, truncated, altered, of the wrong kind
    ("truncated model", truncate("model.safetensors"), "is damaged: model.safetensors has", BOTH),
    ("altered model byte", flip_byte("model.safetensors"), "SHA-256 of model.safetensors differs", BOTH),
    ("altered ema byte", flip_byte("ema.safetensors"), "SHA-256 of ema.safetensors differs", BOTH),
    ("altered optim byte", flip_byte("optim.safetensors"), "SHA-256 of optim.safetensors differs", RESUME),
    ("missing optimizer file", remove("optim.safetensors"), "incomplete: optim.safetensors is missing", BOTH),
    ("missing ema file", remove("ema.safetensors"), "incomplete: ema.safetensors is missing", BOTH),
    ("missing model file", remove("model.safetensors"), "no state.json/model.safetensors|model.safetensors is "
                                                        "missing", BOTH),
    ("missing state.json", remove("state.json"), "incomplete: state.json is missing|not a kuosan run", BOTH),
    ("missing config.json", remove("config.json"), "config.json is missing", BOTH),
    ("ema is a folder", make_folder("ema.safetensors"), "ema.safetensors' is a folder, not a file", BOTH),
    ("model is a symlink", symlink_to_other("model.safetensors"), "model.safetensors' is a symlink", BOTH),
    ("unlisted extra file", write_bytes("extra.safetensors", raw_safetensors({}, b""), fix=False),
     "holds extra.safetensors, which its manifest does not list", BOTH),
    ("empty model file", write_bytes("model.safetensors", b""), "not a valid safetensors file", BOTH),
    ("garbage model file", write_bytes("model.safetensors", b"\xff" * 64), "not a valid safetensors file", BOTH),
    # tensor headers and contents
    ("huge declared tensor", huge_tensor, "declares more data than the file holds", BOTH),
    ("header length beyond the file", write_bytes("model.safetensors", (2**60).to_bytes(8, "little") + b"{}"),
     "header claims", BOTH),
    ("unknown dtype", write_bytes("model.safetensors", raw_safetensors({"w": {"dtype": "Q9", "shape": [1],
                                                                               "data_offsets": [0, 4]}}, b"\0" * 4)),
     "unknown dtype", BOTH),
    ("int64 weights", edit_tensors("model.safetensors", lambda t: {k: v.long() for k, v in t.items()}),
     "is int64, not floating point", BOTH),
    ("int64 ema", edit_tensors("ema.safetensors", lambda t: {k: v.long() for k, v in t.items()}),
     "is int64, not floating point", BOTH),
    ("NaN ema", edit_tensors("ema.safetensors", lambda t: {k: v * float("nan") for k, v in t.items()}),
     "EMA weights of .* are not usable: .* has NaN", BOTH),
    ("inf weights", edit_tensors("model.safetensors", lambda t: {k: v / 0 for k, v in t.items()}),
     "are not usable: .* has (inf|NaN)", RESUME),
    ("absurd weights", edit_tensors("model.safetensors", lambda t: {k: v + 1e30 for k, v in t.items()}),
     r"are not usable: .* has \|x\| = 1e\+30", RESUME),
    ("absurd ema", edit_tensors("ema.safetensors", lambda t: {k: v + 1e30 for k, v in t.items()}),
     r"are not usable: .* has \|x\| = 1e\+30", BOTH),
    ("missing weight key", edit_tensors("model.safetensors", lambda t: {k: v for k, v in t.items() if k != first(t)}),
     "different model than its config describes \\(missing", RESUME),
    ("extra weight key", edit_tensors("ema.safetensors", lambda t: {**t, "evil": torch.zeros(1)}),
     "different model .*unexpected \\['evil'\\]", BOTH),
    ("wrong weight shape", edit_tensors("ema.safetensors", lambda t: {**t, first(t): torch.zeros(3, 3)}),
     "different model .*shape of", BOTH),
    ("optimizer moment of the wrong shape",
     edit_tensors("optim.safetensors", lambda t: {**t, "0.exp_avg": torch.zeros(7)}),
     "exp_avg of parameter 0 does not fit it", RESUME),
    ("unknown optimizer entry", edit_tensors("optim.safetensors", lambda t: {**t, "0.momentum": torch.zeros(1)}),
     "unknown entry '0.momentum'", RESUME),
    ("optimizer state for a parameter that is not there", edit_tensors(
        "optim.safetensors", lambda t: {**t, "999.exp_avg": torch.zeros(1)}), "state for parameter 999|lacks", RESUME),
    ("negative optimizer step", edit_tensors("optim.safetensors", lambda t: {**t, "0.step": torch.tensor(-3.0)}),
     "step count of parameter 0 is not an integer >= 0", RESUME),
    ("NaN second moment",
     edit_tensors("optim.safetensors", lambda t: {**t, "0.exp_avg_sq": t["0.exp_avg_sq"] * float("nan")}),
     "optimizer state is not usable", RESUME),
    ("int64 time-sampler state", write_bytes("extra.safetensors", raw_safetensors(
        {"imp_count": {"dtype": "I64", "shape": [1], "data_offsets": [0, 8]}}, b"\0" * 8)),
     "time-sampler state", RESUME),
    # state.json fields
    ("step as text", state_set(step="10"), "step must be an integer >= 0, got '10'", BOTH),
    ("negative step", state_set(step=-1), "step must be an integer >= 0, got -1", BOTH),
    ("fractional step", state_set(step=10.5), "step must be an integer >= 0, got 10.5", BOTH),
    ("boolean step", state_set(step=True), "step must be an integer >= 0, got True", BOTH),
    ("enormous step", state_set(step=10**30), "step must be an integer >= 0", BOTH),
    ("step not matching the folder", state_set(step=7), "state.json says step 7, the folder name step 10", BOTH),
    ("other format", state_set(format="pickle-1"), "is not a kuosan-checkpoint-2 checkpoint", BOTH),
    ("format of another type", state_set(format={"a": 1}), "is not a kuosan-checkpoint-2 checkpoint", BOTH),
    ("unknown config format", state_set(config_format=9), "config of unknown format 9", BOTH),
    ("state is a list", edit_json("state.json", lambda d: [d]), "state.json must hold a table", BOTH),
    ("deeply nested state", deeply_nested, "state.json' is unreadable: nested too deeply", BOTH),
    ("state file beyond any size", write_bytes("state.json", b" " * (17 * 2**20), fix=False),
     "more than a checkpoint ever writes", BOTH),
    ("no manifest", edit_json("state.json", drop("manifest")), "incomplete: its state.json lists no", BOTH),
    ("manifest naming a path", edit_json("state.json", lambda d: d["manifest"].update(
        {"../../../etc/passwd": {"size": 1, "sha256": "0" * 64}})), "not a checkpoint file", BOTH),
    ("malformed manifest entry", edit_json("state.json", lambda d: d["manifest"].update(
        {"model.safetensors": {"size": "big"}})), "manifest entry of model.safetensors is malformed", BOTH),
    ("huge sample shape", state_set(data={"kind": "vector", "shape": [10**12], "num_classes": 0}),
     "impossible sample shape", SAMPLE),
    ("zero sample shape", state_set(data={"kind": "image", "shape": [1, 0, 8], "num_classes": 0}),
     "impossible sample shape", SAMPLE),
    ("unknown data kind", state_set(data={"kind": "audio", "shape": [2], "num_classes": 0}), "kind 'audio'", SAMPLE),
    ("negative class count", state_set(data={"kind": "vector", "shape": [2], "num_classes": -1}),
     "num_classes -1", SAMPLE),
    ("no data description", edit_json("state.json", drop("data")), "does not record its data shape", SAMPLE),
    ("zero world size", state_set(world_size=0), "world_size must be a positive integer", BOTH),
    ("NaN world size", state_set(world_size=float("nan")), "world_size must be a positive integer|unreadable", BOTH),
    ("bad path fingerprint", state_set(path="../x"), "path fingerprint must be a hex string", BOTH),
    ("two optimizer groups", edit_json("state.json", lambda d: d["optim"].update(
        param_groups=d["optim"]["param_groups"] * 2)), "must hold one parameter group", BOTH),
    ("optimizer group with a nested value", edit_json("state.json", lambda d: d["optim"]["param_groups"][0].update(
        lr={"x": [1]})), "lr is dict, not a number", BOTH),
    ("optimizer state without its file", edit_json("state.json", drop("manifest", "optim.safetensors")),
     "holds optim.safetensors, which its manifest does not list", BOTH),
    # config.json
    ("edited config without manifest", edit_json("config.json", lambda d: d["net"].update(mlp_hidden=32), fix=False),
     "config.json has .* bytes, its manifest records|SHA-256 of config.json", BOTH),
    ("edited schedule (consistent forgery)", edit_json("config.json", lambda d: d["path"].update(schedule="linear")),
     "trained on another path than its config.json describes", BOTH),
    ("edited network width", edit_json("config.json", lambda d: d["net"].update(mlp_hidden=32)),
     "different model than its config describes", BOTH),
    ("a network too large to build",
     edit_json("config.json", lambda d: d["net"].update(mlp_hidden=2**20, mlp_depth=1000)),
     "different model than its config describes", BOTH),
    ("unknown config key", edit_json("config.json", lambda d: d["net"].update(evil=1)), "unknown config key 'net.evil'",
     BOTH),
    ("config value of the wrong type", edit_json("config.json", lambda d: d["optim"].update(steps="many")),
     "cannot read 'many' as int", BOTH),
    ("config is a list", edit_json("config.json", lambda d: [d]), "config.json must hold tables of keys", BOTH),
    ("absurd lr in the config", edit_json("config.json", lambda d: d["optim"].update(lr=1e39)),
     "optim.lr must be a positive number", BOTH),
    # the pointer and the run folder
    ("pointer outside the run", pointer("../../other/checkpoints/step_0000010"), "must name a step_NNNNNNN folder",
     BOTH),
    ("absolute pointer", pointer("/etc"), "must name a step_NNNNNNN folder", BOTH),
    ("pointer to nothing", pointer("step_0000099"), None, BOTH),  # deleted: the newest whole checkpoint is used
    ("pointer full of garbage", pointer("x" * 10_000), "must name a step_NNNNNNN folder", BOTH),
    ("pointer is a symlink", pointer_symlink, "latest' is a symlink, not the pointer file", BOTH),
    ("pointer is a folder", pointer_folder, "latest' is a folder, not the pointer file", BOTH),
    ("step folder symlinked to another run", step_folder_symlink, "names 'step_0000010', which is a symlink", BOTH),
    ("checkpoints folder symlinked to another run", checkpoints_symlink, "is a symlink, not a folder of the run", BOTH),
]


@pytest.mark.parametrize("name,mutate,needle,modes", CASES, ids=[c[0] for c in CASES])
def test_damaged_checkpoint_is_a_one_line_error(trained, tmp_path, name, mutate, needle, modes):
    run = Path(shutil.copytree(trained, tmp_path / "good"))
    shutil.copytree(trained.parent / "other", tmp_path / "other")
    before = {p: p.read_bytes() for p in (tmp_path / "other").rglob("*") if p.is_file()}
    mutate(run if getattr(mutate, "in_run", False) else run / CK)
    for mode in modes:
        if needle is None:  # still usable: the newest whole checkpoint
            assert load_checkpoint(run).state["step"] == 10
            continue
        with pytest.raises(ValueError) as e:
            if mode == "sample":
                load_denoiser(run)
            else:
                train(None, resume=run, overrides={"optim.steps": 12}, progress=False)
        msg = str(e.value)
        assert "\n" not in msg and len(msg) < 600, msg
        assert re.search(needle, msg), (mode, msg)
    after = {p: p.read_bytes() for p in (tmp_path / "other").rglob("*") if p.is_file()}
    assert after == before  # the other run folder was never written to


def test_a_run_recording_the_older_fingerprint_loads_and_resumes(trained, tmp_path):
    """Runs saved before 2026-11-24 20:00 recorded their chain by the hash of its β values (not portable between
    machines, see DiscreteVP.fingerprint): on the machine that computed it they still load and resume."""
    run = Path(shutil.copytree(trained, tmp_path / "old"))
    path = load_denoiser(run)[0].path
    assert load_checkpoint(run).state["path"] == path.fingerprint() != path.values_fingerprint()
    state_set(path=path.values_fingerprint())(run / CK)
    load_denoiser(run)
    train(None, resume=run, overrides={"optim.steps": 12}, progress=False)
    assert load_checkpoint(run).state["step"] == 12


def test_a_run_recorded_before_optim_betas_resumes_with_the_betas_it_trained_with(trained, tmp_path):
    """A checkpoint whose config predates optim.betas trained with AdamW's (0.9, 0.999), the default then: it
    resumes with them, not with today's default β2 = 0.95, and its next checkpoint records them."""
    run = Path(shutil.copytree(trained, tmp_path / "old"))
    edit_json("config.json", lambda d: d["optim"].pop("betas") and None)(run / CK)
    edit_json("state.json", lambda d: d["optim"]["param_groups"][0].update(betas=[0.9, 0.999]))(run / CK)
    assert load_checkpoint(run).config["optim"]["betas"] == [0.9, 0.999]
    train(None, resume=run, overrides={"optim.steps": 12}, progress=False)
    ck = load_checkpoint(run)
    assert ck.state["step"] == 12 and ck.config["optim"]["betas"] == [0.9, 0.999]
    assert ck.state["optim"]["param_groups"][0]["betas"] == [0.9, 0.999]


def test_the_good_run_loads_and_resumes(trained, tmp_path):
    """The control: the undamaged copy samples and resumes."""
    run = Path(shutil.copytree(trained, tmp_path / "good"))
    D, meta, cfg = load_denoiser(run)
    assert meta["shape"] == [2]
    train(None, resume=run, overrides={"optim.steps": 12}, progress=False)
    assert load_checkpoint(run).state["step"] == 12
