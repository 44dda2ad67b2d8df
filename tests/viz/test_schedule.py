"""kuosan.viz.schedule: every kind's α, σ, SNR and λ at t = u·t_max are the path's own, with λ = log(α²/σ²)."""

import numpy as np
import pytest
import torch
from PIL import Image

from kuosan.paths import make_path
from kuosan.viz.render import DPI
from kuosan.viz.schedule import SCHEDULES, draw_schedules, schedule_story


def test_every_kind_on_normalised_time():
    d = schedule_story(list(SCHEDULES), points=51)
    u = d["u"]
    assert u[0] == 0 and u[-1] == 1 and len(u) == 51
    inner = slice(1, -1)  # the ends hold ±∞ for λ
    for name in SCHEDULES:
        a, s, lam = d[f"alpha_{name}"], d[f"sigma_{name}"], d[f"log_snr_{name}"]
        assert np.allclose(lam[inner], np.log(a[inner] ** 2 / s[inner] ** 2), rtol=1e-9, atol=1e-9), name
        assert np.allclose(d[f"snr_{name}"][inner], a[inner] ** 2 / s[inner] ** 2, rtol=1e-9), name
        assert a[0] == 1 and s[0] == 0 and lam[0] == np.inf, name
        path = SCHEDULES[name][1]()
        assert np.allclose(a, path.alpha(torch.as_tensor(u) * path.t_max).numpy()), name
    assert np.allclose(d["alpha_flow"], 1 - u) and np.allclose(d["sigma_flow"], u)
    assert np.allclose(d["sigma_ve"], 80 * u) and np.all(d["alpha_ve"] == 1)
    assert d["alpha_zero_snr"][-1] == 0 and d["log_snr_zero_snr"][-1] == -np.inf
    assert np.allclose(d["alpha_linear"], d["alpha_vp_linear"], atol=2e-3)  # DDPM's chain, in continuous time


def test_a_runs_path_is_added_and_unknown_kinds_refused(tmp_path):
    run = make_path("discrete_vp", schedule="sigmoid", T=50)
    d = schedule_story(["flow"], run, "my run")
    assert list(d["names"]) == ["flow", "run"] and list(d["labels"])[1] == "my run"
    assert np.allclose(d["alpha_run"], run.alpha(torch.as_tensor(d["u"]) * 50).numpy())
    with pytest.raises(ValueError, match="unknown schedule kind 'edm'"):
        schedule_story(["edm"])
    draw_schedules(d, tmp_path / "s.png")
    with Image.open(tmp_path / "s.png") as im:
        assert im.size == (16 * DPI, 5 * DPI)
