"""Consistency distillation's teacher: the VE view of any path's denoiser, one sampler step as the exact ODE step
(against kuosan.exact.pf_ode_solve), per-sample levels grouped, and the teacher checks on trained runs."""

from __future__ import annotations

import math

import pytest
import torch

from kuosan.config import Config, apply_overrides
from kuosan.denoiser import Counting
from kuosan.exact import ExactDenoiser, pf_ode_solve, ring
from kuosan.families.distill import (check_teacher, init_from_teacher, init_reason, largest_ve_sigma, load_teacher,
                                     on_ve_path, teacher_step, usable_sampler)
from kuosan.paths import VE, Linear, VPCosine, VPLinear, discrete_vp
from kuosan.sampling import SAMPLERS, ddim

MIX = ring(k=4, radius=1.0, std=0.3)
PATHS = [VPLinear(), VPCosine(), Linear(), discrete_vp("cosine", 1000)]


def _levels(n: int, value: float) -> torch.Tensor:
    return torch.full((n,), value, dtype=torch.float64)


def _noisy(n: int, sigma: float, seed: int = 0) -> torch.Tensor:
    """VE states y = x_0 + σ̃ ε of the mixture (n, 2), float64."""
    g = torch.Generator().manual_seed(seed)
    return MIX.sample(n, g) + sigma * torch.randn(n, 2, dtype=torch.float64, generator=g)


def _exact(y: torch.Tensor, s_from: float, s_to: float) -> torch.Tensor:
    """The exact PF-ODE solution in the VE frame (pf_ode_solve works on the VP state y/√(1 + σ̃²))."""
    return pf_ode_solve(MIX, y / math.sqrt(1 + s_from**2), s_from, s_to) * math.sqrt(1 + s_to**2)


def test_largest_ve_sigma():
    assert largest_ve_sigma(VE(sigma_max=30.0)) == pytest.approx(30.0, rel=1e-12)
    # vp_linear: log ᾱ(1) = -(β_max - β_min)/2 - β_min, σ̃ = √(1/ᾱ - 1)
    assert largest_ve_sigma(VPLinear()) == pytest.approx(math.sqrt(math.exp(19.9 / 2 + 0.1) - 1), rel=1e-9)
    # α(t_max) = 0: σ̃ = 80 projected onto the path (flow reaches it exactly at t = 80/81)
    assert largest_ve_sigma(Linear()) == pytest.approx(80.0, rel=1e-9)
    assert largest_ve_sigma(VPCosine()) == pytest.approx(80.0, rel=1e-6)


@pytest.mark.parametrize("path", PATHS, ids=lambda p: p.kind)
def test_ve_view_is_the_ve_exact_denoiser(path):
    """D(α(t) y, t) at t = t(λ = -2 log σ̃) is the VE-path denoiser of the same mixture at σ̃, per sample."""
    view = on_ve_path(ExactDenoiser(MIX, path))
    assert view.path.kind == "ve" and view.path.sigma_max == pytest.approx(largest_ve_sigma(path))
    sig = torch.logspace(-2.5, math.log10(0.99 * view.path.sigma_max), 64, dtype=torch.float64)
    y = MIX.sample(64, torch.Generator().manual_seed(1)) + sig[:, None] * torch.randn(
        64, 2, dtype=torch.float64, generator=torch.Generator().manual_seed(2))
    ref = ExactDenoiser(MIX, VE(sigma_max=1e4))(y, sig)
    torch.testing.assert_close(view(y, sig), ref, rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("path", [VPLinear(), Linear()], ids=lambda p: p.kind)
@pytest.mark.parametrize("sampler,order", [("heun", 2), ("euler", 1), ("dpm2s", 2)])
def test_one_step_converges_to_the_exact_ode_at_the_solvers_order(path, sampler, order):
    """Local error of one step = O(h^{order+1}): halving the step divides it by 2^{order+1}."""
    step = teacher_step(ExactDenoiser(MIX, path), sampler)
    s_next, y = 2.0, _noisy(16, 2.0)
    errs = []
    for h in (0.2, 0.1, 0.05):
        s_cur = s_next * math.exp(-h)
        got = step(y, _levels(16, s_next), _levels(16, s_cur), None)
        errs.append(float((got - _exact(y, s_next, s_cur)).abs().max()))
    rates = [math.log2(a / b) for a, b in zip(errs, errs[1:])]
    assert all(abs(r - (order + 1)) < 0.2 for r in rates), (errs, rates)


def test_adaptive_ode_step_is_the_exact_step():
    step = teacher_step(ExactDenoiser(MIX, VPCosine()), "ode", rtol=1e-9, atol=1e-9)
    y = _noisy(8, 5.0)
    got = step(y, _levels(8, 5.0), _levels(8, 0.5), None)
    torch.testing.assert_close(got, _exact(y, 5.0, 0.5), rtol=0, atol=1e-6)


@pytest.mark.parametrize("path", [VPLinear(), Linear()], ids=lambda p: p.kind)
def test_euler_is_ddim_in_any_frame(path):
    """Euler and DDIM are the same step on the VE view, and equal DDIM taken on the teacher's own path."""
    D = ExactDenoiser(MIX, path)
    y, s_next, s_cur = _noisy(16, 3.0), 3.0, 1.2
    e = teacher_step(D, "euler")(y, _levels(16, s_next), _levels(16, s_cur), None)
    d = teacher_step(D, "ddim")(y, _levels(16, s_next), _levels(16, s_cur), None)
    torch.testing.assert_close(e, d, rtol=0, atol=1e-12)
    t_next, t_cur = (path.t_of_log_snr(torch.tensor(-2 * math.log(s), dtype=torch.float64)) for s in (s_next, s_cur))
    seen = []
    ddim(D, float(path.alpha(t_next)) * y, torch.tensor([t_next, t_cur, 0.0], dtype=torch.float64),
         callback=lambda i, x, x0: seen.append(x) if i == 0 else None)
    torch.testing.assert_close(e, seen[0] / float(path.alpha(t_cur)), rtol=0, atol=1e-12)


def _cd_batch(n: int = 40) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, int]:
    """CD's levels (one index per sample on a fixed grid): (y (n, 2), σ̃_next (n,), σ̃_cur (n,), distinct pairs)."""
    grid = torch.tensor([0.002, 0.05, 0.3, 1.0, 4.0, 20.0], dtype=torch.float64)
    idx = torch.randint(0, len(grid) - 1, (n,), generator=torch.Generator().manual_seed(3))
    s_next, s_cur = grid[idx + 1], grid[idx]
    y = MIX.sample(n, torch.Generator().manual_seed(4)) + s_next[:, None] * torch.randn(
        n, 2, dtype=torch.float64, generator=torch.Generator().manual_seed(5))
    return y, s_next, s_cur, len(idx.unique())


@pytest.mark.parametrize("sampler,calls", [("heun", 2), ("euler", 1), ("ddim", 1)])
def test_euler_and_heun_take_the_batch_at_once(sampler, calls):
    """Per-sample levels in one batch (1 or 2 network calls in all), each sample's result the registry sampler's
    own first step on that sample's grid [σ̃_next, σ̃_cur, 0]."""
    y, s_next, s_cur, _ = _cd_batch()
    D = Counting(ExactDenoiser(MIX, Linear()))
    got = teacher_step(D, sampler)(y, s_next, s_cur, None)
    assert D.nfe == calls
    view = on_ve_path(ExactDenoiser(MIX, Linear()))
    for i in (0, 7, 21, 39):
        seen = []
        SAMPLERS[sampler].fn(view, y[i:i + 1], torch.tensor([s_next[i], s_cur[i], 0.0], dtype=torch.float64),
                             callback=lambda j, x, x0: seen.append(x) if j == 0 else None)
        torch.testing.assert_close(got[i:i + 1], seen[0], rtol=0, atol=1e-12)


def test_batched_heun_is_euler_above_the_cap():
    """Out of σ̃ > HEUN_SIGMA_MAX the registry's Heun takes Euler's step; the batched step does so per sample."""
    D = ExactDenoiser(MIX, VE(sigma_max=1e4))
    s_next = torch.tensor([2000.0, 4.0], dtype=torch.float64)
    s_cur = torch.tensor([500.0, 1.0], dtype=torch.float64)
    y = torch.stack([_noisy(1, 2000.0)[0], _noisy(1, 4.0, seed=1)[0]])
    heun, euler = (teacher_step(D, name)(y, s_next, s_cur, None) for name in ("heun", "euler"))
    torch.testing.assert_close(heun[0], euler[0], rtol=0, atol=0)
    assert float((heun[1] - euler[1]).abs().max()) > 1e-4  # corrected below the cap
    for i in (0, 1):
        seen = []
        SAMPLERS["heun"].fn(D, y[i:i + 1], torch.tensor([s_next[i], s_cur[i], 0.0], dtype=torch.float64),
                            callback=lambda j, x, x0: seen.append(x) if j == 0 else None)
        torch.testing.assert_close(heun[i:i + 1], seen[0], rtol=1e-12, atol=1e-9)


def test_other_samplers_are_grouped_by_pair():
    """A sampler without a batched step (dpm2s; heun or ddim given options) makes one call per distinct pair, each
    sample's result the same as when stepped alone."""
    y, s_next, s_cur, pairs = _cd_batch()
    D = Counting(ExactDenoiser(MIX, Linear()))
    got = teacher_step(D, "dpm2s")(y, s_next, s_cur, None)
    assert D.nfe == 2 * pairs  # DPM-Solver-2S: 2 evaluations a step
    for i in (0, 7, 21, 39):
        alone = teacher_step(ExactDenoiser(MIX, Linear()), "dpm2s")(y[i:i + 1], s_next[i:i + 1], s_cur[i:i + 1],
                                                                      None)
        torch.testing.assert_close(got[i:i + 1], alone, rtol=0, atol=1e-12)
    D = Counting(ExactDenoiser(MIX, Linear()))
    teacher_step(D, "ddim", eta=0.0)(y, s_next, s_cur, None)
    assert D.nfe == pairs


def test_conditioning_follows_its_rows():
    """cond rows are split with the samples: a denoiser that adds its label returns each sample's own label."""

    class Labelled:
        path = Linear()

        def __call__(self, x, t, y=None):
            return torch.zeros_like(x) + y[:, None].to(x.dtype)

    s_next = torch.tensor([1.0, 2.0, 1.0, 2.0], dtype=torch.float64)
    s_cur = torch.tensor([0.5, 1.0, 0.5, 1.0], dtype=torch.float64)
    labels = torch.tensor([3, 1, 4, 1])
    out = teacher_step(Labelled(), "euler")(torch.zeros(4, 2, dtype=torch.float64), s_next, s_cur, {"y": labels})
    # Euler step with x̂_0 = label: y_cur = x̂_0 + (σ̃_cur/σ̃_next)(y - x̂_0) from y = 0
    want = labels[:, None].double() * (1 - s_cur / s_next)[:, None]
    torch.testing.assert_close(out, want.expand(4, 2), rtol=0, atol=1e-12)


def test_refusals():
    D = ExactDenoiser(MIX, VPLinear())
    for name in ("sde", "pc", "ddpm"):
        assert usable_sampler(name) is not None
        with pytest.raises(ValueError, match="stochastic|cannot run"):
            teacher_step(D, name)
    with pytest.raises(ValueError, match="unknown sampler"):
        teacher_step(D, "heunn")
    with pytest.raises(ValueError, match="does not take option"):
        teacher_step(D, "heun", eta=0.5)
    step = teacher_step(D, "heun")
    y = _noisy(2, 1.0)
    with pytest.raises(ValueError, match="sigma_cur < sigma_next"):
        step(y, _levels(2, 1.0), _levels(2, 1.0), None)
    with pytest.raises(ValueError, match="beyond the teacher"):
        step(y, _levels(2, 500.0), _levels(2, 1.0), None)
    assert usable_sampler("heun") is None and usable_sampler("ode") is None


# --- trained runs: load_teacher, check_teacher, init_from_teacher ---------------------------------------------------

TINY = {"data.name": "moons", "data.n": 256, "net.mlp_hidden": 16, "net.mlp_depth": 1, "optim.steps": 3,
        "optim.batch_size": 32, "optim.warmup": 1, "log.n_samples": 4, "log.sample_steps": 2, "log.log_every": 1,
        "log.val_every": 3, "log.ckpt_every": 3, "run.threads": 1}


def _train(out, **keys):
    from kuosan.train import train

    cfg = apply_overrides(Config(), {**TINY, "log.out": str(out), **keys}).validate()
    return train(cfg, progress=False)


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    root = tmp_path_factory.mktemp("teachers")
    return {"v": _train(root / "v"),
            "edm": _train(root / "edm", **{"path.kind": "ve", "objective.prediction": "edm"})}


def _student(teacher, method="cd", **keys):
    return apply_overrides(Config(), {**TINY, "path.kind": "ve", "objective.prediction": "consistency",
                                      "consistency.method": method, "consistency.teacher": str(teacher), **keys})


def test_load_teacher_and_its_checks(runs):
    from kuosan.build import load_denoiser

    D = load_teacher(_student(runs["v"]), data_shape=(2,))
    assert D.path.kind == "discrete_vp" and not any(p.requires_grad for p in D.parameters())
    with pytest.raises(ValueError, match=r"shape \(2,\).*shape \(3,\)"):
        load_teacher(_student(runs["v"]), data_shape=(3,))
    with pytest.raises(ValueError, match="class-conditional teacher"):
        check_teacher(load_denoiser(runs["v"])[2], {"shape": [2]}, _student(runs["v"], **{"data.class_cond": True}))
    with pytest.raises(ValueError, match="beyond the largest noise level σ̃ = 80 of teacher"):  # edm: σ_max = 80
        load_teacher(_student(runs["edm"], **{"path.sigma_max": 100.0}))
    with pytest.raises(ValueError, match="names no run"):
        load_teacher(_student(""))
    cm = _student(runs["v"])  # a consistency model cannot teach
    with pytest.raises(ValueError, match="is a consistency model"):
        check_teacher(cm, {"shape": [2]}, _student(runs["v"]))


def test_init_from_teacher_copies_only_a_compatible_network(runs):
    from kuosan.build import build_net, load_denoiser

    meta = {"kind": "vector", "shape": [2], "num_classes": 0, "name": "moons", "bits": None}
    cfg = _student(runs["edm"], method="ect")
    assert init_reason(cfg, load_denoiser(runs["edm"])[2]) is None
    torch.manual_seed(0)
    net = build_net(cfg, meta)
    assert init_from_teacher(cfg, net)
    teacher = load_denoiser(runs["edm"])[0].net.state_dict()
    assert all(torch.equal(v, teacher[k]) for k, v in net.state_dict().items())

    cfg = _student(runs["v"], method="ect")  # v-prediction: other network inputs
    assert "only an edm-preconditioned teacher" in init_reason(cfg, load_denoiser(runs["v"])[2])
    torch.manual_seed(0)
    net = build_net(cfg, meta)
    before = {k: v.clone() for k, v in net.state_dict().items()}
    assert not init_from_teacher(cfg, net)
    assert all(torch.equal(v, before[k]) for k, v in net.state_dict().items())

    wider = _student(runs["edm"], method="ect", **{"net.mlp_hidden": 32})
    assert "[net] table differs" in init_reason(wider, load_denoiser(runs["edm"])[2])
    other_sd = _student(runs["edm"], method="ect", **{"objective.sigma_data": 1.0})
    assert "sigma_data differs" in init_reason(other_sd, load_denoiser(runs["edm"])[2])
