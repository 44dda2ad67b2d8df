"""Optimised time grids: held-out error against the exact PF-ODE endpoint, parameterisation, save/load, fit-or-load."""

from __future__ import annotations

import json
import math
import subprocess
import sys

import pytest
import torch

from kuosan.denoiser import Counting
from kuosan.exact import ExactDenoiser, pf_ode_solve, ring
from kuosan.paths import Linear, discrete_vp
from kuosan.sampling import ddim, dpmpp, karras_grid, logsnr_grid, uniform_grid
from kuosan.sampling.tuning import grid_for, load_grid, optimise_grid, save_grid
from kuosan.sampling.tuning.optimise import grid_from_params, params_from_grid

PATH = discrete_vp("linear", 1000)
MIX = ring()
D = ExactDenoiser(MIX, PATH)
OLD_FINGERPRINT = "23bd7873f9ce01b3"  # kuosan.schedules.Schedule.fingerprint() of linear β, T = 1000 (first half)


@pytest.fixture(scope="module")
def batches():
    g = torch.Generator().manual_seed(0)
    x_cal = torch.randn(64, 2, dtype=torch.float64, generator=g)
    x_held = torch.randn(512, 2, dtype=torch.float64, generator=g)  # never seen by the optimiser
    return x_cal, x_held, pf_ode_solve(MIX, x_held, PATH.sigma_max())


def _rmse(a: torch.Tensor, b: torch.Tensor) -> float:
    return (a - b).pow(2).mean().sqrt().item()


def _assert_valid(ts: torch.Tensor, steps: int, t_max: float = 1000.0) -> None:
    assert ts.dtype == torch.float64 and ts.shape == (steps + 1,)
    assert ts[0].item() == t_max and ts[-1].item() == 0.0 and bool((ts.diff() < 0).all())


@pytest.mark.slow
@pytest.mark.parametrize("sampler, steps, max_evals", [(ddim, 5, None), (dpmpp, 5, None), (dpmpp, 10, 300)])
def test_optimised_grid_beats_standard_grids_on_held_out_batch(batches, sampler, steps, max_evals):
    x_cal, x_held, exact = batches
    # Calibration target: the default reference (same sampler, 500-step logSNR grid), not the exact endpoint.
    ts = optimise_grid(D, steps, x_cal, sampler=sampler, max_evals=max_evals)
    _assert_valid(ts, steps)
    base = {name: _rmse(sampler(D, x_held, g), exact) for name, g in
            [("uniform", uniform_grid(PATH, steps)), ("logsnr", logsnr_grid(PATH, steps)),
             ("karras", karras_grid(PATH, steps))]}
    opt = _rmse(sampler(D, x_held, ts), exact)
    # measured on this batch: 0.50 × the best standard grid (DDIM 5), 0.06 × (DPM-Solver++ 2M, 5), 0.16 × (2M, 10)
    assert opt < 0.7 * min(base.values()), (opt, base)


def test_optimiser_is_deterministic_and_honours_an_explicit_reference(batches):
    x_cal = batches[0]
    ref = pf_ode_solve(MIX, x_cal, PATH.sigma_max())
    a = optimise_grid(D, 4, x_cal, sampler=dpmpp, reference=ref, max_evals=60)
    b = optimise_grid(D, 4, x_cal, sampler=dpmpp, reference=ref, max_evals=60)
    assert torch.equal(a, b)
    starts = [logsnr_grid(PATH, 4), karras_grid(PATH, 4)]
    assert _rmse(dpmpp(D, x_cal, a), ref) <= min(_rmse(dpmpp(D, x_cal, g), ref) for g in starts)
    p = optimise_grid(D, 4, x_cal, sampler=dpmpp, reference=ref, max_evals=60, method="Powell", free_end=False)
    _assert_valid(p, 4)
    assert p[-2].item() == pytest.approx(1.0, abs=1e-9)  # fixed end: the last model time stays at t_min


def test_time_budget_and_extra_starts(batches):
    """seconds=0 ends the search after the starts: the grid with the lowest calibration RMSE among the standard
    grids and ``init_grids`` comes back, so a good extra start (an optimised grid) is returned exactly."""
    x_cal = batches[0]
    ref = pf_ode_solve(MIX, x_cal, PATH.sigma_max())
    starts = [uniform_grid(PATH, 5), logsnr_grid(PATH, 5), karras_grid(PATH, 5)]
    best = min(starts, key=lambda g: _rmse(dpmpp(D, x_cal, g), ref))
    assert torch.equal(optimise_grid(D, 5, x_cal, sampler=dpmpp, reference=ref, seconds=0.0), best)
    good = optimise_grid(D, 5, x_cal, sampler=dpmpp, reference=ref, max_evals=60)
    assert _rmse(dpmpp(D, x_cal, good), ref) < _rmse(dpmpp(D, x_cal, best), ref)
    assert torch.equal(optimise_grid(D, 5, x_cal, sampler=dpmpp, reference=ref, seconds=0.0, init_grids=[good]),
                       good)


def test_a_registered_name_is_the_same_sampler(batches):
    x_cal = batches[0]
    ref = pf_ode_solve(MIX, x_cal, PATH.sigma_max())
    a = optimise_grid(D, 4, x_cal, sampler="dpm++2m", reference=ref, max_evals=30)
    assert torch.equal(a, optimise_grid(D, 4, x_cal, sampler=dpmpp, reference=ref, max_evals=30))


def test_parameterisation_round_trip():
    for steps in (3, 8):
        ts = karras_grid(PATH, steps)
        th = params_from_grid(PATH, ts, free_end=False)
        assert th.shape == (steps - 2,)
        assert torch.allclose(grid_from_params(PATH, th, steps), ts, rtol=0, atol=1e-8)
    th = torch.tensor([1.0, -1.0, 0.5, 0.0, 0.3], dtype=torch.float64)  # free end: last logit is the slack
    ts = grid_from_params(PATH, th, 5)
    _assert_valid(ts, 5)
    assert torch.allclose(grid_from_params(PATH, params_from_grid(PATH, ts), 5), ts, atol=1e-8)


def test_parameterisation_on_a_path_with_infinite_terminal_noise():
    """Flow (α(1) = 0, λ = -∞): t_0 stays t_max, the other times round-trip through finite log-SNR increments."""
    flow = Linear()
    for steps in (3, 8):
        ts = logsnr_grid(flow, steps)
        th = params_from_grid(flow, ts, free_end=False)
        torch.testing.assert_close(grid_from_params(flow, th, steps), ts, rtol=0, atol=1e-10)
    _assert_valid(grid_from_params(flow, torch.tensor([0.4, -0.3, 0.2], dtype=torch.float64), 4), 4, t_max=1.0)


def _flow_reference(x: torch.Tensor) -> torch.Tensor:
    """Exact PF-ODE endpoint from the flow's x_1 = ε: one (exact in the limit) DDIM step to σ̃ = 1e3, x̂_0 = E[x_0],
    as the VP state α x̂_0 + σ ε there (error O(1/σ̃²)), then pf_ode_solve."""
    a = 1 / math.sqrt(1 + 1e6)
    return pf_ode_solve(MIX, a * MIX.mean + 1e3 * a * x, 1e3)


def test_optimised_grid_on_the_flow_path():
    """A fit on a path with λ(t_max) = -∞ works: t_0 stays 1 and the error falls below the best standard grid's."""
    flow = Linear()
    Df = ExactDenoiser(MIX, flow)
    x = torch.randn(64, 2, dtype=torch.float64, generator=torch.Generator().manual_seed(7))
    ref = _flow_reference(x)
    ts = optimise_grid(Df, 4, x, sampler=dpmpp, reference=ref, max_evals=60)
    _assert_valid(ts, 4, t_max=1.0)
    assert _rmse(dpmpp(Df, x, logsnr_grid(flow, 500)), ref) < 1e-4  # the reference is the flow's ODE endpoint
    best_start = min(_rmse(dpmpp(Df, x, g), ref) for g in (uniform_grid(flow, 4), logsnr_grid(flow, 4),
                                                            karras_grid(flow, 4)))
    assert _rmse(dpmpp(Df, x, ts), ref) < 0.95 * best_start  # measured: 0.86 × (logSNR grid, the best start)


def test_single_step_grid():
    ts = optimise_grid(D, 1, torch.randn(8, 2, dtype=torch.float64))
    assert torch.equal(ts, torch.tensor([1000.0, 0.0], dtype=torch.float64))


def test_save_load_round_trip(tmp_path):
    ts = grid_from_params(PATH, torch.tensor([0.3, -0.2, 0.1, -1.0], dtype=torch.float64), 5)
    file = tmp_path / "grid.json"
    save_grid(file, ts, PATH, "dpmpp", 5)
    assert torch.equal(load_grid(file, PATH), ts)  # JSON floats round-trip exactly
    doc = json.loads(file.read_text())
    assert doc["path"] == PATH.fingerprint() and doc["sampler"] == "dpmpp" and doc["nfe"] == 5


def test_grid_files_of_the_first_half_still_load(tmp_path):
    """Version 1 files stored the schedule's fingerprint, the hash of the β values that DiscreteVP still accepts
    beside its own (a hash of its definition)."""
    assert PATH.values_fingerprint() == OLD_FINGERPRINT != PATH.fingerprint()
    grid = [1000.0, 612.25, 301.5, 88.0, 0.0]
    doc = {"format": "kuosan-time-grid", "version": 1, "schedule": OLD_FINGERPRINT, "schedule_kind": "linear",
           "T": 1000, "sampler": "ddim", "nfe": 4, "grid": grid}
    file = tmp_path / "ddim_4.json"
    file.write_text(json.dumps(doc))
    assert load_grid(file, PATH).tolist() == grid
    with pytest.raises(ValueError, match="another path"):
        load_grid(file, discrete_vp("cosine", 1000))


def test_load_for_another_path_fails(tmp_path):
    file = tmp_path / "grid.json"
    save_grid(file, logsnr_grid(PATH, 6), PATH, "ddim", 6)
    for other in (discrete_vp("cosine", 1000), discrete_vp("linear", 1000, beta_end=0.03),
                  discrete_vp("linear", 1000, zero_terminal_snr=True)):
        with pytest.raises(ValueError, match="optimised grid was made for another path"):
            load_grid(file, other)
    assert torch.equal(load_grid(file, discrete_vp("linear", 1000)), logsnr_grid(PATH, 6))  # same betas
    flow_file = tmp_path / "flow.json"
    save_grid(flow_file, logsnr_grid(Linear(), 6), Linear(), "ddim", 6)
    with pytest.raises(ValueError, match="another path"):
        load_grid(flow_file, PATH)


def test_load_malformed(tmp_path):
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    with pytest.raises(ValueError, match="cannot read"):
        load_grid(bad, PATH)
    bad.write_text(json.dumps({"grid": [1000.0, 0.0]}))
    with pytest.raises(ValueError, match="not a kuosan optimised-grid file"):
        load_grid(bad, PATH)
    with pytest.raises(ValueError, match="cannot read"):
        load_grid(tmp_path / "missing.json", PATH)
    doc = {"format": "kuosan-time-grid", "version": 2, "path": PATH.fingerprint(), "grid": [500.0, 800.0, 0.0]}
    bad.write_text(json.dumps(doc))
    with pytest.raises(ValueError, match="descending"):
        load_grid(bad, PATH)


@pytest.mark.parametrize("kw, match", [
    ({"steps": 0}, "positive integer"), ({"method": "BFGS"}, "unknown optimiser"),
    ({"t_min": 0.0}, "t_min"), ({"max_evals": 0}, "max_evals"),
    ({"reference": torch.zeros(3, 2, dtype=torch.float64)}, "reference shape"),
    ({"sampler": "ddpm"}, "deterministic"), ({"sampler": "nope"}, "unknown sampler"),
    ({"sampler": "ddim", "order": 2}, "order"),
])
def test_optimise_bad_inputs(kw, match):
    args = {"steps": 4, **kw}
    with pytest.raises(ValueError, match=match):
        optimise_grid(D, args.pop("steps"), torch.randn(8, 2, dtype=torch.float64), **args)


def test_save_rejects_bad_grid(tmp_path):
    with pytest.raises(ValueError, match="time grid"):
        save_grid(tmp_path / "g.json", torch.tensor([0.0, 1000.0], dtype=torch.float64), PATH, "ddim", 1)


def test_grid_for_fits_once_then_loads(tmp_path, capsys):
    """Fit-or-load: the first call fits (with a progress bar on stderr) and saves, the second reads the file."""
    C = Counting(ExactDenoiser(MIX, PATH))
    ts = grid_for(C, "dpm++2m", 3, tmp_path, calib_n=32, shape=(1, 2))
    _assert_valid(ts, 3)
    assert C.nfe > 0 and (tmp_path / "dpmpp2m_3.json").is_file()
    assert "optimising a 3-step grid" in capsys.readouterr().err
    C.nfe = 0
    assert torch.equal(grid_for(C, "dpm++2m", 3, tmp_path, shape=(1, 2)), ts) and C.nfe == 0
    with pytest.raises(ValueError, match="another path"):
        grid_for(ExactDenoiser(MIX, discrete_vp("cosine", 1000)), "dpm++2m", 3, tmp_path, shape=(1, 2))
    with pytest.raises(ValueError, match="bespoke_params"):
        grid_for(C, "bespoke", 3, tmp_path, shape=(1, 2))
    with pytest.raises(ValueError, match="deterministic"):
        grid_for(C, "ddpm", 3, tmp_path, shape=(1, 2))
    with pytest.raises(ValueError, match="sample shape"):
        grid_for(C, "ddim", 3, tmp_path)


def test_importing_tuning_leaves_scipy_out():
    """SciPy is imported only when a grid is optimised (import kuosan stays light)."""
    code = "import sys, kuosan.sampling.tuning; assert 'scipy' not in sys.modules, 'scipy imported'"
    subprocess.run([sys.executable, "-c", code], check=True)
