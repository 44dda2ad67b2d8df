"""Smoke tests: both benchmark scripts run end to end at their tiniest settings and report sane numbers."""

from __future__ import annotations

import importlib.util
import math
from pathlib import Path
from types import ModuleType

import pytest
import torch

BENCH = Path(__file__).resolve().parents[2] / "benchmarks"
HAS_DIFFUSERS = importlib.util.find_spec("diffusers") is not None


def _load(name: str) -> ModuleType:
    """benchmarks/ is no package: import a script from its path."""
    spec = importlib.util.spec_from_file_location(f"bench_{name}", BENCH / f"{name}.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)  # type: ignore[union-attr]
    return mod


def test_unet_throughput_quick(capsys: pytest.CaptureFixture[str]) -> None:
    rows = _load("unet_throughput").main(["--quick", "--device", "cpu", "--threads", "1"])
    out = capsys.readouterr().out
    assert {r["model"] for r in rows} == ({"kuosan", "diffusers"} if HAS_DIFFUSERS else {"kuosan"})
    assert HAS_DIFFUSERS or "diffusers is not installed" in out
    combos = {(r["model"], r["mode"], r["dtype"]) for r in rows}
    assert len(combos) == len(rows) == 4 * (2 if HAS_DIFFUSERS else 1)
    assert all(math.isfinite(r["samples_per_s"]) and r["samples_per_s"] > 0 for r in rows)
    assert "samples/s" in out and "threads: 1" in out


@pytest.mark.skipif(not HAS_DIFFUSERS, reason="diffusers is not installed")
def test_matched_parameter_count() -> None:
    """The default-width (c = 64) diffusers twin is within 1% of kuosan's parameter count (the aim is 10%)."""
    mod = _load("unet_throughput")
    a, b = mod.n_params(mod.kuosan_unet(64)), mod.n_params(mod.diffusers_unet(64))
    assert a > 6_000_000 and abs(b / a - 1) < 0.01


def test_train_step_updates_weights() -> None:
    """The timed training step really runs backward and AdamW: the weights move (not a forward-only loop)."""
    mod = _load("unet_throughput")
    net = mod.kuosan_unet(8)
    before = [p.detach().clone() for p in net.parameters()]
    x, t, target = torch.randn(2, 1, 28, 28), torch.tensor([10.0, 500.0]), torch.randn(2, 1, 28, 28)
    step = mod.make_step(net, "train", False, x, t, target, torch.optim.AdamW(net.parameters(), lr=1e-3))
    step()
    assert any(not torch.equal(p0, p) for p0, p in zip(before, net.parameters()))


def test_digits_quality_two_steps(tmp_path: Path) -> None:
    res = _load("digits_quality").main(
        ["--threads", "1", "--chunk", "1", "--max-steps", "2", "--n", "20", "--sample-steps", "2",
         "--set", "log.n_samples=4", "--set", "log.sample_steps=2", "--out", str(tmp_path)])
    ref, rows = res["classifier"], res["rows"]
    # the judge is a good classifier, and real held-out digits meet the criterion's threshold
    assert ref["accuracy"] > 0.95 and ref["real_mean_maxp"] >= 0.9 > ref["noise_mean_maxp"]
    assert [r["step"] for r in rows] == [1, 2]
    assert 0 < rows[0]["train_s"] < rows[1]["train_s"] <= rows[1]["wall_s"]
    assert all(sum(r["hist"]) == 20 and 0 <= r["mean_maxp"] <= 1 for r in rows)
    assert res["reached"] is None  # two training steps cannot draw recognisable digits
    assert res["grid"].is_file() and (tmp_path / "quality.csv").is_file()
    assert (tmp_path / "run" / "checkpoints" / "latest").read_text().strip() == "step_0000002"


def test_digits_quality_refuses_an_unknown_key(tmp_path: Path) -> None:
    """--set takes the nested keys; an old flat key is refused with the new name suggested, before any work."""
    from kuosan.config import ConfigError

    with pytest.raises(ConfigError, match=r"did you mean 'optim.steps'\?"):
        _load("digits_quality").main(["--set", "steps=5", "--out", str(tmp_path)])
