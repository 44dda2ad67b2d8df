"""Smoke test: benchmarks/sample_throughput.py runs end to end at its tiniest settings and reports sane numbers."""

from __future__ import annotations

import importlib.util
import math
from pathlib import Path
from types import ModuleType

import pytest

BENCH = Path(__file__).resolve().parents[2] / "benchmarks"
HAS_DIFFUSERS = importlib.util.find_spec("diffusers") is not None


def _load(name: str) -> ModuleType:
    """benchmarks/ is no package: import a script from its path."""
    spec = importlib.util.spec_from_file_location(f"bench_{name}", BENCH / f"{name}.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)  # type: ignore[union-attr]
    return mod


def test_sample_throughput_quick(capsys: pytest.CaptureFixture[str]) -> None:
    rows = _load("sample_throughput").main(["--quick", "--threads", "1"])
    out = capsys.readouterr().out
    timing = [r for r in rows if r["kind"] == "timing"]
    impls = {"diffusers", "kuosan+d-net", "kuosan"} if HAS_DIFFUSERS else {"kuosan"}
    combos = {(r["size"], r["dtype"], r["sampler"], r["impl"]) for r in timing}
    assert len(combos) == len(timing) == 2 * 2 * 3 * len(impls)  # sizes x dtypes x samplers x impls
    assert {r["impl"] for r in timing} == impls
    assert all(math.isfinite(r["samples_per_s"]) and r["samples_per_s"] > 0 for r in timing)
    # a ratio exactly where there is a diffusers row of the same combination to divide by
    assert all((r["ratio"] is not None) == (HAS_DIFFUSERS and r["impl"] != "diffusers") for r in timing)
    assert all(r["ratio"] > 0 for r in timing if r["ratio"] is not None)
    assert "samples/s" in out and "threads: 1" in out
    if not HAS_DIFFUSERS:
        assert "diffusers is not installed" in out and not any(r["kind"] == "agreement" for r in rows)


@pytest.mark.skipif(not HAS_DIFFUSERS, reason="diffusers is not installed")
def test_same_nets_and_same_ddim_samples(capsys: pytest.CaptureFixture[str]) -> None:
    """Both sizes: parameter counts within 1%, and kuosan's ddim on diffusers' UNet reproduces DDIMPipeline."""
    mod = _load("sample_throughput")
    rows = mod.main(["--quick", "--threads", "1", "--dtype", "fp32", "--samplers", "ddim"])
    out = capsys.readouterr().out
    agree = {r["size"]: r for r in rows if r["kind"] == "agreement"}
    assert set(agree) == {"digits", "mnist"} and out.count("DDIM agreement") == 2
    for r in agree.values():
        assert r["raw_scale"] > 1  # random weights: x_0 far from [-1, 1], so the unclamped check is not vacuous
        assert r["image_diff"] < 1e-4 and r["raw_diff"] < 1e-5
    for size in ("digits", "mnist"):
        own, dnet = mod.build_nets(size, True)
        assert abs(mod.n_params(dnet) / mod.n_params(own) - 1) < 0.01
