"""Smoke test: benchmarks/guidance_sweep.py runs end to end at its smallest size (4-step models, 2 scales a method,
40 samples) and writes a complete table, JSON and plot."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parents[2] / "benchmarks"


def _load():
    spec = importlib.util.spec_from_file_location("bench_guidance_sweep", BENCH / "guidance_sweep.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)  # type: ignore[union-attr]
    return mod


@pytest.mark.slow
def test_guidance_sweep_smallest(tmp_path, capsys):
    out = tmp_path / "bench"
    res = _load().main(["--smoke", "--out", str(out), "--n", "40", "--sample-steps", "2", "--threads", "1",
                        "--feature-cache", str(tmp_path / "features")])
    text = capsys.readouterr().out
    assert set(res["results"]) == {"cfg", "cfg-interval", "auto-early", "auto-small", "classifier"}
    for name, rep in res["results"].items():
        assert len(rep["rows"]) == 2 and all(r["fd"] > 0 and 0 <= r["recall"] <= 1 for r in rep["rows"]), name
        assert all(r["accuracy"] is not None for r in rep["rows"]), name
    assert res["results"]["cfg-interval"]["interval"] == [-3.4, 2.5]
    assert res["results"]["auto-early"]["guide_run"].endswith("step_0000002")
    assert "| cfg-interval | 3 |" in text and "| classifier | 2 |" in text  # (held-out split too small for FD)
    saved = json.loads((out / "results.json").read_text())
    assert saved["n"] == 40 and (out / "curve.png").stat().st_size > 1000 and (out / "table.md").is_file()
