"""``kuosan eval``: the report and table on a tiny vector run (identity features, exact metrics) and a tiny image
run (classifier features, memorisation PNG), and the one-line refusals of bad input (exit code 2)."""

import json

import numpy as np
import pytest

from kuosan.cli import main
from kuosan.data import load_dataset, split

TRAIN = ["--threads", "1", "--quiet", "--batch-size", "32", "--set", "log.n_samples=4", "--set",
         "log.sample_steps=2"]


def kuosan(argv):
    """Exit code of `kuosan eval ...`, through kuosan.cli.main once the verb is registered there."""
    import kuosan.cli as cli

    if "eval" in getattr(cli, "VERBS", {}):
        return main(["eval", *argv])
    from kuosan.cli import eval as ev
    from kuosan.cli.common import Parser

    p = Parser(prog="kuosan")
    ev.add_parser(p.add_subparsers(dest="command", parser_class=Parser))
    try:
        return ev.run(p.parse_args(["eval", *argv]))
    except ValueError as e:  # what kuosan.cli.main prints as one line with exit code 2
        import sys

        print(f"kuosan: error: {' '.join(str(e).split())}", file=sys.stderr)
        return 2


@pytest.fixture(autouse=True)
def _cache(tmp_path_factory, monkeypatch):
    monkeypatch.setenv("KUOSAN_CACHE", str(tmp_path_factory.getbasetemp() / "kuosan-cache"))


@pytest.fixture(scope="module")
def ring_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("eval") / "ring"
    assert main(["train", "--data", "ring", "--set", "data.n=600", "--steps", "20", *TRAIN, "--out", str(out)]) == 0
    return out


@pytest.fixture
def refused(capsys):
    def run(argv):
        code = kuosan(argv)
        err = capsys.readouterr().err.strip()
        assert code == 2 and "\n" not in err and err.startswith("kuosan: error:"), (code, err)
        return err
    return run


def test_vector_run_report_with_exact_metrics(ring_run, tmp_path, capsys):
    pytest.importorskip("ot")
    out = tmp_path / "report.json"
    assert kuosan([str(ring_run), "--steps", "5", "--n", "300", "--boot", "10", "--out", str(out), "--quiet",
                   "--nll", "--nll-n", "16"]) == 0
    table = capsys.readouterr().out
    assert "not comparable with published FIDs" in table and "real-vs-real" in table and "W2" in table
    r = json.loads(out.read_text())
    assert r["features"]["kind"] == "identity" and r["features"]["dim"] == 2
    assert r["n"] == {"samples": 300, "train": 570, "heldout": 30}
    assert r["generation"]["sampler"] == "ddim" and r["generation"]["nfe"] == 5
    assert r["generation"]["grid"] == "uniform"  # the vp path's default grid (karras on ve: test_cli_sample)
    for key in ("fd", "kid", "precision", "recall", "density", "coverage", "near_copies"):
        assert r["metrics"][key]["model"] is not None and r["metrics"][key]["baseline"] is not None
    for key in ("nll_true_density", "w2", "mmd2", "energy_distance", "mode_weights_tv"):
        assert r["exact"][key]["model"] is not None and r["exact"][key]["baseline"] is not None
    assert not (tmp_path / "report_memorisation.png").exists()  # vectors: no picture
    nll = r["model_nll"]
    assert nll["method"] == "vlb" and nll["n"] == 16 and nll["bits"] is None
    assert nll["true_density_bits_per_dim"] < nll["bits_per_dim"]  # 20 training steps: far from the truth
    assert "model NLL (vlb, 16 held-out examples)" in table


def test_class_conditional_run_reports_the_accuracy_of_requested_classes(tmp_path, capsys):
    run = tmp_path / "moons"
    assert main(["train", "--data", "moons", "--set", "data.n=400", "--set", "data.class_cond=true", "--steps", "30",
                 *TRAIN, "--out", str(run)]) == 0
    out = tmp_path / "r.json"
    assert kuosan([str(run), "--steps", "5", "--n", "200", "--boot", "5", "--out", str(out), "--quiet"]) == 0
    r = json.loads(out.read_text())
    assert r["features"]["kind"] == "identity" and r["features"]["classifier"]["kind"] == "mlp_classifier"
    acc = r["metrics"]["class_accuracy"]
    assert 0 <= acc["model"] <= 1 and acc["baseline"] > 0.9  # the classifier on held-out moons
    assert "exact" not in r  # moons has no closed-form density


def test_training_data_as_samples_are_all_near_copies(ring_run, tmp_path, capsys):
    ds = load_dataset("ring", n=600, seed=0)
    train, _ = split(ds, 0.05, 0)
    np.savez(tmp_path / "copies.npz", x=train.x[:200].numpy())
    out = tmp_path / "r.json"
    assert kuosan([str(ring_run), "--samples", str(tmp_path / "copies.npz"), "--out", str(out), "--quiet"]) == 0
    r = json.loads(out.read_text())
    assert r["metrics"]["near_copies"]["model"] == 1.0 and r["memorisation"]["min_ratio"] == 0.0
    assert r["generation"] == {"samples": str(tmp_path / "copies.npz"), "seconds": r["generation"]["seconds"]}
    assert r["metrics"]["precision"]["model"] > 0.9


@pytest.mark.slow  # trains the digits classifier (~10 s on one core)
def test_image_run_report_classes_and_memorisation_png(tmp_path, capsys):
    run = tmp_path / "digits"
    assert main(["train", "--channels", "8", "--set", "net.channel_mult=1,2", "--set", "data.n=400", "--steps", "4",
                 *TRAIN, "--out", str(run)]) == 0
    out = tmp_path / "r.json"
    assert kuosan([str(run), "--steps", "3", "--n", "100", "--boot", "5", "--out", str(out), "--quiet"]) == 0
    r = json.loads(out.read_text())
    assert r["features"]["kind"] == "classifier" and r["features"]["dim"] == 32
    assert len(r["classes"]["model"]["histogram"]) == 10 and r["metrics"]["class_kl"]["model"] >= 0
    assert r["metrics"]["confidence"]["baseline"] > 0.5
    png = tmp_path / "r_memorisation.png"
    assert png.is_file() and r["memorisation"]["png"] == str(png)
    assert "biased upward" in " ".join(r["notes"])  # 100 samples < 5·32: warned, not refused
    # the cached feature network is reused: the same samples give the same FD to the last digit
    np.savez(tmp_path / "x.npz", x=np.zeros((100, 1, 8, 8), np.float32) + np.linspace(-1, 1, 100)[:, None, None, None])
    first = []
    for _ in range(2):
        assert kuosan([str(run), "--samples", str(tmp_path / "x.npz"), "--out", str(out), "--quiet"]) == 0
        first.append(json.loads(out.read_text())["metrics"]["fd"]["model"])
    assert first[0] == first[1]
    assert json.loads(out.read_text())["features"]["classifier"]["cached"] is True


def test_bad_input_is_one_line_and_exit_code_2(ring_run, tmp_path, refused):
    assert "FD needs more samples (--n) than feature dimensions: got 2 for 2" in refused(
        [str(ring_run), "--n", "2", "--quiet"])
    np.savez(tmp_path / "wrong.npz", x=np.zeros((50, 3), np.float32))
    assert "samples of shape (3,) but the run's data has (2,)" in refused(
        [str(ring_run), "--samples", str(tmp_path / "wrong.npz")])
    np.savez(tmp_path / "labels_only.npz", y=np.zeros(50, np.int64))
    assert "holds no sample array" in refused([str(ring_run), "--samples", str(tmp_path / "labels_only.npz")])
    (tmp_path / "junk.npz").write_text("not a zip")
    assert "cannot read it as .npz" in refused([str(ring_run), "--samples", str(tmp_path / "junk.npz")])
    np.savez(tmp_path / "ok.npz", x=np.zeros((50, 2), np.float32))
    assert "--sampler applies when generating, not with --samples" in refused(
        [str(ring_run), "--samples", str(tmp_path / "ok.npz"), "--sampler", "ddim"])
    assert "--n 60: --samples" in refused([str(ring_run), "--samples", str(tmp_path / "ok.npz"), "--n", "60"])
    assert "--out must end in .json" in refused([str(ring_run), "--out", str(tmp_path / "r.png")])
    assert "--nll-n applies only with --nll" in refused([str(ring_run), "--nll-n", "10"])


def test_a_run_whose_data_is_gone_is_refused(tmp_path, refused):
    data = tmp_path / "points.npz"
    np.savez(data, x=np.random.default_rng(0).standard_normal((200, 2)).astype(np.float32))
    run = tmp_path / "run"
    assert main(["train", "--data", str(data), "--steps", "2", *TRAIN, "--out", str(run)]) == 0
    data.unlink()
    err = refused([str(run), "--n", "50"])
    assert "the run's data" in err and "cannot be loaded" in err
