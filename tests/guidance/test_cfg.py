"""Classifier-free guidance: the wrapper equals the closed-form combination of the exact conditional and
unconditional denoisers (in x̂_0, and by linearity in ε̂, the score and the velocity) on every path; the guidance
interval switches at exactly the grid times whose λ lies in [lo, hi]; labels reach the network on every sampler."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from kuosan.denoiser import NetDenoiser, eps_of, score_of, velocity_of
from kuosan.exact import ConditionalExactDenoiser, GaussianMixture, LabelledMixture
from kuosan.guidance import classifier_free, in_interval
from kuosan.parameterisation import Eps
from kuosan.paths import PATH_KINDS, discrete_vp, f64, make_path
from kuosan.sampling import SAMPLERS, make_grid, sample

F64 = torch.float64
DATA = LabelledMixture(GaussianMixture(torch.tensor([[-1.5, 0.0], [1.0, 1.2], [1.0, -1.2]]),
                                       torch.tensor([[[0.20, 0.05], [0.05, 0.10]], [[0.10, 0.0], [0.0, 0.15]],
                                                     [[0.15, -0.03], [-0.03, 0.10]]]),
                                       torch.tensor([0.5, 0.3, 0.2])), torch.tensor([0, 1, 1]))


def noisy(path, n: int, seed: int):
    g = torch.Generator().manual_seed(seed)
    t = (0.05 + 0.9 * torch.rand(n, generator=g, dtype=F64)) * path.t_max
    x = path.alpha(t)[:, None] * DATA.mixture.sample(n, g) + path.sigma(t)[:, None] * torch.randn(n, 2, generator=g,
                                                                                                   dtype=F64)
    return x, t, torch.randint(0, 2, (n,), generator=g)


@pytest.mark.parametrize("kind", PATH_KINDS)
@pytest.mark.parametrize("null_label", [2, None])
def test_cfg_is_the_closed_form_combination_in_x0_eps_score_and_velocity(kind, null_label):
    path = make_path(kind)
    D = ConditionalExactDenoiser(DATA, path)
    x, t, y = noisy(path, 50, 1)
    w = 3.5
    x_y, x_u = DATA.denoise(x, path.alpha(t), path.sigma(t), y), DATA.denoise(x, path.alpha(t), path.sigma(t))
    G = classifier_free(D, w, null_label=null_label)
    got = G(x, t, y=y)
    torch.testing.assert_close(got, x_u + w * (x_y - x_u), rtol=1e-12, atol=1e-12)
    for f in (eps_of, score_of, velocity_of):  # affine in x̂_0 with model-independent coefficients
        fy, fu = f(D, x, t, x_y), f(D, x, t, x_u)
        torch.testing.assert_close(f(G, x, t, got), fu + w * (fy - fu), rtol=1e-9, atol=1e-9)


def test_scale_zero_is_the_unconditional_model_and_labels_are_required():
    path = make_path("vp_cosine")
    D = ConditionalExactDenoiser(DATA, path)
    x, t, y = noisy(path, 20, 2)
    torch.testing.assert_close(classifier_free(D, 0.0, null_label=2)(x, t, y=y), D(x, t), rtol=0, atol=0)
    with pytest.raises(ValueError, match="needs class labels"):
        classifier_free(D, 2.0)(x, t)
    with pytest.raises(ValueError, match="finite number >= 0"):
        classifier_free(D, -1.0)
    with pytest.raises(ValueError, match="LO <= HI"):
        classifier_free(D, 2.0, interval=(1.0, -1.0))


class Recorder:
    """Wraps a denoiser; records (λ of each call's first row, whether the label was the null class)."""

    def __init__(self, D, null: int = 2):
        self.D, self.path, self.null, self.calls = D, D.path, null, []

    def __call__(self, x, t, **cond):
        lam = float(self.path.log_snr(t.reshape(-1)[:1]))
        self.calls.append((lam, bool((cond["y"] == self.null).all())))
        return self.D(x, t, **cond)


@pytest.mark.parametrize("kind", ["discrete_vp", "ve", "flow"])
def test_guidance_interval_switches_at_the_grid_times_inside_it(kind):
    path = make_path(kind)
    rec = Recorder(ConditionalExactDenoiser(DATA, path))
    ts = make_grid(path, 12, "logsnr")
    lams = path.log_snr(ts[:-1]).tolist()
    lo, hi = lams[3], lams[8]  # λ grows along the grid; closed interval: both ends guided
    G = classifier_free(rec, 4.0, null_label=2, interval=(lo, hi))
    x = sample(G, "ddim", (16, 2), 12, ts=ts, dtype=F64, cond={"y": torch.arange(16) % 2})
    guided = [lam for lam, null in rec.calls if null]
    assert guided == [lam for lam in lams if lo <= lam <= hi] and len(guided) == 6
    assert [lam for lam, null in rec.calls if not null] == lams  # the conditional call at every step
    # the same samples as a hand-written switch between the guided and the unguided denoiser
    full = classifier_free(ConditionalExactDenoiser(DATA, path), 4.0, null_label=2)
    plain = ConditionalExactDenoiser(DATA, path)

    def switch(x_t, t, **cond):
        lam = float(path.log_snr(t[:1]))
        return (full if lo <= lam <= hi else plain)(x_t, t, **cond)

    switch.path = path
    ref = sample(switch, "ddim", (16, 2), 12, ts=ts, dtype=F64, cond={"y": torch.arange(16) % 2})
    assert torch.equal(x, ref)


def test_interval_applies_per_row_and_leaves_other_rows_bit_for_bit():
    path = make_path("vp_cosine")
    D = ConditionalExactDenoiser(DATA, path)
    x, t, y = noisy(path, 40, 3)
    inter = (-1.0, 2.0)
    inside = in_interval(path, t, inter)
    assert 0 < int(inside.sum()) < 40
    got = classifier_free(D, 3.0, null_label=2, interval=inter)(x, t, y=y)
    full = classifier_free(D, 3.0, null_label=2)(x, t, y=y)
    assert torch.equal(got[~inside], D(x, t, y=y)[~inside])
    torch.testing.assert_close(got[inside], full[inside], rtol=1e-12, atol=1e-12)
    lam = path.log_snr(t)
    assert bool(((lam >= -1.0) & (lam <= 2.0) == inside).all())


class LabelNet(nn.Module):
    """An ε-network that records the labels of every call (B,) (None when called without)."""

    def __init__(self):
        super().__init__()
        self.lin, self.seen = nn.Linear(2, 2), []

    def forward(self, x, t, y=None):
        self.seen.append(None if y is None else y.clone())
        return 0.1 * self.lin(x)


@pytest.mark.parametrize("name", list(SAMPLERS))
def test_the_label_reaches_the_network_on_every_sampler(name):
    """Plain conditional sampling passes y on every call; CFG adds one null-label call per conditional one."""
    path = discrete_vp("linear", 1000)  # every sampler runs on the discrete chain (ddpm only there)
    opts = {"rtol": 1e-2, "atol": 1e-2} if name == "ode" else {}
    y = torch.tensor([0, 1, 1, 0, 1])
    for scale in (1.0, 3.0):
        net = LabelNet()
        G = classifier_free(NetDenoiser(net, path, Eps()), scale, null_label=2)
        sample(G, name, (5, 2), 4, batch_size=3, cond={"y": y}, **opts)
        parts = [s for s in net.seen if s is None or not bool((s == 2).all())]
        nulls = [s for s in net.seen if s is not None and bool((s == 2).all())]
        assert all(s is not None for s in parts) and parts, name
        assert all(torch.equal(s, y[:3]) or torch.equal(s, y[3:]) for s in parts), name  # sliced per batch
        assert torch.equal(torch.cat([s for s in parts if len(s) == 3][:1] + [s for s in parts if len(s) == 2][:1]),
                           y)
        assert len(nulls) == (0 if scale == 1.0 else len(parts)), name


def test_time_must_be_per_row_float64():
    path = make_path("ve")
    D = ConditionalExactDenoiser(DATA, path)
    x = torch.randn(4, 2, dtype=F64)
    got = classifier_free(D, 2.0, null_label=2)(x, f64(3.0), y=torch.zeros(4, dtype=torch.long))
    assert got.shape == (4, 2) and got.dtype == F64
