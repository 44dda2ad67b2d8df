"""Nothing non-finite or runaway is ever saved: a non-finite update, a non-finite EMA, a loss far above its running
level, weights growing without bound each stop the run with advice and name the checkpoint actually kept (or say
there is none); numeric options that cannot work are refused before anything runs."""

from __future__ import annotations

import math

import pytest
import torch

import kuosan.train.loop as loop_mod
from kuosan.checkpoint import load_checkpoint
from kuosan.config import Config, ConfigError, apply_overrides
from kuosan.train import TrainingError, train
from kuosan.train.guard import GROWTH, LOSS_FACTOR, Guard, weight_rms

from train_helpers import temp_entries, tiny


@pytest.fixture
def after_step(monkeypatch):
    """after_step(fn): fn(i, net) after the real training step i."""

    def install(fn):
        real = loop_mod.train_step

        def step(cfg, net, net_fn, obj, batch, opt, i, *a, **kw):
            res = real(cfg, net, net_fn, obj, batch, opt, i, *a, **kw)
            fn(i, net)
            return res

        monkeypatch.setattr(loop_mod, "train_step", step)

    return install


def _kept_only(run, step):
    assert load_checkpoint(run).state["step"] == step and temp_entries(run) == []
    for ck in (run / "checkpoints").glob("step_*"):
        c = load_checkpoint(ck)
        assert all(bool(torch.isfinite(v).all()) for part in (c.model, c.ema) for v in part.values())


def test_a_non_finite_update_is_not_saved(tmp_path, after_step):
    run = tmp_path / "r"

    def poison(i, net):
        if i == 7:
            with torch.no_grad():
                next(net.parameters()).fill_(float("nan"))  # the update made a weight NaN

    after_step(poison)
    with pytest.raises(TrainingError) as e:
        train(tiny(run, optim__steps=20), progress=False)
    msg = str(e.value)
    assert "\n" not in msg and "diverged at step 8: an update made the weights non-finite" in msg
    assert f"the last good checkpoint is '{run / 'checkpoints' / 'step_0000005'}'" in msg and "optim.lr" in msg
    _kept_only(run, 5)


def test_a_non_finite_update_before_any_checkpoint_says_there_is_none(tmp_path, after_step):
    after_step(lambda i, net: torch.nn.init.constant_(next(net.parameters()), math.inf) if i == 2 else None)
    with pytest.raises(TrainingError, match="no checkpoint of this run exists"):
        train(tiny(tmp_path / "r", optim__steps=20), progress=False)
    assert not list((tmp_path / "r").glob("checkpoints/step_*"))


def test_a_non_finite_ema_is_not_saved(tmp_path, monkeypatch):
    class PoisonedEMA(loop_mod.EMA):
        def update(self, model, n_updates):
            super().update(model, n_updates)
            if n_updates == 7:
                next(iter(self.shadow.values())).fill_(float("nan"))

    monkeypatch.setattr(loop_mod, "EMA", PoisonedEMA)
    run = tmp_path / "r"
    with pytest.raises(TrainingError, match=r"diverged by step 10: the EMA weights are not usable \(.* has NaN\); it "
                                            r"was not saved; the last good checkpoint is .*step_0000005"):
        train(tiny(run, optim__steps=20), progress=False)
    _kept_only(run, 5)


def test_non_finite_loss_from_the_start(tmp_path, monkeypatch):
    real = loop_mod.make_objective_from

    class NaNLoss:
        def __init__(self, obj):
            self.obj, self.times = obj, obj.times

        def __call__(self, *a, **k):
            out = self.obj(*a, **k)
            return out._replace(total=out.total * float("nan"))

    monkeypatch.setattr(loop_mod, "make_objective_from", lambda *a, **k: NaNLoss(real(*a, **k)))
    with pytest.raises(TrainingError, match="loss was non-finite for 10 steps in a row; it was not saved; no "
                                            "checkpoint of this run exists"):
        train(tiny(tmp_path / "r", optim__steps=40), progress=False)


def test_runaway_loss_stops_with_advice(tmp_path, monkeypatch):
    """Finite but absurd: from step 31 the loss is 1e4 times what it was (the weights still finite)."""
    real = loop_mod.make_objective_from
    calls = {"n": 0}

    class Exploding:
        def __init__(self, obj):
            self.obj, self.times = obj, obj.times

        def __call__(self, *a, **k):
            out = self.obj(*a, **k)
            if k.get("t") is not None and out.total.requires_grad:  # training calls, not the validation loss
                calls["n"] += 1
                if calls["n"] > 30:
                    return out._replace(total=out.total * 1e4)
            return out

    monkeypatch.setattr(loop_mod, "make_objective_from", lambda *a, **k: Exploding(real(*a, **k)))
    run = tmp_path / "r"
    with pytest.raises(TrainingError) as e:
        train(tiny(run, optim__steps=60, log__ckpt_every=10), progress=False)
    msg = str(e.value)
    assert f"stayed over {LOSS_FACTOR:g}x its running level" in msg and "for 5 steps" in msg
    assert "diverged at step 35" in msg and "step_0000030" in msg and "lower optim.lr" in msg
    _kept_only(run, 30)


def test_weights_growing_without_bound_stop_the_run(tmp_path, after_step):
    def grow(i, net):
        if i >= 6:
            with torch.no_grad():
                for p in net.parameters():
                    p.mul_(4.0)

    after_step(grow)
    run = tmp_path / "r"
    with pytest.raises(TrainingError, match=r"the weights grew to \d+x their initial size"):
        train(tiny(run, optim__steps=40), progress=False)
    _kept_only(run, 5)


def test_guard_verdicts_on_their_own():
    net = torch.nn.Linear(4, 4)
    g = Guard(net)
    assert all(g.after_step(True, 1.0) is None for _ in range(30))
    assert all(g.after_step(True, 1.0 * LOSS_FACTOR * 2) is None for _ in range(4))
    assert "stayed over" in g.after_step(True, LOSS_FACTOR * 2)
    g2 = Guard(net)
    assert all(g2.after_step(False, math.nan) is None for _ in range(9))
    assert "non-finite for 10 steps" in g2.after_step(False, math.nan)
    assert g2.after_step(True, 1.0) is None  # a finite step resets the count
    sd = {k: v.clone() for k, v in net.state_dict().items()}
    assert g.unsaveable(sd, sd, None) is None
    sd["weight"][0, 0] = 1e30
    assert "|x| = 1e+30" in g.unsaveable(sd, None, None)
    with torch.no_grad():
        net.weight.mul_(GROWTH * 10)
        net.bias.mul_(GROWTH * 10)
    assert "grew to" in g.after_step(True, 1.0)


@pytest.mark.parametrize("key,value,needle", [
    ("optim.lr", "1e39", "optim.lr must be a positive number at most 1"),
    ("optim.lr", "inf", "optim.lr must be a positive number"),
    ("optim.lr", "5", "optim.lr must be a positive number at most 1"),
    ("optim.weight_decay", "1e3", "times optim.lr"),
    ("optim.steps", str(2**50), "optim.steps must be at most"),
    ("optim.batch_size", str(10**9), "optim.batch_size must be at most"),
    ("run.seed", str(2**40), "run.seed must be at most 4294967295"),
    ("run.threads", str(10**6), "run.threads must be at most 1024"),
    ("path.T", str(10**9), "path.T must be at most 100000"),
    ("path.kind", "ve", None),  # (with sigma_max below)
    ("net.mlp_depth", str(10**7), "net.mlp_depth must be at most"),
    ("log.n_samples", str(10**7), "log.n_samples must be at most 4096"),
    ("objective.sigma_data", "1e300", "objective.sigma_data must be in"),
])
def test_numbers_that_cannot_work_are_refused_up_front(key, value, needle):
    if needle is None:
        with pytest.raises(ConfigError, match="path.sigma_max must be at most"):
            apply_overrides(Config(), {"path.kind": "ve", "objective.prediction": "edm",
                                       "path.sigma_max": 1e300}).validate()
        return
    with pytest.raises(ConfigError, match=needle):
        apply_overrides(Config(), [f"{key}={value}"]).validate()


def test_a_network_too_large_for_memory_is_refused_before_allocation(tmp_path):
    """net.mlp_hidden = 2^20 with depth 1000: ~2e15 parameters, refused from the meta-device probe at once."""
    with pytest.raises(ValueError, match=r"the network has [0-9,]+ parameters: its training state needs at least"):
        train(tiny(tmp_path / "r", net__mlp_hidden=2**20, net__mlp_depth=1000, optim__steps=2), progress=False)
    assert not (tmp_path / "r" / "checkpoints").exists()


@pytest.mark.parametrize("multi_tensor", [True, False])
def test_weight_rms_is_the_root_mean_square(monkeypatch, multi_tensor):
    """sqrt(mean w²) over every weight, through torch's multi-tensor norm or the per-tensor fallback (older
    torch); a NaN weight makes it NaN, which the guard reads as non-finite weights."""
    if not multi_tensor:
        monkeypatch.delattr(torch.nn.utils, "get_total_norm", raising=False)
    g = torch.Generator().manual_seed(0)
    params = [torch.randn(3, 4, generator=g), torch.randn(7, generator=g) * 5, torch.randn(2, 2, 2, generator=g)]
    exact = math.sqrt(sum(float((p.double() ** 2).sum()) for p in params) / sum(p.numel() for p in params))
    assert weight_rms(params) == pytest.approx(exact, rel=1e-6)
    params[1][3] = float("nan")
    assert math.isnan(weight_rms(params))
