"""``kuosan distill``: a tiny consistency distillation of a 2-D toy teacher end to end, then 1- and 2-step sampling of
the student; ECT from an edm teacher; bad input as one line and exit code 2."""

from __future__ import annotations

import numpy as np
import pytest

from kuosan.cli import main

# a tiny MLP on moons: seconds of training
SMALL = ["--set", "net.mlp_hidden=32", "--set", "net.mlp_depth=1", "--batch-size", "32", "--threads", "1", "--quiet",
         "--set", "log.n_samples=8", "--set", "log.sample_steps=2", "--set", "log.log_every=5",
         "--set", "log.val_every=5"]


@pytest.fixture(scope="module")
def teachers(tmp_path_factory):
    """A v-prediction VP teacher (the default process) and an edm teacher, 20 steps each on moons."""
    root = tmp_path_factory.mktemp("distill")
    out = {}
    for name, flags in (("vp", []), ("edm", ["--process", "edm"])):
        out[name] = root / name
        assert main(["train", "--data", "moons", "--set", "data.n=256", "--steps", "20", *flags, *SMALL,
                     "--out", str(out[name])]) == 0
    return out


def _distill(teacher, out, *extra):
    return main(["distill", str(teacher), "--out", str(out), "--steps", "8", *SMALL, *extra])


def _config(run):
    import tomllib

    return tomllib.loads((run / "config.toml").read_text())


def test_cd_end_to_end_then_one_and_two_step_sampling(teachers, tmp_path):
    run = tmp_path / "cd"
    assert _distill(teachers["vp"], run, "--method", "cd", "--teacher-sampler", "dpm2s") == 0
    cfg = _config(run)
    assert cfg["path"]["kind"] == "ve" and cfg["objective"]["prediction"] == "consistency"
    c = cfg["consistency"]
    assert c["method"] == "cd" and c["teacher_sampler"] == "dpm2s"
    assert "/checkpoints/step_" in c["teacher"]  # the teacher's checkpoint itself, not its run's moving `latest`
    assert cfg["data"]["name"] == "moons" and cfg["net"]["mlp_hidden"] == 32
    for steps in (1, 2):
        out = tmp_path / f"x{steps}.npz"
        assert main(["sample", str(run), "--steps", str(steps), "--n", "16", "--quiet", "--out", str(out)]) == 0
        x = np.load(out)["x"]
        assert x.shape == (16, 2) and np.isfinite(x).all()


def test_ect_starts_from_an_edm_teacher(teachers, tmp_path, capsys):
    run = tmp_path / "ect"
    capsys.readouterr()
    assert _distill(teachers["edm"], run, "--method", "ect", "--stop-at", "4") == 0
    assert "initialised the weights from the teacher run" in capsys.readouterr().err
    c = _config(run)["consistency"]
    assert c["method"] == "ect"
    assert main(["sample", str(run), "--steps", "1", "--n", "4", "--quiet", "--out", str(tmp_path / "x.npz")]) == 0


def test_bad_input(teachers, tmp_path, err, capsys):
    vp, edm = str(teachers["vp"]), str(teachers["edm"])
    base = ["distill", vp, "--out", str(tmp_path / "new"), "--steps", "2", "--quiet"]
    assert "stochastic" in err([*base, "--method", "cd", "--teacher-sampler", "sde"])
    assert "unknown sampler 'nope'" in err([*base, "--method", "cd", "--teacher-sampler", "nope"])
    assert "applies to --method cd only" in err([*base, "--method", "ect", "--teacher-sampler", "heun"])
    assert "ect tunes the teacher's own network" in err([*base, "--method", "ect"])  # a v-prediction teacher
    assert "path.kind is set by distill" in err([*base, "--method", "cd", "--set", "path.kind=flow"])
    assert "--method" in err(base)  # required
    busy = tmp_path / "busy"
    busy.mkdir()
    (busy / "x").write_text("")
    assert "exists and is not empty" in err(["distill", vp, "--method", "cd", "--out", str(busy)])
    assert "does not exist" in err(["distill", str(tmp_path / "nothing"), "--method", "cd", "--out",
                                    str(tmp_path / "n2")])
    # a consistency model cannot be a teacher
    cm = tmp_path / "cm"
    assert _distill(edm, cm, "--method", "ect", "--stop-at", "2") == 0
    capsys.readouterr()
    assert "is a consistency model" in err(["distill", str(cm), "--method", "cd", "--out", str(tmp_path / "n3")])
