"""The guidance flags (``apply_guidance``, wired into ``kuosan sample`` by the lead), ``kuosan train-classifier`` and
``kuosan sweep-guidance`` on tiny moons runs (2 classes): the guided denoiser and labels they build, one-line
refusals of bad input, the classifier's accuracy falling with the noise, and the sweep's table, JSON and plot."""

from __future__ import annotations

import json

import pytest
import torch

from kuosan.build import load_denoiser
from kuosan.cli import main
from kuosan.cli.common import Parser
from kuosan.cli.guidance_options import add_guidance_options, apply_guidance, grid_row_length
from kuosan.guidance import ClassifierGuided, Guided, classifier_free, classifier_guidance
from kuosan.sampling import sample

TRAIN = ["--data", "moons", "--threads", "1", "--quiet", "--batch-size", "64", "--set", "data.n=1000",
         "--set", "log.n_samples=4", "--set", "log.sample_steps=2", "--set", "net.mlp_hidden=64",
         "--set", "net.mlp_depth=2"]


@pytest.fixture(autouse=True)
def _cache(tmp_path_factory, monkeypatch):
    monkeypatch.setenv("KUOSAN_CACHE", str(tmp_path_factory.getbasetemp() / "kuosan-cache"))


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """cond: class-conditional, 150 steps with an earlier checkpoint at 75; plain: unconditional; linear: another
    path (the linear β table); nodrop: trained without label dropout (no null class)."""
    root = tmp_path_factory.mktemp("guidance")
    for name, extra in (("cond", ["--class-cond", "--steps", "150", "--set", "log.ckpt_every=75"]),
                        ("plain", ["--steps", "10"]),
                        ("linear", ["--class-cond", "--steps", "1", "--set", "path.schedule=linear"]),
                        ("nodrop", ["--class-cond", "--steps", "1", "--set", "data.p_uncond=0"])):
        assert main(["train", *TRAIN, *extra, "--out", str(root / name)]) == 0
    return root


def parse(argv):
    p = Parser(prog="kuosan")
    p.add_argument("checkpoint")
    p.add_argument("--no-ema", action="store_true")
    add_guidance_options(p)
    return p.parse_args(argv)


def apply(run, argv, n=6):
    args = parse([str(run), *argv])
    D, meta, cfg = load_denoiser(run)
    G, cond = apply_guidance(args, D, meta, cfg, n, "cpu")
    return D, G, cond, args, meta


def test_cfg_flags_build_the_wrapper_and_the_labels(runs):
    D, G, cond, _, _ = apply(runs / "cond", ["--class", "1", "--guidance", "3", "--guidance-interval=-2,4"])
    assert isinstance(G, Guided) and G.scale == 3.0 and G.interval == (-2.0, 4.0)
    assert torch.equal(cond["y"], torch.ones(6, dtype=torch.long))
    ref = classifier_free(D, 3.0, null_label=2, interval=(-2.0, 4.0))
    kw = dict(seed=1, cond=cond)
    assert torch.equal(sample(G, "ddim", (6, 2), 5, **kw), sample(ref, "ddim", (6, 2), 5, **kw))
    D, G, cond, args, meta = apply(runs / "cond", ["--class", "all", "--guidance", "1"])
    assert torch.equal(cond["y"], torch.tensor([0, 0, 0, 1, 1, 1])) and grid_row_length(args, meta, 6) == 3
    assert torch.equal(sample(G, "sde", (6, 2), 5, **{**kw, "cond": cond}), sample(D, "sde", (6, 2), 5,
                                                                                   **{**kw, "cond": cond}))
    D, G, cond, args, meta = apply(runs / "cond", [])
    assert G is D and cond is None and grid_row_length(args, meta, 6) is None
    _, G, cond, _, _ = apply(runs / "cond", ["--class", "0"])  # conditional sampling without guidance
    assert not isinstance(G, Guided) and torch.equal(cond["y"], torch.zeros(6, dtype=torch.long))


def test_autoguidance_with_an_earlier_checkpoint(runs):
    early = runs / "cond" / "checkpoints" / "step_0000075"
    assert early.is_dir()
    D, G, cond, _, _ = apply(runs / "cond", ["--class", "1", "--guidance", "2", "--guide-run", str(early)])
    assert isinstance(G, Guided) and G.name == "auto"
    x = torch.randn(6, 2)
    t = torch.full((6,), 500.0, dtype=torch.float64)
    weak = load_denoiser(early)[0]
    y = cond["y"]
    with torch.no_grad():
        torch.testing.assert_close(G(x, t, y=y), weak(x, t, y=y) + 2 * (D(x, t, y=y) - weak(x, t, y=y)))
    _, G, cond, _, _ = apply(runs / "plain", ["--guidance", "2", "--guide-run", str(runs / "plain")])
    assert G.name == "auto" and cond is None  # unconditional models too


@pytest.mark.parametrize("run, argv, match", [
    ("cond", ["--class", "2"], r"--class 2 is out of range: the run's data has classes 0\.\.1"),
    ("cond", ["--class", "one"], r"must be a class index"),
    ("cond", ["--class", "-1"], r"must be a class index"),
    ("cond", ["--class", "1", "--guidance", "-1"], r"--guidance must be a finite number >= 0"),
    ("cond", ["--guidance", "3"], r"needs --class N or --class all"),
    ("cond", ["--class", "all"], r"--n must be a multiple of 2"),
    ("plain", ["--class", "1", "--guidance", "3"], r"unconditional"),
    ("plain", ["--guidance", "3"], r"classifier-free guidance needs a class-conditional run"),
    ("cond", ["--class", "1", "--guidance", "2", "--guide-run", "RUNS/linear"], r"another path"),
    ("cond", ["--class", "1", "--guidance", "2", "--guide-run", "RUNS/plain"], r"conditioned the same way"),
    ("cond", ["--class", "1", "--guidance", "2", "--guide-run", "DIGITS"], r"shape \(1, 8, 8\)"),
    ("nodrop", ["--class", "1", "--guidance", "2"], r"without label dropout"),
    ("cond", ["--guide-run", "RUNS/plain"], r"--guide-run applies only with --guidance"),
    ("cond", ["--guidance", "2", "--guidance-kind", "auto"], r"needs --guide-run"),
    ("cond", ["--guidance-interval", "3,1"], r"LO <= HI"),
    ("cond", ["--class", "1", "--guidance-interval", "1,3"], r"only with --guidance W or --classifier-guidance S"),
    ("cond", ["--class", "1", "--classifier", "x"], r"--classifier applies only with classifier guidance"),
    ("cond", ["--class", "1", "--guidance", "1", "--guidance-kind", "classifier", "--classifier-guidance", "1"],
     r"give one"),
])
def test_bad_guidance_input_is_one_line(runs, tiny_run, run, argv, match):
    argv = [a.replace("RUNS", str(runs)).replace("DIGITS", str(tiny_run)) for a in argv]
    with pytest.raises(ValueError, match=match) as e:  # ValueError: kuosan.cli.main's one line, exit code 2
        apply(runs / run, argv, n=5)
    assert "\n" not in str(e.value)


def test_train_classifier_then_classifier_guidance(runs, capsys, err):
    assert main(["train-classifier", str(runs / "plain"), "--steps", "150", "--width", "32", "--quiet"]) == 0
    out = capsys.readouterr().out
    assert "accuracy on the held-out split" in out and "wrote the classifier" in out
    info = json.loads((runs / "plain" / "classifier" / "classifier.json").read_text())
    acc = [r["accuracy"] for r in info["accuracy_by_noise"]]
    assert acc[0] > 0.9 and acc[0] > acc[-1] + 0.2, acc  # falls with the noise, towards chance (0.5)
    assert info["time_sampling"] == "uniform_discrete" and info["path"]["kind"] == "discrete_vp"
    D, G, cond, _, _ = apply(runs / "plain", ["--class", "0", "--classifier-guidance", "2"])
    assert isinstance(G, ClassifierGuided) and not G.conditional_model and G.scale == 2.0 and G.interval is None
    _, Gi, _, _, _ = apply(runs / "plain", ["--class", "0", "--classifier-guidance", "2", "--guidance-interval=-1,3"])
    assert isinstance(Gi, ClassifierGuided) and Gi.interval == (-1.0, 3.0)  # the interval limits it too
    ref = classifier_guidance(D, G.classifier, 2.0, interval=(-1.0, 3.0))
    kw = dict(seed=2, cond={"y": torch.zeros(8, dtype=torch.long)})
    assert torch.equal(sample(Gi, "ddim", (8, 2), 6, **kw), sample(ref, "ddim", (8, 2), 6, **kw))
    assert not torch.equal(sample(Gi, "ddim", (8, 2), 6, **kw), sample(G, "ddim", (8, 2), 6, **kw))
    x = sample(G, "ddim", (200, 2), 10, cond={"y": torch.zeros(200, dtype=torch.long)}, eta=1.0)
    probs = G.classifier.log_probs(x, torch.zeros(200, dtype=torch.float64) + 1.0).exp()[:, 0]
    assert float((probs > 0.5).float().mean()) > 0.8  # the samples are of class 0 by the classifier's judgement
    _, G, _, _, _ = apply(runs / "cond", ["--class", "0", "--guidance", "2", "--classifier-guidance", "1",
                                          "--classifier", str(runs / "plain")])
    assert isinstance(G, ClassifierGuided) and G.conditional_model and isinstance(G.D, Guided)
    with pytest.raises(ValueError, match="no classifier"):
        apply(runs / "cond", ["--class", "0", "--classifier-guidance", "1"])
    assert "does not exist" in err(["train-classifier", str(runs / "plain"), "--out", str(runs / "no" / "c")])
    e = err(["train-classifier", str(runs / "plain"), "--steps", "0"])
    assert "--steps must be a positive integer" in e


def test_train_classifier_refuses_unlabelled_data(tmp_path, err):
    run = tmp_path / "swissroll"
    assert main(["train", *[a if a != "moons" else "swissroll" for a in TRAIN], "--steps", "2", "--out", str(run)]) == 0
    assert "has no class labels" in err(["train-classifier", str(run), "--steps", "1", "--quiet"])


def test_sweep_guidance_table_json_and_plot(runs, tmp_path, capsys, err):
    out = tmp_path / "sweep.json"
    assert main(["sweep-guidance", str(runs / "cond"), "--scales", "0,1,4", "--n", "150", "--steps", "8",
                 "--out", str(out), "--quiet"]) == 0
    table = capsys.readouterr().out
    assert "guidance sweep (cfg" in table and "real" in table
    r = json.loads(out.read_text())
    assert [row["scale"] for row in r["rows"]] == [0.0, 1.0, 4.0] and r["n"] == 150
    acc = [row["accuracy"] for row in r["rows"]]
    assert acc[0] < 0.7 and acc[1] > acc[0] + 0.15 and acc[2] >= acc[1] - 0.05, acc  # w = 0 ignores the class
    assert [row["nfe"] for row in r["rows"]] == [16, 8, 16]  # two network evaluations per guided step
    assert r["rows"][2]["recall"] < r["rows"][1]["recall"]  # guidance trades diversity
    assert out.with_suffix(".png").stat().st_size > 1000
    assert "--kind cfg needs a class-conditional run" in err(["sweep-guidance", str(runs / "plain"), "--quiet"])
    assert "--kind auto needs --guide-run" in err(["sweep-guidance", str(runs / "cond"), "--kind", "auto"])
    assert "scales >= 0" in err(["sweep-guidance", str(runs / "cond"), "--scales", "1,-2"])
