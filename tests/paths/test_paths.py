"""Every path's α, σ, λ, t(λ), dα/dt, dσ/dt against closed forms and finite differences; the discrete chain's ᾱ
against the step-by-step product; zero-terminal-SNR rescaling (Lin et al. 2024 Algorithm 1); fingerprints."""

from __future__ import annotations

import hashlib
import json
import math

import pytest
import torch

from kuosan.paths import (BETA_KINDS, PATH_KINDS, VE, DiscreteVP, Linear, PathError, VPCosine, VPLinear, coefficients,
                          discrete_vp, f64, fingerprint_matches, make_path, require_discrete,
                          rescale_zero_terminal_snr, sde_coefficients, terminal_snr_is_zero, ve_sigma)

F64 = torch.float64


def five_point(f, u: float, h: float) -> float:
    """f'(u) by the fourth-order central difference (error O(h⁴))."""
    return (8 * (f(u + h) - f(u - h)) - (f(u + 2 * h) - f(u - 2 * h))) / (12 * h)


def closed_forms():
    """(path, α(t), σ(t)) in plain math, written from the papers."""
    c0 = math.cos(0.008 / 1.008 * math.pi / 2)
    return [
        (VPCosine(), lambda t: math.cos((t + 0.008) / 1.008 * math.pi / 2) / c0,
         lambda t: math.sqrt(1 - (math.cos((t + 0.008) / 1.008 * math.pi / 2) / c0) ** 2)),
        (VPLinear(), lambda t: math.exp(-0.25 * t**2 * 19.9 - 0.5 * t * 0.1),
         lambda t: math.sqrt(1 - math.exp(-0.5 * t**2 * 19.9 - t * 0.1))),
        (VE(sigma_max=80.0), lambda t: 1.0, lambda t: t),
        (Linear(), lambda t: 1 - t, lambda t: t),
    ]


@pytest.mark.parametrize("path,alpha,sigma", closed_forms(), ids=["vp_cosine", "vp_linear", "ve", "flow"])
def test_continuous_paths_against_closed_forms_and_finite_differences(path, alpha, sigma):
    ts = [path.t_max * u for u in (1e-4, 0.01, 0.1, 0.37, 0.5, 0.8, 0.99)]
    t = torch.tensor(ts, dtype=F64)
    torch.testing.assert_close(path.alpha(t), torch.tensor([alpha(u) for u in ts], dtype=F64), rtol=1e-12, atol=1e-14)
    torch.testing.assert_close(path.sigma(t), torch.tensor([sigma(u) for u in ts], dtype=F64), rtol=1e-12, atol=1e-14)
    lam = torch.tensor([math.log(alpha(u) ** 2 / sigma(u) ** 2) for u in ts], dtype=F64)
    torch.testing.assert_close(path.log_snr(t), lam, rtol=1e-10, atol=1e-10)
    torch.testing.assert_close(path.t_of_log_snr(lam), t, rtol=1e-9, atol=1e-12)
    for fn, d in ((alpha, path.dalpha_dt(t)), (sigma, path.dsigma_dt(t))):
        fd = torch.tensor([five_point(fn, u, 1e-3 * u) for u in ts], dtype=F64)
        torch.testing.assert_close(d, fd, rtol=1e-7, atol=1e-9)


@pytest.mark.parametrize("kind", PATH_KINDS)
def test_every_path_evaluates_in_float64_with_the_right_ends(kind):
    path = make_path(kind)
    for t in (torch.tensor([0.5], dtype=torch.float32), torch.tensor([1]), 0.25, 1):
        for fn in (path.alpha, path.sigma, path.log_snr, path.dalpha_dt, path.dsigma_dt, path.net_time):
            assert fn(t).dtype == F64
    assert path.t_of_log_snr(torch.tensor([0.0], dtype=torch.float32)).dtype == F64
    assert float(path.log_snr(f64(0.0))) == math.inf and float(path.sigma(f64(0.0))) == 0
    assert float(path.alpha(f64(0.0))) == 1
    assert float(path.t_of_log_snr(f64(math.inf))) == 0
    lam_end = float(path.log_snr(f64(path.t_max)))
    assert (lam_end == -math.inf) == (kind in ("vp_cosine", "flow")) == terminal_snr_is_zero(path)
    if lam_end == -math.inf:
        assert float(path.alpha(f64(path.t_max))) == 0 and float(path.t_of_log_snr(f64(-math.inf))) == path.t_max
    assert path.prior_std == (path.t_max if kind == "ve" else 1.0)


@pytest.mark.parametrize("kind", PATH_KINDS)
def test_log_snr_is_strictly_decreasing_and_t_of_log_snr_inverts_it(kind):
    path = make_path(kind)
    t = torch.linspace(0, path.t_max, 4001, dtype=F64)[1:-1]
    lam = path.log_snr(t)
    assert bool((lam[1:] < lam[:-1]).all())
    torch.testing.assert_close(path.t_of_log_snr(lam), t, rtol=1e-8, atol=1e-9 * path.t_max)
    # and λ(t(λ)) = λ on a λ grid inside the path's range
    lo, hi = float(lam.min()), float(lam.max())
    lg = torch.linspace(lo, hi, 1001, dtype=F64)
    torch.testing.assert_close(path.log_snr(path.t_of_log_snr(lg)), lg, rtol=1e-8, atol=1e-8)
    # VP paths keep α² + σ² = 1
    if kind != "ve" and kind != "flow":
        torch.testing.assert_close(path.alpha(t) ** 2 + path.sigma(t) ** 2, torch.ones_like(t), rtol=1e-12, atol=1e-12)


# ------------------------------------------------------------------ the discrete VP chain
@pytest.mark.parametrize("kind", BETA_KINDS)
@pytest.mark.parametrize("T", [1, 10, 1000, 4000])
def test_alpha_bar_is_the_product_of_one_minus_beta(kind, T):
    s = discrete_vp(kind, T)
    prod, ab = 1.0, []
    for b in s.betas.tolist():  # the step-by-step product, in plain Python floats
        prod *= 1 - b
        ab.append(prod)
    t = torch.arange(1, T + 1, dtype=F64)
    torch.testing.assert_close(s.alpha_bar(t), torch.tensor(ab, dtype=F64), rtol=1e-12, atol=1e-15)
    torch.testing.assert_close(s.alpha(t) ** 2, torch.tensor(ab, dtype=F64), rtol=1e-12, atol=1e-15)
    assert s.alpha_bar(torch.tensor(0.0, dtype=F64)) == 1
    assert bool(((s.betas > 0) & (s.betas < 1)).all())
    assert bool((s.log_snr(t[1:]) < s.log_snr(t[:-1])).all())  # SNR strictly decreasing
    assert s.T == T and s.t_max == T
    torch.testing.assert_close(s.sigma_max(), math.sqrt((1 - ab[-1]) / ab[-1]), rtol=1e-10, atol=0)


def test_discrete_chain_between_integers_and_its_derivatives():
    """log ᾱ is linear between integers (DPM-Solver's convention); dα/dt, dσ/dt match finite differences inside
    an interval, and t(λ) is exact at integers."""
    s = discrete_vp("cosine", 1000)
    t = torch.tensor([0.5, 1.0, 17.25, 500.0, 999.9], dtype=F64)
    torch.testing.assert_close(s.alpha(t) ** 2 + s.sigma(t) ** 2, torch.ones_like(t))
    torch.testing.assert_close(s.log_snr(t), torch.log(s.alpha(t) ** 2 / s.sigma(t) ** 2))
    torch.testing.assert_close(s.t_of_log_snr(s.log_snr(t)), t, rtol=1e-9, atol=1e-9)
    f = lambda u: math.cos((u / 1000 + 0.008) / 1.008 * math.pi / 2) ** 2  # noqa: E731 (Nichol & Dhariwal Eq. 17)
    assert abs(s.alpha_bar(torch.tensor(500.0, dtype=F64)).item() - f(500) / f(0)) < 1e-12
    la = torch.log(torch.cumprod(1 - s.betas, 0))
    torch.testing.assert_close(s.log_alpha_bar(f64(17.25)), 0.75 * la[16] + 0.25 * la[17], rtol=1e-12, atol=0)
    ti = torch.tensor([3.3, 17.5, 640.7, 999.5], dtype=F64)
    h = 1e-5
    torch.testing.assert_close(s.dalpha_dt(ti), (s.alpha(ti + h) - s.alpha(ti - h)) / (2 * h), rtol=1e-6, atol=0)
    torch.testing.assert_close(s.dsigma_dt(ti), (s.sigma(ti + h) - s.sigma(ti - h)) / (2 * h), rtol=1e-6, atol=1e-10)
    # at an integer k the slope is the one of (k-1, k], the interval a reverse step from k enters
    k = torch.tensor([5.0, 600.0], dtype=F64)
    torch.testing.assert_close(s.dlog_alpha_bar_dt(k), torch.log1p(-s.betas[k.long() - 1]), rtol=1e-12, atol=0)
    ints = torch.arange(0, 1001, dtype=F64)
    torch.testing.assert_close(s.t_of_log_snr(s.log_snr(ints)), ints, rtol=0, atol=1e-9)
    assert s.net_time(f64(250.0)) == 250.0 and discrete_vp("linear", 20).net_time(f64(5.0)) == 250.0


def test_linear_and_scaled_linear_tables_match_their_papers():
    s = discrete_vp("linear", 1000)
    assert s.betas[0].item() == pytest.approx(1e-4) and s.betas[-1].item() == pytest.approx(0.02)
    assert s.alpha_bar(torch.tensor(1000.0, dtype=F64)).item() == pytest.approx(4.0358e-5, rel=1e-3)
    torch.testing.assert_close(discrete_vp("linear", 100).betas, torch.linspace(1e-3, 0.2, 100, dtype=F64))
    sl = discrete_vp("scaled_linear", 1000)  # Stable Diffusion: √β linear in [√0.00085, √0.012]
    torch.testing.assert_close(sl.betas, torch.linspace(0.00085**0.5, 0.012**0.5, 1000, dtype=F64) ** 2)


def test_scaled_linear_matches_diffusers():
    diffusers = pytest.importorskip("diffusers")
    sch = diffusers.DDIMScheduler(num_train_timesteps=1000, beta_schedule="scaled_linear", beta_start=0.00085,
                                  beta_end=0.012)
    ours = discrete_vp("scaled_linear", 1000)
    torch.testing.assert_close(ours.betas.float(), sch.betas, rtol=2e-6, atol=0)
    torch.testing.assert_close(ours.alpha_bar(torch.arange(1, 1001, dtype=F64)).float(), sch.alphas_cumprod,
                               rtol=1e-4, atol=0)


@pytest.mark.parametrize("kind", BETA_KINDS)
@pytest.mark.parametrize("T", [10, 1000])
def test_zero_terminal_snr_rescaling_is_lin_et_al_algorithm_1(kind, T):
    """√ᾱ_t ↦ (√ᾱ_t - √ᾱ_T)·√ᾱ_1/(√ᾱ_1 - √ᾱ_T): α_T = 0, α_1 unchanged,
    and the chain is the rescaled one."""
    base = discrete_vp(kind, T)
    z = discrete_vp(kind, T, zero_terminal_snr=True)
    sab = [math.sqrt(math.prod(1 - b for b in base.betas.tolist()[:k])) for k in range(1, T + 1)]
    want = [(u - sab[-1]) * sab[0] / (sab[0] - sab[-1]) for u in sab]
    t = torch.arange(1, T + 1, dtype=F64)
    torch.testing.assert_close(z.alpha(t), torch.tensor(want, dtype=F64), rtol=1e-9, atol=1e-12)
    assert float(z.alpha(f64(T))) == 0 and float(z.sigma(f64(T))) == 1 and float(z.betas[-1]) == 1
    assert float(z.log_snr(f64(T))) == -math.inf and z.sigma_max() == math.inf
    assert float(z.t_of_log_snr(f64(-math.inf))) == T
    torch.testing.assert_close(z.alpha(f64(1.0)), base.alpha(f64(1.0)), rtol=1e-12, atol=0)
    assert terminal_snr_is_zero(z) and not terminal_snr_is_zero(base) and z.zero_terminal_snr
    lam = z.log_snr(t[:-1])
    assert bool((lam[1:] < lam[:-1]).all()) and bool(torch.isfinite(lam).all())
    # α ≡ 0 on the last interval: its derivatives are 0 there, not 0·∞
    tl = torch.tensor([T - 0.5, float(T)], dtype=F64)
    assert torch.equal(z.dalpha_dt(tl), torch.zeros(2, dtype=F64))
    assert torch.equal(z.dsigma_dt(tl), torch.zeros(2, dtype=F64))


def test_zero_terminal_snr_matches_diffusers():
    diffusers = pytest.importorskip("diffusers")
    from diffusers.schedulers.scheduling_ddim import rescale_zero_terminal_snr as theirs

    betas = discrete_vp("scaled_linear", 1000).betas
    torch.testing.assert_close(rescale_zero_terminal_snr(betas), theirs(betas.clone()), rtol=1e-10, atol=1e-12)
    assert diffusers is not None


@pytest.mark.parametrize("bad", [[0.1, 1.0], [0.0, 0.1], [-0.1], [float("nan")], []])
def test_betas_outside_unit_interval_are_refused(bad):
    with pytest.raises(ValueError, match="beta|at least one"):
        DiscreteVP(torch.tensor(bad, dtype=F64))


def test_bad_paths_are_refused():
    with pytest.raises(ValueError, match="unknown schedule 'cosin'"):
        discrete_vp("cosin", 100)
    for T in (0, 2.5, True):
        with pytest.raises(ValueError, match="positive integer"):
            discrete_vp("linear", T)
    with pytest.raises(ValueError, match="unknown path 'vp'"):
        make_path("vp")
    with pytest.raises(ValueError, match="path 've'"):
        make_path("ve", T=10)
    with pytest.raises(ValueError, match="sigma_max"):
        VE(sigma_max=float("inf"))
    with pytest.raises(ValueError, match="t_max"):
        VPCosine(t_max=1.5)
    with pytest.raises(ValueError, match="beta_min"):
        VPLinear(beta_min=2.0, beta_max=1.0)


# ------------------------------------------------------------------ helpers shared by every path
def test_coefficients_ve_sigma_and_sde_coefficients():
    vp = VPLinear()
    t = 0.3
    a, s, lam = coefficients(vp, t)
    assert all(isinstance(u, float) for u in (a, s, lam))
    assert a == float(vp.alpha(f64(t))) and lam == pytest.approx(math.log(a * a / (s * s)), rel=1e-12)
    assert float(ve_sigma(vp, f64(t))) == pytest.approx(s / a, rel=1e-12)
    assert float(ve_sigma(Linear(), f64(1.0))) == math.inf
    # Song et al. 2021 Eq. (11): the VP SDE with β(t) = β_min + t(β_max - β_min): f = -β/2, g² = β
    tt = torch.tensor([0.01, 0.3, 0.9], dtype=F64)
    f, g2 = sde_coefficients(vp, tt)
    beta = 0.1 + tt * 19.9
    torch.testing.assert_close(f, -0.5 * beta, rtol=1e-12, atol=0)
    torch.testing.assert_close(g2, beta, rtol=1e-10, atol=0)
    # VE (Karras et al. Eq. (6) with σ(t) = t): f = 0, g² = dσ²/dt = 2t
    f, g2 = sde_coefficients(VE(), tt)
    assert torch.equal(f, torch.zeros_like(tt))
    torch.testing.assert_close(g2, 2 * tt)
    # flow: f = -1/(1-t), g² = 2t + 2t²/(1-t)  (Albergo & Vanden-Eijnden's interpolant as an SDE)
    f, g2 = sde_coefficients(Linear(), tt)
    torch.testing.assert_close(f, -1 / (1 - tt))
    torch.testing.assert_close(g2, 2 * tt + 2 * tt**2 / (1 - tt))


def test_require_discrete():
    d = discrete_vp("linear", 10)
    assert require_discrete(d, "x") is d
    with pytest.raises(PathError, match="ancestral sampling is defined on a discrete VP chain.*'flow'"):
        require_discrete(Linear(), "ancestral sampling")


# ------------------------------------------------------------------ fingerprints
def test_fingerprints():
    """A named discrete chain hashes its definition (schedule, T, zero_terminal_snr, β-function arguments), a custom
    one its β values; continuous paths hash their spec. Different paths differ, equal paths agree."""
    d = discrete_vp("linear", 1000)
    definition = {"schedule": "linear", "T": 1000, "zero_terminal_snr": False,
                  "params": {"beta_start": 1e-4, "beta_end": 0.02}}  # the β function's defaults, spelled out
    assert d.fingerprint() == hashlib.sha1(json.dumps(definition, sort_keys=True).encode()).hexdigest()[:16]
    assert d.values_fingerprint() == hashlib.sha1(d.betas.numpy().tobytes()).hexdigest()[:16]
    custom = DiscreteVP(d.betas)
    assert custom.fingerprint() == d.values_fingerprint() != d.fingerprint()
    prints = {discrete_vp(k, T, zero_terminal_snr=z).fingerprint() for k in BETA_KINDS for T in (10, 1000)
              for z in (False, True)}
    prints |= {VPCosine().fingerprint(), VPCosine(t_max=0.99).fingerprint(), VPLinear().fingerprint(),
               VPLinear(beta_max=10.0).fingerprint(), VE().fingerprint(), VE(sigma_max=10.0).fingerprint(),
               Linear().fingerprint(), discrete_vp("linear", 1000, beta_end=0.03).fingerprint()}
    assert len(prints) == 4 * 2 * 2 + 8
    assert VE(sigma_max=10.0).fingerprint() == make_path("ve", sigma_max=10.0).fingerprint()
    assert discrete_vp("cosine", 50).fingerprint() == discrete_vp("cosine", 50).fingerprint()
    assert discrete_vp("linear", 1000, beta_end=0.02).fingerprint() == d.fingerprint()  # the default, given
    assert make_path("discrete_vp", schedule="cosine", s=0.008).fingerprint() == discrete_vp("cosine").fingerprint()
    for kind in PATH_KINDS:
        spec = make_path(kind).spec()
        assert json.loads(json.dumps(spec)) == spec
    spec = d.spec()
    assert spec["kind"] == "discrete_vp" and spec["T"] == 1000 and spec["fingerprint"] == d.fingerprint()


def test_a_named_chains_fingerprint_survives_last_bit_differences():
    """Another machine's cos may differ in the last bit (torch's vectorised float64 cos differs between builds and
    CPUs): the definition's hash does not see it, so a run trained there loads here; the values' hash would."""
    d = discrete_vp("cosine", 1000)
    other = DiscreteVP(torch.nextafter(d.betas, torch.ones_like(d.betas)), schedule="cosine", params=d.params)
    assert other.fingerprint() == d.fingerprint() and other.values_fingerprint() != d.values_fingerprint()
    assert fingerprint_matches(d, d.fingerprint()) and fingerprint_matches(d, d.values_fingerprint())
    assert not fingerprint_matches(d, other.values_fingerprint())
    assert not fingerprint_matches(d, discrete_vp("cosine", 999).fingerprint())
    assert fingerprint_matches(VE(), VE().fingerprint()) and not fingerprint_matches(VE(), Linear().fingerprint())
