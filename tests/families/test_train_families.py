"""A tiny training of each family (vp, edm, flow via ``family_config``) on the 2-D ring: the loss goes down, every
sampler that runs on the path samples it, the ODE likelihood is finite and no better than the true density
allows, and resume is bit-exact."""

from __future__ import annotations

import csv
import math
from pathlib import Path

import pytest
import torch

from kuosan.build import load_denoiser
from kuosan.exact import ring
from kuosan.families.presets import family_config
from kuosan.likelihood import ode_nll
from kuosan.metrics import known_mixture
from kuosan.sampling import SAMPLERS, sample
from kuosan.train import train

FAMILIES = ["vp", "edm", "flow"]
# the ring (8 Gaussians, std 0.05, radius 2): an MLP learns it to a few hundredths in a few hundred steps
TOY = {"data.name": "ring", "data.n": 2048, "net.mlp_hidden": 64, "net.mlp_depth": 2, "optim.steps": 200,
       "optim.batch_size": 128, "optim.warmup": 20, "log.log_every": 25, "log.val_every": 200, "log.ckpt_every": 200,
       "log.n_samples": 8, "log.sample_steps": 2, "run.threads": 1}
TINY = {"data.name": "ring", "data.n": 256, "net.mlp_hidden": 16, "net.mlp_depth": 1, "optim.batch_size": 16,
        "optim.warmup": 2, "optim.steps": 16, "log.log_every": 4, "log.val_every": 8, "log.ckpt_every": 4,
        "log.n_samples": 4, "log.sample_steps": 2, "run.threads": 1, "net.dropout": 0.1}
# EDM's σ_d is the data's standard deviation (Karras et al. 2022 §5): the ring's is √2.0025 ≈ 1.42, not the 0.5
# default of images in [-1, 1]
EXTRA = {"vp": {}, "edm": {"objective.sigma_data": 1.4}, "flow": {}}
GRID = {"vp": "uniform", "edm": "karras", "flow": "uniform"}  # each family's usual grid (EDM: Karras et al.'s)
REFERENCE = {"vp": ("ddim", "dpm++2m"), "edm": ("heun", "euler"), "flow": ("euler", "heun")}


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """process -> a run folder trained with the family's preset (trained once per module, on first use)."""
    done: dict[str, Path] = {}

    def get(process: str) -> Path:
        if process not in done:
            out = tmp_path_factory.mktemp(process) / "run"
            train(family_config(process, {**TOY, **EXTRA[process], "log.out": str(out)}), progress=False)
            done[process] = out
        return done[process]

    return get


def radius_error(x: torch.Tensor) -> float:
    """Mean | ||x|| - 2 |: 0.04 for the ring itself, ~0.9 for N(0, I) noise."""
    return float((x.double().norm(dim=1) - 2).abs().mean())


@pytest.mark.parametrize("process", FAMILIES)
def test_loss_goes_down(runs, process):
    rows = list(csv.DictReader((runs(process) / "log.csv").open()))
    loss = [float(r["loss"]) for r in rows if r["loss"]]
    assert len(loss) == 8 and all(math.isfinite(v) for v in loss)
    assert loss[-1] < 0.9 * loss[0], loss  # the mean over steps 176-200 against steps 1-25


@pytest.mark.parametrize("process", FAMILIES)
def test_every_sampler_that_supports_the_path_samples_it(runs, process):
    D, _, cfg = load_denoiser(runs(process))
    assert D.path.kind == {"vp": "discrete_vp", "edm": "ve", "flow": "flow"}[process]
    ran = []
    for name, spec in SAMPLERS.items():
        if spec.supports(D.path) is not None:
            assert process != "vp" or name != "ddpm"  # ancestral DDPM runs on the discrete chain
            continue
        n = 32 if name == "ode" else 64  # the adaptive solver takes ~100 evaluations
        x = sample(D, name, (n, 2), 8, seed=0, grid=GRID[process])  # non-finite samples raise
        assert x.shape == (n, 2)
        ran.append(name)
        if name in REFERENCE[process]:
            assert radius_error(x) < 0.35, (name, radius_error(x))
    assert {"ddim", "heun", "dpm++2m", "ode", "sde"} <= set(ran)
    assert radius_error(torch.randn(4096, 2, generator=torch.Generator().manual_seed(0))) > 0.7


@pytest.mark.parametrize("process", FAMILIES)
def test_ode_likelihood_is_finite_and_plausible(runs, process):
    """-log p_model(x) on fresh ring samples: above the true -log p(x) on average (their mean difference estimates
    KL(p || p_model) >= 0) and below the entropy of the Gaussian with the ring's covariance (the model knows more
    than two moments)."""
    D, _, cfg = load_denoiser(runs(process))
    mix = known_mixture(cfg.data.name)
    assert mix is not None
    x = mix.sample(32, torch.Generator().manual_seed(1))
    res = ode_nll(D, x.float(), probes=None, backend="scipy")
    model = res.per_sample_bpd.double() * 2 * math.log(2)  # nats per sample (d = 2)
    assert bool(torch.isfinite(model).all())
    ones = torch.ones(len(x), dtype=torch.float64)
    true = -mix.log_prob_t(x, ones, torch.zeros_like(ones))
    gap = model - true
    assert float(gap.mean()) > -3 * float(gap.std()) / math.sqrt(len(gap)), (float(model.mean()), float(true.mean()))
    gaussian_entropy = 0.5 * float(torch.logdet(2 * math.pi * math.e * mix.cov))
    assert float(model.mean()) < gaussian_entropy, (float(model.mean()), gaussian_entropy)
    assert mix.cov.shape == (2, 2) and abs(gaussian_entropy - 3.53) < 0.01  # cov ≈ 2.0025 I for ring()


@pytest.mark.parametrize("process", FAMILIES)
def test_resume_is_bit_exact(tmp_path, process):
    """16 steps straight = 8 steps, stop, resume to 16: the same weights and EMA, bit for bit (dropout on)."""
    from kuosan.checkpoint import load_checkpoint

    train(family_config(process, {**TINY, "log.out": str(tmp_path / "straight")}), progress=False)
    train(family_config(process, {**TINY, "log.out": str(tmp_path / "halves")}), stop_at=8, progress=False)
    assert load_checkpoint(tmp_path / "halves").state["step"] == 8
    train(None, resume=tmp_path / "halves", progress=False)
    a, b = load_checkpoint(tmp_path / "straight"), load_checkpoint(tmp_path / "halves")
    assert a.state["step"] == b.state["step"] == 16
    assert a.ema is not None and b.ema is not None
    for k in a.model:
        assert torch.equal(a.model[k], b.model[k]), k
        assert torch.equal(a.ema[k], b.ema[k]), k
    assert any(not torch.equal(a.model[k], b.model[k].zero_()) for k in a.model)  # the weights are not all zero


def test_known_density_of_the_toy_is_the_exact_ring():
    mix = known_mixture("ring")
    assert mix is not None
    ref = ring()
    assert torch.equal(mix.means, ref.means) and torch.equal(mix.covs, ref.covs)
