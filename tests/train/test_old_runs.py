"""Run folders written before the redesign (flat config.json in each checkpoint, tests/fixtures/old_run_v1: moons,
MLP, linear β with T = 100, ε-prediction, step 20) still load, sample as they did, and resume."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from kuosan.build import load_denoiser
from kuosan.checkpoint import load_checkpoint
from kuosan.paths import DiscreteVP

FIX = Path(__file__).resolve().parents[1] / "fixtures"
OLD = FIX / "old_run_v1"


@pytest.fixture()
def old_run(tmp_path: Path) -> Path:
    """A private copy: resuming writes into the run folder."""
    return Path(shutil.copytree(OLD, tmp_path / "old_run_v1"))


def test_old_checkpoint_loads_with_its_config_migrated():
    ck = load_checkpoint(OLD)
    assert ck.state["step"] == 20 and "config_format" not in ck.state
    assert ck.config["path"] == {"kind": "discrete_vp", "schedule": "linear", "T": 100, "beta_start": 1e-4,
                                 "beta_end": 0.02}
    D, meta, cfg = load_denoiser(OLD)
    assert isinstance(D.path, DiscreteVP) and D.path.T == 100 and D.param.name == "eps"
    assert meta["shape"] == [2] and cfg.net.model == "mlp" and cfg.objective.time_sampling == "auto"
    # the EMA weights by default, the raw ones on request
    torch.testing.assert_close(D.net.state_dict()["mlp.inp.weight"], ck.ema["mlp.inp.weight"], rtol=0, atol=0)
    D_raw, _, _ = load_denoiser(OLD, use_ema=False)
    torch.testing.assert_close(D_raw.net.state_dict()["mlp.inp.weight"], ck.model["mlp.inp.weight"], rtol=0, atol=0)


@pytest.mark.parametrize("name,key", [("ddim", "ddim"), ("dpm++2m", "dpmpp2m"), ("unipc", "unipc"), ("heun", "heun")])
def test_old_run_samples_as_before(name, key):
    """The deterministic samplers on the step-20 EMA model from the saved x_T reproduce the old code's samples
    (trailing uniform grid, 10 steps); only float32 round-off separates the two (α, σ are float64 now)."""
    from kuosan.sampling import SAMPLERS, uniform_grid

    ref = load_file(str(FIX / "old_run_v1_samples.safetensors"))
    D, _, _ = load_denoiser(OLD)
    with torch.no_grad():
        x = SAMPLERS[name].fn(D, ref["x_T"].clone(), uniform_grid(D.path, 10, "trailing"))
    torch.testing.assert_close(x, ref[key], rtol=1e-5, atol=1e-5)
    assert (x - ref["x_T"]).abs().max() > 0.1  # the check compares samples, not the starting noise


def test_old_run_resumes_to_the_old_codes_step_30(old_run: Path):
    """Resuming the step-20 run to step 30 reproduces what the old code wrote at step 30.

    Not bit for bit: the old trainer rounded log ᾱ_t to float32 before taking α_t = exp(½ log ᾱ_t) (34 of the 100
    α_t and 24 of the σ_t differ from the float64 values by one float32 ulp), and AdamW now runs torch's fused
    kernel (the same update, another order of float32 operations), so the weights agree to a few ulp.
    Ten steps move the weights by ~1e-3, so a wrong optimiser state, learning rate or step randomness would show."""
    from kuosan.train import train

    ref = load_file(str(FIX / "old_run_v1_step30.safetensors"))
    run = train(None, resume=old_run, progress=False)
    assert run == old_run
    ck, before = load_checkpoint(run), load_checkpoint(OLD)
    assert ck.state["step"] == 30 and ck.state["config_format"] == 2
    for part, got in (("model", ck.model), ("ema", ck.ema)):
        assert sorted(got) == sorted(k[len(part) + 1:] for k in ref if k.startswith(part + "."))
        for k, v in got.items():
            torch.testing.assert_close(v, ref[f"{part}.{k}"], rtol=0, atol=5e-7)
    moved = max((ck.model[k] - before.model[k]).abs().max().item() for k in ck.model)
    assert moved > 1e-3
    rows = (run / "log.csv").read_text().splitlines()
    assert [r.split(",")[0] for r in rows] == ["step", "10", "20", "30"]  # the old log is continued
    assert "[path]" in (run / "config.toml").read_text()  # the run's config is now written nested
    D, _, cfg = load_denoiser(run)  # and the resumed run (nested config) loads
    assert cfg.optim.steps == 30 and D.path.T == 100
