"""Parameterisations on every path: network output -> x̂_0 -> target round trips, eps_factor k against autograd,
EDM's preconditioning against Karras et al. 2022 Table 1, and ε-prediction refusing zero terminal SNR."""

from __future__ import annotations

import math

import pytest
import torch

from kuosan.parameterisation import (EDM, PREDICTIONS, Eps, V, Velocity, eps_from_x0, make_parameterisation,
                                     x0_from_eps)
from kuosan.paths import (PATH_KINDS, VE, Linear, PathError, VPCosine, VPLinear, discrete_vp, make_path,
                          terminal_snr_is_zero)

F64 = torch.float64
B, D = 9, 4

PATHS = {kind: make_path(kind) for kind in PATH_KINDS}
PATHS["discrete_zsnr"] = discrete_vp("linear", 1000, zero_terminal_snr=True)
PATHS["vp_cosine_099"] = VPCosine(t_max=0.99)


def gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def times(path) -> torch.Tensor:
    """B times from near 0 to t_max inclusive."""
    u = torch.tensor([1e-3, 0.01, 0.05, 0.2, 0.4, 0.6, 0.8, 0.97, 1.0], dtype=F64)
    t = u * path.t_max
    return t.round() if hasattr(path, "T") else t


def refused(pred: str, path) -> bool:
    return (pred == "eps" and terminal_snr_is_zero(path)) or (pred == "velocity" and
                                                               getattr(path, "zero_terminal_snr", False))


@pytest.mark.parametrize("path_name", list(PATHS))
@pytest.mark.parametrize("pred", PREDICTIONS)
def test_round_trips_out_to_x0_to_target(path_name, pred):
    """target(x_0, ε) -> to_x0 gives x_0 back, and a random output -> x̂_0 (with ε̂ = (x_t - α x̂_0)/σ) -> target
    gives the output back, at every t up to t_max (α = 0 included)."""
    path, param = PATHS[path_name], make_parameterisation(pred)
    if refused(pred, path):
        with pytest.raises(PathError):
            param.check_path(path)
        return
    param.check_path(path)
    g = gen(1)
    x0, eps, out = (torch.randn(B, D, generator=g, dtype=F64) for _ in range(3))
    t = times(path)
    a, s = path.alpha(t)[:, None], path.sigma(t)[:, None]
    x_t = a * x0 + s * eps
    torch.testing.assert_close(param.to_x0(param.target(x0, eps, path, t), x_t, path, t), x0, rtol=1e-9, atol=1e-9)
    x0_hat = param.to_x0(out, x_t, path, t)
    eps_hat = (x_t - a * x0_hat) / s
    torch.testing.assert_close(param.target(x0_hat, eps_hat, path, t), out, rtol=1e-8, atol=1e-8)
    assert bool(torch.isfinite(x0_hat).all())


@pytest.mark.parametrize("path_name", list(PATHS))
@pytest.mark.parametrize("pred", PREDICTIONS)
def test_eps_factor_is_the_squared_jacobian_of_eps_hat(path_name, pred):
    """ε̂(out) = (x_t - α x̂_0(out))/σ is affine in out with Jacobian c·I: k = c² (autograd), and
    ||ε̂ - ε||² = k·||out - target||² on random outputs."""
    path, param = PATHS[path_name], make_parameterisation(pred)
    if refused(pred, path):
        return
    t = times(path)
    t = t[path.alpha(t) > 0]  # ε̂ - ε is finite where α > 0 (k = 0 at α = 0 is the limit)
    g = gen(2)
    x0, eps, out = (torch.randn(len(t), D, generator=g, dtype=F64) for _ in range(3))
    a, s = path.alpha(t)[:, None], path.sigma(t)[:, None]
    x_t = a * x0 + s * eps
    for i in range(len(t)):
        ti = t[i:i + 1]
        J = torch.autograd.functional.jacobian(
            lambda o: (x_t[i:i + 1] - a[i:i + 1] * param.to_x0(o, x_t[i:i + 1], path, ti)) / s[i:i + 1], out[i:i + 1])
        J = J.reshape(D, D)
        c = J[0, 0]
        torch.testing.assert_close(J, c * torch.eye(D, dtype=F64), rtol=1e-10, atol=1e-12)
        torch.testing.assert_close(param.eps_factor(path, ti)[0], c**2, rtol=1e-9, atol=1e-300)
    x0_hat = param.to_x0(out, x_t, path, t)
    eps_hat = (x_t - a * x0_hat) / s
    lhs = ((eps_hat - eps) ** 2).sum(1)
    rhs = param.eps_factor(path, t) * ((out - param.target(x0, eps, path, t)) ** 2).sum(1)
    torch.testing.assert_close(lhs, rhs, rtol=1e-8, atol=1e-12)


def test_the_first_halfs_conversions_round_trip():
    """ε, x_0 and v (= α ε - σ x_0, Salimans & Ho 2022) on the cosine chain, t = 1..1000."""
    path = discrete_vp("cosine", 1000)
    g = gen(3)
    x0, eps = torch.randn(6, 4, generator=g, dtype=F64), torch.randn(6, 4, generator=g, dtype=F64)
    t = torch.tensor([1.0, 10, 100, 500, 900, 1000], dtype=F64)
    a, s = path.alpha(t)[:, None], path.sigma(t)[:, None]
    xt = a * x0 + s * eps
    torch.testing.assert_close(x0_from_eps(xt, eps, a, s), x0, rtol=1e-7, atol=1e-7)
    torch.testing.assert_close(eps_from_x0(xt, x0, a, s), eps, rtol=1e-7, atol=1e-7)
    torch.testing.assert_close(V().target(x0, eps, path, t), a * eps - s * x0)
    torch.testing.assert_close(V().to_x0(a * eps - s * x0, xt, path, t), x0)
    # on VP α² + σ² = 1, so x̂_0 = α x_t - σ v̂ (the first half's formula)
    out = torch.randn(6, 4, generator=g, dtype=F64)
    torch.testing.assert_close(V().to_x0(out, xt, path, t), a * xt - s * out)
    assert make_parameterisation("x0").to_x0(out, xt, path, t) is out
    with pytest.raises(ValueError, match="unknown prediction 'score'"):
        make_parameterisation("score")


def test_velocity_on_the_linear_path_is_eps_minus_x0():
    """Lipman et al. 2023 / Liu et al. 2023: x_t = (1 - t) x_0 + t ε, u = ε - x_0, x̂_0 = x_t - t û."""
    path, vel = Linear(), Velocity()
    g = gen(4)
    x0, eps, u = (torch.randn(5, 3, generator=g, dtype=F64) for _ in range(3))
    t = torch.tensor([0.0, 0.1, 0.5, 0.9, 1.0], dtype=F64)
    x_t = (1 - t[:, None]) * x0 + t[:, None] * eps
    assert torch.equal(vel.target(x0, eps, path, t), eps - x0)
    torch.testing.assert_close(vel.to_x0(u, x_t, path, t), x_t - t[:, None] * u)
    torch.testing.assert_close(vel.eps_factor(path, t), (1 - t) ** 2)


def test_velocity_refuses_a_zero_terminal_snr_chain():
    with pytest.raises(PathError, match="velocity prediction is undefined on a zero-terminal-SNR chain"):
        Velocity().check_path(discrete_vp("linear", 100, zero_terminal_snr=True))
    Velocity().check_path(discrete_vp("linear", 100))


def karras_table_1(sig: torch.Tensor, sd: float):
    """EDM preconditioning (Table 1): c_skip, c_out, c_in, c_noise = ¼ ln σ."""
    n = torch.sqrt(sig**2 + sd**2)
    return sd**2 / n**2, sig * sd / n, 1 / n, sig.log() / 4


@pytest.mark.parametrize("sd", [0.5, 1.0])
def test_edm_preconditioning_is_karras_table_1_on_the_ve_path(sd):
    path, edm = VE(sigma_max=80.0), EDM(sigma_data=sd)
    sig = torch.tensor([0.002, 0.1, 0.5, 1.0, 7.0, 80.0], dtype=F64)
    c_skip, c_out, c_in, c_noise = karras_table_1(sig, sd)
    torch.testing.assert_close(edm.c_in(path, sig), c_in, rtol=1e-12, atol=0)
    torch.testing.assert_close(edm.c_noise(path, sig), 1000 * c_noise, rtol=1e-12, atol=1e-12)  # kuosan's ×1000 scale
    g = gen(5)
    x, F = torch.randn(6, 3, generator=g, dtype=F64), torch.randn(6, 3, generator=g, dtype=F64)
    torch.testing.assert_close(edm.to_x0(F, x, path, sig), c_skip[:, None] * x + c_out[:, None] * F, rtol=1e-12, atol=0)
    x0, n = torch.randn(6, 3, generator=g, dtype=F64), torch.randn(6, 3, generator=g, dtype=F64)
    xs = x0 + sig[:, None] * n
    # Eq. (8)'s effective target (x_0 - c_skip(σ)(x_0 + σ n))/c_out(σ)
    torch.testing.assert_close(edm.target(x0, n, path, sig), (x0 - c_skip[:, None] * xs) / c_out[:, None],
                               rtol=1e-10, atol=1e-12)
    torch.testing.assert_close(edm.eps_factor(path, sig), sd**2 / (sig**2 + sd**2), rtol=1e-12, atol=0)


@pytest.mark.parametrize("path", [discrete_vp("cosine", 1000), VPLinear(), Linear()], ids=["discrete", "vp_linear",
                                                                                          "flow"])
def test_edm_on_another_path_is_table_1_in_ve_coordinates(path):
    """D(x_t) = c_skip(σ̃) y + c_out(σ̃) F(c_in(σ̃) y) with y = x_t/α, σ̃ = σ/α
    (Karras et al. §4, Eq. (7))."""
    edm = EDM(sigma_data=0.5)
    t = times(path)[:-1]  # α > 0
    a, s = path.alpha(t), path.sigma(t)
    sig = s / a
    c_skip, c_out, c_in, c_noise = karras_table_1(sig, 0.5)
    g = gen(6)
    x_t, F = torch.randn(len(t), 3, generator=g, dtype=F64), torch.randn(len(t), 3, generator=g, dtype=F64)
    y = x_t / a[:, None]
    torch.testing.assert_close(edm.c_in(path, t) * a, c_in, rtol=1e-10, atol=0)  # c_in on x_t = c_in(σ̃)/α
    torch.testing.assert_close(edm.c_noise(path, t), 1000 * c_noise, rtol=1e-9, atol=1e-9)
    torch.testing.assert_close(edm.to_x0(F, x_t, path, t), c_skip[:, None] * y + c_out[:, None] * F, rtol=1e-9,
                               atol=1e-12)


def test_eps_refuses_zero_terminal_snr_paths():
    """Lin et al. 2024: at α(t_max) = 0, x̂_0 = (x_t - σ ε̂)/α is undefined."""
    for path in (Linear(), VPCosine(), discrete_vp("scaled_linear", 1000, zero_terminal_snr=True)):
        with pytest.raises(PathError, match="ε-prediction cannot recover x_0"):
            Eps().check_path(path)
        for other in ("x0", "v", "edm"):
            make_parameterisation(other).check_path(path)
    for path in (VPCosine(t_max=0.99), discrete_vp("linear", 1000), VE(), VPLinear()):
        Eps().check_path(path)
    with pytest.raises(PathError, match="sigma_data"):
        EDM(sigma_data=0.0).check_path(VE())


@pytest.mark.parametrize("pred", ["eps", "x0", "v", "velocity"])
def test_plain_kinds_give_the_network_the_paths_time_and_unscaled_input(pred):
    param = make_parameterisation(pred)
    for path in (discrete_vp("linear", 20), VE(), VPLinear()):
        t = times(path)[1:-1]
        assert torch.equal(param.c_in(path, t), torch.ones_like(t))
        assert torch.equal(param.c_noise(path, t), path.net_time(t))
    assert math.isclose(float(make_path("ve").net_time(torch.tensor(math.e, dtype=F64))), 250.0)


# ------------------------------------------------------------------ the consistency parameterisation
def test_consistency_boundary_condition_holds_exactly():
    """f(x, σ_min) = c_skip x + c_out F = x for any network output F (c_skip = 1, c_out = 0 exactly), in float32 and
    float64 (Song et al. 2023 App. C)."""
    from kuosan.parameterisation import Consistency

    path = VE()
    for sd, smin in ((0.5, 0.002), (1.3, 0.01)):
        p = Consistency(sigma_data=sd, sigma_min=smin)
        t = torch.full((B,), smin, dtype=F64)
        for dtype in (torch.float32, F64):
            g = gen(3)
            x, F = torch.randn(B, D, generator=g, dtype=dtype), 1e6 * torch.randn(B, D, generator=g, dtype=dtype)
            assert torch.equal(p.to_x0(F, x, path, t), x)


def test_consistency_coefficients_are_song_et_al_2023():
    """c_skip = σ_d²/((σ - σ_min)² + σ_d²), c_out = σ_d (σ - σ_min)/√(σ_d² + σ²),
    c_in = 1/√(σ² + σ_d²), c_noise = 1000·¼ ln σ (EDM's), written out independently;
    σ_min = 0 gives EDM's preconditioning."""
    from kuosan.parameterisation import Consistency

    path, sd, smin = VE(), 0.7, 0.002
    p = Consistency(sigma_data=sd, sigma_min=smin)
    s = torch.tensor([0.002, 0.003, 0.05, 0.5, 1.0, 7.0, 80.0], dtype=F64)
    g = gen(4)
    x, F = torch.randn(len(s), 3, generator=g, dtype=F64), torch.randn(len(s), 3, generator=g, dtype=F64)
    skip = sd**2 / ((s - smin) ** 2 + sd**2)
    out = sd * (s - smin) / (sd**2 + s**2).sqrt()
    torch.testing.assert_close(p.to_x0(F, x, path, s), skip[:, None] * x + out[:, None] * F, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(p.c_in(path, s), 1 / (s**2 + sd**2).sqrt(), rtol=1e-12, atol=0)
    torch.testing.assert_close(p.c_noise(path, s), 250 * s.log(), rtol=1e-12, atol=1e-12)
    edm, zero = EDM(sigma_data=sd), Consistency(sigma_data=sd, sigma_min=1e-300)
    torch.testing.assert_close(zero.to_x0(F, x, path, s), edm.to_x0(F, x, path, s), rtol=1e-12, atol=1e-12)


def test_consistency_has_no_regression_target_and_lives_on_ve():
    """target and k(t) refuse with a clear one-line reason (also when the diffusion loss tries them); a path other
    than ve is refused."""
    from kuosan.objectives import make_objective
    from kuosan.parameterisation import ALL_PREDICTIONS, Consistency, NoRegressionTarget

    assert "consistency" in ALL_PREDICTIONS and "consistency" not in PREDICTIONS
    p = make_parameterisation("consistency", sigma_data=0.5, sigma_min=0.002)
    assert isinstance(p, Consistency) and p.name == "consistency"
    path, t = VE(), torch.full((B,), 1.0, dtype=F64)
    x = torch.randn(B, D, generator=gen(5), dtype=F64)
    with pytest.raises(NoRegressionTarget, match="no regression target"):
        p.target(x, x, path, t)
    with pytest.raises(NoRegressionTarget, match="k\\(t\\)"):
        p.eps_factor(path, t)
    obj = make_objective(path, p)
    with pytest.raises(NoRegressionTarget, match="consistency objective"):
        obj(lambda x_t, t: x_t, x)
    for kind in ("discrete_vp", "vp_cosine", "flow"):
        with pytest.raises(PathError, match="ve path"):
            p.check_path(make_path(kind))
    with pytest.raises(PathError, match="sigma_min"):
        Consistency(sigma_min=80.0).check_path(VE())
    with pytest.raises(PathError, match="sigma_data"):
        Consistency(sigma_data=float("nan")).check_path(VE())
