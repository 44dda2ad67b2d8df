"""The consistency objective against its textbook form and exact answers: Karras levels, iCT's curriculum N(k) and
discrete log-normal, the loss λ·d(f(x + σ_hi z, σ_hi), sg f(x_lo, σ_lo)) on random inputs, shared dropout masks,
consistency distillation of the exact consistency function (0 with the exact ODE step, falling at the teacher's
order with Euler and Heun), and the exact f as a stationary point of consistency training as Δσ -> 0."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from kuosan.exact import ExactDenoiser, GaussianMixture, gaussian, pf_ode_solve
from kuosan.objectives import ConsistencyObjective, curriculum_points, karras_levels, level_probs, pseudo_huber
from kuosan.objectives.consistency import ConsistencyLevels, default_huber_c, make_consistency_objective
from kuosan.parameterisation import EDM, Consistency
from kuosan.paths import VE

F64 = torch.float64
PATH, PARAM = VE(), Consistency()
MIX = GaussianMixture(torch.tensor([[-1.5, 0.0], [1.0, 1.2], [1.0, -1.2]]),
                      torch.tensor([[[0.20, 0.05], [0.05, 0.10]], [[0.10, 0.0], [0.0, 0.15]],
                                    [[0.15, -0.03], [-0.03, 0.10]]]),
                      torch.tensor([0.5, 0.3, 0.2]))


def gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def ct(**kw) -> ConsistencyObjective:
    return make_consistency_objective(PATH, PARAM, **{"method": "ct", "total_steps": 100, **kw})


def net_of(f):
    """The raw network F that makes c_skip x + c_out F equal the function f(x, σ) (σ > σ_min)."""

    def net_fn(x, s):
        skip, out, _ = PARAM._c(PATH, s)
        return (f(x, s) - skip[:, None] * x) / out[:, None]

    return net_fn


# ------------------------------------------------------------------ levels, curriculum, level distribution
def test_karras_levels():
    s = karras_levels(11, 0.002, 80.0, 7.0)
    i = torch.arange(11, dtype=F64)
    ref = (0.002 ** (1 / 7) + i / 10 * (80 ** (1 / 7) - 0.002 ** (1 / 7))) ** 7
    torch.testing.assert_close(s, ref, rtol=1e-13, atol=0)
    assert s[0].item() == 0.002 and s[-1].item() == 80.0 and bool((s[1:] > s[:-1]).all())
    with pytest.raises(ValueError, match="at least 2 noise levels"):
        karras_levels(1, 0.002, 80.0)


def test_curriculum_is_icts():
    """Song & Dhariwal 2023: s0 = 10, s1 = 1280, K = 400k -> K' = 50k, N = 11, 21, 41, ..., 1281."""
    K = 400_000
    expect = {0: 11, 49_999: 11, 50_000: 21, 100_000: 41, 150_000: 81, 200_000: 161, 250_000: 321, 300_000: 641,
              350_000: 1281, 399_999: 1281}
    assert {k: curriculum_points(k, K, 10, 1280) for k in expect} == expect
    # s1/s0 = 10 is not a power of 2: K' = ⌊1000/(log2 10 + 1)⌋ = 231, and N stops at s1 + 1
    assert [curriculum_points(k, 1000, 10, 100) for k in (0, 230, 231, 462, 693, 924, 999)] == [11, 11, 21, 41, 81,
                                                                                               101, 101]
    assert [curriculum_points(k, 3, 10, 1280) for k in (0, 5, 7)] == [11, 321, 1281]  # K < doublings: K' = 1
    assert curriculum_points(2**40, 2**40 + 1, 2, 4) == 5  # no overflow at huge steps
    assert [curriculum_points(k, 100, 8, 8) for k in (0, 99)] == [9, 9]  # s0 = s1: a fixed discretisation


def test_level_probs_are_the_discretised_log_normal():
    from scipy.stats import norm

    s = karras_levels(41, 0.002, 80.0)
    p = level_probs(s, -1.1, 2.0)
    cdf = norm.cdf((s.log().numpy() + 1.1) / 2.0)
    ref = torch.from_numpy(cdf[1:] - cdf[:-1])
    torch.testing.assert_close(p, ref / ref.sum(), rtol=1e-10, atol=1e-15)


def test_sampler_draws_adjacent_pairs_at_the_steps_discretisation():
    """pairs (σ_{i+1}, σ_i) of the step's levels with frequencies p(i); the default step is the last one."""
    lv = ConsistencyLevels("ct", 0.002, 80.0, total_steps=400, s0=4, s1=32)  # K' = 100: N = 5, 9, 17, 33
    for step, n in ((0, 5), (150, 9), (399, 33), (None, 33)):
        s = lv.levels(step)
        assert lv.n_points(step) == n == len(s)
        t, w = lv.sample(50_000, gen(1), step=step)
        assert w is None and t.shape == (50_000, 2) and t.dtype == F64
        idx = torch.searchsorted(s, t[:, 1].contiguous())
        assert torch.equal(s[idx], t[:, 1]) and torch.equal(s[idx + 1], t[:, 0])
        freq = torch.bincount(idx, minlength=n - 1).double() / 50_000
        p = level_probs(s, -1.1, 2.0)
        assert float((freq - p).abs().max()) < 4 * math.sqrt(0.25 / 50_000)
    cd = ConsistencyLevels("cd", 0.002, 80.0, total_steps=400, cd_steps=18)
    assert cd.n_points(0) == cd.n_points(399) == 18
    assert torch.equal(lv.sample(7, gen(3), step=5)[0], lv.sample(7, gen(3), step=5)[0])


# ------------------------------------------------------------------ the loss, written out
class TinyNet(nn.Module):
    """F(c_in x, c_noise) = W tanh(A c_in x + b c_noise/1000) (float64)."""

    def __init__(self, dim: int = 3):
        super().__init__()
        g = gen(7)
        self.A = nn.Parameter(torch.randn(dim, dim, generator=g, dtype=F64))
        self.W = nn.Parameter(torch.randn(dim, dim, generator=g, dtype=F64))
        self.b = nn.Parameter(torch.randn(dim, generator=g, dtype=F64))

    def forward(self, x, c_noise):
        return torch.tanh(x @ self.A.T + self.b * c_noise[:, None] / 1000) @ self.W.T


def textbook(net, x0, hi, lo, z, c, x_lo=None):
    """Song & Dhariwal 2023 Eqs. (6)-(9) written out:
    λ(σ_i) [√(‖f(x+σ_{i+1}z) - f⁻(x+σ_i z)‖² + c²) - c]."""
    sd, smin = 0.5, 0.002

    def f(x, s):
        s_ = s[:, None]
        skip = sd**2 / ((s_ - smin) ** 2 + sd**2)
        out = sd * (s_ - smin) / (sd**2 + s_**2).sqrt()
        return skip * x + out * net(x / (s_**2 + sd**2).sqrt(), (250 * s.log()).float())  # c_noise in float32

    student = f(x0 + hi[:, None] * z, hi)
    target = f(x0 + lo[:, None] * z if x_lo is None else x_lo, lo).detach()
    d = (((student - target) ** 2).sum(1) + c**2).sqrt() - c
    return d / (hi - lo)


@pytest.mark.parametrize("c", [0.0, 0.03])
def test_ct_loss_and_its_gradient_equal_the_textbook_form(c):
    """Random data, levels and noise: the objective's per-sample loss and its gradient (the target stopped)
    equal the formula; huber_c = 0 means 0.00054·√d."""
    from kuosan.denoiser import NetDenoiser

    net = TinyNet()
    D = NetDenoiser(net, PATH, PARAM)
    obj = ct(huber_c=c)
    g = gen(2)
    x0, z = torch.randn(6, 3, generator=g, dtype=F64), torch.randn(6, 3, generator=g, dtype=F64)
    t, _ = obj.times.sample(6, g, step=50)
    got = obj(D.raw, x0, t=t, eps=z).total
    cc = c if c > 0 else 0.00054 * math.sqrt(3)
    want = textbook(net, x0, t[:, 0], t[:, 1], z, cc)
    torch.testing.assert_close(got, want, rtol=1e-12, atol=1e-14)
    ga = torch.autograd.grad(got.sum(), list(net.parameters()))
    gb = torch.autograd.grad(want.sum(), list(net.parameters()))
    for a, b in zip(ga, gb):
        torch.testing.assert_close(a, b, rtol=1e-11, atol=1e-13)
    assert default_huber_c(3 * 32 * 32) == pytest.approx(0.0299, abs=1e-4)  # iCT's c = 0.03 on CIFAR-10
    torch.testing.assert_close(pseudo_huber(x0, z, 0.0), (x0 - z).norm(dim=1))


def test_cd_loss_uses_the_teacher_step_as_the_target_point():
    net = TinyNet()
    from kuosan.denoiser import NetDenoiser

    D = NetDenoiser(net, PATH, PARAM)
    calls = []

    def teacher(x, hi, lo, cond):
        calls.append((hi.clone(), lo.clone()))
        return 0.9 * x - 0.1 * lo[:, None]

    obj = make_consistency_objective(PATH, PARAM, method="cd", total_steps=10, cd_steps=18, teacher_step=teacher,
                                     huber_c=0.01)
    g = gen(4)
    x0, z = torch.randn(5, 3, generator=g, dtype=F64), torch.randn(5, 3, generator=g, dtype=F64)
    t, _ = obj.times.sample(5, g)
    got = obj(D.raw, x0, t=t, eps=z).total
    x_hi = x0 + t[:, :1] * z
    want = textbook(net, x0, t[:, 0], t[:, 1], z, 0.01, x_lo=0.9 * x_hi - 0.1 * t[:, 1:])
    torch.testing.assert_close(got, want, rtol=1e-12, atol=1e-14)
    assert torch.equal(calls[0][0], t[:, 0]) and torch.equal(calls[0][1], t[:, 1])
    with pytest.raises(ValueError, match="needs a teacher step"):
        make_consistency_objective(PATH, PARAM, method="cd", total_steps=10)(D.raw, x0)


def test_both_evaluations_see_the_same_dropout_masks():
    """The target runs under a forked RNG: the student draws the same masks, and the objective consumes the global
    RNG exactly as one forward pass (so a step's dropout depends on (seed, step) only)."""
    masks = []

    def net_fn(x, s):
        m = torch.rand(x.shape, dtype=x.dtype)
        masks.append(m)
        return x * m

    obj = ct()
    x0 = torch.randn(4, 2, generator=gen(0), dtype=F64)
    torch.manual_seed(5)
    obj(net_fn, x0, generator=gen(1))
    after = torch.get_rng_state()
    torch.manual_seed(5)
    torch.rand((4, 2), dtype=F64)
    assert len(masks) == 2 and torch.equal(masks[0], masks[1]) and torch.equal(after, torch.get_rng_state())


def test_bad_inputs():
    obj = ct()
    x0 = torch.zeros(3, 2, dtype=F64)
    with pytest.raises(ValueError, match=r"\(B, 2\) noise-level pairs"):
        obj(lambda x, s: x, x0, t=torch.ones(3, dtype=F64))
    with pytest.raises(ValueError, match="consistency parameterisation"):
        ConsistencyObjective(PATH, EDM(), obj.times)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="sigma_min"):
        ConsistencyObjective(PATH, Consistency(sigma_min=0.01), obj.times)
    with pytest.raises(ValueError, match="unknown consistency method"):
        ConsistencyLevels("xt", 0.002, 80.0, total_steps=10)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="s0 .* at most s1"):
        ConsistencyLevels("ct", 0.002, 80.0, total_steps=10, s0=8, s1=4)


# ------------------------------------------------------------------ exact answers: distillation
def test_cd_of_the_exact_consistency_function():
    """With f = the mixture's exact consistency function (exact PF-ODE endpoints) the CD loss is 0 (to the ODE
    solver's tolerance) when the teacher step is the exact ODE solution, and falls at the teacher's local order as
    Δσ halves: Euler (error O(Δσ²), loss ~ Δσ) by 2, Heun (O(Δσ³), ~ Δσ²) by 4."""
    from kuosan.exact.consistency import ExactConsistency

    f_exact = ExactConsistency(MIX, rtol=1e-10, atol=1e-11)
    cache: dict[float, torch.Tensor] = {}

    def f(x, s):  # f(x_hi, 1) is the same in every case below: solved once
        key = float(s[0])
        if key == 1.0:
            if key not in cache:
                cache[key] = f_exact(x, s)
            return cache[key]
        return f_exact(x, s)

    def exact_step(x, hi, lo, cond):
        h, lo_ = float(hi[0]), float(lo[0])
        return pf_ode_solve(MIX, x / math.sqrt(1 + h * h), h, lo_, rtol=1e-10, atol=1e-11) * math.sqrt(1 + lo_**2)

    D_exact = ExactDenoiser(MIX, PATH)

    def euler(x, hi, lo, cond):
        return x + (lo - hi)[:, None] * (x - D_exact(x, hi)) / hi[:, None]

    steps = {"exact": exact_step, "euler": euler}
    try:
        from kuosan.families.distill import teacher_step

        steps["heun"] = teacher_step(D_exact, "heun")
    except ImportError:  # pragma: no cover - the distillation module is not there
        pass
    g = gen(0)
    x0, z = MIX.sample(64, g), torch.randn(64, 2, generator=g, dtype=F64)
    loss = {}
    for name, step in steps.items():
        for lo in ([0.9] if name == "exact" else [0.8, 0.9]):
            obj = make_consistency_objective(PATH, PARAM, method="cd", total_steps=10, teacher_step=step,
                                             huber_c=1e-12)
            t = torch.tensor([[1.0, lo]], dtype=F64).expand(64, 2)
            loss[name, lo] = float(obj(net_of(f), x0, t=t, eps=z).total.mean())
    assert loss["exact", 0.9] < 1e-9 < 1e-3 < loss["euler", 0.9]
    assert 1.8 < loss["euler", 0.8] / loss["euler", 0.9] < 2.5
    if "heun" in steps:
        assert loss["heun", 0.9] < loss["euler", 0.9] / 10 and 3.3 < loss["heun", 0.8] / loss["heun", 0.9] < 4.8


# ------------------------------------------------------------------ exact answers: training
MU, SIGMA = torch.tensor([0.3, -0.2], dtype=F64), torch.tensor([[0.30, 0.12], [0.12, 0.15]], dtype=F64)
EIG, VEC = torch.linalg.eigh(SIGMA)


def f_gauss(x, s, smin=0.002):
    """The exact consistency function of N(μ, Σ): along the VE PF-ODE each eigen-coordinate of x - μ scales as
    √(d + σ²), so f(x, σ) = μ + U diag(√((d + σ_min²)/(d + σ²))) Uᵀ (x - μ)."""
    a = ((EIG + smin**2)[None] / (EIG[None] + s[:, None] ** 2)).sqrt()
    return MU + (((x - MU) @ VEC) * a) @ VEC.T


def test_gaussian_closed_form_is_the_exact_consistency_function():
    from kuosan.exact.consistency import ExactConsistency

    x = MU + 1.3 * torch.randn(16, 2, generator=gen(3), dtype=F64)
    s = torch.full((16,), 1.3, dtype=F64)
    torch.testing.assert_close(f_gauss(x, s), ExactConsistency(gaussian(MU, SIGMA))(x, s), rtol=1e-8, atol=1e-8)


def test_exact_f_is_a_stationary_point_of_ct_as_the_step_shrinks():
    """Song et al. 2023 Thm 2: the CT target f(x + σ_i z, σ_i) is, given x + σ_{i+1} z, the CD target to O(Δσ²).
    So at the exact f the CT gradient along any perturbation g (here f + θ·(σ - σ_min) tanh x, c large: the
    quadratic regime of pseudo-Huber) vanishes like Δσ, while at a function that is not consistent it stays O(1)."""
    M = 200_000
    g = gen(1)
    x0 = MU + torch.randn(M, 2, generator=g, dtype=F64) @ torch.linalg.cholesky(SIGMA).T
    z = torch.randn(M, 2, generator=g, dtype=F64)

    def wrong(x, s):
        return f_gauss(x, s) + 0.3 * (s - 0.002)[:, None] * torch.sin(x)

    grads = {}
    for name, f in (("exact", f_gauss), ("wrong", wrong)):
        for dsig in (0.4, 0.1):
            theta = torch.zeros((), dtype=F64, requires_grad=True)

            def fθ(x, s, f=f, theta=theta):
                return f(x, s) + theta * (s - 0.002)[:, None] * torch.tanh(x)

            t = torch.tensor([[1.0, 1.0 - dsig]], dtype=F64).expand(M, 2)
            loss = ct(huber_c=10.0)(net_of(fθ), x0, t=t, eps=z).total.mean()
            grads[name, dsig] = abs(float(torch.autograd.grad(loss, theta)[0]))
    assert grads["wrong", 0.1] > 0.8 * grads["wrong", 0.4] > 0.01  # O(1)
    assert grads["exact", 0.1] < 0.25 * grads["exact", 0.4]  # O(Δσ): 4x smaller for a 4x smaller step
    assert grads["exact", 0.1] < 0.05 * grads["wrong", 0.1]


# ------------------------------------------------------------------ ECT's levels (the distillation module's)
def test_ect_pairs_come_from_the_ect_module():
    ect = pytest.importorskip("kuosan.objectives.ect")
    from kuosan.config import Config

    cfg = Config()
    obj = make_consistency_objective(PATH, PARAM, method="ect", total_steps=800, ect_cfg=cfg)
    for step in (0, 400, 799):
        t, _ = obj.times.sample(1000, gen(step), step=step)
        hi, lo = t[:, 0], t[:, 1]
        z = torch.randn(1000, generator=gen(step), dtype=F64)
        torch.testing.assert_close(hi, torch.exp(-1.1 + 2.0 * z).clamp(0.002, 80.0))
        torch.testing.assert_close(lo, ect.ect_levels(hi, step, 800, cfg).clamp(min=0.002))
        assert bool((lo <= hi).all() and (lo >= 0.002).all())
    torch.testing.assert_close(obj.weight(hi, lo), ect.ect_weight(hi, lo, 0.5))
