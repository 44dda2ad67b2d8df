"""Smoke test of benchmarks/fitted_sampling.py on a tiny trained run: every row is filled, the fits are cached in
the work copy (a second run in the same folder loads them, never fits) and gives the same FDs (same x_T)."""

from __future__ import annotations

import importlib.util
import math
import sys
from pathlib import Path

from kuosan.cli import main as kuosan

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "cli"))
from cli_helpers import TINY  # noqa: E402


def _load():
    path = Path(__file__).resolve().parents[2] / "benchmarks" / "fitted_sampling.py"
    spec = importlib.util.spec_from_file_location("fitted_sampling", path)
    mod = importlib.util.module_from_spec(spec)
    sys.modules["fitted_sampling"] = mod
    spec.loader.exec_module(mod)
    return mod


def test_rows_fits_cached_and_reproducible(tmp_path, capsys):
    bench = _load()
    run = tmp_path / "run"
    assert kuosan(["train", *TINY, "--steps", "2", "--out", str(run), "--quiet"]) == 0
    argv = ["--run", str(run), "--work", str(tmp_path / "w"), "--nfe", "3", "--n", "32", "--samplers", "ddim",
            "--optimise", "dpm++2m", "--ref", "unipc100", "--fit-seconds", "1", "--feature-steps", "5"]
    first = bench.main(argv)
    assert [r["method"] for r in first] == ["ddim uniform", "ddim logsnr", "ddim karras", "dpm++2m optimised",
                                            "bespoke"]
    assert all(math.isfinite(r["fd"]) and r["fd"] >= 0 and r["nfe"] == 3 for r in first)
    grids = sorted(p.name for p in (tmp_path / "w" / "run").rglob("grids/*.json"))
    assert grids == ["bespoke_3.json", "dpmpp2m_3.json"]
    assert not list(run.rglob("grids"))  # the run itself is never written to
    second = bench.main(argv)
    assert [r["fd"] for r in second] == [r["fd"] for r in first]
    assert all(b["fit_s"] < 0.5 * a["fit_s"] for a, b in zip(first[3:], second[3:]))  # loaded, not fitted
    assert "bespoke" in capsys.readouterr().out
