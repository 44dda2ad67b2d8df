"""Smoke test: benchmarks/families.py runs end to end at its --quick size on the 2-D mixture and on digits and
reports every family at every NFE budget; its NFE accounting, goals and argument checks on their own."""

from __future__ import annotations

import importlib.util
import json
import math
from pathlib import Path
from types import ModuleType

import pytest
import torch

pytest.importorskip("ot")  # W2 (POT)

BENCH = Path(__file__).resolve().parents[2] / "benchmarks"


def _load() -> ModuleType:
    """benchmarks/ is no package: import the script from its path."""
    spec = importlib.util.spec_from_file_location("bench_families", BENCH / "families.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)  # type: ignore[union-attr]
    return mod


def _check_cells(mod: ModuleType, res: dict, primary: str) -> None:
    assert set(res["cells"]) == set(mod.ROWS) == set(res["training"])
    for row, cells in res["cells"].items():
        budgets = {c["budget"] for c in cells}
        assert budgets == {*mod.NFES, "high"}, row
        for c in cells:
            assert math.isfinite(c[primary]) and c[primary] >= 0, (row, c)
            if c["budget"] != "high":
                assert 1 <= c["nfe"] <= c["budget"], (row, c)  # the NFE spent fits the budget
        if row in ("cd", "ct"):
            assert {c["sampler"] for c in cells} == {"consistency"}
            assert [c["nfe"] for c in cells if c["budget"] != "high"] == list(mod.NFES)
        elif row == "edm":
            assert {c["sampler"] for c in cells} == {"heun"}
        else:  # best sampler: every candidate that fits a budget was run
            assert {c["sampler"] for c in cells if c["budget"] == 10} == set(mod.CANDIDATES), row
        t = res["training"][row]
        assert 0 < t["train_s"] <= t["total_s"], row


@pytest.mark.slow
def test_quick_mixture(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    mod = _load()
    res = mod.main(["--quick", "--data", "mixture", "--out", str(tmp_path / "b")])["mixture"]
    out = capsys.readouterr().out
    _check_cells(mod, res, "w2")
    assert all(label in out for label in mod.ROWS.values()) and "real vs real: W2" in out
    assert res["baseline"]["w2"] > 0 and math.isfinite(res["baseline"]["entropy"])
    ex = res["exact"]
    assert ex["straightness"]["exact_1rf"] > 0 and ex["straightness"]["exact_kinetic"] <= \
        ex["straightness"]["independent_cost"]  # Liu et al. 2023 Thm 3.3 on the exact 1-RF
    assert [r["t"] for r in ex["velocity"]] == list(mod.EXACT_T)
    for row in ("cd", "ct"):  # f(x, σ) -> x as σ -> σ_min for any network (c_skip -> 1): small RMSE at σ = 0.05
        rmse = [r["rmse"] for r in ex["consistency"][row]]
        assert rmse[0] < 0.1 and all(math.isfinite(v) for v in rmse)
    saved = json.loads((tmp_path / "b" / "results.json").read_text())
    assert set(saved["mixture"]["cells"]) == set(mod.ROWS)
    rf = res["training"]["rf2"]
    assert (tmp_path / "b" / "mixture" / "rf2" / "pairs.npz").is_file() and rf["pairs_s"] > 0
    assert all(math.isfinite(rf["reflow"][k]["straightness"]) for k in ("before", "after"))


@pytest.mark.slow
def test_quick_digits(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    mod = _load()
    res = mod.main(["--quick", "--data", "digits", "--out", str(tmp_path / "b"), "--feature-cache",
                    str(tmp_path / "features")])["digits"]
    out = capsys.readouterr().out
    _check_cells(mod, res, "fd")
    assert math.isfinite(res["teacher"]["fd"]) and res["teacher"]["steps"] == mod.QUICK["digits"]["teacher_steps"]
    assert [g["goal"] for g in res["goals"]] == ["CD 2-step FD <= 1.25 x teacher's FD",
                                                 "CD 1-step FD <= 2 x teacher's FD",
                                                 "2-RF 1-step FD < 1-RF 1-step FD / 2"]
    assert all(isinstance(g["met"], bool) for g in res["goals"])
    verdicts = [line for line in out.splitlines() if line.startswith("goal: ")]
    assert len(verdicts) == 3 and all(": MET (" in v or ": NOT MET (" in v for v in verdicts)
    # --reuse: a longer CD only; the other models (and the teacher's figure) come from the first run unchanged
    cd_steps = mod.QUICK["digits"]["cd_steps"] + 1
    again = mod.main(["--quick", "--data", "digits", "--out", str(tmp_path / "c"), "--feature-cache",
                      str(tmp_path / "features"), "--reuse", str(tmp_path / "b"), "--cd-steps", str(cd_steps)])
    res2, out2 = again["digits"], capsys.readouterr().out
    assert {r for r, t in res2["training"].items() if "reused" in t} == set(mod.ROWS) - {"cd"}
    assert "reused cd" not in out2 and "trained cd" in out2 and "(reused)" in out2
    for row in set(mod.ROWS) - {"cd"}:
        drop = lambda cells: [{k: v for k, v in c.items() if k != "sample_s"} for c in cells]  # noqa: E731
        assert drop(res2["cells"][row]) == drop(res["cells"][row]), row  # sampling is deterministic
    assert res2["teacher"]["fd"] == res["teacher"]["fd"]
    assert (tmp_path / "c" / "digits" / "vp" / "config.toml").is_file()
    assert mod.from_dict(mod.load_config(tmp_path / "c" / "digits" / "cd" / "config.toml")).optim.steps == cd_steps
    # what is not reused: another size (--quick or not), CD without its reused teacher, another budget
    ns = mod.parse(["--quick", "--data", "digits", "--reuse", str(tmp_path / "b")])
    budget = res["budget"]
    assert not mod.reusable(ns, "digits", "cd", budget, tmp_path / "d", {})
    assert not mod.reusable(ns, "digits", "vp", {**budget, "steps": budget["steps"] + 1}, tmp_path / "d", {})
    ns.quick = False
    assert not mod.reusable(ns, "digits", "vp", budget, tmp_path / "d", {})
    ns.quick, runs = True, {}
    assert mod.reusable(ns, "digits", "vp", budget, tmp_path / "d", runs) and "reused" in runs["vp"]


def test_nfe_budgets_follow_the_registry() -> None:
    """Heun costs 2N - 1 evaluations, 2N - 2 from σ̃ = ∞ (flow); one-evaluation solvers N."""
    from kuosan.paths import VE, Linear

    mod = _load()
    assert mod.steps_for("heun", 4, VE()) == 2 and mod.steps_for("heun", 4, Linear()) == 3
    assert mod.steps_for("heun", 1, VE()) == 1 and mod.steps_for("dpm++2m", 10, VE()) == 10
    assert mod.steps_for("dpm2s", 2, VE()) == 1


def test_goals_compare_at_equal_n() -> None:
    mod = _load()
    cell = lambda v: {"fd_long": v}  # noqa: E731
    best = {"cd": {1: cell(20.0), 2: cell(12.5)}, "flow": {1: cell(30.0)}, "rf2": {1: cell(15.0)}}
    g = mod.goals(best, {"fd_long": 10.0}, 64)
    assert [x["met"] for x in g] == [True, True, False]  # 12.5 <= 12.5; 20 <= 20; 15 is not < 15
    assert g[0]["target"] == 12.5 and g[2]["target"] == 15.0
    assert mod.goals({}, {"fd_long": 10.0}, 64)[0]["met"] is None


def test_the_held_out_mixture() -> None:
    """Fixed in the script: six components, weights summing to one, positive-definite covariances."""
    mod = _load()
    mix = mod.MIXTURE
    assert mix.means.shape == (6, 2) and float(mix.weights.sum()) == pytest.approx(1.0)
    assert bool((torch.linalg.eigvalsh(mix.covs) > 0).all())
    assert torch.equal(mix.means, mod.benchmark_mixture().means)


def test_bad_arguments(tmp_path: Path) -> None:
    mod = _load()
    with pytest.raises(ValueError, match="--data"):
        mod.parse(["--data", "cifar"])
    with pytest.raises(ValueError, match="--steps must be a positive"):
        mod.parse(["--steps", "0"])
    with pytest.raises(ValueError, match="--threads"):
        mod.parse(["--threads", "0"])
    with pytest.raises(ValueError, match="--reuse .*no results.json"):
        mod.parse(["--reuse", "/nonexistent/families"])
    (tmp_path / "results.json").write_text("{not json")
    with pytest.raises(ValueError, match="--reuse .*results.json cannot be read"):
        mod.parse(["--reuse", str(tmp_path)])


def test_bad_arguments_exit_2_with_one_line() -> None:
    import subprocess
    import sys

    p = subprocess.run([sys.executable, str(BENCH / "families.py"), "--reuse", "/nonexistent/families"],
                       capture_output=True, text=True, timeout=120)
    assert p.returncode == 2 and p.stdout == ""
    assert p.stderr.strip().splitlines() == ["families.py: error: --reuse /nonexistent/families: no results.json "
                                             "there (not a finished run of this script)"]
