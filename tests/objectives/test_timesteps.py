"""Time samplers: exact draws of the first half (uniform_discrete), distributions (KS statistics, moments),
densities, importance sampling (Nichol & Dhariwal 2021 Eq. (18)) and its unbiasedness."""

from __future__ import annotations

import math

import pytest
import torch

from kuosan.objectives import Importance, make_objective, make_time_sampler
from kuosan.paths import VE, Linear, PathError, VPCosine, VPLinear, discrete_vp

N = 40_000


def gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def ks_stat(sample: torch.Tensor, cdf) -> float:
    """Kolmogorov-Smirnov statistic sup |F_n - F| of a 1-D sample against a cdf (callable on float64 tensors)."""
    x = sample.double().sort().values
    n = x.numel()
    F = cdf(x)
    i = torch.arange(1, n + 1, dtype=torch.float64)
    return float(torch.maximum(i / n - F, F - (i - 1) / n).max())


KS_1PCT = 1.63 / math.sqrt(N)  # the 1% critical value of the KS statistic


def normal_cdf(x: torch.Tensor, m: float = 0.0, s: float = 1.0) -> torch.Tensor:
    return 0.5 * (1 + torch.erf((x - m) / (s * math.sqrt(2))))


@pytest.mark.parametrize("T", [1, 7, 1000, 4000])
@pytest.mark.parametrize("n", [1, 16, 513])
def test_uniform_discrete_is_exactly_torch_randint(T, n):
    """Runs of the first half drew t with torch.randint(1, T + 1, (n,), generator=g): the same numbers, and the
    generator left in the same state (what follows, ε, is the same too)."""
    times = make_time_sampler("uniform_discrete", discrete_vp("linear", T))
    g1, g2 = gen(T + n), gen(T + n)
    t, w = times.sample(n, g1)
    want = torch.randint(1, T + 1, (n,), generator=g2)
    assert w is None and t.dtype == torch.float64 and torch.equal(t, want.double())
    assert torch.equal(torch.randn(5, generator=g1), torch.randn(5, generator=g2))


def test_auto_picks_per_path():
    assert make_time_sampler("auto", discrete_vp("cosine", 100)).kind == "uniform_discrete"
    assert make_time_sampler("auto", VE()).kind == "log_normal"
    for path in (VPCosine(), VPLinear(), Linear()):
        assert make_time_sampler("auto", path).kind == "uniform"


@pytest.mark.parametrize("path", [VPLinear(), Linear(), VE(sigma_max=10.0), discrete_vp("linear", 50)],
                         ids=["vp_linear", "flow", "ve", "discrete"])
def test_uniform_is_uniform_on_the_open_closed_interval(path):
    t, w = make_time_sampler("uniform", path).sample(N, gen(1))
    tm = path.t_max
    assert w is None and t.dtype == torch.float64
    assert float(t.min()) > 0 and float(t.max()) <= tm
    assert ks_stat(t, lambda x: x / tm) < KS_1PCT
    assert abs(float(t.mean()) / tm - 0.5) < 4 * math.sqrt(1 / 12 / N)
    assert abs(float(t.var()) / tm**2 - 1 / 12) < 0.01 / 12 * 5


@pytest.mark.parametrize("m,s", [(0.0, 1.0), (-0.5, 0.7)])
def test_logit_normal_matches_esser_et_al(m, s):
    """t/t_max = sigmoid(m + s n): logit(t/t_max) ~ N(m, s²) (KS), and the density integrates to 1."""
    path = VE(sigma_max=5.0)
    times = make_time_sampler("logit_normal", path, mean=m, std=s)
    t, _ = times.sample(N, gen(2))
    z = torch.logit(t / 5.0)
    assert ks_stat(z, lambda x: normal_cdf(x, m, s)) < KS_1PCT
    assert abs(float(z.mean()) - m) < 4 * s / math.sqrt(N)
    grid = torch.linspace(1e-9, 5.0 - 1e-9, 400_001, dtype=torch.float64)
    assert abs(float(torch.trapezoid(times.density(grid), grid)) - 1) < 1e-4
    # the density against the sample's histogram on 10 bins
    edges = torch.linspace(0, 5.0, 11, dtype=torch.float64)
    counts = torch.histc(t, bins=10, min=0, max=5.0) / N
    for k in range(10):
        g = torch.linspace(float(edges[k]) + 1e-12, float(edges[k + 1]) - 1e-12, 2001, dtype=torch.float64)
        p = float(torch.trapezoid(times.density(g), g))
        assert abs(float(counts[k]) - p) < 4 * math.sqrt(p * (1 - p) / N) + 1e-4


def test_log_normal_is_karras_et_als_sigma_distribution():
    """ln σ ~ N(-1.2, 1.2²) on the VE path (t = σ); on a VP chain ln σ̃(t) = -λ(t)/2 has the same law (inside the
    chain's σ̃ range)."""
    t, _ = make_time_sampler("log_normal", VE(sigma_max=1e4)).sample(N, gen(3))
    assert ks_stat(t.log(), lambda x: normal_cdf(x, -1.2, 1.2)) < KS_1PCT
    assert abs(float(t.log().mean()) + 1.2) < 4 * 1.2 / math.sqrt(N)
    assert abs(float(t.log().std()) - 1.2) < 0.02
    vp = discrete_vp("linear", 1000)  # σ̃ ∈ [0.01, 157]: 1.2 P_std wide around e^-1.2 fits well inside
    tv, _ = make_time_sampler("log_normal", vp, p_mean=-1.2, p_std=1.2).sample(N, gen(3))
    assert float(tv.min()) > 0 and float(tv.max()) < 1000
    torch.testing.assert_close(-0.5 * vp.log_snr(tv), t.log(), rtol=1e-9, atol=1e-9)  # same draws, same σ̃
    grid = torch.exp(torch.linspace(-12, math.log(1e4), 400_001, dtype=torch.float64))
    dens = make_time_sampler("log_normal", VE(sigma_max=1e4)).density(grid)
    assert abs(float(torch.trapezoid(dens, grid)) - 1) < 1e-4


def test_log_normal_on_ve_clamps_at_sigma_max():
    t, _ = make_time_sampler("log_normal", VE(sigma_max=0.5)).sample(N, gen(4))
    assert float(t.max()) == 0.5
    frac = float((t == 0.5).double().mean())
    want = 1 - float(normal_cdf(torch.tensor(math.log(0.5), dtype=torch.float64), -1.2, 1.2))
    assert abs(frac - want) < 4 * math.sqrt(want * (1 - want) / N)


def test_discrete_only_samplers_refuse_continuous_paths_and_bad_options():
    for kind in ("uniform_discrete", "importance"):
        with pytest.raises(PathError, match="discrete VP chain"):
            make_time_sampler(kind, VPCosine())
    with pytest.raises(ValueError, match="unknown time sampling 'lognormal'"):
        make_time_sampler("lognormal", VE())
    with pytest.raises(ValueError, match="takes no option std"):
        make_time_sampler("uniform", VE(), std=1.0)
    with pytest.raises(ValueError, match="std > 0"):
        make_time_sampler("logit_normal", VE(), std=0.0)
    with pytest.raises(ValueError, match="p_std > 0"):
        make_time_sampler("log_normal", VE(), p_std=-1.0)
    with pytest.raises(ValueError, match="takes no option mean"):  # make_objective passes them on, not drops them
        make_objective(discrete_vp("linear", 10), "eps", mean=0.3)


# ------------------------------------------------------------------ importance sampling (Nichol & Dhariwal 2021)
def test_importance_timesteps():
    T = 5
    sampler = Importance(T, history=10, uniform_mix=0.0)
    t, w = sampler.sample(100, gen(0))
    assert not sampler.ready and torch.all(w == 1) and t.min() >= 1 and t.max() <= T and t.dtype == torch.float64
    L = torch.tensor([1.0, 2.0, 0.5, 4.0, 1.0], dtype=torch.float64)
    for _ in range(10):
        sampler.update(torch.arange(1, T + 1), L)
    assert sampler.ready
    sampler.update(torch.tensor([4]), torch.tensor([100.0]))  # 11th value: the oldest is dropped
    msq = L**2
    msq[3] = (9 * 16 + 100**2) / 10
    torch.testing.assert_close(sampler.probs(), msq.sqrt() / msq.sqrt().sum())
    p = sampler.probs()
    t, w = sampler.sample(20000, gen(1))
    freq = torch.bincount(t.long() - 1, minlength=T).double() / 20000
    assert torch.all((freq - p).abs() < 4 * (p * (1 - p) / 20000).sqrt())
    # importance weights make the weighted loss unbiased for the uniform mean over t
    assert float((p * (1 / (T * p)) * L).sum()) == pytest.approx(float(L.mean()))
    assert float((w * L[t.long() - 1]).mean()) == pytest.approx(float(L.mean()), rel=0.05)
    mixed = Importance(T, history=1, uniform_mix=0.5)
    mixed.update(torch.arange(1, T + 1), torch.tensor([0.0, 0.0, 0.0, 0.0, 1.0]))
    torch.testing.assert_close(mixed.probs(), torch.tensor([0.1, 0.1, 0.1, 0.1, 0.6], dtype=torch.float64))
    with pytest.raises(ValueError, match="outside"):
        sampler.update(torch.tensor([0]), torch.tensor([1.0]))


def test_importance_draws_are_the_first_halfs():
    """ImportanceTimesteps.sample drew torch.multinomial(p, n, replacement=True) + 1 with weights 1/(T p_t)."""
    imp = Importance(20, history=2)
    for k in range(2):
        imp.update(torch.arange(1, 21), torch.linspace(0.1, 3.0, 20) * (k + 1))
    g1, g2 = gen(9), gen(9)
    t, w = imp.sample(64, g1)
    p = imp.probs()
    idx = torch.multinomial(p, 64, replacement=True, generator=g2)
    assert torch.equal(t, (idx + 1).double()) and torch.equal(w, 1.0 / (20 * p[idx]))


def test_importance_state_round_trips_and_keeps_the_old_checkpoint_keys():
    a = Importance(6, history=3)
    a.update(torch.tensor([1, 2, 2, 6]), torch.tensor([0.5, 1.0, 2.0, 3.0]))
    state = a.state_dict()
    assert set(state) == {"imp_losses", "imp_count"}  # the names the first half's checkpoints used
    b = Importance(6, history=3)
    b.load_state_dict(state)
    assert torch.equal(a.losses, b.losses) and torch.equal(a.count, b.count)
    state["imp_losses"][0, 0] = 99.0  # a copy, not a view
    assert float(a.losses[0, 0]) == 0.5
    with pytest.raises(ValueError, match="does not fit"):
        Importance(7, history=3).load_state_dict(a.state_dict())


def test_importance_weighted_objective_is_unbiased():
    """E_{t~p}[w_t L_t] = (1/T) Σ_t L_t for a p far from uniform: the objective's per-sample loss times the
    returned weight estimates the uniform-t loss (here L_t = the VLB-weighted loss of a fixed bad network)."""
    T = 10
    path = discrete_vp("linear", T)
    obj = make_objective(path, "eps", weighting="vlb", time_sampling="importance", uniform_mix=0.1)
    obj.times.update(torch.arange(1, T + 1).repeat(10), torch.linspace(0.1, 10, T).repeat(10))
    assert obj.times.ready
    x0 = torch.randn(1, 3, generator=gen(5), dtype=torch.float64).expand(200_000, 3)
    eps = torch.randn(200_000, 3, generator=gen(6), dtype=torch.float64)
    net = lambda x, t: 0.5 * x  # noqa: E731
    r = obj(net, x0, generator=gen(7), eps=eps)
    assert r.weight is not None and r.weight.shape == (200_000,)
    est = r.total * r.weight
    per_t = [obj(net, x0[:20000], t=torch.full((20000,), float(k)), eps=eps[:20000]).total for k in range(1, T + 1)]
    uniform_mean = float(torch.stack([L.mean() for L in per_t]).mean())
    se = math.sqrt(float(est.var()) / est.numel() + sum(float(L.var()) / 20000 for L in per_t) / T**2)
    assert abs(float(est.mean()) - uniform_mean) < 4 * se
    assert abs(float(r.total.mean()) - uniform_mean) > 20 * se  # without the weights it would be biased
    # and drawing t from the sampler is what the objective did: t then ε from the generator
    t, w = obj.times.sample(200_000, gen(7))
    assert torch.equal(r.t, t) and torch.equal(r.weight, w)


def test_t_max_is_liu_et_als_one_step_distillation_loss():
    """time_sampling 't_max' on the flow path with velocity prediction: the loss is ||v(x_1, 1) - (x_1 - x_0)||² on
    the given pairs (Liu et al. 2023 §2.3), and it draws from the generator exactly as 'uniform' does."""
    path = Linear()
    obj = make_objective(path, "velocity", time_sampling="t_max")
    x0, x1 = torch.randn(6, 3, generator=gen(1), dtype=torch.float64), torch.randn(6, 3, generator=gen(2),
                                                                                    dtype=torch.float64)
    W = torch.randn(3, 3, generator=gen(3), dtype=torch.float64)
    seen = {}

    def net(x, t):
        seen["x"], seen["t"] = x, t
        return x @ W

    g1, g2 = gen(4), gen(4)
    terms = obj(net, x0, generator=g1, eps=x1)
    assert torch.all(terms.t == 1.0) and torch.equal(seen["x"], x1)  # α(1) = 0: the network sees x_1 alone
    assert torch.allclose(terms.total, ((x1 @ W - (x1 - x0)) ** 2).mean(1), rtol=1e-12, atol=0)
    make_time_sampler("uniform", path).sample(6, g2)
    assert torch.equal(g1.get_state(), g2.get_state())
    with pytest.raises(ValueError, match="density"):
        make_objective(path, "velocity", time_sampling="t_max", weighting="vlb").loss_factor(terms.t)
