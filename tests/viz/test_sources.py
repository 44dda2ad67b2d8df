"""kuosan.viz.sources: signals, vectors and covariances from .npy / .csv, every bad one refused in one line."""

import numpy as np
import pytest
import torch

from kuosan.viz.sources import VizInputError, load_covariance, load_signal, load_vectors


def test_signal_from_a_row_or_a_column(tmp_path):
    (tmp_path / "row.csv").write_text(",".join(str(v) for v in range(10)) + "\n")
    (tmp_path / "col.csv").write_text("\n".join(str(v) for v in range(10)) + "\n")
    np.save(tmp_path / "s.npy", np.arange(10.0)[None])
    for name in ("row.csv", "col.csv", "s.npy"):
        assert torch.equal(load_signal(tmp_path / name), torch.arange(10, dtype=torch.float64)), name


@pytest.mark.parametrize("content,match", [
    (np.zeros((3, 4)), "must be 1-D"), (np.arange(3.0), "8 to 20000"), (np.array([1.0] * 8 + [np.nan]), "NaN"),
    (np.array(["a"] * 9), "must hold numbers")])
def test_bad_signals(tmp_path, content, match):
    np.save(tmp_path / "s.npy", content)
    with pytest.raises(VizInputError, match=match):
        load_signal(tmp_path / "s.npy")


def test_bad_files(tmp_path):
    (tmp_path / "s.txt2").write_text("1,2")
    (tmp_path / "bad.csv").write_text("1,2,x\n")
    with pytest.raises(VizInputError, match="must be a .npy or .csv"):
        load_signal(tmp_path / "s.txt2")
    with pytest.raises(VizInputError, match="is not a file"):
        load_signal(tmp_path / "missing.npy")
    with pytest.raises(VizInputError, match="cannot be read"):
        load_signal(tmp_path / "bad.csv")
    np.save(tmp_path / "obj.npy", np.array([{}], dtype=object))
    with pytest.raises(VizInputError, match="cannot be read"):  # no pickles
        load_signal(tmp_path / "obj.npy")


def test_vectors_and_covariances(tmp_path):
    np.save(tmp_path / "v.npy", np.ones((5, 3)))
    assert load_vectors(tmp_path / "v.npy").shape == (5, 3)
    np.save(tmp_path / "v1.npy", np.ones(5))
    with pytest.raises(VizInputError, match=r"\(N, D\)"):
        load_vectors(tmp_path / "v1.npy")
    np.save(tmp_path / "c.npy", np.array([[2.0, 1.0], [1.0, 2.0]]))
    assert torch.equal(load_covariance(tmp_path / "c.npy"), torch.tensor([[2.0, 1.0], [1.0, 2.0]], dtype=torch.float64))
    for bad, match in ((np.array([[1.0, 2.0], [0.0, 1.0]]), "not symmetric"),
                       (np.array([[1.0, 2.0], [2.0, 1.0]]), "not positive semi-definite"),
                       (np.ones((2, 3)), "square")):
        np.save(tmp_path / "b.npy", bad)
        with pytest.raises(VizInputError, match=match):
            load_covariance(tmp_path / "b.npy")


def test_covariance_data_of_vectors_images_and_curves(tmp_path):
    from kuosan.data import curves_covariance
    from kuosan.viz.sources import covariance_data

    v = np.random.default_rng(0).standard_normal((50, 3))
    np.save(tmp_path / "v.npy", v)
    x0, S, what = covariance_data(str(tmp_path / "v.npy"), 20, None, seed=1)
    assert x0.shape == (20, 3) and np.allclose(S.numpy(), np.cov(v.T))  # a subset drawn, Σ_0 of all rows
    assert all(any(np.allclose(r, w) for w in v) for r in x0.numpy())
    x0, S, what = covariance_data("digits", 30, 3, seed=0)
    assert x0.shape == (30, 9) and what == "3x3 patches of digits"
    x0, S, _ = covariance_data("curves", 5, None, seed=0)
    assert x0.shape == (5, 64) and np.allclose(S.numpy(), curves_covariance())
    with pytest.raises(VizInputError, match="--patch applies to image data"):
        covariance_data(str(tmp_path / "v.npy"), 20, 2, seed=0)
