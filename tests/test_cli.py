"""The command line: the main job end to end on a tiny budget, and every bad input as one clear line."""

import json

import numpy as np
import pytest
from PIL import Image

from kuosan.cli import main

TINY = ["--channels", "8", "--channel-mult", "1,2", "--attn-resolutions", "", "--batch-size", "16", "--n-data", "100",
        "--n-samples", "4", "--sample-steps", "2", "--threads", "1", "--quiet", "--log-every", "2", "--val-every", "2"]


def _err(capsys, argv):
    code = main(argv)
    err = capsys.readouterr().err.strip()
    assert code != 0
    assert "\n" not in err and err.startswith("kuosan: error:"), err
    assert "Traceback" not in err
    return err


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    out = tmp_path_factory.mktemp("cli") / "run"
    assert main(["train", *TINY, "--steps", "4", "--out", str(out)]) == 0
    return out


def test_main_job_end_to_end(run, tmp_path, capsys):
    for f in ("config.toml", "log.csv", "loss.png", "samples.png"):
        assert (run / f).is_file()
    assert main(["sample", str(run), "--steps", "3", "--n", "6", "--out", str(tmp_path / "g.png"), "--seed", "1"]) == 0
    assert Image.open(tmp_path / "g.png").size[0] > 8
    for sampler in ("ddpm", "ddim"):
        a, b = tmp_path / f"a_{sampler}.npz", tmp_path / f"b_{sampler}.npz"
        main(["sample", str(run), "--sampler", sampler, "--steps", "3", "--n", "5", "--seed", "7", "--eta", "1",
              "--out", str(a)])
        main(["sample", str(run), "--sampler", sampler, "--steps", "3", "--n", "5", "--seed", "7", "--eta", "1",
              "--out", str(b)])
        xa, xb = np.load(a)["x"], np.load(b)["x"]
        assert xa.shape == (5, 1, 8, 8) and np.array_equal(xa, xb)  # same seed, same samples


def test_config_file_and_overrides(tmp_path):
    (tmp_path / "c.toml").write_text('data = "moons"\nsteps = 2\nmlp_hidden = 16\nmlp_depth = 1\nn_samples = 8\n'
                                     'sample_steps = 2\nthreads = 1\nn_data = 64\nbatch_size = 8\n')
    assert main(["train", "--config", str(tmp_path / "c.toml"), "--steps", "3", "--quiet", "--out",
                 str(tmp_path / "r")]) == 0
    saved = json.loads(next((tmp_path / "r" / "checkpoints").glob("step_*/config.json")).read_text())
    assert saved["steps"] == 3 and saved["data"] == "moons" and saved["mlp_hidden"] == 16


@pytest.mark.parametrize("argv,needle", [
    (["train", "--data", "imagenet"], "unknown data set 'imagenet'"),
    (["train", "--schedule", "quadratic"], "unknown schedule 'quadratic'"),
    (["train", "--steps", "0"], "steps must be a positive integer"),
    (["train", "--batch-size", "-4"], "batch_size must be a positive integer"),
    (["train", "--beta-end", "1.5"], "beta_start and beta_end must lie in (0, 1)"),
    (["train", "--T", "abc"], "cannot read 'abc'"),
    (["train", "--target", "score"], "unknown target 'score'"),
    (["train", "--weighting", "snr"], "unknown weighting 'snr'"),
    (["train", "--lrr", "1"], "unrecognized arguments: --lrr"),
    (["train", "--config", "/nonexistent.toml"], "does not exist"),
    (["sample", "/nonexistent-run"], "does not exist"),
    (["frobnicate"], "invalid choice"),
])
def test_bad_input_gives_one_line(capsys, argv, needle):
    assert needle in _err(capsys, argv)


def test_bad_config_key_and_sampler_args(capsys, run, tmp_path):
    (tmp_path / "bad.toml").write_text("stepz = 3\n")
    assert "unknown config key 'stepz'" in _err(capsys, ["train", "--config", str(tmp_path / "bad.toml")])
    (tmp_path / "broken.toml").write_text("steps = = 3\n")
    assert "cannot parse" in _err(capsys, ["train", "--config", str(tmp_path / "broken.toml")])
    assert "unknown sampler 'plms'" in _err(capsys, ["sample", str(run), "--sampler", "plms"])
    assert "positive integer" in _err(capsys, ["sample", str(run), "--steps", "0"])
    assert "--n and --batch-size must be positive" in _err(capsys, ["sample", str(run), "--n", "0"])
    assert ".png or .npz" in _err(capsys, ["sample", str(run), "--out", "x.jpg"])


def test_bad_image_folder(capsys, tmp_path):
    d = tmp_path / "imgs"
    d.mkdir()
    Image.fromarray(np.zeros((8, 8), np.uint8)).save(d / "a.png")
    Image.fromarray(np.zeros((9, 8), np.uint8)).save(d / "b.png")
    assert "size" in _err(capsys, ["train", "--data", str(d), "--steps", "1"])
    (d / "b.png").write_bytes(b"not an image")
    assert "b.png" in _err(capsys, ["train", "--data", str(d), "--steps", "1"])


def test_image_folder_trains(tmp_path):
    d = tmp_path / "imgs"
    d.mkdir()
    rng = np.random.default_rng(0)
    for i in range(6):
        Image.fromarray(rng.integers(0, 255, (8, 8, 3), dtype=np.uint8)).save(d / f"{i}.png")
    assert main(["train", "--data", str(d), *TINY, "--val-fraction", "0", "--steps", "2",
                 "--out", str(tmp_path / "r")]) == 0
    assert (tmp_path / "r" / "samples.png").is_file()


def test_sampler_grid_and_nll_commands(run, tmp_path, capsys):
    for sampler, nfe in (("dpm++2m", 3), ("unipc", 3), ("heun", 5), ("dpm2s", 5), ("sde", 3), ("pc", 6)):
        assert main(["sample", str(run), "--sampler", sampler, "--grid", "logsnr", "--steps", "3", "--n", "2",
                     "--out", str(tmp_path / "s.npz")]) == 0
        assert f"3 steps, {nfe} network evaluations" in capsys.readouterr().out, sampler
    assert main(["sample", str(run), "--sampler", "ddim", "--grid", "optimised", "--steps", "2", "--n", "2",
                 "--out", str(tmp_path / "o.npz")]) == 0
    grids = list((run / "checkpoints").glob("step_*/grids/ddim_2.json"))
    assert len(grids) == 1  # saved with the checkpoint, and reused
    assert main(["sample", str(run), "--sampler", "bespoke", "--grid", "optimised", "--steps", "3", "--n", "2",
                 "--out", str(tmp_path / "b.npz")]) == 0
    assert len(list((run / "checkpoints").glob("step_*/grids/bespoke_3.json"))) == 1
    assert main(["nll", str(run), "--n", "4", "--t-samples", "3"]) == 0
    out = capsys.readouterr().out
    assert "bits/dim" in out and "L_T (prior)" in out
    assert "unknown grid 'optimal'" in _err(capsys, ["sample", str(run), "--grid", "optimal"])
    assert "deterministic sampler" in _err(capsys, ["sample", str(run), "--sampler", "sde", "--grid", "optimised"])
    assert "unknown method 'elbo'" in _err(capsys, ["nll", str(run), "--method", "elbo"])
    assert "--probes must be a positive integer" in _err(capsys, ["nll", str(run), "--method", "ode", "--probes", "-2"])
    assert "unknown variance 'fixed'" in _err(capsys, ["nll", str(run), "--variance", "fixed"])
    assert "learn_variance" in _err(capsys, ["sample", str(run), "--sampler", "ddpm", "--variance", "learned_range",
                                             "--steps", "2", "--n", "1", "--out", str(tmp_path / "l.npz")])
    grid = grids[0]
    doc = json.loads(grid.read_text())
    doc["schedule"] = "0" * 16  # as if made for another schedule
    grid.write_text(json.dumps(doc))
    assert "another schedule" in _err(capsys, ["sample", str(run), "--grid", "optimised", "--steps", "2", "--n", "1"])
