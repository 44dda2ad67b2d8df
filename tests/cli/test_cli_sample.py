"""`kuosan sample`: samples, reproducibility, every sampler and grid from the registry, one progress bar, and every
bad input refused as one line with exit code 2 before any sampling."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from PIL import Image

import kuosan.sampling
from kuosan.cli import main
from kuosan.cli.common import MAX_SAMPLES, UsageError, check_sample_size
from kuosan.sampling import SAMPLERS


def _sample(run, tmp_path, name, *extra):
    out = tmp_path / name
    assert main(["sample", str(run), "--quiet", "--out", str(out), *extra]) == 0
    return np.load(out)["x"] if out.suffix == ".npz" else out


def test_png_and_npz(tiny_run, tmp_path):
    png = _sample(tiny_run, tmp_path, "g.png", "--steps", "3", "--n", "6", "--seed", "1")
    assert Image.open(png).size[0] > 8
    x = _sample(tiny_run, tmp_path, "x.npz", "--steps", "3", "--n", "5")
    assert x.shape == (5, 1, 8, 8) and np.isfinite(x).all()


@pytest.mark.parametrize("sampler,opts", [("ddpm", []), ("ddim", ["--eta", "1"])])
def test_same_seed_same_samples_for_any_batch_size(tiny_run, tmp_path, sampler, opts):
    common = ["--sampler", sampler, "--steps", "3", "--seed", "7", *opts]
    a = _sample(tiny_run, tmp_path, "a.npz", *common, "--n", "5")
    b = _sample(tiny_run, tmp_path, "b.npz", *common, "--n", "5", "--batch-size", "2")
    c = _sample(tiny_run, tmp_path, "c.npz", *common, "--n", "3", "--first-index", "2")
    d = _sample(tiny_run, tmp_path, "d.npz", *common, "--n", "5", "--seed", "8")
    e = _sample(tiny_run, tmp_path, "e.npz", *common, "--n", "5")
    assert np.array_equal(a, e)  # same command, same samples, bit for bit
    # sample i depends only on (seed, i); a U-Net's float32 kernels may round differently per batch size
    np.testing.assert_allclose(b, a, rtol=0, atol=1e-5)
    np.testing.assert_allclose(c, a[2:], rtol=0, atol=1e-5)
    assert np.abs(a - d).max() > 0.1


def test_existing_out_file_is_replaced(tiny_run, tmp_path):
    out = tmp_path / "x.npz"
    out.write_bytes(b"old")
    x = _sample(tiny_run, tmp_path, "x.npz", "--steps", "2", "--n", "2")
    assert x.shape == (2, 1, 8, 8)
    assert [p.name for p in tmp_path.iterdir()] == ["x.npz"]  # no temporary file left


def test_every_sampler_and_its_nfe(tiny_run, tmp_path, capsys):
    """Every registered sampler runs from the command line; the NFE printed (counted) is the declared one."""
    from kuosan.build import load_denoiser

    path = load_denoiser(tiny_run)[0].path
    for name, spec in SAMPLERS.items():
        if name == "ode":
            continue  # adaptive: no declared NFE; run in the README test
        assert main(["sample", str(tiny_run), "--sampler", name, "--grid", "logsnr", "--steps", "3", "--n", "2",
                     "--quiet", "--out", str(tmp_path / "s.npz")]) == 0, name
        out = capsys.readouterr().out
        assert f"{name} on the logsnr grid: 3 steps, {spec.nfe(3, path)} network evaluations" in out, out


def test_options_are_forwarded_only_when_given(tiny_run, tmp_path, monkeypatch):
    seen = {}

    def fake(D, sampler, shape, steps, **kw):
        seen.update(kw, sampler=sampler)
        kw["stats"]["nfe"] = steps
        return torch.zeros(shape)

    monkeypatch.setattr(kuosan.sampling, "sample", fake)
    _sample(tiny_run, tmp_path, "a.npz", "--sampler", "dpm++2m", "--steps", "2", "--n", "1")
    assert not {"eta", "clip", "variance", "r"} & set(seen)
    seen.clear()
    _sample(tiny_run, tmp_path, "a.npz", "--sampler", "ddim", "--eta", "0.5", "--clip", "1", "--steps", "2", "--n", "1")
    assert seen["eta"] == 0.5 and seen["clip"] == 1.0
    seen.clear()
    _sample(tiny_run, tmp_path, "a.npz", "--sampler", "unipc", "--no-corrector", "--variant", "bh1", "--steps", "2",
            "--n", "1")
    assert seen["corrector"] is False and seen["variant"] == "bh1"


def test_one_progress_bar_over_all_batches(tiny_run, tmp_path, capsys):
    assert main(["sample", str(tiny_run), "--steps", "3", "--n", "6", "--batch-size", "2",
                 "--out", str(tmp_path / "x.npz")]) == 0
    err = capsys.readouterr().err
    assert err.count("0/9") == 1 and "9/9" in err  # 3 batches x 3 steps on one bar, never restarted


def test_optimised_grid_and_bespoke_are_saved_and_reused(tiny_run, tmp_path, capsys, err, monkeypatch):
    import functools
    import shutil

    import kuosan.sampling.tuning as tuning
    import kuosan.sampling.tuning.cache as cache

    # the command line's plumbing is tested here (fit, save, reuse, refuse another path), not the fits' quality
    # (tests/sampling): a small budget for both fits
    monkeypatch.setattr(cache, "optimise_grid", functools.partial(cache.optimise_grid, ref_steps=20, max_evals=8))
    monkeypatch.setattr(tuning, "bespoke_params", functools.partial(tuning.bespoke_params, calib_n=16, ref_steps=20,
                                                                    iters=5, batch_size=16))
    run = tmp_path / "run"
    shutil.copytree(tiny_run, run)  # the fits are saved into the checkpoint
    assert main(["sample", str(run), "--sampler", "ddim", "--grid", "optimised", "--steps", "2", "--n", "2",
                 "--out", str(tmp_path / "o.npz")]) == 0
    assert "%|" in capsys.readouterr().err.split("ddim, 2 samples")[0]  # the fit shows a bar before sampling
    grids = list((run / "checkpoints").glob("step_*/grids/ddim_2.json"))
    assert len(grids) == 1
    assert main(["sample", str(run), "--sampler", "bespoke", "--grid", "optimised", "--steps", "3", "--n", "2",
                 "--quiet", "--out", str(tmp_path / "b.npz")]) == 0
    assert len(list((run / "checkpoints").glob("step_*/grids/bespoke_3.json"))) == 1
    doc = json.loads(grids[0].read_text())
    doc["path"] = "0" * 16  # as if fitted for another path
    grids[0].write_text(json.dumps(doc))
    assert "made for another path" in err(["sample", str(run), "--grid", "optimised", "--steps", "2", "--n", "1",
                                           "--quiet", "--out", str(tmp_path / "o.npz")])


def test_analytic_variance(tiny_run, tmp_path, capsys):
    assert main(["sample", str(tiny_run), "--sampler", "ddpm", "--variance", "analytic", "--analytic-n", "16",
                 "--steps", "3", "--n", "2", "--out", str(tmp_path / "a.npz")]) == 0
    assert "analytic variance" in capsys.readouterr().err  # its estimation shows progress


@pytest.fixture
def no_sampling(monkeypatch):
    """Every refusal must come before any sampling (and before any grid fit or analytic estimate)."""

    def fail(*a, **k):
        raise AssertionError("sampling started before the input was checked")

    monkeypatch.setattr(kuosan.sampling, "sample", fail)
    import kuosan.sampling.tuning as tuning

    monkeypatch.setattr(tuning, "grid_for", fail)
    monkeypatch.setattr(tuning, "bespoke_params", fail)
    import kuosan.likelihood as lk

    monkeypatch.setattr(lk, "estimate_analytic_table", fail)


@pytest.mark.parametrize("extra,needle", [
    (["--clip", "-1"], "--clip must be a finite number > 0, got '-1'"),
    (["--clip", "nan"], "--clip must be a finite number > 0, got 'nan'"),
    (["--clip", "0"], "--clip must be a finite number > 0"),
    (["--seed", "-1"], "--seed must be an integer in [0, 2^63), got '-1'"),
    (["--n", "0"], "--n must be a positive integer"),
    (["--n", "10000000"], f"--n must be at most {MAX_SAMPLES}"),
    (["--n", "abc"], "--n must be a positive integer"),
    (["--steps", "0"], "--steps must be a positive integer"),
    (["--steps", "-3"], "--steps must be a positive integer"),
    (["--steps", "2000"], "exceed"),
    (["--batch-size", "0"], "--batch-size must be a positive integer"),
    (["--first-index", "-1"], "--first-index must be an integer >= 0"),
    (["--out", "x.jpg"], ".png or .npz"),
    (["--device", "bogus"], "--device 'bogus' is not a device"),
    (["--sampler", "plms"], "invalid choice: 'plms'"),
    (["--grid", "optimal"], "invalid choice: 'optimal'"),
    (["--sampler", "dpm++2m", "--eta", "0.5"], "sampler 'dpm++2m' does not take option --eta"),
    (["--sampler", "ddim", "--variance", "analytic"], "sampler 'ddim' does not take option --variance"),
    (["--sampler", "heun", "--clip", "1"], "sampler 'heun' does not take option --clip"),
    (["--eta", "-0.5"], "--eta must be a finite number >= 0"),
    (["--sampler", "sde", "--grid", "optimised"], "needs a deterministic fixed-step sampler"),
    (["--sampler", "ode", "--grid", "optimised"], "needs a deterministic fixed-step sampler"),
    (["--grid", "karras", "--spacing", "leading"], "--spacing applies only to --grid uniform"),
    (["--analytic-n", "8"], "--analytic-n applies only with --variance analytic"),
    (["--sampler", "ddpm", "--variance", "learned_range"], "objective.learn_variance"),
])
def test_bad_input_refused_before_sampling(tiny_run, tmp_path, err, no_sampling, extra, needle):
    assert needle in err(["sample", str(tiny_run), "--out", str(tmp_path / "x.npz"), *extra])
    assert not (tmp_path / "x.npz").exists()


def test_bad_out_paths(tiny_run, tmp_path, err, no_sampling):
    assert "folder" in err(["sample", str(tiny_run), "--out", str(tmp_path / "missing" / "x.png")])
    (tmp_path / "d.png").mkdir()
    assert "is a folder" in err(["sample", str(tiny_run), "--out", str(tmp_path / "d.png")])
    assert "is a folder" in err(["sample", str(tiny_run), "--out", str(tmp_path)])


def test_missing_run_and_no_gpu(tmp_path, err):
    assert "does not exist" in err(["sample", str(tmp_path / "nonexistent-run")])
    assert "not a kuosan run" in err(["sample", str(tmp_path)])
    if not torch.cuda.is_available():
        assert "CUDA is not available" in err(["sample", str(tmp_path), "--device", "cuda"])


def test_memory_bound():
    check_sample_size(MAX_SAMPLES, (1, 8, 8))
    with pytest.raises(UsageError, match=r"need 4\.6 GiB; at most 4 GiB \(87381 samples\)"):
        check_sample_size(MAX_SAMPLES, (3, 64, 64))
    from pathlib import Path

    with pytest.raises(UsageError, match="a .png grid holds at most"):
        check_sample_size(5000, (1, 8, 8), Path("x.png"))
    check_sample_size(5000, (1, 8, 8), Path("x.npz"))
    check_sample_size(5000, (2,), Path("x.png"))  # a scatter plot, not a grid


def test_non_finite_samples_are_an_error(tiny_run, tmp_path, err, monkeypatch):
    def nan_sampler(D, sampler, shape, steps, **kw):
        raise kuosan.sampling.NonFiniteSamplesError("sampler 'pc' produced non-finite values in 2 of 2 samples")

    monkeypatch.setattr(kuosan.sampling, "sample", nan_sampler)
    assert "non-finite" in err(["sample", str(tiny_run), "--sampler", "pc", "--out", str(tmp_path / "x.npz")])
    assert not (tmp_path / "x.npz").exists()


@pytest.mark.slow
def test_ctrl_c_is_one_line_and_exit_130(tiny_run, tmp_path):
    import os
    import signal
    import subprocess
    import sys
    import time

    p = subprocess.Popen([sys.executable, "-m", "kuosan.cli", "sample", str(tiny_run), "--n", "100000", "--steps",
                          "1000", "--quiet", "--out", str(tmp_path / "x.npz")], stdout=subprocess.PIPE,
                         stderr=subprocess.PIPE, text=True, env={**os.environ, "OMP_NUM_THREADS": "1"})
    time.sleep(10)  # past the imports: sampling 10^5 samples x 1000 steps takes far longer
    p.send_signal(signal.SIGINT)
    out, err = p.communicate(timeout=60)
    assert p.returncode == 130 and err.strip() == "kuosan: interrupted", err
    assert not (tmp_path / "x.npz").exists()


def test_the_default_grid_is_the_paths(tiny_run, tmp_path, capsys):
    """No --grid: karras on an EDM (ve) run, uniform on the digits (vp) run; --spacing alone means the uniform grid."""
    from cli_helpers import TINY

    edm = tmp_path / "edm"
    assert main(["train", *TINY, "--process", "edm", "--steps", "2", "--out", str(edm)]) == 0
    capsys.readouterr()
    cases = [(edm, [], "karras"), (edm, ["--spacing", "trailing"], "uniform"), (tiny_run, [], "uniform")]
    for run, extra, grid in cases:
        _sample(run, tmp_path, "x.npz", "--steps", "3", "--n", "2", *extra)
        assert f"ddim on the {grid} grid: 3 steps" in capsys.readouterr().out
