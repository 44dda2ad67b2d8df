"""Training: the loss falls, resume is exact, checkpoints are atomic, non-finite losses are caught, DDP works."""

import json
import os
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

import kuosan.train as train_mod
from kuosan.checkpoint import CheckpointError, load_checkpoint, save_checkpoint
from kuosan.config import Config
from kuosan.train import EMA, TrainingError, load_denoiser, lr_at, train

TINY_IMG = dict(data="digits", channels=8, channel_mult=(1, 2), num_res_blocks=1, attn_resolutions=(4,),
                batch_size=16, n_data=200, log_every=5, val_every=10, ckpt_every=10, n_samples=4, sample_steps=3,
                warmup=2, threads=1)


def _weights(run):
    ck = load_checkpoint(run)
    return ck.model, ck.ema, ck.state["step"]


@pytest.mark.parametrize("target,schedule,drop,near_ratio", [("eps", "linear", 0.75, 0.3), ("v", "cosine", 0.95, 0.45)])
def test_loss_falls_on_a_toy_set(tmp_path, target, schedule, drop, near_ratio):
    """The loss falls (v's irreducible part is large in 2-D, so it falls less) and samples lie on the data."""
    cfg = Config(data="moons", n_data=2000, steps=300, batch_size=128, lr=3e-3, mlp_hidden=64, mlp_depth=2,
                 log_every=50, val_every=300, ckpt_every=300, n_samples=256, sample_steps=20, out=str(tmp_path / "r"),
                 threads=1, target=target, schedule=schedule)
    run = train(cfg, progress=False)
    rows = (run / "log.csv").read_text().splitlines()[1:]
    losses = [float(r.split(",")[1]) for r in rows]
    assert losses[-1] < drop * losses[0], losses
    # and the trained model's samples lie on the moons: nearest-data distance far below that of N(0, I) noise
    from kuosan.data import load_dataset
    from kuosan.samplers import sample

    D, meta, _ = load_denoiser(run)
    data = load_dataset("moons", n=2000).x
    x = sample(D, "ddim", (256, 2), 50, seed=1)
    near = lambda z: torch.cdist(z, data).min(1).values.median().item()  # noqa: E731
    assert near(x) < near_ratio * near(torch.randn(256, 2)), (near(x), near(torch.randn(256, 2)))
    for f in ("config.toml", "log.csv", "loss.png", "samples.png", "checkpoints/latest"):
        assert (run / f).exists(), f


@pytest.mark.parametrize("extra", [{}, {"learn_variance": True, "importance_sampling": True, "T": 20}])
def test_resume_is_exact(tmp_path, extra):
    """N steps straight = N/2, then resume, then N/2: the same weights, bit for bit (dropout on)."""
    cfg = Config(**TINY_IMG, steps=20, dropout=0.1, out=str(tmp_path / "straight"), **extra)
    train(cfg, progress=False)
    half = replace(cfg, out=str(tmp_path / "halves"))
    train(half, stop_at=10, progress=False)
    assert _weights(tmp_path / "halves")[2] == 10
    train(None, resume=tmp_path / "halves", progress=False)
    a, b = _weights(tmp_path / "straight"), _weights(tmp_path / "halves")
    assert a[2] == b[2] == 20
    for k in a[0]:
        assert torch.equal(a[0][k], b[0][k]), k
        assert torch.equal(a[1][k], b[1][k]), k
    if extra:  # the importance sampler's history was saved and restored (T = 20 fills it within 20 steps)
        ea, eb = load_checkpoint(tmp_path / "straight").extra, load_checkpoint(tmp_path / "halves").extra
        assert bool((ea["imp_count"] >= 10).all()) and torch.equal(ea["imp_losses"], eb["imp_losses"])


def test_checkpoint_write_is_atomic(tmp_path, monkeypatch):
    sd = {"w": torch.ones(3)}
    save_checkpoint(tmp_path, 1, {"a": 1}, {"data": {}}, sd)
    import kuosan.checkpoint as ck

    real = ck.save_file
    calls = []

    def crash_on_second(tensors, path):
        calls.append(path)
        if len(calls) == 2:
            raise OSError("disk full (simulated)")
        real(tensors, path)

    monkeypatch.setattr(ck, "save_file", crash_on_second)
    with pytest.raises(OSError):
        save_checkpoint(tmp_path, 2, {"a": 2}, {"data": {}}, {"w": torch.zeros(3)}, ema={"w": torch.zeros(3)})
    got = load_checkpoint(tmp_path)  # the latest is still the complete step-1 checkpoint
    assert got.state["step"] == 1 and torch.equal(got.model["w"], torch.ones(3))


def test_non_finite_loss_is_caught_and_last_good_checkpoint_kept(tmp_path, monkeypatch):
    real = train_mod.diffusion_loss
    calls = {"n": 0}

    def poisoned(*a, **k):
        calls["n"] += 1
        out = real(*a, **k)
        return out._replace(total=out.total * float("nan")) if calls["n"] > 12 else out

    monkeypatch.setattr(train_mod, "diffusion_loss", poisoned)
    cfg = Config(**TINY_IMG, steps=40, out=str(tmp_path / "r"))
    with pytest.raises(TrainingError, match="non-finite"):
        train(cfg, progress=False)
    model, _, step = _weights(tmp_path / "r")
    assert step == 10 and all(torch.isfinite(v).all() for v in model.values())


def test_checkpoint_of_another_model_is_refused(tmp_path):
    run = train(Config(**TINY_IMG, steps=2, out=str(tmp_path / "r")), progress=False)
    ck = load_checkpoint(run)
    cfg = json.loads((ck.path / "config.json").read_text())
    cfg["channels"] = 16
    (ck.path / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(CheckpointError, match="different model"):
        load_denoiser(run)
    with pytest.raises(CheckpointError, match="does not exist"):
        load_denoiser(tmp_path / "missing")
    (tmp_path / "empty").mkdir()
    with pytest.raises(CheckpointError, match="not a kuosan run"):
        load_denoiser(tmp_path / "empty")


def test_ema_warmup_and_lr_schedule():
    net = torch.nn.Linear(2, 2)
    ema = EMA(net, decay=0.999)
    w0 = net.weight.detach().clone()
    with torch.no_grad():
        net.weight.add_(1.0)
    ema.update(net, 0)  # warm-up decay min(0.999, 1/10) = 0.1: mostly the new weights
    torch.testing.assert_close(ema.shadow["weight"], w0 + 0.9)
    cfg = Config(lr=1.0, min_lr=0.1, warmup=10, steps=110)
    assert lr_at(cfg, 0) == pytest.approx(0.1) and lr_at(cfg, 9) == pytest.approx(1.0)
    assert lr_at(cfg, 60) == pytest.approx(0.55) and lr_at(cfg, 110) == pytest.approx(0.1)


def test_ddp_two_processes_match_one(tmp_path):
    """torchrun with 2 CPU processes (gloo) trains the same model as one process on the same global batch."""
    common = ["--data", "moons", "--n-data", "512", "--steps", "8", "--batch-size", "32", "--mlp-hidden", "32",
              "--mlp-depth", "2", "--ckpt-every", "8", "--val-every", "8", "--log-every", "4", "--n-samples", "8",
              "--sample-steps", "2", "--threads", "1", "--quiet", "--val-fraction", "0"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    one = subprocess.run([sys.executable, "-m", "kuosan.cli", "train", *common, "--out", str(tmp_path / "one")],
                         capture_output=True, text=True, env=env, timeout=300)
    assert one.returncode == 0, one.stderr
    two = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port",
                          "29517", "-m", "kuosan.cli", "train", *common, "--out", str(tmp_path / "two")],
                         capture_output=True, text=True, env=env, timeout=300)
    assert two.returncode == 0, two.stderr[-2000:]
    a, b = _weights(tmp_path / "one"), _weights(tmp_path / "two")
    assert b[2] == 8 and load_checkpoint(tmp_path / "two").state["world_size"] == 2
    diff = max((a[0][k] - b[0][k]).abs().max().item() for k in a[0])
    assert diff < 1e-4, diff
    moved = max((a[0][k] - load_file(str(Path(tmp_path / "one") / "checkpoints" / "step_0000008" /
                                          "model.safetensors"))[k]).abs().max().item() for k in a[0])
    assert moved == 0.0
