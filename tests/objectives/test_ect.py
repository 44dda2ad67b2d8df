"""ECT's mapping σ_t -> σ_r and weight (Geng et al. 2024; locuslab/ect training/loss.py) at hand-computed points,
its monotonicity, Δt -> 0 over training, and the clamp at σ_min."""

from __future__ import annotations

import math
from types import SimpleNamespace

import pytest
import torch

from kuosan.objectives.ect import check_ect, ect_levels, ect_ratio, ect_stage, ect_weight

# the reference defaults: q = 2, k = 8, b = 1 (ct_train.py), 8 stages over the run (run_ecm.sh)
CFG = SimpleNamespace(ect_q=2.0, ect_k=8.0, ect_b=1.0, ect_stages=8, sigma_min=0.002)


def _f64(*v: float) -> torch.Tensor:
    return torch.tensor(v, dtype=torch.float64)


def test_stages():
    # d = ⌈800/8⌉ = 100: a = 1 on steps 0..99, 2 from step 100, 8 on the last 100
    assert [ect_stage(s, 800, 8) for s in (0, 99, 100, 199, 200, 799)] == [1, 1, 2, 2, 3, 8]
    assert ect_stage(9, 10, 8) == 5  # d = ⌈10/8⌉ = 2: at most `stages` stages in a short run
    with pytest.raises(ValueError):
        ect_stage(-1, 10, 8)
    with pytest.raises(ValueError):
        ect_stage(0, 0, 8)


def test_levels_at_hand_computed_points():
    # stage 1 (step 0), t = 10: sigmoid(-10) = 4.5397868702e-05, n = 1.0003631829, r/t = 1 - n/2
    assert float(ect_levels(_f64(10.0), 0, 800, CFG)) == pytest.approx(10 * (1 - 1.0003631829 / 2), rel=1e-9)
    # stage 3 (step 250), t = 1: sigmoid(-1) = 0.2689414214, n = 3.1515313711, r/t = 1 - n/8 = 0.6060585786
    assert float(ect_levels(_f64(1.0), 250, 800, CFG)) == pytest.approx(0.6060585786, rel=1e-9)
    # stage 8 (step 799), t = 0.5: sigmoid(-0.5) = 0.3775406688, n = 4.0203253502, r/t = 1 - n/256
    assert float(ect_levels(_f64(0.5), 799, 800, CFG)) == pytest.approx(0.5 * (1 - 4.0203253502 / 256), rel=1e-9)
    # stage 1, t = 1: r/t = 1 - 3.1515/2 < 0, so σ_r = σ_min (the reference's r = 0: plain denoising)
    assert float(ect_levels(_f64(1.0), 0, 800, CFG)) == 0.002
    # k = 0 is the reference's 'const' mapping r = t (1 - q^{-a})
    const = SimpleNamespace(**{**vars(CFG), "ect_k": 0.0})
    assert float(ect_levels(_f64(3.0), 100, 800, const)) == pytest.approx(3.0 * 0.75, rel=1e-12)
    torch.testing.assert_close(ect_ratio(_f64(0.0), 1, 2.0, 8.0, 1.0), _f64(1 - 0.5 * 5.0))
    # a Config holding the table reads the same keys
    t = _f64(0.3, 3.0, 30.0)
    torch.testing.assert_close(ect_levels(t, 420, 800, SimpleNamespace(consistency=CFG)), ect_levels(t, 420, 800, CFG))


def test_bounds_and_monotonicity():
    t = torch.logspace(-3.5, 2.5, 4001, dtype=torch.float64)
    prev = None
    for step in range(0, 800, 50):
        r = ect_levels(t, step, 800, CFG)
        above = t > CFG.sigma_min
        assert bool((r[above] >= CFG.sigma_min).all())  # never below σ_min ...
        assert bool((r[above] < t[above]).all())  # ... and strictly below σ_t where σ_t > σ_min
        torch.testing.assert_close(r[~above], t[~above], rtol=0, atol=0)  # σ_t <= σ_min: σ_r = σ_t (zero loss)
        assert bool((r.diff() >= 0).all())  # larger σ_t, larger σ_r (with the reference defaults)
        if prev is not None:
            assert bool((r >= prev).all())  # Δt shrinks over training
        prev = r


def test_levels_approach_sigma_t_as_training_goes_on():
    t = _f64(0.01, 0.1, 1.0, 10.0, 80.0)
    steps = (0, 100, 200, 400)  # d = ⌈100/8⌉ = 13: stages a = 1, 8, 16, 31
    assert [ect_stage(s, 100, 8) for s in steps] == [1, 8, 16, 31]
    gaps = [(t - ect_levels(t, s, 100, CFG)) / t for s in steps]
    assert float(gaps[0].min()) >= 0.5 and all(bool((b < a).all()) for a, b in zip(gaps, gaps[1:]))
    # (t - r)/t = n(t)/q^a with 1 <= n(t) <= 1 + k/2
    assert bool((gaps[-1] >= 2.0**-31 * (1 - 1e-6)).all() and (gaps[-1] <= 5 * 2.0**-31 * (1 + 1e-6)).all())


def test_weight():
    # w = 1/t² + 1/σ_d²
    torch.testing.assert_close(ect_weight(_f64(0.5, 1.0, 2.0)), _f64(8.0, 5.0, 4.25))
    torch.testing.assert_close(ect_weight(_f64(1.0), _f64(0.5), sigma_data=1.0), _f64(2.0))


@pytest.mark.parametrize("key,value", [("ect_q", 1.0), ("ect_k", -1.0), ("ect_b", float("nan")),
                                       ("ect_stages", 0), ("sigma_min", 0.0)])
def test_bad_keys_are_refused(key, value):
    bad = SimpleNamespace(**{**vars(CFG), key: value})
    with pytest.raises(ValueError, match=f"consistency.{key}"):
        check_ect(bad)
    with pytest.raises(ValueError):
        ect_levels(_f64(1.0), 0, 10, bad)
    with pytest.raises(ValueError, match="no key"):
        ect_levels(_f64(1.0), 0, 10, SimpleNamespace(sigma_min=0.002))
    with pytest.raises(ValueError, match="sigma_t > 0"):
        ect_levels(_f64(1.0, math.inf), 0, 10, CFG)
