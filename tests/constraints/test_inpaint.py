"""Inpainting methods against their papers: replacement and RePaint equal literal transcriptions of Lugmayr et al.
2022 Alg. 1 (in Ho et al.'s ᾱ, β notation, on the discrete chain) given the same noise; the jump back keeps the
forward marginals on every path kind; the DPS wrapper equals its closed form for Gaussian data (x̂_0 is linear in
x_t); scale 0 is the unguided sampler bit for bit; sample i depends only on (seed, i); bad options are refused."""

from __future__ import annotations

import math

import pytest
import torch

from kuosan.constraints import inpainting, jump_back
from kuosan.constraints.batch import stream_seed
from kuosan.exact import ExactDenoiser, curve_cov, gaussian
from kuosan.paths import coefficients, discrete_vp, make_path
from kuosan.sampling import NoiseSource, ddim, ddpm, make_grid

F64 = torch.float64
D_ = 6
COV = curve_cov(D_, scale=0.5, length=2.0, jitter=1e-2)
MU = torch.linspace(-0.3, 0.3, D_, dtype=F64)
MIX = gaussian(MU, COV)
MASK = torch.tensor([1.0, 1.0, 0, 0, 1.0, 0])
KNOWN = torch.tensor([0.4, 0.6, 0, 0, -0.5, 0])


def literal_repaint(path, x_T, y, m, U, noise, hook_noise):
    """Lugmayr et al. 2022 Alg. 1 with jump length 1 on the full chain t = T..1 (U = 1: replacement), reading the
    sampler's stream for the first pass of each step and the hook's stream for the rest, in the order kuosan uses."""
    T = path.T
    abar = [float(path.alpha(float(t)) ** 2) for t in range(T + 1)]  # ᾱ_0 = 1
    D = ExactDenoiser(MIX, path)
    x_t = x_T
    for t in range(T, 0, -1):
        beta = 1 - abar[t] / abar[t - 1]
        for u in range(1, U + 1):
            x0 = D(x_t, torch.full((x_t.shape[0],), float(t), dtype=F64))
            mean = (math.sqrt(abar[t - 1]) * beta * x0 + math.sqrt(1 - beta) * (1 - abar[t - 1]) * x_t) / (1 - abar[t])
            if t > 1:
                z = noise(x_t) if u == 1 else hook_noise(x_t)
                unknown = mean + math.sqrt((1 - abar[t - 1]) / (1 - abar[t]) * beta) * z
                known = math.sqrt(abar[t - 1]) * y + math.sqrt(1 - abar[t - 1]) * hook_noise(x_t)
            else:
                unknown, known = mean, y
            x_prev = m * known + (1 - m) * unknown
            if u < U and t > 1:  # jump back: x_t ~ N(√(1 - β_t) x_{t-1}, β_t I)
                x_t = math.sqrt(1 - beta) * x_prev + math.sqrt(beta) * hook_noise(x_prev)
        x_t = x_prev
    return x_t


@pytest.mark.parametrize("method, U", [("replace", 1), ("repaint", 1), ("repaint", 3)])
def test_replacement_and_repaint_equal_lugmayr_algorithm_1(method, U):
    path = discrete_vp("linear", 20)
    ts = make_grid(path, 20, "uniform")
    n, seed, hook_seed = 5, 2, 9
    kw = {"resample": U} if method == "repaint" else {}
    plan = inpainting(ExactDenoiser(MIX, path), ts, (D_,), MASK, KNOWN, method, seed=hook_seed, **kw)
    noise = NoiseSource(seed, 0, n)
    x_T = noise(torch.empty(n, D_, dtype=F64))
    ours = plan.finish(ddpm(plan.denoiser, x_T, ts, noise=noise, cond=plan.cond(n), callback=plan.callback))
    noise2 = NoiseSource(seed, 0, n)
    x_T2 = noise2(torch.empty(n, D_, dtype=F64))
    ref = literal_repaint(path, x_T2, KNOWN.to(F64), MASK.to(F64), U, noise2, NoiseSource(stream_seed(hook_seed), 0, n))
    torch.testing.assert_close(ours, ref, rtol=0, atol=1e-12)


@pytest.mark.parametrize("path", [discrete_vp("cosine", 1000), make_path("vp_cosine"), make_path("ve"),
                                  make_path("flow")], ids=lambda p: p.kind)
def test_jump_back_keeps_the_forward_marginals(path):
    """x_s ~ N(α_s μ, α_s² Σ + σ_s² I) -> x_t ~ N(α_t μ, α_t² Σ + σ_t² I): the jump is linear, so compare
    moments exactly by pushing x_s = 0 and unit vectors through it (z = 0 and z = unit vectors)."""
    eye = torch.eye(D_, dtype=F64)
    for s, t in ((0.2, 0.5), (0.05, 0.06), (0.5, 1.0)):
        s, t = s * path.t_max, t * path.t_max
        (a_s, g_s, _), (a_t, g_t, _) = coefficients(path, s), coefficients(path, t)
        gain = jump_back(path, eye, s, t, torch.zeros_like(eye))  # rows: the linear map of x_s (symmetric: a·I)
        noise = jump_back(path, torch.zeros_like(eye), s, t, eye)  # rows: the map of z
        cov_t = gain @ (a_s**2 * COV + g_s**2 * eye) @ gain.T + noise @ noise.T
        torch.testing.assert_close(cov_t, a_t**2 * COV + g_t**2 * eye, rtol=1e-10, atol=1e-10)
        torch.testing.assert_close(gain @ (a_s * MU), a_t * MU, rtol=1e-12, atol=1e-12)


def test_dps_wrapper_equals_its_closed_form_on_gaussian_data():
    """x̂_0 = μ + J (x_t - α μ), J = α Σ (α² Σ + σ² I)⁻¹,
    so x̂_0 - ζ ∇‖m(y - x̂_0)‖² = x̂_0 + 2ζ Jᵀ m (y - x̂_0)."""
    path = make_path("vp_cosine")
    D = ExactDenoiser(MIX, path)
    ts = make_grid(path, 4, "uniform")
    zeta = 0.7
    plan = inpainting(D, ts, (D_,), MASK, KNOWN, "dps", scale=zeta)
    x = torch.randn(9, D_, generator=torch.Generator().manual_seed(0), dtype=F64)
    for t in (0.1, 0.5, 0.9):
        a, s, _ = coefficients(path, t)
        J = a * COV @ torch.linalg.inv(a**2 * COV + s**2 * torch.eye(D_, dtype=F64))
        x0 = MU + (x - a * MU) @ J.T
        want = x0 + 2 * zeta * (MASK * (KNOWN - x0)) @ J  # (Jᵀ r) row-wise = r J
        got = plan.denoiser(x, torch.full((9,), t, dtype=F64), **plan.cond(9))
        torch.testing.assert_close(got, want, rtol=0, atol=1e-12)


def test_dps_scale_zero_is_the_unguided_sampler_bit_for_bit():
    path = make_path("flow")
    D = ExactDenoiser(MIX, path)
    ts = make_grid(path, 6, "uniform")
    plan = inpainting(D, ts, (D_,), MASK, KNOWN, "dps", scale=0.0)
    x = torch.randn(4, D_, generator=torch.Generator().manual_seed(1))
    assert plan.callback is None
    assert torch.equal(ddim(plan.denoiser, x, ts, cond=plan.cond(4)), ddim(D, x, ts))


def test_repaint_sample_i_depends_only_on_seed_and_index():
    path = make_path("vp_cosine")
    D = ExactDenoiser(MIX, path)
    ts = make_grid(path, 5, "uniform")
    plan = inpainting(D, ts, (D_,), MASK, KNOWN, "repaint", resample=3, seed=4)

    def draw(first, n):
        noise = NoiseSource(0, first, n)
        x = noise(torch.empty(n, D_))
        out = ddim(plan.denoiser, x, ts, eta=1.0, noise=noise, cond=plan.cond(n, first), callback=plan.callback)
        return plan.finish(out, torch.arange(first, first + n))

    assert torch.equal(draw(0, 5), torch.cat([draw(0, 1), draw(1, 4)]))


@pytest.mark.parametrize("kw, match", [
    (dict(method="blend"), "unknown inpainting method"),
    (dict(method="replace", resample=3), "only to inpainting method 'repaint'"),
    (dict(method="repaint", scale=1.0), "only to inpainting method 'dps'"),
    (dict(method="dps", scale=-1.0), ">= 0"),
    (dict(method="repaint", resample=0), "integer >= 1"),
])
def test_bad_inpainting_options_are_refused(kw, match):
    path = make_path("flow")
    method = kw.pop("method")
    with pytest.raises(ValueError, match=match):
        inpainting(ExactDenoiser(MIX, path), make_grid(path, 3, "uniform"), (D_,), MASK, KNOWN, method, **kw)
