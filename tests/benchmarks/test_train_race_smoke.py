"""Smoke test: benchmarks/train_race.py runs end to end at its smallest configuration (a 2-second budget a side, 100
samples, 2- and 3-step sampling) and reports a full, sane race."""

from __future__ import annotations

import importlib.util
import json
import math
from pathlib import Path
from types import ModuleType

import pytest
import torch

pytest.importorskip("diffusers")

BENCH = Path(__file__).resolve().parents[2] / "benchmarks"


def _load() -> ModuleType:
    """benchmarks/ is no package: import the script from its path."""
    spec = importlib.util.spec_from_file_location("bench_train_race", BENCH / "train_race.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)  # type: ignore[union-attr]
    return mod


@pytest.mark.slow
def test_train_race_smallest(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    budget = 2.0
    res = _load().main(["--data", "digits", "--budget", str(budget), "--rounds", "2", "--calibrate", "0.4",
                        "--n", "100", "--n-long", "64", "--steps", "2,3", "--threads", "1", "--feature-steps", "30",
                        "--feature-cache", str(tmp_path / "features"), "--out", str(tmp_path / "race")])
    out = capsys.readouterr().out
    k, d = res["params"]["kuosan"], res["params"]["diffusers"]
    assert abs(d / k - 1) < 0.05 and f"{k:,}" in out and f"{d:,}" in out
    for side, t in res["training"].items():  # each side trained, and stopped near its budget or at its plan
        assert 1 <= t["steps"] <= t["planned_steps"], side
        assert 0 < t["seconds"] < budget + 10.0, side  # a round overshoots by at most a few (slow) steps
        assert t["steps"] == t["planned_steps"] or t["seconds"] + 0.5 / t["rate"] >= budget - 1e-6, side
    assert res["training"]["kuosan"]["val_s"] > 0  # the end-of-call validation loss, timed and not counted
    # kuosan: both samplers at 2 steps, the first at 3; diffusers: DDIM at 2, its DDPM pipeline at the longest
    got = {(r["model"], r["sampler"], r["steps"], r["n"]) for r in res["rows"]}
    assert got == {("kuosan", "unipc", 2, 100), ("kuosan", "ddim", 2, 100), ("diffusers", "ddim", 2, 100),
                   ("kuosan", "unipc", 3, 64), ("diffusers", "ddpm", 3, 64)}
    for r in res["rows"] + [res["baseline"]]:
        assert all(math.isfinite(r[key]) and r[key + "_se"] > 0 for key in ("fd", "kid", "fd_long"))
        assert r["fd"] > 0 and r["n_long"] == min(64, r["n"])
    # a few training steps are far from the data: every model's FD is well above real-vs-real
    assert all(r["fd_long"] > res["baseline"]["fd_long"] for r in res["rows"])
    goals = res["goals"]
    assert [g["goal"] for g in goals] == ["kuosan FD@2 <= diffusers FD@3", "kuosan FD@3 <= 0.7 x diffusers FD@3"]
    assert all(isinstance(g["met"], bool) for g in goals)
    verdicts = [line for line in out.splitlines() if line.startswith("goal: ")]
    assert len(verdicts) == 2 and all(": MET (" in line or ": NOT MET (" in line for line in verdicts)
    assert "held-out" in out and "KID" in out
    saved = json.loads((tmp_path / "race" / "results.json").read_text())
    assert saved["params"] == res["params"] and len(saved["rows"]) == 5
    assert len(list((tmp_path / "race" / "samples").glob("*.png"))) == 5
    # kuosan's run folder keeps one checkpoint: the last round's
    assert len(list((tmp_path / "race" / "kuosan" / "checkpoints").glob("step_*"))) == 1
    # diffusers' EMA U-Net is saved (safetensors + config) for --reuse
    assert (tmp_path / "race" / "diffusers" / "config.json").is_file()
    assert list((tmp_path / "race" / "diffusers").glob("*.safetensors"))

    # --reuse --resample: both models copied, nothing trained; every row sampled again scores as before (seeded)
    args = ["--data", "digits", "--budget", str(budget), "--rounds", "2", "--calibrate", "0.4", "--n", "100",
            "--n-long", "64", "--steps", "2,3", "--threads", "1", "--feature-steps", "30",
            "--feature-cache", str(tmp_path / "features")]
    again = _load().main(args + ["--reuse", str(tmp_path / "race"), "--resample", "--out", str(tmp_path / "again")])
    assert all(t["reused"] == str(tmp_path / "race") for t in again["training"].values())
    assert {k: t["steps"] for k, t in again["training"].items()} == {k: t["steps"] for k, t in res["training"].items()}
    assert not any("reused" in r for r in again["rows"])
    for r0, r1 in zip(res["rows"], again["rows"]):
        assert (r0["model"], r0["sampler"], r0["steps"]) == (r1["model"], r1["sampler"], r1["steps"])
        assert r1["fd"] == pytest.approx(r0["fd"], rel=1e-4, abs=1e-6), r0
    # a race that saved no diffusers model: kuosan and its rows copied, diffusers trains alone for the budget
    import shutil
    shutil.rmtree(tmp_path / "again" / "diffusers")
    third = _load().main(args + ["--reuse", str(tmp_path / "again"), "--out", str(tmp_path / "third")])
    assert "reused" in third["training"]["kuosan"] and "reused" not in third["training"]["diffusers"]
    assert 1 <= third["training"]["diffusers"]["steps"] and third["training"]["diffusers"]["seconds"] < budget + 10.0
    k_rows = [r for r in third["rows"] if r["model"] == "kuosan"]
    assert all(r["reused"] == str(tmp_path / "again") for r in k_rows)
    assert [r["fd"] for r in k_rows] == [r["fd"] for r in again["rows"] if r["model"] == "kuosan"]  # copied exactly
    assert not any("reused" in r for r in third["rows"] if r["model"] == "diffusers")
    assert len(list((tmp_path / "third" / "samples").glob("*.png"))) == 5  # copied rows bring their pictures
    assert (tmp_path / "third" / "diffusers" / "config.json").is_file()
    # another kuosan recipe: kuosan trains anew, diffusers and its rows are copied; two kuosan samplers at 3 steps
    mod = _load()
    mod.RECIPES["digits"] = {"optim": {"lr": 1e-3}}
    fourth = mod.main(args + ["--reuse", str(tmp_path / "third"), "--long-samplers", "unipc,ddpm",
                              "--out", str(tmp_path / "fourth")])
    assert "reused" not in fourth["training"]["kuosan"] and "reused" in fourth["training"]["diffusers"]
    assert {(r["sampler"], r["n"]) for r in fourth["rows"] if r["model"] == "kuosan" and r["steps"] == 3} == \
        {("unipc", 64), ("ddpm", 64)}
    assert not any("reused" in r for r in fourth["rows"] if r["model"] == "kuosan")
    d3 = [r["fd"] for r in third["rows"] if r["model"] == "diffusers"]
    assert [r["fd"] for r in fourth["rows"] if r["model"] == "diffusers"] == d3
    assert "trained with another recipe" in capsys.readouterr().out
    # a race at another budget is refused, in one line
    with pytest.raises(ValueError, match="trained at"):
        _load().main(args[:2] + ["--budget", "3"] + args[4:] + ["--reuse", str(tmp_path / "race"),
                                                                 "--out", str(tmp_path / "fifth")])


def test_same_recipe_ignores_only_the_run_length_and_logging(tmp_path: Path) -> None:
    from kuosan.config import to_toml

    mod = _load()
    cfg = mod.kuosan_config("mnist5k", 2, tmp_path / "a", 100)
    (tmp_path / "config.toml").write_text(to_toml(cfg))
    other = mod.kuosan_config("mnist5k", 2, tmp_path / "b", 2389)  # other steps and folder: the same recipe
    other.log.n_samples = 64
    assert mod.same_recipe(tmp_path, other)
    other.optim.lr *= 2
    assert not mod.same_recipe(tmp_path, other)
    assert not mod.same_recipe(tmp_path, mod.kuosan_config("digits", 2, tmp_path / "c", 100))
    assert not mod.same_recipe(tmp_path / "missing", cfg)


def test_reused_row_needs_the_same_samples() -> None:
    mod = _load()
    a = mod.parse(["--steps", "10,1000", "--n", "300", "--n-long", "200"])
    row = {"model": "diffusers", "sampler": "ddpm", "steps": 1000, "n": 200, "fd": 1.84}
    old = {"args": {"n_long": 200, "batch_size": a.batch_size, "feature_steps": a.feature_steps}, "rows": [row]}
    assert mod.reused_row(old, a, "diffusers", "ddpm", 1000, 200) == row
    assert mod.reused_row(old, a, "diffusers", "ddpm", 1000, 300) is None  # another n
    assert mod.reused_row(old, a, "diffusers", "ddim", 1000, 200) is None  # another sampler
    for key, value in (("n_long", 100), ("batch_size", 7), ("feature_steps", 5)):
        changed = {**old, "args": {**old["args"], key: value}}
        assert mod.reused_row(changed, a, "diffusers", "ddpm", 1000, 200) is None, key
    # kuosan's samples do not depend on the sampling batch (sample i depends only on (seed, i)): its row is copied
    krow = {**row, "model": "kuosan"}
    kold = {"args": {**old["args"], "batch_size": 7}, "rows": [krow]}
    assert mod.reused_row(kold, a, "kuosan", "ddpm", 1000, 200) == krow
    for key, value in (("n_long", 100), ("feature_steps", 5)):
        assert mod.reused_row({**kold, "args": {**kold["args"], key: value}}, a, "kuosan", "ddpm", 1000, 200) is None


def test_a_bad_sampler_is_one_line_and_exit_code_2() -> None:
    import subprocess
    import sys

    r = subprocess.run([sys.executable, str(BENCH / "train_race.py"), "--long-samplers", "unipc,nope"],
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 2 and r.stdout == ""
    assert r.stderr.strip().splitlines() == [r.stderr.strip()] and "sampler 'nope'" in r.stderr


def test_train_race_refuses_bad_input() -> None:
    mod = _load()
    with pytest.raises(ValueError, match="ascending"):
        mod.parse(["--steps", "50,10"])
    with pytest.raises(ValueError, match="comma-separated integers"):
        mod.parse(["--steps", "ten"])
    with pytest.raises(ValueError, match="--n must be a positive"):
        mod.parse(["--n", "0"])
    with pytest.raises(ValueError, match="unknown or unsuitable kuosan sampler 'dpm'"):
        mod.parse(["--samplers", "unipc,dpm"])
    with pytest.raises(ValueError, match="unsuitable kuosan sampler 'bespoke'"):
        mod.parse(["--long-samplers", "bespoke"])
    assert mod.parse([]).long_samplers == ["unipc"] and mod.parse(["--samplers", "ddim"]).long_samplers == ["ddim"]
    with pytest.raises(ValueError, match="give --reuse DIR too"):
        mod.parse(["--resample"])
    with pytest.raises(ValueError, match="not a finished race"):
        mod.reusable(mod.parse(["--reuse", "/nonexistent/race"]))
    a = mod.parse(["--sample-device", "cpu"])  # where the models sample; the training device stays --device
    assert (a.device, a.sample_device, a.batch_size) == ("cpu", "cpu", 256) and mod.parse([]).sample_device == "cpu"
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="--sample-device cuda was asked for, but CUDA is not available"):
            mod.parse(["--sample-device", "cuda"])


@pytest.mark.parametrize("data", ["digits", "mnist5k"])
def test_twin_parameter_count(data: str) -> None:
    """The diffusers UNet2DModel built for each recipe matches kuosan's U-Net within 0.1% (the race needs 5%)."""
    from kuosan.build import build_net

    mod = _load()
    cfg = mod.kuosan_config(data, 1, Path("unused"), 1)
    shape = [1, 8, 8] if data == "digits" else [1, 28, 28]
    k = mod.n_params(build_net(cfg, {"kind": "image", "shape": shape, "num_classes": 0}))
    d = mod.n_params(mod.diffusers_unet(cfg, shape))
    assert abs(d / k - 1) < 1e-3
