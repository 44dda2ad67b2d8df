"""Constrained sampling through the step hook: every fixed-step sampler's output lies in C to float precision
(1e-6 in float32, 1e-12 in float64) for a box, fixed values and A x = b; the affine hook leaves the free directions
alone and gives the constrained ones exactly their forward-noised law; the box hook projects the denoised part and
keeps the noise part; the x̂_0 wrapper puts every x̂_0 in C; sample i depends only on (seed, i)."""

from __future__ import annotations

import pytest
import torch

from kuosan.constraints import Batch, ProjectStep, constrained, make_constraint
from kuosan.exact import ExactDenoiser, curve_cov, gaussian
from kuosan.paths import coefficients, discrete_vp, make_path
from kuosan.sampling import SAMPLERS, NoiseSource, make_grid

F64 = torch.float64
D_ = 6
MIX = gaussian(torch.zeros(D_), curve_cov(D_, scale=0.5, length=2.0, jitter=1e-2))
A = torch.randn(2, D_, generator=torch.Generator().manual_seed(0), dtype=F64)
CONSTRAINTS = {
    "box": dict(box=(-0.3, 0.4)),
    "fixed": dict(mask=torch.tensor([1.0, 0, 0, 1, 0, 0]), known=torch.tensor([0.5, 0, 0, -0.2, 0, 0])),
    "linear": dict(A=A, b=torch.tensor([0.3, -1.0], dtype=F64)),
}
FIXED_STEP = [name for name in SAMPLERS if name not in ("ode", "consistency")]  # ode: adaptive, no steps to hook


def run(D, plan, sampler: str, n: int, ts, dtype, first: int = 0, seed: int = 0):
    noise = NoiseSource(seed, first, n)
    x = D.path.prior_std * noise(torch.empty(n, D_, dtype=dtype))
    spec = SAMPLERS[sampler]
    out = spec.fn(plan.denoiser, x, ts, noise=noise, cond=plan.cond(n, first), callback=plan.callback)
    return out, plan.finish(out, torch.arange(first, first + n))


@pytest.mark.parametrize("sampler", FIXED_STEP)
@pytest.mark.parametrize("kind", list(CONSTRAINTS))
def test_every_sampler_ends_in_the_set_to_float_precision(sampler, kind):
    path = make_path("vp_cosine") if SAMPLERS[sampler].supports(make_path("vp_cosine")) is None else \
        discrete_vp("linear", 1000)
    D = ExactDenoiser(MIX, path)
    C = make_constraint((D_,), **CONSTRAINTS[kind])
    ts = make_grid(path, 8, "uniform")
    for dtype, tol in ((torch.float32, 1e-6), (F64, 1e-12)):
        raw, out = run(D, constrained(D, C, ts, seed=3), sampler, 16, ts, dtype)
        assert out.dtype == dtype and float(out.abs().max()) < 10  # sane samples, not only finite ones
        assert float(C.violation(out).max()) <= tol, (dtype, float(C.violation(out).max()))
        assert float(C.violation(raw).max()) <= tol  # the hook's last step (into t = 0) is Π_C itself


def test_affine_hook_keeps_free_directions_and_forward_noises_the_constrained_ones():
    """After the hook at s: (I - A⁺A)(x' - x) = 0 and A x' - α_s b = σ_s A z with z ~ N(0, I) fresh per sample:
    its mean is 0 and its covariance σ_s² A Aᵀ (Monte Carlo, 20000 rows)."""
    path = make_path("vp_cosine")
    C = make_constraint((D_,), **CONSTRAINTS["linear"])
    ts = make_grid(path, 4, "uniform")
    batch = Batch(seed=1)
    hook = ProjectStep(C, ts, path, batch)
    n = 20000
    x = torch.randn(n, D_, generator=torch.Generator().manual_seed(2), dtype=F64) * 3
    batch.begin(x)
    i = 1
    a, s, _ = coefficients(path, float(ts[i + 1]))
    out = hook(i, x, torch.zeros_like(x))
    N = torch.eye(D_, dtype=F64) - torch.linalg.pinv(A) @ A  # projector onto the null space of A
    assert float(((out - x) @ N).abs().max()) < 1e-12
    r = (out @ A.T - a * C.affine.b) / s  # = A z
    assert float(r.mean(0).abs().max()) < 4 * float((A @ A.T).diag().sqrt().max()) / n**0.5
    torch.testing.assert_close(torch.cov(r.T), A @ A.T, rtol=0.05, atol=0.05)


def test_box_hook_projects_the_denoised_part_and_keeps_the_noise():
    path = make_path("flow")
    C = make_constraint((D_,), box=(-0.2, 0.2))
    ts = make_grid(path, 5, "uniform")
    hook = ProjectStep(C, ts, path, Batch())
    g = torch.Generator().manual_seed(3)
    x, x0 = torch.randn(7, D_, generator=g, dtype=F64), torch.randn(7, D_, generator=g, dtype=F64)
    a = coefficients(path, float(ts[2]))[0]
    torch.testing.assert_close(hook(1, x, x0), x + a * (x0.clamp(-0.2, 0.2) - x0), rtol=0, atol=0)
    torch.testing.assert_close(hook(4, x, x0), x.clamp(-0.2, 0.2), rtol=0, atol=0)  # into t = 0: Π_C itself


def test_projected_x0_wrapper_puts_every_estimate_in_the_set():
    path = discrete_vp("cosine", 1000)
    D = ExactDenoiser(MIX, path)
    C = make_constraint((D_,), **CONSTRAINTS["linear"])
    ts = make_grid(path, 6, "uniform")
    plan = constrained(D, C, ts, project_x0=True)
    seen = []
    hook = plan.callback
    plan.callback = lambda i, x, x0: (seen.append(x0), hook(i, x, x0))[1]
    run(D, plan, "dpm++2m", 8, ts, F64)
    assert len(seen) == 6 and max(float(C.violation(x0).max()) for x0 in seen) < 1e-12


@pytest.mark.parametrize("sampler", ["ddim", "sde", "pc"])
def test_sample_i_depends_only_on_seed_and_index(sampler):
    """One batch of 6 against batches of 2 and 4 (rows 0-1, 2-5): bitwise equal, fresh hook noise included."""
    path = discrete_vp("linear", 1000)
    D = ExactDenoiser(MIX, path)
    C = make_constraint((D_,), **CONSTRAINTS["linear"])
    ts = make_grid(path, 5, "uniform")
    plan = constrained(D, C, ts, seed=7)
    whole = run(D, plan, sampler, 6, ts, torch.float32, seed=5)[1]
    parts = torch.cat([run(D, plan, sampler, 2, ts, torch.float32, 0, seed=5)[1],
                       run(D, plan, sampler, 4, ts, torch.float32, 2, seed=5)[1]])
    assert torch.equal(whole, parts)
    other = run(D, constrained(D, C, ts, seed=8), sampler, 6, ts, torch.float32, seed=5)[1]
    assert not torch.equal(whole, other)  # the hook's streams follow its seed


def test_through_sample_any_batch_size_gives_the_same_samples():
    """kuosan.sampling.sample slices cond["row"] per batch and passes the hook: batch sizes 6 and 4 agree bitwise."""
    from kuosan.sampling import sample

    path = make_path("flow")
    D = ExactDenoiser(MIX, path)
    ts = make_grid(path, 5, "uniform")
    C = make_constraint((D_,), **CONSTRAINTS["fixed"])
    plan = constrained(D, C, ts, seed=2)
    outs = [plan.finish(sample(plan.denoiser, "ddim", (6, D_), 5, seed=1, batch_size=bs, ts=ts, eta=1.0,
                               cond=plan.cond(6), callback=plan.callback)) for bs in (6, 4)]
    assert torch.equal(outs[0], outs[1]) and float(C.violation(outs[0]).max()) <= 1e-6
