"""Stochastic samplers (ancestral DDPM, DDIM η > 0, reverse SDE, predictor–corrector) against exact answers: the
weights, means and covariances of a 3-component mixture and the moments of Gaussian data, on every path kind."""

from __future__ import annotations

import math

import pytest
import torch

from kuosan.denoiser import Counting
from kuosan.exact import ExactDenoiser, GaussianMixture, curve_cov, gaussian
from kuosan.paths import PathError, discrete_vp, f64, make_path
from kuosan.sampling import NoiseSource, ddim, ddpm, make_grid, pc, sample, sde, uniform_grid
from kuosan.sampling.sde import corrector_alpha, rates

LINEAR = discrete_vp("linear", 1000)
# Well separated (so nearest-component assignment is essentially exact), unequal weights, full covariances.
MIX = GaussianMixture(torch.tensor([[-2.5, 0.0], [1.5, 2.0], [1.5, -2.0]]),
                      torch.tensor([[[0.30, 0.12], [0.12, 0.15]], [[0.10, -0.05], [-0.05, 0.25]],
                                    [[0.20, 0.0], [0.0, 0.05]]]),
                      torch.tensor([0.5, 0.3, 0.2]))
N_SAMPLES, Z_MAX = 4000, 4.0  # 18 statistics: P(max |z| > 4) ≈ 1e-3 for an exact sampler
PATHS = {"linear": lambda: LINEAR, "cosine": lambda: discrete_vp("cosine", 1000),
         "ztsnr": lambda: discrete_vp("linear", 1000, zero_terminal_snr=True),
         "vp_cosine": lambda: make_path("vp_cosine"),
         "ve": lambda: make_path("ve"), "flow": lambda: make_path("flow")}


def z_scores(x: torch.Tensor, mix: GaussianMixture = MIX) -> torch.Tensor:
    """Standardised errors of weights, means and covariances per component (max-posterior assignment)."""
    L = torch.linalg.cholesky(mix.covs)  # (K, 2, 2)
    r = x[:, None, :] - mix.means[None]  # (n, K, 2)
    w = torch.linalg.solve_triangular(L[None], r[..., None], upper=False).squeeze(-1)
    logp = -0.5 * (w**2).sum(-1) - torch.diagonal(L, dim1=-2, dim2=-1).log().sum(-1) + mix.weights.log()
    k, n, zs = logp.argmax(1), x.shape[0], []
    for j in range(len(mix.weights)):
        pi, S, xj = mix.weights[j].item(), mix.covs[j], x[k == j]
        nj = xj.shape[0]
        zs.append(((nj / n - pi) / math.sqrt(pi * (1 - pi) / n)))
        zs += ((xj.mean(0) - mix.means[j]) / (torch.diagonal(S) / nj).sqrt()).tolist()
        se = ((torch.diagonal(S)[:, None] * torch.diagonal(S)[None] + S**2) / nj).sqrt()  # Wishart s.e.
        zs += ((torch.cov(xj.T) - S) / se)[[0, 0, 1], [0, 1, 1]].tolist()
    return torch.tensor(zs)


def test_statistic_detects_wrong_weights_and_covariances():
    g = torch.Generator().manual_seed(0)
    assert z_scores(MIX.sample(N_SAMPLES, g)).abs().max() < Z_MAX
    wrong_w = GaussianMixture(MIX.means, MIX.covs, torch.tensor([0.42, 0.33, 0.25]))
    assert z_scores(wrong_w.sample(N_SAMPLES, g)).abs().max() > Z_MAX
    wrong_cov = GaussianMixture(MIX.means, MIX.covs * 1.25, MIX.weights)
    assert z_scores(wrong_cov.sample(N_SAMPLES, g)).abs().max() > Z_MAX


def _draw(name: str, pk: str, steps: int, grid: str = "uniform", **opts) -> torch.Tensor:
    D = ExactDenoiser(MIX, PATHS[pk]())
    return sample(D, name, (N_SAMPLES, 2), steps, seed=1, batch_size=N_SAMPLES, grid=grid, dtype=torch.float64,
                  **opts)


@pytest.mark.slow
def test_ddpm_algorithm_2_reproduces_mixture():
    z = z_scores(_draw("ddpm", "linear", 1000))  # Ho et al. Algorithm 2 exactly: the full integer grid
    assert z.abs().max() < Z_MAX, z.numpy().round(1)


# the trailing grid on VE is uniform in σ, whose last step (σ = 80/N -> 0) is a denoise: logsnr there
STOCHASTIC = [
    ("sde", {}, 250), ("pc", {}, 100), ("pc", {"predictor": "euler_maruyama", "snr": 0.1}, 100),
]


@pytest.mark.parametrize("pk", list(PATHS))
@pytest.mark.parametrize("name, opts, steps", STOCHASTIC, ids=["sde", "pc", "pc-em"])
def test_stochastic_samplers_reproduce_mixture(name, opts, steps, pk):
    """Reverse SDE (Song et al. Eq. (6)) and PC (Alg. 5) on every path, the default cosine chain included (where the
    first half's pc returned NaN) and from α = 0 (zero terminal SNR, flow, VP cosine to t = 1)."""
    z = z_scores(_draw(name, pk, steps, "logsnr" if pk == "ve" else "uniform", **opts))
    assert z.abs().max() < Z_MAX, f"{name} on {pk}: z-scores {z.numpy().round(1)}"


def test_sde_on_coarse_grid_is_detectably_biased():
    # Euler–Maruyama is first order in h: 10 steps must fail the same check (the test has power).
    assert z_scores(_draw("sde", "linear", 10)).abs().max() > Z_MAX


def test_sde_rates_on_the_discrete_chain_are_the_slope_of_log_alpha_bar():
    """f = -β(t)/2 and g² = β(t) with β(t) = -log(1 - β_k) on (k-1, k]: the first half's VP SDE."""
    for k in (1, 2, 500, 1000):
        b = -math.log1p(-LINEAR.betas[k - 1].item())
        f, g2 = rates(LINEAR, float(k))
        assert f == pytest.approx(-0.5 * b, rel=1e-9) and g2 == pytest.approx(b, rel=1e-9)
    for t, k in ((499.5, 500.0), (0.25, 1.0)):  # constant on (k-1, k] (g² from σ, σ' at t: to round-off)
        assert rates(LINEAR, t) == pytest.approx(rates(LINEAR, k), rel=1e-12, abs=0)
    assert rates(discrete_vp("linear", 1000, zero_terminal_snr=True), 1000.0) == (-math.inf, math.inf)


def test_corrector_alpha_is_positive_one_minus_beta():
    """Algorithm 5's α_i = 1 - β_i on the chain (exactly), in (0, 1] everywhere: the cosine chain's β_k reach 0.999
    near T, where the first half's 1 - β(t) (β(t) = -log(1 - β_k) = 6.9) was negative and gave NaN."""
    cos = discrete_vp("cosine", 1000)
    for k in (1, 500, 990, 1000):
        assert corrector_alpha(cos, float(k)) == pytest.approx(1 - cos.betas[k - 1].item(), rel=1e-9)
    assert 0 < corrector_alpha(cos, 1000.0) < 0.01
    assert corrector_alpha(make_path("ve"), 40.0) == 1.0
    assert 0 < corrector_alpha(make_path("flow"), 0.999) < corrector_alpha(make_path("flow"), 0.5) < 1
    assert corrector_alpha(make_path("flow"), 1.0) == 0.0


def test_pc_on_the_default_cosine_chain_is_finite():
    D = ExactDenoiser(MIX, discrete_vp("cosine", 1000))
    for steps in (10, 50):
        x = sample(D, "pc", (64, 2), steps, seed=0)
        assert bool(torch.isfinite(x).all())


def test_nfe_of_sde_and_pc():
    x = torch.randn(8, 2, dtype=torch.float64)
    for pk, start_at_zero_alpha in (("linear", False), ("flow", True)):
        D = ExactDenoiser(MIX, PATHS[pk]())
        ts = make_grid(D.path, 20)
        for fn, opts, nfe in [(sde, {}, 20), (pc, {"corrector_steps": 0}, 20), (pc, {"corrector_steps": 2}, 60)]:
            C = Counting(D)
            fn(C, x, ts, **opts)
            # no corrector at α = 0 (its step size is 0 there)
            assert C.nfe == nfe - (opts.get("corrector_steps", 0) if start_at_zero_alpha else 0)


def test_stochastic_samplers_are_reproducible_with_a_noise_source():
    ts, x = uniform_grid(LINEAR, 10), torch.randn(16, 2, dtype=torch.float64)
    D = ExactDenoiser(MIX, LINEAR)
    for fn in (pc, sde, ddpm, lambda *a, **k: ddim(*a, eta=1.0, **k)):
        a = fn(D, x, ts, noise=NoiseSource(3, 0, 16))
        assert torch.equal(a, fn(D, x, ts, noise=NoiseSource(3, 0, 16)))
        assert not torch.equal(a, fn(D, x, ts, noise=NoiseSource(4, 0, 16)))


# --- Gaussian data: moments (Ho et al. 2020 Alg. 2, Song et al. 2021 Eq. (12)) ---------------------------
D_DIM = 8
MEAN = torch.linspace(-0.5, 0.5, D_DIM, dtype=torch.float64)
COV = curve_cov(D_DIM, scale=0.5, length=2.0)


def _check_moments(x, tol_mean=0.03, tol_cov=0.05):
    assert (x.mean(0) - MEAN).abs().max().item() < tol_mean
    assert (torch.cov(x.T) - COV).abs().max().item() < tol_cov


@pytest.mark.slow
@pytest.mark.parametrize("variance", ["beta_tilde", "beta"])
def test_ddpm_reproduces_gaussian_data(variance):
    D = ExactDenoiser(gaussian(MEAN, COV), LINEAR)
    x = sample(D, "ddpm", (6000, D_DIM), 1000, seed=1, grid="uniform", spacing="linspace", batch_size=6000,
               dtype=torch.float64, variance=variance)
    _check_moments(x)


@pytest.mark.parametrize("eta", [0.0, 0.5, 1.0])
@pytest.mark.parametrize("spacing", ["leading", "trailing", "linspace"])
def test_ddim_reproduces_gaussian_data(eta, spacing):
    D = ExactDenoiser(gaussian(MEAN, COV), discrete_vp("cosine", 1000))
    x = sample(D, "ddim", (6000, D_DIM), 100, seed=2, spacing=spacing, batch_size=6000, dtype=torch.float64, eta=eta)
    _check_moments(x, tol_cov=0.06)


@pytest.mark.parametrize("pk", ["ztsnr", "flow", "ve"])
def test_ddim_eta1_reproduces_gaussian_data_on_other_paths(pk):
    D = ExactDenoiser(gaussian(MEAN, COV), PATHS[pk]())
    x = sample(D, "ddim", (6000, D_DIM), 100, seed=2, grid="logsnr", batch_size=6000, dtype=torch.float64, eta=1.0)
    _check_moments(x, tol_cov=0.06)


def test_full_ddpm_grid_is_algorithm_2():
    """The full DDPM grid visits every t = T..1 once and ends on data: NFE = T."""
    D = Counting(ExactDenoiser(gaussian(MEAN, COV), LINEAR))
    ts = uniform_grid(LINEAR, 1000, "linspace")
    assert torch.equal(ts, torch.arange(1000, -1, -1, dtype=torch.float64))
    ddpm(D, torch.randn(4, D_DIM, dtype=torch.float64), ts)
    assert D.nfe == 1000


class LearnedVariance:
    """The exact denoiser with a constant improved-DDPM variance output v (Nichol & Dhariwal 2021 Eq. (15))."""

    learns_variance = True

    def __init__(self, inner, v: float):
        self.inner, self.path, self.v = inner, inner.path, v

    def __call__(self, x_t, t, **cond):
        return self.inner(x_t, t)

    def with_variance(self, x_t, t, **cond):
        return self.inner(x_t, t), torch.full_like(x_t, self.v)


def test_ddpm_variance_kinds_and_their_requirements():
    """learned_range with v = 1 is σ² = β and with v = -1 is β̃ (Eq. (15)'s ends): same samples as those kinds."""
    D = ExactDenoiser(MIX, LINEAR)
    ts, x = uniform_grid(LINEAR, 20), torch.randn(8, 2, dtype=torch.float64)
    for v, kind in ((1.0, "beta"), (-1.0, "beta_tilde")):
        a = ddpm(LearnedVariance(D, v), x, ts, variance="learned_range", noise=NoiseSource(0, 0, 8))
        b = ddpm(D, x, ts, variance=kind, noise=NoiseSource(0, 0, 8))
        assert torch.allclose(a, b, rtol=0, atol=1e-10)
    assert not torch.allclose(ddpm(D, x, ts, variance="beta", noise=NoiseSource(0, 0, 8)),
                              ddpm(D, x, ts, variance="beta_tilde", noise=NoiseSource(0, 0, 8)))
    with pytest.raises(ValueError, match="learned variance"):
        ddpm(D, x, ts, variance="learned_range")
    with pytest.raises(ValueError, match="analytic_table"):
        ddpm(D, x, ts, variance="analytic")
    with pytest.raises(ValueError, match="unknown DDPM variance"):
        ddpm(D, x, ts, variance="fixed")
    with pytest.raises(PathError, match="discrete VP chain"):
        ddpm(ExactDenoiser(MIX, make_path("flow")), x, make_grid(make_path("flow"), 5))


@pytest.mark.parametrize("opts, match", [
    ({"snr": 0.0}, "snr"), ({"snr": -0.1}, "snr"), ({"snr": float("nan")}, "snr"),
    ({"corrector_steps": -1}, "corrector_steps"), ({"corrector_steps": 1.5}, "corrector_steps"),
    ({"predictor": "heun"}, "unknown predictor"),
])
def test_pc_bad_options(opts, match):
    with pytest.raises(ValueError, match=match):
        pc(ExactDenoiser(MIX, LINEAR), torch.randn(4, 2, dtype=torch.float64), uniform_grid(LINEAR, 5), **opts)


@pytest.mark.parametrize("bad", [-1, float("inf"), float("nan"), "1"])
def test_ddim_bad_eta(bad):
    with pytest.raises(ValueError, match="eta"):
        ddim(ExactDenoiser(MIX, LINEAR), torch.randn(2, 2), uniform_grid(LINEAR, 5), eta=bad)


def test_zero_terminal_snr_ddpm_end_to_end():
    """Ancestral sampling on the zero-terminal-SNR chain (Lin et al. 2024): the first step leaves α = 0 through the
    posterior N(α_s x̂_0, σ_s²) (no division by α_T = 0) and the mixture comes out right."""
    x = _draw("ddpm", "ztsnr", 250)
    assert bool(torch.isfinite(x).all())
    assert z_scores(x).abs().max() < Z_MAX
    assert float(f64(PATHS["ztsnr"]().alpha(f64(1000.0)))) == 0.0
