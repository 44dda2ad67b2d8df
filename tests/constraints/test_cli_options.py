"""The command-line side of constraints and inpainting (kuosan/cli/constraint_options.py): flags parsed and checked
before any work, masks and known values read from .png/.npy/.npz and checked (shape, binary, data range), A x = b
from an .npz, every bad input a one-line ValueError (exit code 2 through kuosan.cli.main); and end to end with the
exact denoiser: the output satisfies the constraint and the picture shows inputs, masks and fills."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from kuosan.cli.common import Parser, UsageError
from kuosan.cli.constraint_options import add_constraint_options, apply_constraints, check_constraint_options
from kuosan.constraints import ConstraintError
from kuosan.exact import ExactDenoiser, curve_cov, gaussian
from kuosan.paths import make_path
from kuosan.sampling import NoiseSource, ddim, make_grid

SHAPE = (1, 8, 8)
IMAGE = {"kind": "image", "shape": list(SHAPE)}
PATH = make_path("vp_cosine")


def parse(*argv: str):
    p = Parser(prog="kuosan sample")
    add_constraint_options(p)
    return p.parse_args(list(argv))


def png(path, arr) -> str:
    Image.fromarray(np.asarray(arr, dtype=np.uint8)).save(path)
    return str(path)


def image_files(tmp_path):
    mask = np.zeros((8, 8), np.uint8)
    mask[:, :4] = 255  # the left half is known
    known = np.tile(np.linspace(0, 255, 8).astype(np.uint8), (8, 1))
    return png(tmp_path / "m.png", mask), png(tmp_path / "x.png", known)


def draw(con, n: int, dims, seed: int = 0):
    noise = NoiseSource(seed, 0, n)
    x = noise(torch.empty(n, *dims))
    ts = make_grid(PATH, 6, "uniform")
    return con.finish(ddim(con.denoiser, x, ts, eta=1.0, noise=noise, cond=con.cond, callback=con.callback))


@pytest.mark.parametrize("method", ["replace", "repaint", "dps"])
def test_image_inpainting_end_to_end(tmp_path, method):
    m, k = image_files(tmp_path)
    D = ExactDenoiser(gaussian(torch.zeros(64), curve_cov(64, 0.3, 3.0)), PATH)
    extra = ["--resample", "2"] if method == "repaint" else []
    args = parse("--mask", m, "--known", k, "--inpaint", method, *extra)
    check_constraint_options(args, "ddim")
    con = apply_constraints(args, D, IMAGE, (5, *SHAPE), make_grid(PATH, 6, "uniform"), seed=1)
    x = draw(con, 5, SHAPE)
    want = torch.from_numpy(np.asarray(Image.open(k), np.float32) / 127.5 - 1)
    assert float((x[:, 0, :, :4] - want[:, :4]).abs().max()) <= 1e-6  # the known half, exactly
    assert float(con.note(x).rsplit(" ", 1)[1]) <= 1e-6  # "... largest distance from the constraint set 1.7e-08"
    if method == "repaint":  # (R - 1)(N - 1) re-step evaluations, which the sampler's own count does not see
        assert "5 of the evaluations per sample are its re-steps" in con.note(x)
    out = tmp_path / "fill.png"
    con.save(x, out)
    w, h = Image.open(out).size
    assert w > 6 * h  # one row: input, mask and 5 fills


def test_vector_linear_constraint_end_to_end(tmp_path):
    d = 6
    A = np.random.default_rng(0).standard_normal((2, d))
    np.savez(tmp_path / "lin.npz", A=A, b=np.array([0.5, -0.2]))
    D = ExactDenoiser(gaussian(torch.zeros(d), curve_cov(d, 0.5, 2.0)), PATH)
    args = parse("--constraint", f"linear:{tmp_path / 'lin.npz'}", "--project-x0")
    check_constraint_options(args, "ddim")
    con = apply_constraints(args, D, {"kind": "vector", "shape": [d]}, (7, d), make_grid(PATH, 6, "uniform"))
    x = draw(con, 7, (d,))
    assert float(np.abs(x.double().numpy() @ A.T - [0.5, -0.2]).max()) <= 1e-6
    assert con.save is None  # saved as ordinary samples


def test_no_constraint_passes_everything_through():
    D = ExactDenoiser(gaussian(torch.zeros(2), torch.eye(2)), PATH)
    con = apply_constraints(parse(), D, {"kind": "vector", "shape": [2]}, (3, 2), make_grid(PATH, 2, "uniform"))
    assert con.denoiser is D and con.callback is None and con.cond == {} and con.save is None


@pytest.mark.parametrize("argv, sampler, match", [
    (["--mask", "m.png"], "ddim", "go together"),
    (["--inpaint", "dps"], "ddim", "needs --mask"),
    (["--mask", "m", "--known", "k", "--resample", "3"], "ddim", "only with --inpaint repaint"),
    (["--mask", "m", "--known", "k", "--inpaint", "repaint", "--dps-scale", "1"], "ddim", "only with --inpaint dps"),
    (["--project-x0"], "ddim", "only with --constraint"),
    (["--constraint", "box:-1,1"], "ode", "cannot project after each step"),
])
def test_flags_that_do_not_go_together(argv, sampler, match):
    with pytest.raises(UsageError, match=match):
        check_constraint_options(parse(*argv), sampler)


def test_ode_with_dps_alone_is_allowed():
    check_constraint_options(parse("--mask", "m", "--known", "k", "--inpaint", "dps"), "ode")


@pytest.mark.parametrize("argv, match", [
    (["--constraint", "box:1"], "box:LO,HI"),
    (["--constraint", "circle:1"], "box:LO,HI or linear:FILE"),
    (["--dps-scale", "-1"], ">= 0"),
    (["--resample", "0"], "positive integer"),
])
def test_bad_flag_values(argv, match):
    with pytest.raises(UsageError, match=match):
        parse(*argv)


def run_bad(tmp_path, argv, meta=IMAGE, shape=(2, *SHAPE)):
    D = ExactDenoiser(gaussian(torch.zeros(64), torch.eye(64)), PATH)
    return apply_constraints(parse(*argv), D, meta, shape, make_grid(PATH, 2, "uniform"))


def test_bad_files_are_one_line_errors(tmp_path):
    m, k = image_files(tmp_path)
    cases = []
    wrong = png(tmp_path / "wrong.png", np.zeros((6, 6)))
    cases.append((["--mask", wrong, "--known", k], "shape"))
    grey = png(tmp_path / "grey.png", np.full((8, 8), 128))
    cases.append((["--mask", grey, "--known", k], "not binary"))
    np.save(tmp_path / "half.npy", np.full(SHAPE, 0.5))
    cases.append((["--mask", str(tmp_path / "half.npy"), "--known", k], "not binary"))
    np.save(tmp_path / "big.npy", np.full(SHAPE, 3.0, np.float32))
    cases.append((["--mask", m, "--known", str(tmp_path / "big.npy")], "outside the data range"))
    np.save(tmp_path / "ones.npy", np.ones(SHAPE))
    cases.append((["--mask", str(tmp_path / "ones.npy"), "--known", k], "nothing to fill"))
    np.save(tmp_path / "rows3.npy", np.zeros((3, *SHAPE), np.float32))
    np.save(tmp_path / "mask2.npy", np.stack([np.asarray(Image.open(m)) // 255] * 2)[:, None])
    cases.append((["--mask", str(tmp_path / "mask2.npy"), "--known", str(tmp_path / "rows3.npy")], "rows"))
    cases.append((["--mask", str(tmp_path / "nope.png"), "--known", k], "not a file"))
    np.savez(tmp_path / "noB.npz", A=np.ones((1, 64)))
    cases.append((["--constraint", f"linear:{tmp_path / 'noB.npz'}"], "needs A and b"))
    np.savez(tmp_path / "bad.npz", A=np.ones((2, 64)), b=np.array([0.0, 1.0]))  # two copies of one row: 0 = 1
    cases.append((["--constraint", f"linear:{tmp_path / 'bad.npz'}"], "no solution"))
    cases.append((["--constraint", "box:1,-1"], "empty"))
    cases.append((["--constraint", "box:0.5,1", "--mask", m, "--known", k], "outside the box"))
    for argv, match in cases:
        with pytest.raises(ValueError, match=match) as e:
            run_bad(tmp_path, argv)
        assert "\n" not in str(e.value)
        assert isinstance(e.value, (UsageError, ConstraintError))
