"""Each weighting's w(λ) form equals its textbook loss (Kingma & Gao 2023 §2) on random inputs.

A fixed random "network output" is scored by the objective and, independently, by the loss as its paper writes
it (min-SNR on x_0 / ε / v, EDM's λ(σ)||D - x_0||² with Karras et al.'s Table 1 coefficients, the flow-matching
||û - (ε - x_0)||², the DDPM bound's Gaussian KL, ...). Coefficients of the textbook side come from closed forms or
from the β table's product, not from kuosan.
"""

from __future__ import annotations

import math

import pytest
import torch

from kuosan.objectives import WEIGHTINGS, eps_weight, make_objective, x0_factor, x0_weight
from kuosan.parameterisation import PREDICTIONS, make_parameterisation
from kuosan.paths import VE, Linear, PathError, VPCosine, VPLinear, discrete_vp, terminal_snr_is_zero

B, D = 64, 5


def gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def fixed_net(out: torch.Tensor):
    """A "network" returning a fixed random output, whatever its input."""
    return lambda x_t, t, **cond: out


def draw(seed: int, dtype=torch.float64):
    g = gen(seed)
    return tuple(torch.randn(B, D, generator=g, dtype=dtype) for _ in range(3))  # x0, eps, out


def mse(a, b):
    return ((a - b) ** 2).mean(1)


PATHS = {"discrete_linear": lambda: discrete_vp("linear", 1000), "discrete_cosine": lambda: discrete_vp("cosine", 200),
         "vp_cosine": lambda: VPCosine(t_max=0.98), "vp_linear": VPLinear, "ve": VE, "flow": Linear,
         "discrete_zsnr": lambda: discrete_vp("scaled_linear", 100, zero_terminal_snr=True)}


def times_for(path, seed: int) -> torch.Tensor:
    """B times covering (0, t_max], including t_max itself."""
    if hasattr(path, "T"):
        t = torch.randint(1, path.T + 1, (B,), generator=gen(seed)).double()
    else:
        t = path.t_max * (1 - torch.rand(B, generator=gen(seed), dtype=torch.float64))
    t[0] = path.t_max
    return t


# ------------------------------------------------------------------ the general statement, every member
@pytest.mark.parametrize("path_name", list(PATHS))
@pytest.mark.parametrize("pred", PREDICTIONS)
@pytest.mark.parametrize("weighting", WEIGHTINGS)
def test_loss_is_w_times_eps_mse_and_w_snr_times_x0_mse(path_name, pred, weighting):
    """obj = w(λ)·||ε̂ - ε||² (finite λ) = w·SNR·||x̂_0 - x_0||² (everywhere, α = 0 included), ε̂ and
    x̂_0 read from the network output by the parameterisation."""
    path = PATHS[path_name]()
    param = make_parameterisation(pred)
    try:
        obj = make_objective(path, param, weighting=weighting, time_sampling="uniform" if weighting == "vlb" and
                             not hasattr(path, "T") else "auto")
    except PathError:  # ε cannot see x_0 where α = 0; the velocity is 0 on a zero-SNR chain's last interval
        assert terminal_snr_is_zero(path) and (pred == "eps" or (pred == "velocity" and hasattr(path, "T")))
        return
    x0, eps, out = draw(1)
    t = times_for(path, 2)
    got = obj(fixed_net(out), x0, t=t, eps=eps).total
    a, s = path.alpha(t)[:, None], path.sigma(t)[:, None]
    x_t = a * x0 + s * eps
    x0_hat = param.to_x0(out, x_t, path, t)
    w_x0 = x0_weight(weighting, path, t, param=param, times=obj.times, sigma_data=0.5)
    torch.testing.assert_close(got, w_x0 * mse(x0_hat, x0), rtol=1e-9, atol=1e-12)
    fin = torch.isfinite(path.log_snr(t)) & (path.alpha(t) > 0)
    eps_hat = (x_t - a * x0_hat) / s
    w = eps_weight(weighting, path, t, param=param, times=obj.times, sigma_data=0.5)
    torch.testing.assert_close(got[fin], (w * mse(eps_hat, eps))[fin], rtol=1e-8, atol=1e-12)
    assert bool(torch.isfinite(got).all())


def test_none_is_the_plain_mse_on_the_target_bit_for_bit():
    """'none' multiplies by nothing: the loss is exactly mean((out - target)²) in float32."""
    path = discrete_vp("cosine", 1000)
    x0, eps, out = (u.float() for u in draw(3))
    t = times_for(path, 4)
    a, s = path.alpha(t).float()[:, None], path.sigma(t).float()[:, None]
    targets = {"eps": eps, "x0": x0, "v": a * eps - s * x0}
    for pred, target in targets.items():
        got = make_objective(path, pred)(fixed_net(out), x0, t=t, eps=eps).total
        assert torch.equal(got, ((out - target) ** 2).mean(1)), pred


# ------------------------------------------------------------------ min-SNR-γ (Hang et al. 2023)
@pytest.mark.parametrize("path", [discrete_vp("linear", 1000), VPCosine(t_max=0.99)], ids=["discrete", "vp_cosine"])
@pytest.mark.parametrize("gamma", [1.0, 5.0])
def test_min_snr_matches_hang_et_al(path, gamma):
    """Hang et al. Eq. (8)-(10): min(SNR, γ)·||x̂_0 - x_0||²; on ε: min(SNR, γ)/SNR;
    on v: min(SNR, γ)/(SNR + 1)."""
    x0, eps, out = draw(5)
    t = times_for(path, 6)
    a, s = path.alpha(t)[:, None], path.sigma(t)[:, None]
    snr = (a**2 / s**2)[:, 0]
    w = torch.minimum(snr, torch.full_like(snr, gamma))
    loss = lambda pred: make_objective(path, pred, weighting="min_snr", min_snr_gamma=gamma)(  # noqa: E731
        fixed_net(out), x0, t=t, eps=eps).total
    torch.testing.assert_close(loss("x0"), w * mse(out, x0), rtol=1e-10, atol=0)
    torch.testing.assert_close(loss("eps"), w / snr * mse(out, eps), rtol=1e-10, atol=0)
    torch.testing.assert_close(loss("v"), w / (snr + 1) * mse(out, a * eps - s * x0), rtol=1e-10, atol=0)


# ------------------------------------------------------------------ EDM (Karras et al. 2022)
def karras_precond(sig: torch.Tensor, sd: float):
    """Table 1 (EDM column): c_skip, c_out, c_in, c_noise."""
    return sd**2 / (sig**2 + sd**2), sig * sd / (sig**2 + sd**2).sqrt(), 1 / (sig**2 + sd**2).sqrt(), sig.log() / 4


@pytest.mark.parametrize("sd", [0.5, 1.3])
def test_edm_weighting_is_karras_lambda_sigma_on_the_denoiser(sd):
    """Eq. (8): λ(σ)||D_θ(x + σn; σ) - x||², λ = (σ² + σ_d²)/(σ σ_d)², D = c_skip x + c_out F on the VE
    path; and the same loss in VE coordinates (y = x/α, σ̃ = σ/α) for an ε-network on a VP path."""
    path = VE(sigma_max=80.0)
    x0, eps, out = draw(7)
    obj = make_objective(path, make_parameterisation("edm", sigma_data=sd), weighting="edm")
    assert obj.times.kind == "log_normal" and obj.sigma_data == sd
    sig, _ = obj.times.sample(B, gen(8))
    c_skip, c_out, _, _ = (c[:, None] for c in karras_precond(sig, sd))
    x = x0 + sig[:, None] * eps
    D_out = c_skip * x + c_out * out
    lam = (sig**2 + sd**2) / (sig * sd) ** 2
    want = lam * mse(D_out, x0)
    torch.testing.assert_close(obj(fixed_net(out), x0, t=sig, eps=eps).total, want, rtol=1e-9, atol=0)
    # the EDM weighting makes F's own MSE unweighted (effective weight 1, Karras et al. §5)
    torch.testing.assert_close(want, mse(out, (x0 - c_skip * x) / c_out), rtol=1e-9, atol=0)
    # an ε-network on the discrete VP chain, scored in VE coordinates
    vp = discrete_vp("linear", 1000)
    t = times_for(vp, 9)
    a, s = vp.alpha(t)[:, None], vp.sigma(t)[:, None]
    x_t = a * x0 + s * eps
    ve_sig = (s / a)[:, 0]
    x0_hat = (x_t - s * out) / a
    lam = (ve_sig**2 + sd**2) / (ve_sig * sd) ** 2
    got = make_objective(vp, "eps", weighting="edm", sigma_data=sd)(fixed_net(out), x0, t=t, eps=eps).total
    torch.testing.assert_close(got, lam * mse(x0_hat, x0), rtol=1e-9, atol=0)


# ------------------------------------------------------------------ flow matching (Lipman et al. 2023)
@pytest.mark.parametrize("pred", ["velocity", "x0", "v", "edm"])
def test_flow_weighting_is_the_velocity_loss_on_the_linear_path(pred):
    """||û - (ε - x_0)||² with û = ε̂ - x̂_0 the velocity implied by the network
    (Liu et al. 2023 rectified flow)."""
    path = Linear()
    x0, eps, out = draw(10)
    t = times_for(path, 11)
    t[1] = 1e-3
    got = make_objective(path, pred, weighting="flow")(fixed_net(out), x0, t=t, eps=eps).total
    x_t = (1 - t[:, None]) * x0 + t[:, None] * eps
    if pred == "velocity":
        u_hat = out
    else:
        x0_hat = make_parameterisation(pred).to_x0(out, x_t, path, t)
        u_hat = (x_t - x0_hat) / t[:, None]  # ε̂ - x̂_0 with ε̂ = (x_t - (1 - t) x̂_0)/t
    torch.testing.assert_close(got, mse(u_hat, eps - x0), rtol=1e-9, atol=1e-12)


def test_flow_weighting_on_a_vp_path_is_the_general_velocity_loss():
    """u = α' x_0 + σ' ε on any path (Lipman et al. Eq. (15)); derivatives by central differences."""
    path = VPLinear()
    x0, eps, out = draw(12)
    t = times_for(path, 13).clamp(1e-3, 1 - 1e-3)
    h = 1e-6
    da = ((path.alpha(t + h) - path.alpha(t - h)) / (2 * h))[:, None]
    ds = ((path.sigma(t + h) - path.sigma(t - h)) / (2 * h))[:, None]
    a, s = path.alpha(t)[:, None], path.sigma(t)[:, None]
    x_t = a * x0 + s * eps
    x0_hat = (a * x_t - s * out) / (a**2 + s**2)  # a v-network
    eps_hat = (x_t - a * x0_hat) / s
    want = mse(da * x0_hat + ds * eps_hat, da * x0 + ds * eps)
    got = make_objective(path, "v", weighting="flow")(fixed_net(out), x0, t=t, eps=eps).total
    torch.testing.assert_close(got, want, rtol=1e-6, atol=0)


# ------------------------------------------------------------------ the variational bound (Ho et al. 2020)
def gauss_kl(m1, v1, m2, v2):
    """KL(N(m1, v1) || N(m2, v2)) per element, written out."""
    return 0.5 * (math.log(v2 / v1) + (v1 + (m1 - m2) ** 2) / v2 - 1)


@pytest.mark.parametrize("kind,T", [("linear", 1000), ("cosine", 50), ("scaled_linear", 10)])
@pytest.mark.parametrize("pred", ["eps", "x0", "v"])
def test_vlb_weight_is_the_gaussian_kl_of_the_ddpm_bound(kind, T, pred):
    """L_{t-1} = KL(q(x_{t-1}|x_t, x_0) || p(x_{t-1}|x_t)), p = N(μ̃(x_t, x̂_0), β̃_t), per dimension (Ho et al.
    Eqs. (5)-(7)); at t = 1 the decoder's -log N(x_0; μ_θ(x_1), β_1) minus its value at μ_θ = x_0."""
    path = discrete_vp(kind, T)
    betas = path.betas.tolist()
    x0, eps, out = draw(14)
    t = times_for(path, 15)
    t[1] = 1.0
    t[2] = 2.0
    got = make_objective(path, pred, weighting="vlb")(fixed_net(out), x0, t=t, eps=eps).total
    for i, ti in enumerate(t.long().tolist()):
        ab = math.prod(1 - b for b in betas[:ti])  # ᾱ_t by the product
        ab_s = math.prod(1 - b for b in betas[:ti - 1])
        beta = betas[ti - 1]
        x_t = math.sqrt(ab) * x0[i] + math.sqrt(1 - ab) * eps[i]
        if pred == "eps":
            x0_hat = (x_t - math.sqrt(1 - ab) * out[i]) / math.sqrt(ab)
        elif pred == "x0":
            x0_hat = out[i]
        else:
            x0_hat = math.sqrt(ab) * x_t - math.sqrt(1 - ab) * out[i]
        if ti == 1:
            mu = x0_hat  # μ̃ at t = 1 is x̂_0 (β̃_1 = 0)
            want = (0.5 * (x0[i] - mu) ** 2 / beta).mean()
        else:
            c0 = math.sqrt(ab_s) * beta / (1 - ab)
            ct = math.sqrt(1 - beta) * (1 - ab_s) / (1 - ab)
            var = (1 - ab_s) / (1 - ab) * beta
            want = gauss_kl(c0 * x0[i] + ct * x_t, var, c0 * x0_hat + ct * x_t, var).mean()
        torch.testing.assert_close(got[i], want, rtol=1e-7, atol=1e-12)


def test_vlb_weight_on_eps_matches_the_first_halfs_formula():
    """(SNR(t-1)/SNR(t) - 1)/2 = β_t²/(2 β̃_t α_t (1 - ᾱ_t)) (Ho et al. Eq. (12)'s coefficient),
    1/(2 α_1) at t = 1."""
    path = discrete_vp("cosine", 1000)
    t = torch.arange(1, 1001, dtype=torch.float64)
    w = eps_weight("vlb", path, t, times=make_objective(path, "eps").times)
    ab = torch.cumprod(1 - path.betas, 0)
    ab_s = torch.cat([torch.ones(1, dtype=torch.float64), ab[:-1]])
    beta = path.betas
    beta_tilde = (1 - ab_s) / (1 - ab) * beta
    want = beta**2 / (2 * beta_tilde.clamp_min(1e-300) * (1 - beta) * (1 - ab))
    want[0] = 1 / (2 * (1 - beta[0]))
    torch.testing.assert_close(w, want, rtol=1e-9, atol=0)


@pytest.mark.parametrize("time_sampling", ["uniform", "logit_normal", "log_normal"])
def test_continuous_vlb_is_vdm_eq_17_over_the_time_density(time_sampling):
    """VDM Eq. (17): L_∞ = -½ E_{t~U(0,1)} SNR'(t)||x_0 - x̂_0||²; drawing t ~ p, the per-sample loss is
    -½ SNR'(t)/p(t)·||x_0 - x̂_0||² with SNR' by central differences and p from the distribution's own formula."""
    path = VPLinear()
    obj = make_objective(path, "x0", weighting="vlb", time_sampling=time_sampling)
    x0, eps, out = draw(16)
    t, _ = obj.times.sample(B, gen(17))
    t = t.clamp(1e-3, 1 - 1e-3)
    h = 1e-7
    dsnr = (path.log_snr(t + h).exp() - path.log_snr(t - h).exp()) / (2 * h)
    if time_sampling == "uniform":
        p = torch.ones_like(t)
    elif time_sampling == "logit_normal":  # m = 0, s = 1
        p = torch.exp(-0.5 * torch.logit(t) ** 2) / (math.sqrt(2 * math.pi) * t * (1 - t))
    else:  # ln σ̃ ~ N(-1.2, 1.2²), σ̃ = e^{-λ/2}: p(t) = N(ln σ̃)·|d ln σ̃/dt|
        ls = -0.5 * path.log_snr(t)
        dls = -0.5 * (path.log_snr(t + h) - path.log_snr(t - h)) / (2 * h)
        p = torch.exp(-0.5 * ((ls + 1.2) / 1.2) ** 2) / (1.2 * math.sqrt(2 * math.pi)) * dls
    got = obj(fixed_net(out), x0, t=t, eps=eps).total
    torch.testing.assert_close(got, -0.5 * dsnr / p * mse(out, x0), rtol=1e-5, atol=0)


def test_continuous_vlb_estimates_the_same_bound_whatever_the_time_density():
    """E_{t~p}[loss] is the same integral for uniform and logit-normal t (importance sampling over time)."""
    path = VPCosine(t_max=0.95)
    e = lambda t: (1 + 0.3 * torch.cos(7 * t))  # a smooth stand-in for E||x_0 - x̂_0||²(t)  # noqa: E731
    ests, ses = [], []
    for kind in ("uniform", "logit_normal"):
        obj = make_objective(path, "x0", weighting="vlb", time_sampling=kind)
        t, _ = obj.times.sample(400_000, gen(18))
        inside = (t > 0.1) & (t < 0.9)  # the same window for both (the integrand grows like 1/t³ at 0)
        f = torch.where(inside, x0_weight("vlb", path, t, times=obj.times) * e(t), torch.zeros_like(t))
        ests.append(float(f.mean()))
        ses.append(float(f.std() / math.sqrt(f.numel())))
    grid = torch.linspace(0.1, 0.9, 200_001, dtype=torch.float64)
    f = x0_weight("vlb", path, grid, times=make_objective(path, "x0", weighting="vlb").times) * e(grid) / 0.95
    exact = float(torch.trapezoid(f, grid))
    for est, se in zip(ests, ses):
        assert abs(est - exact) < 4 * se and se < 0.01 * exact, (ests, ses, exact)


# ------------------------------------------------------------------ sigmoid (Kingma & Gao 2023 §5)
@pytest.mark.parametrize("bias", [0.0, -3.0])
def test_sigmoid_weighting(bias):
    path = VPCosine(t_max=0.99)
    x0, eps, out = draw(19)
    t = times_for(path, 20)
    lam = path.log_snr(t)
    got = make_objective(path, "eps", weighting="sigmoid", sigmoid_bias=bias)(fixed_net(out), x0, t=t, eps=eps)
    torch.testing.assert_close(got.total, torch.sigmoid(bias - lam) * mse(out, eps), rtol=1e-10, atol=0)


# ------------------------------------------------------------------ the parameterisation's slope
@pytest.mark.parametrize("pred", PREDICTIONS)
def test_x0_factor_times_snr_is_eps_factor(pred):
    param = make_parameterisation(pred)
    for path in (discrete_vp("linear", 1000), VPLinear(), VE(), Linear()):
        t = times_for(path, 21).clamp_max(path.t_max * 0.999)
        torch.testing.assert_close(x0_factor(param, path, t) * path.log_snr(t).exp(), param.eps_factor(path, t),
                                   rtol=1e-9, atol=0)


def test_bad_weighting_and_gamma_are_refused():
    path = discrete_vp("linear", 100)
    with pytest.raises(ValueError, match="unknown weighting 'min-snr'"):
        make_objective(path, "eps", weighting="min-snr")
    with pytest.raises(ValueError, match="gamma"):
        make_objective(path, "eps", weighting="min_snr", min_snr_gamma=0.0)
    with pytest.raises(ValueError, match="sigma_data"):
        make_objective(path, "eps", weighting="edm", sigma_data=float("nan"))
