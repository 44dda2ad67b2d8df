"""The extrapolation x̂_bad + w (x̂_good - x̂_bad): scale and interval checks, λ membership on every path, per-row
conditions sliced with the guided rows, the learned variance read from the good model."""

from __future__ import annotations

import math

import pytest
import torch

from kuosan.guidance import Guided, check_interval, check_scale, in_interval
from kuosan.guidance.combine import rows
from kuosan.paths import PATH_KINDS, f64, make_path


def test_scale_and_interval_checks():
    assert check_scale(0) == 0.0 and check_scale(7.5) == 7.5
    for bad in (-1.0, math.nan, math.inf, True, "2"):
        with pytest.raises(ValueError, match="finite number >= 0"):
            check_scale(bad)  # type: ignore[arg-type]
    assert check_interval(None) is None and check_interval((-math.inf, 2)) == (-math.inf, 2.0)
    for bad in ((2.0, 1.0), (math.nan, 1.0)):
        with pytest.raises(ValueError, match="LO <= HI"):
            check_interval(bad)


@pytest.mark.parametrize("kind", PATH_KINDS)
def test_interval_membership_is_in_log_snr(kind):
    path = make_path(kind)
    t = torch.linspace(0, path.t_max, 41, dtype=torch.float64)
    lam = path.log_snr(t)
    got = in_interval(path, t, (-2.0, 3.0))
    assert torch.equal(got, (lam >= -2.0) & (lam <= 3.0)) and bool(got.any()) and not bool(got.all())
    assert bool(in_interval(path, t, None).all())


class Affine:
    """A toy 'denoiser' c·x with a recorded call log and a learned variance of its own."""

    def __init__(self, c: float, path):
        self.c, self.path, self.learns_variance, self.calls = c, path, True, []

    def __call__(self, x, t, **cond):
        self.calls.append((len(x), {k: v.clone() for k, v in cond.items()}))
        return self.c * x

    def with_variance(self, x, t, **cond):
        return self(x, t, **cond), torch.full_like(x, 0.25)


def test_only_the_guided_rows_reach_the_bad_model_with_their_conditions():
    path = make_path("vp_cosine")
    good, bad = Affine(2.0, path), Affine(1.0, path)
    t = f64([0.1, 0.9, 0.2, 0.95])  # λ > 0 for the small times only
    x = torch.ones(4, 3, dtype=torch.float64)
    y = torch.tensor([5, 6, 7, 8])
    G = Guided(good, lambda x, t, cond: bad(x, t, **cond), 3.0, (0.0, math.inf))
    out, v = G.with_variance(x, t, y=y)
    assert G.learns_variance and torch.equal(v, torch.full_like(x, 0.25))
    assert bad.calls[0][0] == 2 and torch.equal(bad.calls[0][1]["y"], torch.tensor([5, 7]))
    torch.testing.assert_close(out[[0, 2]], torch.full((2, 3), 1.0 + 3.0 * (2.0 - 1.0), dtype=torch.float64))
    assert torch.equal(out[[1, 3]], torch.full((2, 3), 2.0, dtype=torch.float64))
    sliced = rows({"y": y, "s": "text"}, torch.tensor([True, False, False, True]))
    assert torch.equal(sliced["y"], y[[0, 3]]) and sliced["s"] == "text"
