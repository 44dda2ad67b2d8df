"""`kuosan train`: the main job on a tiny budget, config files, flags and --set, the help, and every bad input
as one line with exit code 2."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pytest
from cli_helpers import TINY
from PIL import Image

from kuosan.cli import build_parser, main
from kuosan.cli.train import overrides_of
from kuosan.config import KEYS


def _saved_config(run):
    return json.loads(next((run / "checkpoints").glob("step_*/config.json")).read_text())


def test_main_job_end_to_end(tiny_run):
    for f in ("config.toml", "log.csv", "loss.png", "samples.png"):
        assert (tiny_run / f).is_file()
    cfg = _saved_config(tiny_run)
    assert cfg["optim"]["steps"] == 4 and cfg["net"]["channels"] == 8 and cfg["net"]["channel_mult"] == [1, 2]
    assert cfg["data"]["n"] == 100 and cfg["log"]["sample_steps"] == 2


def _overrides(argv):
    return overrides_of(build_parser("train").parse_args(["train", *argv]))


def test_flags_map_to_keys_and_set_comes_last():
    got = _overrides(["--data", "moons", "--path", "flow", "--prediction", "velocity", "--steps", "7",
                      "--class-cond", "--precision", "fp32", "--set", "optim.steps=9", "--channel-mult", "1,2,2"])
    assert got[-1] == "optim.steps=9"  # --set is applied after the flags: it wins
    assert {"data.name=moons", "path.kind=flow", "objective.prediction=velocity", "optim.steps=7",
            "data.class_cond=true", "run.precision=fp32", "net.channel_mult=1,2,2"} <= set(got)
    assert _overrides(["--no-class-cond"]) == ["data.class_cond=false"]
    assert _overrides(["--path", "ve"]) == ["path.kind=ve"]  # --path sets path.kind alone
    assert _overrides([]) == []  # nothing given, nothing forwarded: a config file's values stand


def test_help_groups_options_and_shows_allowed_values(capsys):
    assert main(["train", "--help"]) == 0
    out = capsys.readouterr().out
    flat = " ".join(out.split())  # argparse wraps lines
    for title in ("data:", "path (", "network:", "objective:", "optimisation:", "logging and checkpoints:", "run:"):
        assert f"\n{title}" in out, title
    for key in ("path.kind", "path.schedule", "objective.prediction", "run.precision", "objective.weighting",
                "objective.loss", "net.model"):  # every mode shows its allowed values, flag or not
        assert ", ".join(KEYS[key].choices) in flat or "|".join(KEYS[key].choices) in flat, key
    assert "--class-cond, --no-class-cond" in out
    assert main(["train", "--list-keys"]) == 0
    listed = capsys.readouterr().out
    assert all(k in listed for k in KEYS)


def test_config_file_and_overrides(tmp_path):
    (tmp_path / "c.toml").write_text('[data]\nname = "moons"\nn = 64\n[net]\nmlp_hidden = 16\nmlp_depth = 1\n'
                                     '[optim]\nsteps = 2\nbatch_size = 8\n[log]\nn_samples = 8\nsample_steps = 2\n'
                                     '[run]\nthreads = 1\n')
    assert main(["train", "--config", str(tmp_path / "c.toml"), "--steps", "3", "--quiet", "--out",
                 str(tmp_path / "r"), "--set", "net.mlp_depth=2"]) == 0
    saved = _saved_config(tmp_path / "r")
    assert saved["optim"]["steps"] == 3 and saved["data"]["name"] == "moons" and saved["net"]["mlp_hidden"] == 16
    assert saved["net"]["mlp_depth"] == 2


def test_old_flat_config_file_is_migrated(tmp_path):
    (tmp_path / "old.toml").write_text('data = "moons"\nsteps = 2\nmlp_hidden = 16\nmlp_depth = 1\nn_samples = 8\n'
                                       'sample_steps = 2\nthreads = 1\nn_data = 64\nbatch_size = 8\n')
    assert main(["train", "--config", str(tmp_path / "old.toml"), "--quiet", "--out", str(tmp_path / "r")]) == 0
    saved = _saved_config(tmp_path / "r")
    assert saved["data"]["name"] == "moons" and saved["optim"]["steps"] == 2 and saved["data"]["n"] == 64


def test_resume_continues_the_run(tmp_path, capsys):
    out = tmp_path / "r"
    assert main(["train", *TINY, "--steps", "4", "--stop-at", "2", "--out", str(out)]) == 0
    assert json.loads((out / "checkpoints" / "step_0000002" / "state.json").read_text())["step"] == 2
    assert main(["train", "--resume", str(out), "--quiet"]) == 0
    assert (out / "checkpoints" / "latest").read_text().strip() == "step_0000004"
    assert main(["train", "--resume", str(out), "--steps", "5", "--quiet"]) == 0  # a flag changes the saved config
    assert (out / "checkpoints" / "latest").read_text().strip() == "step_0000005"
    assert f"run folder: {out}" in capsys.readouterr().out


@pytest.mark.parametrize("argv,needle", [
    (["train", "--data", "imagenet"], "unknown data set 'imagenet'"),
    (["train", "--schedule", "quadratic"], "invalid choice: 'quadratic'"),
    (["train", "--process", "ddpm"], "invalid choice: 'ddpm'"),
    (["train", "--prediction", "score"], "invalid choice: 'score'"),
    (["train", "--precision", "fp16"], "invalid choice: 'fp16'"),
    (["train", "--compile", "fast"], "invalid choice: 'fast'"),
    (["train", "--steps", "0"], "optim.steps must be a positive integer"),
    (["train", "--steps", "abc"], "--steps must be an integer, got 'abc'"),
    (["train", "--batch-size", "-4"], "optim.batch_size must be a positive integer"),
    (["train", "--lr", "nan"], "--lr must be a finite number"),
    (["train", "--class-cond", "true"], "a boolean is a flag"),
    (["train", "--set", "path.beta_end=1.5", "--schedule", "linear"], "path.beta_end must lie in (0, 1)"),
    (["train", "--set", "path.T=abc"], "cannot read 'abc'"),
    (["train", "--set", "objective.weighting=snr"], "unknown value 'snr'"),
    (["train", "--set", "precision=fp32"], "did you mean 'run.precision'"),
    (["train", "--set", "net.chanels=8"], "unknown config key 'net.chanels' in the command line (did you mean "
                                          "'net.channels'?)"),
    (["train", "--set", "nett.channels=8"], "unknown config table 'nett'"),
    (["train", "--set", "steps"], "--set needs TABLE.KEY=VALUE"),
    (["train", "--lrr", "1"], "unrecognized arguments: --lrr"),
    (["train", "--config", "/nonexistent.toml"], "does not exist"),
    (["train", "--resume", "/nonexistent-run"], "does not exist"),
    (["train", "--stop-at", "0"], "--stop-at must be a positive integer"),
    (["train", "--device", "bogus"], "--device 'bogus' is not a device"),
    (["frobnicate"], "invalid choice"),
    ([], "name a command: train, sample, nll"),
])
def test_bad_input_gives_one_line(err, argv, needle):
    assert needle in err(argv)


def test_device_cuda_without_gpu(err):
    import torch

    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    assert "CUDA is not available" in err(["train", "--device", "cuda", "--steps", "1"])


def test_bad_config_files(err, tmp_path):
    (tmp_path / "bad.toml").write_text("[optim]\nstepz = 3\n")
    assert "unknown config key 'optim.stepz'" in err(["train", "--config", str(tmp_path / "bad.toml")])
    (tmp_path / "table.toml").write_text("[optimiser]\nsteps = 3\n")
    assert "unknown config table 'optimiser'" in err(["train", "--config", str(tmp_path / "table.toml")])
    (tmp_path / "old.toml").write_text("stepz = 3\n")
    assert "no longer exists" in err(["train", "--config", str(tmp_path / "old.toml")])
    (tmp_path / "broken.toml").write_text("steps = = 3\n")
    assert "cannot parse" in err(["train", "--config", str(tmp_path / "broken.toml")])
    assert "--config cannot be combined with --resume" in err(["train", "--config", str(tmp_path / "old.toml"),
                                                               "--resume", str(tmp_path)])


def test_bad_path_combinations(err):
    assert "zero" in err(["train", "--prediction", "eps", "--set", "path.zero_terminal_snr=true", "--steps", "1"])
    assert "does not apply to path kind 'flow'" in err(["train", "--process", "flow", "--set", "path.T=10"])


def test_bad_image_folder(err, tmp_path):
    d = tmp_path / "imgs"
    d.mkdir()
    Image.fromarray(np.zeros((8, 8), np.uint8)).save(d / "a.png")
    Image.fromarray(np.zeros((9, 8), np.uint8)).save(d / "b.png")
    assert "size" in err(["train", "--data", str(d), "--steps", "1", "--quiet"])
    (d / "b.png").write_bytes(b"not an image")
    assert "b.png" in err(["train", "--data", str(d), "--steps", "1", "--quiet"])


def test_image_folder_trains(tmp_path):
    d = tmp_path / "imgs"
    d.mkdir()
    rng = np.random.default_rng(0)
    for i in range(6):
        Image.fromarray(rng.integers(0, 255, (8, 8, 3), dtype=np.uint8)).save(d / f"{i}.png")
    assert main(["train", "--data", str(d), *TINY, "--set", "data.val_fraction=0", "--steps", "2",
                 "--out", str(tmp_path / "r")]) == 0
    assert (tmp_path / "r" / "samples.png").is_file()


def test_errors_from_below_interrupts_and_bugs(monkeypatch, err, capsys):
    import kuosan.train

    def boom(exc):
        def train(*a, **k):
            raise exc
        return train

    for exc, code, needle in ((PermissionError(13, "Permission denied", "/root/x"), 2, "Permission denied: /root/x"),
                              (FileNotFoundError(2, "No such file", "/x/y"), 2, "No such file: /x/y"),
                              (kuosan.train.TrainingError("loss non-finite 10 times"), 2, "loss non-finite"),
                              (ZeroDivisionError("oops"), 1, "internal error (ZeroDivisionError: oops)")):
        monkeypatch.setattr(kuosan.train, "train", boom(exc))
        assert needle in err(["train", "--steps", "1"], code=code)
    monkeypatch.setattr(kuosan.train, "train", boom(KeyboardInterrupt()))
    assert main(["train", "--steps", "1"]) == 130
    assert capsys.readouterr().err.strip() == "kuosan: interrupted"
    monkeypatch.setattr(kuosan.train, "train", boom(KeyboardInterrupt("interrupted; saved a checkpoint at step 3")))
    assert main(["train", "--steps", "1"]) == 130
    assert capsys.readouterr().err.strip() == "kuosan: interrupted; saved a checkpoint at step 3"


def test_python_dash_m_entry_point():
    """`python -m kuosan.cli` (what torchrun runs for DDP) is the same command line."""
    r = subprocess.run([sys.executable, "-m", "kuosan.cli", "train", "--steps", "0"], capture_output=True, text=True,
                       env={**os.environ, "OMP_NUM_THREADS": "1"}, timeout=120)
    assert r.returncode == 2 and r.stderr.strip() == "kuosan: error: optim.steps must be a positive integer, got 0"


@pytest.mark.slow
def test_sigterm_checkpoints_and_exits_143(tmp_path):
    """SIGTERM (SLURM, Kubernetes, `timeout`) during `kuosan train`: one line naming the checkpoint, exit 143,
    and the run resumes from it."""
    import os
    import signal
    import subprocess
    import sys
    import time

    run = tmp_path / "run"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    p = subprocess.Popen([sys.executable, "-m", "kuosan.cli", "train", "--data", "moons", "--steps", "100000",
                          "--out", str(run), "--quiet", "--set", "log.ckpt_every=50", "--set", "net.mlp_hidden=32"],
                         stderr=subprocess.PIPE, text=True, env=env)
    deadline = time.time() + 120
    while not (run / "checkpoints").is_dir() and time.time() < deadline:
        time.sleep(0.2)
    p.send_signal(signal.SIGTERM)
    _, err = p.communicate(timeout=120)
    assert p.returncode == 143, err
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert len(lines) == 1 and "SIGTERM" in lines[0] and "checkpoint" in lines[0], err
    step = int((run / "checkpoints" / "latest").read_text().strip().split("_")[1])
    assert step > 0
