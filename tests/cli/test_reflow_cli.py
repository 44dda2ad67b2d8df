"""``kuosan reflow``: a tiny 2-rectified flow on the ring straightens its 1-rectified flow (Liu et al. 2023), its pairs
are the ODE endpoints of their noises, it starts from RUN's weights; every bad input is one line and exit code 2."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from kuosan.build import load_denoiser
from kuosan.checkpoint import load_checkpoint
from kuosan.cli import main
from kuosan.sampling import sample
from kuosan.sampling.noise import NoiseSource

TINY_MLP = ["--data", "ring", "--set", "data.n=2000", "--set", "net.mlp_hidden=32", "--set", "net.mlp_depth=1",
            "--batch-size", "128", "--set", "optim.warmup=20", "--set", "log.n_samples=4", "--set",
            "log.sample_steps=2", "--set", "log.val_every=100", "--set", "log.log_every=50", "--threads", "1",
            "--quiet"]
FLOW = ["--path", "flow", "--prediction", "velocity", "--set", "objective.time_sampling=uniform"]
REFLOW = ["--pairs", "1000", "--sampler-steps", "16", "--eval-n", "400", "--eval-steps", "16", "--quiet"]


@pytest.fixture(scope="module")
def flow_run(tmp_path_factory):
    """A 1-rectified flow on the ring of 8 Gaussians (an MLP of width 32, 300 steps: a few seconds)."""
    out = tmp_path_factory.mktemp("reflow") / "rf1"
    assert main(["train", *TINY_MLP, *FLOW, "--steps", "300", "--out", str(out)]) == 0
    return out


def test_reflow_straightens(flow_run, tmp_path):
    out = tmp_path / "rf2"
    assert main(["reflow", str(flow_run), *REFLOW, "--steps", "200", "--out", str(out)]) == 0
    rep = json.loads((out / "reflow.json").read_text())
    before, after = rep["before"], rep["after"]
    assert after["straightness"] < 0.5 * before["straightness"]  # reflow straightens
    assert before["straightness"] > 5 * before["straightness_se"]  # 1-RF is measurably curved
    assert before["training_coupling"] == "independent" and after["training_coupling"] == "pairs"
    assert before["thm_3_3"] == "holds" and after["thm_3_3"] != "violated"
    assert before["training_cost"] == pytest.approx(6.0, abs=0.1)  # independent: D + E||x||² ≈ 2 + 2² on the ring
    for r in (before, after):  # Jensen along the model's own trajectories: E||Z_1 - Z_0||² <= E∫||v||² dt
        assert r["cost"] <= r["kinetic"] and r["n"] == 400 and r["method"] == "heun"
    # the pairs are RUN's ODE endpoints of their noises: sample() from the same seed, and its x_T = z
    with np.load(out / "pairs.npz") as z:
        x, noise = torch.from_numpy(z["x"]), torch.from_numpy(z["noise"])
    D, meta, _ = load_denoiser(flow_run)
    assert torch.equal(x, sample(D, "heun", (1000, 2), 16, seed=0, batch_size=1024))  # reflow's batches
    assert torch.allclose(x, sample(D, "heun", (1000, 2), 16, seed=0, batch_size=333), atol=1e-5)  # matmul round-off
    assert torch.equal(noise, NoiseSource(0, 0, 1000)(torch.empty(1000, 2)))
    # it started from RUN's EMA weights (step 0 of the new run) and trained on the pairs
    init, run = load_checkpoint(out / "checkpoints" / "step_0000000"), load_checkpoint(flow_run)
    assert all(torch.equal(init.model[k], run.ema[k]) for k in run.ema)
    new = load_checkpoint(out)
    assert new.state["step"] == 200 and new.config["data"]["name"] == str((out / "pairs.npz").resolve())
    assert new.config["path"] == run.config["path"] and new.config["net"] == run.config["net"]


@pytest.fixture(scope="module")
def vp_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("reflow") / "vp"
    assert main(["train", *TINY_MLP, "--steps", "2", "--out", str(out)]) == 0
    return out


def test_bad_input_is_one_line(flow_run, vp_run, tmp_path, err):
    new = str(tmp_path / "new")
    base = ["reflow", str(flow_run), "--pairs", "10"]
    assert "discrete_vp" in err(["reflow", str(vp_run), "--pairs", "10", "--out", new])
    assert "--pairs" in err(["reflow", str(flow_run), "--out", new])
    assert "--pairs" in err(["reflow", str(flow_run), "--pairs", "0", "--out", new])
    assert "--out" in err(base)
    assert "sampler" in err([*base, "--sampler", "sde", "--out", new])
    assert "does not apply" in err([*base, "--set", "net.mlp_hidden=64", "--out", new])
    assert "does not apply" in err([*base, "--data", "ring", "--out", new])
    assert "does not apply" in err([*base, "--path", "ve", "--out", new])
    assert "does not apply" in err([*base, "--prediction", "eps", "--out", new])
    assert "--resume" in err([*base, "--resume", str(flow_run), "--out", new])
    assert "RUN's own folder" in err([*base, "--out", str(flow_run)])
    assert "unknown" in err([*base, "--set", "optim.nope=1", "--out", new]).lower()
    assert "does not exist" in err(["reflow", str(tmp_path / "missing"), "--pairs", "10", "--out", new])
    assert "invalid choice" in err([*base, "--sampler", "bespoke", "--out", new])  # needs fitted coefficients
    assert not (tmp_path / "new").exists()  # nothing written by a refused command
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "x").write_text("")
    assert "not empty" in err([*base, "--out", str(tmp_path / "full")])


def test_bad_pairs_file_is_one_line(tmp_path, err):
    np.savez(tmp_path / "p.npz", x=np.zeros((8, 2)), noise=np.zeros((8, 3)))
    assert "noise has shape" in err(["train", "--data", str(tmp_path / "p.npz"), "--out", str(tmp_path / "r")])
    np.savez(tmp_path / "q.npz", x=np.zeros((8, 2)), noise=np.full((8, 2), np.nan))
    assert "noise contains NaN" in err(["train", "--data", str(tmp_path / "q.npz"), "--out", str(tmp_path / "r")])
