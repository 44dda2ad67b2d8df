"""`kuosan viz ...`: every picture on a tiny case is a valid PNG (GIF) of its size; the arrays saved with
--save-data hold the mathematics (covariances against closed forms); bad input is one line and exit code 2."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from kuosan.cli import main
from kuosan.data import curves_covariance
from kuosan.viz.render import DPI


@pytest.fixture(scope="module")
def ring_run(tmp_path_factory):
    """A (barely) trained flow model of the 8-Gaussian ring, whose exact density kuosan knows."""
    out = tmp_path_factory.mktemp("viz") / "ring"
    assert main(["train", "--data", "ring", "--process", "flow", "--steps", "4", "--batch-size", "16", "--quiet",
                 "--threads", "1", "--set", "data.n=200", "--set", "net.mlp_hidden=16", "--set", "net.mlp_depth=1",
                 "--set", "log.n_samples=4", "--set", "log.sample_steps=2", "--out", str(out)]) == 0
    return out


def png(path):
    with Image.open(path) as im:
        assert im.format == "PNG"
        return im.size


def gif_frames(path):
    with Image.open(path) as im:
        assert im.format == "GIF"
        return im.n_frames


def within_sampling_error(emp, C, n, k=5.0):
    """Every entry of a sample covariance of n Gaussian draws within k standard errors of C."""
    d = np.diagonal(C, axis1=-2, axis2=-1)
    se = np.sqrt((d[..., :, None] * d[..., None, :] + C**2) / (n - 1))
    return float(np.max(np.abs(emp - C) / se)) < k


def test_curve_png_gif_and_data(tmp_path):
    o = tmp_path
    assert main(["viz", "curve", "--frames", "3", "--length", "64", "--path", "flow", "--out", str(o / "c.png"),
                 "--gif", str(o / "c.gif"), "--save-data", str(o / "c.npz")]) == 0
    assert png(o / "c.png") == (round(2.6 * 3 * DPI), round(4.6 * DPI)) and gif_frames(o / "c.gif") == 3
    with np.load(o / "c.npz") as z:
        assert z["x"].shape == (3, 64) and np.allclose(z["alpha"], 1 - z["u"]) and np.allclose(z["sigma"], z["u"])
    (o / "s.csv").write_text("\n".join(str(np.sin(i / 5)) for i in range(100)))
    assert main(["viz", "curve", "--signal", str(o / "s.csv"), "--frames", "2", "--out", str(o / "s.png"),
                 "--save-data", str(o / "s.npz")]) == 0
    with np.load(o / "s.npz") as z:
        assert abs(z["x0"].std(ddof=1) - 0.5) < 1e-12 and abs(z["x0"].mean()) < 1e-12  # standardised


def test_covariance_of_curves_matches_the_closed_form(tmp_path):
    o = tmp_path
    assert main(["viz", "covariance", "--n", "3000", "--times", "0,0.2,1", "--path", "ve", "--out",
                 str(o / "v.png"), "--save-data", str(o / "v.npz"), "--seed", "5"]) == 0
    assert png(o / "v.png") == (round((2.4 * 3 + 4.2) * DPI), round(5.6 * DPI))
    with np.load(o / "v.npz") as z:
        S0 = curves_covariance(64)
        assert np.allclose(z["sigma0"], S0)
        want = z["alpha"][:, None, None] ** 2 * S0 + z["sigma"][:, None, None] ** 2 * np.eye(64)
        assert np.allclose(z["closed"], want) and np.allclose(z["sigma"], 80 * z["u"])  # VE: σ = t
        assert within_sampling_error(z["empirical"], z["closed"], 3000)
        assert z["rank99_signal"] < 16 and z["rank99_noise"] == 64


def test_covariance_of_vectors_and_image_patches(tmp_path, tiny_run):
    o = tmp_path
    rng = np.random.default_rng(0)
    np.save(o / "v.npy", rng.standard_normal((2000, 3)) @ np.array([[1.0, 0.5, 0], [0, 1.0, 0], [0, 0, 0.1]]))
    assert main(["viz", "covariance", "--data", str(o / "v.npy"), "--times", "0.5", "--out", str(o / "a.png"),
                 "--save-data", str(o / "a.npz")]) == 0
    with np.load(o / "a.npz") as z:
        v = np.load(o / "v.npy")
        assert np.allclose(z["sigma0"], np.cov(v.T))  # Σ_0 of the user's vectors
        assert within_sampling_error(z["empirical"], z["closed"], 2000)
    assert main(["viz", "covariance", "--data", "digits", "--patch", "2", "--n", "500", "--out", str(o / "p.png"),
                 "--save-data", str(o / "p.npz")]) == 0
    with np.load(o / "p.npz") as z:
        assert z["sigma0"].shape == (4, 4) and str(z["source"]) == "2x2 patches of digits"
    assert main(["viz", "covariance", "--run", str(tiny_run), "--patch", "3", "--n", "400", "--times", "1",
                 "--out", str(o / "r.png"), "--save-data", str(o / "r.npz")]) == 0
    with np.load(o / "r.npz") as z:  # the run's data (digits) and path (discrete_vp cosine: ᾱ_T ≈ 0)
        assert z["sigma0"].shape == (9, 9) and str(z["path"]) == "discrete_vp cosine"
        assert np.allclose(z["closed"][0], z["alpha"][0] ** 2 * z["sigma0"] + z["sigma"][0] ** 2 * np.eye(9))
        assert within_sampling_error(z["empirical"], z["closed"], 400)


def test_colour_noise_reaches_the_target(tmp_path):
    o = tmp_path
    assert main(["viz", "colour-noise", "--dim", "8", "--n", "3000", "--out", str(o / "n.png"), "--save-data",
                 str(o / "n.npz")]) == 0
    assert png(o / "n.png") == (13 * DPI, 6 * DPI)
    with np.load(o / "n.npz") as z:
        S = curves_covariance(8)
        assert np.allclose(z["target"], S)
        for f in ("factor_eigen", "factor_cholesky"):
            assert np.allclose(z[f] @ z[f].T, S, atol=1e-12)
        for c in ("cov_eigen", "cov_cholesky"):
            assert within_sampling_error(z[c], S, 3000)
        assert within_sampling_error(z["cov_white"], np.eye(8), 3000)
        assert z["err_eigen"][-1] < z["err_eigen"][0] / 5 and z["err_cholesky"][-1] < z["err_cholesky"][0] / 5


def test_schedule_with_a_runs_path(tmp_path, tiny_run):
    o = tmp_path
    assert main(["viz", "schedule", "--kinds", "flow,ve", "--run", str(tiny_run), "--out", str(o / "s.png"),
                 "--save-data", str(o / "s.npz")]) == 0
    assert png(o / "s.png") == (16 * DPI, 5 * DPI)
    with np.load(o / "s.npz") as z:
        assert list(z["names"]) == ["flow", "ve", "run"] and "discrete_vp cosine" in str(z["labels"][2])
        inner = slice(1, -1)
        a, s = z["alpha_run"][inner], z["sigma_run"][inner]
        assert np.allclose(z["log_snr_run"][inner], np.log(a**2 / s**2))


def test_trajectory_with_exact_paths_and_a_comparison(tmp_path, ring_run):
    o = tmp_path
    assert main(["viz", "trajectory", str(ring_run), "--sampler", "euler", "--steps", "3", "--n", "8",
                 "--out", str(o / "t.png"), "--gif", str(o / "t.gif"), "--save-data", str(o / "t.npz")]) == 0
    assert png(o / "t.png") == (round(4.8 * DPI), round(5.4 * DPI)) and gif_frames(o / "t.gif") == 4
    with np.load(o / "t.npz") as z:
        assert z["x"].shape == (4, 8, 2) and z["exact"].shape == (13, 8, 2)  # ring: exact PF-ODE, 4-fold refined
        assert np.allclose(z["exact"][0], z["x"][0], atol=1e-6)
    assert main(["viz", "trajectory", str(ring_run), "--compare", str(ring_run), "--steps", "2", "--n", "4",
                 "--no-exact", "--out", str(o / "c.png"), "--save-data", str(o / "c.npz")]) == 0
    assert png(o / "c.png") == (round(2 * 4.8 * DPI), round(5.4 * DPI))
    with np.load(o / "c.npz") as z:
        assert np.array_equal(z["x"], z["compare_x"]) and "exact" not in z  # the same run from the same x_T


def test_denoise_and_training_panels(tmp_path, tiny_run):
    o = tmp_path
    assert main(["viz", "denoise", str(tiny_run), "--steps", "3", "--n", "2", "--columns", "3", "--out",
                 str(o / "d.png"), "--save-data", str(o / "d.npz"), "--sampler", "ddim", "--eta", "1"]) == 0
    assert png(o / "d.png") == (round(4 * DPI + 0.6 * DPI), round(4 * DPI + 0.9 * DPI))
    with np.load(o / "d.npz") as z:
        assert z["xt"].shape == z["x0"].shape == (3, 2, 1, 8, 8) and z["steps"].tolist() == [0, 1, 2]
    assert main(["viz", "training", str(tiny_run), "--out", str(o / "p.png")]) == 0
    assert png(o / "p.png") == (12 * DPI, round(3.6 * DPI))


def test_bad_input_is_one_line(tmp_path, err, tiny_run, ring_run):
    o = tmp_path
    np.save(o / "sing.npy", np.ones((3, 3)))
    cases = [
        (["viz"], "name a picture"),
        (["viz", "curve", "--out", str(o / "x.gif")], "--out must end in .png"),
        (["viz", "curve", "--gif", str(o / "x.png")], "--gif must end in .gif"),
        (["viz", "curve", "--out", str(o / "no" / "x.png")], "does not exist"),
        (["viz", "curve", "--path", "ve", "--schedule", "cosine"], "apply to --path discrete_vp"),
        (["viz", "curve", "--signal", str(o / "missing.npy")], "is not a file"),
        (["viz", "curve", "--raw"], "--raw applies to --signal"),
        (["viz", "curve", "--frames", "1"], "--frames must be an integer in [2, 200]"),
        (["viz", "curve", "--length", "99999"], "--length must be an integer in [8, 2048]"),
        (["viz", "covariance", "--times", "0.5,2"], "fractions of t_max in [0, 1]"),
        (["viz", "covariance", "--data", "moons", "--patch", "2"], "--patch applies to image data"),
        (["viz", "covariance", "--run", str(tiny_run), "--path", "flow"], "leave out --path"),
        (["viz", "covariance", "--data", "nosuchdata"], "unknown data set"),
        (["viz", "colour-noise", "--cov", str(o / "sing.npy"), "--dim", "4"], "--dim sets the built-in target"),
        (["viz", "colour-noise", "--cov", str(o / "sing.npy")], "not positive definite"),
        (["viz", "schedule", "--kinds", "edm"], "unknown schedule kind 'edm'"),
        (["viz", "trajectory", str(tiny_run)], "needs a model of 2-D data"),
        (["viz", "trajectory", str(o / "nope")], "nope"),
        (["viz", "denoise", str(ring_run)], "needs an image model"),
        (["viz", "denoise", str(tiny_run), "--sampler", "heun", "--eta", "0.5"], "does not take option 'eta'"),
        (["viz", "denoise", str(tiny_run), "--grid", "karras", "--spacing", "leading"], "--spacing applies only"),
        (["viz", "denoise", str(tiny_run), "--variance", "analytic"], "kuosan sample"),
        (["viz", "training", str(o)], "has no log.csv"),
    ]
    for argv, match in cases:
        assert match in err(argv + (["--out", str(o / "out.png")] if "--out" not in argv and len(argv) > 1
                                    else [])), argv
    assert not (o / "out.png").exists()
