"""Reflow's pieces (Liu et al. 2023 Alg. 1): the couplings are the ODE endpoints of their noises, paired data reach
training as ε = noise[idx] with everything else drawn as before, and only flows can be reflowed."""

from __future__ import annotations

from dataclasses import replace

import pytest
import torch

from kuosan.checkpoint import load_checkpoint
from kuosan.config import Config, apply_overrides
from kuosan.data import load_dataset
from kuosan.exact import ExactDenoiser, gaussian
from kuosan.families.reflow import ReflowError, check_flow, check_sampler, draw_pairs, training_cost, write_pairs
from kuosan.objectives import make_objective
from kuosan.parameterisation import make_parameterisation
from kuosan.paths import Linear, make_path
from kuosan.sampling import get_sampler, make_grid, sample
from kuosan.train import train
from kuosan.train.step import draw_batch


def _gauss():
    mu = torch.tensor([1.0, -0.5], dtype=torch.float64)
    cov = torch.tensor([[0.5, 0.2], [0.2, 0.3]], dtype=torch.float64)
    return mu, cov, ExactDenoiser(gaussian(mu, cov), Linear())


def test_couplings_are_ode_endpoints_of_their_noises():
    mu, cov, D = _gauss()
    n, steps = 300, 40
    z, x0 = draw_pairs(D, (n, 2), sampler="heun", steps=steps, seed=3, batch_size=64)
    assert z.shape == x0.shape == (n, 2) and z.dtype == x0.dtype == torch.float32
    # the same samples as sample() with another batch size (sample i depends only on (seed, i)) ...
    assert torch.equal(x0, sample(D, "heun", (n, 2), steps, seed=3, batch_size=256))
    # ... and z is the very x_T they started from: the sampler run on prior_std·z ends at x0, bit for bit
    spec = get_sampler("heun")
    assert torch.equal(spec.fn(D, D.path.prior_std * z, make_grid(D.path, steps)), x0)
    # the exact 1-rectified flow of N(μ, Σ) maps z to μ + Σ^{1/2} z (tests/families/test_straightness.py)
    # (to the sampler's accuracy: Heun's error falls as steps⁻²), and a mismatched pairing is far off
    lam, U = torch.linalg.eigh(cov)
    root = U @ torch.diag(lam.sqrt()) @ U.T
    err = (x0.double() - (mu + z.double() @ root)).norm(dim=1).max()
    z2, x2 = draw_pairs(D, (n, 2), sampler="heun", steps=2 * steps, seed=3, batch_size=64)
    assert torch.equal(z2, z) and err < 5e-3
    assert (x2.double() - (mu + z.double() @ root)).norm(dim=1).max() < err / 3
    assert (x0.double() - (mu + z.roll(1, 0).double() @ root)).norm(dim=1).mean() > 0.3
    # another seed, other noises
    assert not torch.equal(draw_pairs(D, (n, 2), steps=2, seed=4)[0], z)


def test_pairs_file_round_trip(tmp_path):
    z = torch.randn(50, 1, 4, 4)
    x = 1.3 * torch.randn(50, 1, 4, 4)  # model samples may leave [-1, 1]: kept as they are
    write_pairs(tmp_path / "p.npz", z, x)
    ds = load_dataset(str(tmp_path / "p.npz"))
    assert torch.equal(ds.x, x) and torch.equal(ds.noise, z) and ds.kind == "image" and ds.bits is None
    assert [p.name for p in tmp_path.iterdir()] == ["p.npz"]  # no temp file left
    cost, se, kind = training_cost(ds, 1.0)
    assert kind == "pairs" and cost == pytest.approx(float((z - x).square().sum((1, 2, 3)).mean()), rel=1e-6)
    cost, se, kind = training_cost(replace(ds, noise=None), 1.0)  # independent coupling: D + E||x||²
    assert kind == "independent" and cost == pytest.approx(16 + float(x.square().sum((1, 2, 3)).mean()), rel=1e-6)


def _batch_parts(noise):
    cfg = apply_overrides(Config(), {"path.kind": "flow", "objective.prediction": "velocity",
                                     "optim.batch_size": 8}).validate()
    path = make_path("flow")
    obj = make_objective(path, make_parameterisation("velocity"), time_sampling="logit_normal")
    X = torch.arange(20 * 3, dtype=torch.float32).reshape(20, 3)
    return [draw_batch(cfg, obj, X, None, 0, step=5, rank=r, world=2, noise=noise) for r in range(2)]


def test_draw_batch_takes_the_paired_noise():
    noise = torch.randn(20, 3)
    plain, paired = _batch_parts(None), _batch_parts(noise)
    for a, b in zip(plain, paired):
        assert torch.equal(a.x0, b.x0) and torch.equal(a.t, b.t) and torch.equal(a.t_all, b.t_all)
        idx = (b.x0[:, 0] / 3).long()  # X's rows are 3i, 3i+1, 3i+2: the index of each example
        assert torch.equal(b.eps, noise[idx]) and not torch.equal(a.eps, b.eps)


def test_only_flows_are_reflowed():
    flow = apply_overrides(Config(), {"path.kind": "flow", "objective.prediction": "velocity"}).validate()
    check_flow(flow)
    for cfg, match in [(Config(), "discrete_vp"),
                       (replace(flow, objective=replace(flow.objective, prediction="consistency")), "consistency"),
                       (replace(flow, data=replace(flow.data, class_cond=True)), "class-conditional")]:
        with pytest.raises(ReflowError, match=match):
            check_flow(cfg)

    class Consistency:  # a denoiser marked as a consistency model
        kind, path = "consistency", Linear()

    with pytest.raises(ReflowError, match="consistency"):
        check_flow(flow, Consistency())
    D = _gauss()[2]
    check_sampler("dpm++2m", 10, D)
    for name in ("sde", "pc"):
        with pytest.raises(ReflowError, match="deterministic"):
            check_sampler(name, 10, D)


def _paired_run(tmp_path, name, noise, x, steps, stop_at=None, resume=False):
    write_pairs(tmp_path / f"{name}.npz", noise, x)
    out = tmp_path / name
    if resume:
        return train(None, resume=out, progress=False)
    cfg = apply_overrides(Config(), {
        "data.name": str(tmp_path / f"{name}.npz"), "path.kind": "flow", "objective.prediction": "velocity",
        "net.mlp_hidden": 16, "net.mlp_depth": 1, "optim.batch_size": 16, "optim.steps": steps, "optim.warmup": 2,
        "log.ckpt_every": 5, "log.log_every": 5, "log.val_every": 5, "log.n_samples": 4, "log.sample_steps": 2,
        "run.threads": 1, "run.precision": "fp32", "log.out": str(out)}).validate()
    return train(cfg, stop_at=stop_at, progress=False)


def test_paired_training_uses_the_noise_and_resumes_exactly(tmp_path):
    g = torch.Generator().manual_seed(0)
    x, noise = torch.randn(128, 2, generator=g), torch.randn(128, 2, generator=g)
    straight = load_checkpoint(_paired_run(tmp_path, "a", noise, x, 12))
    _paired_run(tmp_path, "b", noise, x, 12, stop_at=6)
    resumed = load_checkpoint(_paired_run(tmp_path, "b", noise, x, 12, resume=True))
    assert resumed.state["step"] == straight.state["step"] == 12
    assert all(torch.equal(straight.model[k], resumed.model[k]) for k in straight.model)
    other = load_checkpoint(_paired_run(tmp_path, "c", noise.roll(1, 0), x, 12))  # same data, other pairing
    assert not all(torch.equal(straight.model[k], other.model[k]) for k in straight.model)
