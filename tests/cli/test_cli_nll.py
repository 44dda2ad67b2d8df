"""`kuosan nll`: the variational bound and the ODE likelihood from the command line, and every bad input as one
line with exit code 2 before any estimate."""

from __future__ import annotations

import re

import pytest

import kuosan.likelihood
from kuosan.cli import main


def _bpd(out: str) -> float:
    return float(re.search(r": (-?[\d.]+) ± [\d.]+ bits/dim", out).group(1))


def test_vlb_terms_and_batches(tiny_run, capsys):
    assert main(["nll", str(tiny_run), "--n", "4", "--t-samples", "3", "--quiet"]) == 0
    out = capsys.readouterr().out
    assert "bits/dim" in out and "L_T (prior)" in out and "n=4" in out
    assert main(["nll", str(tiny_run), "--n", "4", "--t-samples", "3", "--batch-size", "2"]) == 0
    captured = capsys.readouterr()
    assert "n=4" in captured.out and captured.err.count("vlb:   0%|") == 1  # one bar over all examples


@pytest.mark.slow
def test_vlb_analytic_variance_shows_progress(tiny_run, capsys):
    assert main(["nll", str(tiny_run), "--n", "2", "--t-samples", "2", "--variance", "analytic",
                 "--analytic-n", "4"]) == 0
    captured = capsys.readouterr()
    assert "vlb (analytic" in captured.out and "analytic variance table" in captured.err


def test_ode(tiny_run, capsys):
    assert main(["nll", str(tiny_run), "--method", "ode", "--n", "2", "--rtol", "1e-3", "--atol", "1e-3",
                 "--quiet"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("ode (1 probe,") and "NFE" in out and abs(_bpd(out)) < 100


@pytest.fixture(scope="module")
def flow_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("flow") / "run"
    assert main(["train", "--data", "moons", "--process", "flow", "--prediction", "velocity", "--steps", "2",
                 "--batch-size", "8", "--set", "data.n=64", "--set", "net.mlp_hidden=16", "--set", "net.mlp_depth=1",
                 "--set", "log.n_samples=4", "--set", "log.sample_steps=2", "--threads", "1", "--quiet",
                 "--out", str(out)]) == 0
    return out


def test_vlb_refuses_a_continuous_path(flow_run, err, capsys):
    assert "--method ode" in err(["nll", str(flow_run), "--n", "2"])
    assert main(["nll", str(flow_run), "--method", "ode", "--n", "2", "--exact-trace", "--quiet",
                 "--rtol", "1e-3", "--atol", "1e-3"]) == 0
    assert "exact trace" in capsys.readouterr().out


@pytest.fixture
def no_estimates(monkeypatch):
    def fail(*a, **k):
        raise AssertionError("an estimate started before the input was checked")

    for name in ("vlb", "ode_nll", "estimate_analytic_table"):
        monkeypatch.setattr(kuosan.likelihood, name, fail)


@pytest.mark.parametrize("extra,needle", [
    (["--bits", "abc"], "--bits must be an integer, 'auto' or 'none', got 'abc'"),
    (["--bits", "0"], "--bits must be an integer in [1, 16]"),
    (["--method", "elbo"], "invalid choice: 'elbo'"),
    (["--variance", "fixed"], "invalid choice: 'fixed'"),
    (["--method", "ode", "--probes", "-2"], "--probes must be a positive integer"),
    (["--probes", "2"], "--probes applies to --method ode, not --method vlb"),
    (["--exact-trace"], "--exact-trace applies to --method ode"),
    (["--method", "ode", "--t-samples", "3"], "--t-samples applies to --method vlb"),
    (["--method", "ode", "--variance", "beta"], "--variance applies to --method vlb"),
    (["--method", "ode", "--exact-trace", "--probes", "2"], "exclude each other"),
    (["--method", "ode", "--rtol", "-1"], "--rtol must be a finite number > 0"),
    (["--analytic-n", "8"], "--analytic-n applies only with --variance analytic"),
    (["--variance", "learned_range"], "objective.learn_variance"),
    (["--seed", "-1"], "--seed must be an integer in [0, 2^63)"),
    (["--n", "0"], "--n must be a positive integer"),
    (["--n", "200000"], "--n must be at most 100000"),
    (["--batch-size", "0"], "--batch-size must be a positive integer"),
    (["--t-samples", "0"], "--t-samples must be a positive integer"),
    (["--device", "bogus"], "--device 'bogus' is not a device"),
])
def test_bad_input_gives_one_line(tiny_run, err, no_estimates, extra, needle):
    assert needle in err(["nll", str(tiny_run), *extra])


def test_missing_run(err, tmp_path):
    assert "does not exist" in err(["nll", str(tmp_path / "nonexistent")])
