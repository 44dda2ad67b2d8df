"""Smoke test of benchmarks/sampler_rmse.py, and the fairness of its diffusers adapter.

Known answers: with the exact denoiser, diffusers' DDIM at 1000 steps lands near the exact PF-ODE endpoint,
and diffusers' DDIM / DPM-Solver++(2M) / Heun-Karras agree with kuosan's DDIM / dpmpp order 2 / heun on the
matching grids (trailing: diffusers τ = t - 1; Karras: the same σ̃ formula) up to diffusers' float32 arithmetic.
"""

from __future__ import annotations

import importlib.util
import math
import re
import sys
from pathlib import Path

import pytest
import torch

from kuosan.exact import ExactDenoiser, pf_ode_solve, ring
from kuosan.paths import discrete_vp
from kuosan.sampling import ddim, dpmpp, heun, karras_grid, uniform_grid


def _load():
    path = Path(__file__).resolve().parents[2] / "benchmarks" / "sampler_rmse.py"
    spec = importlib.util.spec_from_file_location("sampler_rmse", path)
    mod = importlib.util.module_from_spec(spec)
    sys.modules["sampler_rmse"] = mod
    spec.loader.exec_module(mod)
    return mod


bench = _load()
HAS_DIFFUSERS = bench.diffusers_available()
needs_diffusers = pytest.mark.skipif(not HAS_DIFFUSERS, reason="diffusers not installed")
# diffusers' own numpy-2 deprecation noise (np.array on a tensor), not ours
pytestmark = pytest.mark.filterwarnings("ignore:__array__ implementation:DeprecationWarning")
PATH = discrete_vp("linear", 1000)

@pytest.fixture(scope="module")
def ring_setup():
    mix = ring()
    x_T = torch.randn(64, 2, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    return mix, ExactDenoiser(mix, PATH), x_T, pf_ode_solve(mix, x_T, PATH.sigma_max())


def test_quick_run_prints_tables_and_summaries(capsys):
    lines = bench.main(["--quick"])
    out = capsys.readouterr().out
    assert len(lines) == 2 and all(line.startswith("SUMMARY") for line in lines)
    for name in ("ring", "dev_aniso2d"):
        assert f"== {name}" in out and f"SUMMARY {name}" in out
    assert re.search(r"sampler/grid\s+NFE 5\s+NFE 10", out)
    for row in ("kuosan:ddim/uniform", "kuosan:dpmpp2/logsnr", "kuosan:unipc3/karras", "kuosan:heun/uniform"):
        m = re.search(rf"^{re.escape(row)}\s+(\S+)\s+(\S+)", out, re.MULTILINE)
        assert m is not None, row
        assert all(math.isfinite(float(v)) for v in m.groups())
    if HAS_DIFFUSERS:
        assert "diffusers:dpm2M " in out and "ratio" in lines[0]
    else:
        assert "diffusers not run" in lines[0]


def test_quick_rows_converge_and_respect_the_budget():
    args = bench.parse(["--quick", "--mixtures", "ring"])
    rows = bench.bench_mixture("ring", args, log=lambda s: None)
    for key, row in rows.items():
        assert set(row) == {5, 10}, key
        for budget, (err, nfe, se) in row.items():
            assert math.isfinite(err) and 1 <= nfe <= budget, (key, budget, nfe)
            assert se.shape == (64,) and err == pytest.approx(float(se.mean().sqrt()), rel=1e-12)
    for key in ("kuosan:ddim/logsnr", "kuosan:dpmpp2/logsnr", "kuosan:unipc2/logsnr", "kuosan:dpmpp3/uniform"):
        assert rows[key][10][0] < 0.7 * rows[key][5][0], key  # more NFE, smaller error
    assert rows["kuosan:heun/uniform"][10][1] == 9  # NFE = 2N - 1 with N = 5 steps
    if HAS_DIFFUSERS:  # same algorithm on the same grid gives the same RMSE
        pairs = (("ddim/uniform", "ddim"), ("dpmpp2/uniform", "dpm2M"), ("heun/karras", "heun_karras"),
                 ("unipc2/logsnr", "unipc2_exp"))  # exponential σ̃ = uniform log-SNR, fractional timesteps
        for k, d in pairs:
            for b in (5, 10):
                assert rows[f"kuosan:{k}"][b][0] == pytest.approx(rows[f"diffusers:{d}"][b][0], rel=1e-4), (k, b)


@needs_diffusers
def test_diffusers_ddim_many_steps_reaches_the_exact_endpoint(ring_setup):
    mix, D, x_T, ref = ring_setup
    out, nfe = bench.run_diffusers("ddim", mix, x_T, 1000)
    assert nfe == 1000
    # first-order error plus the final denoise from t = 1 (σ̃ ≈ 0.01): ~1.8e-3 on this ring
    assert bench.rmse(out, ref) < 2.5e-3
    # and it is kuosan's DDIM on the trailing grid, to diffusers' float32 precision
    assert bench.rmse(out, ddim(D, x_T.clone(), uniform_grid(PATH, 1000, "trailing"))) < 1e-5


@needs_diffusers
def test_diffusers_adapter_matches_kuosan_on_matching_grids(ring_setup):
    mix, D, x_T, ref = ring_setup
    out, nfe = bench.run_diffusers("dpm2M", mix, x_T, 50)
    k = dpmpp(D, x_T.clone(), uniform_grid(PATH, 50, "trailing"), order=2)
    assert nfe == 50 and bench.rmse(out, k) < 1e-5 < bench.rmse(k, ref)
    # VE-form scheduler (sample = x/α, scale_model_input): Heun with Karras σ̃ = kuosan heun on karras_grid
    out, nfe = bench.run_diffusers("heun_karras", mix, x_T, 13)
    k = heun(D, x_T.clone(), karras_grid(PATH, 13))
    assert nfe == 25 and bench.rmse(out, k) < 1e-5 < bench.rmse(k, ref)


def test_eps_adapter_inverts_the_exact_denoiser(ring_setup):
    mix, D, x_T, _ = ring_setup
    t = torch.full((64,), 300.0, dtype=torch.float64)
    a, s = float(PATH.alpha(t[0])), float(PATH.sigma(t[0]))
    x = a * mix.sample(64, torch.Generator().manual_seed(3)) + s * x_T
    eps = bench.eps_from_exact(mix, x, a, s)
    torch.testing.assert_close((x - s * eps) / a, D(x, t), rtol=0, atol=1e-12)


def test_ratio_interval_brackets_the_ratio():
    g = torch.Generator().manual_seed(0)
    se_b = torch.rand(512, generator=g, dtype=torch.float64)
    lo, hi = bench.ratio_interval(0.25 * se_b, se_b)  # exactly RMSE ratio 0.5 on every resample
    assert lo == pytest.approx(0.5) and hi == pytest.approx(0.5)
    heavy = se_b.clone()
    heavy[:3] = 100.0  # three outliers carry most of the error: a wide interval around the point ratio
    lo, hi = bench.ratio_interval(heavy, se_b)
    point = float((heavy.mean() / se_b.mean()).sqrt())
    assert lo < point < hi and hi - lo > 0.3


def test_bad_arguments_are_refused():
    with pytest.raises(ValueError, match="unknown mixture"):
        bench.parse(["--mixtures", "ring,moons"])
    with pytest.raises(ValueError, match="opt-samplers"):
        bench.parse(["--opt-samplers", "dpmpp9"])
    with pytest.raises(ValueError, match="bespoke-nfe"):
        bench.parse(["--bespoke-nfe", "2,10"])


def test_fitted_rows_run_at_tiny_settings():
    """The optimised-grid and bespoke rows (off in --quick) run through kuosan.sampling.tuning within budget."""
    args = bench.parse(["--mixtures", "ring", "--n", "64", "--n-cal", "32", "--nfe", "5", "--opt-samplers", "dpmpp2",
                        "--opt-evals", "20", "--bespoke-n-cal", "64", "--bespoke-nfe", "5", "--bespoke-iters", "3",
                        "--no-ode", "--no-diffusers", "--no-progress"])
    rows = bench.bench_mixture("ring", args, log=lambda s: None)
    for key in ("kuosan:dpmpp2/optimised", "kuosan:bespoke/optimised"):
        err, nfe, _ = rows[key][5]
        assert math.isfinite(err) and nfe == 5, (key, err, nfe)
    assert "kuosan:ddim/optimised" not in rows  # only the --opt-samplers get a grid
