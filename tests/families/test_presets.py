"""``--process`` family presets: the keys each fills, the precedence defaults < preset < --config < flags < --set,
that a preset never overrides an explicit key, ``--path`` apart from ``--process``, and bad input as one line."""

from __future__ import annotations

import pytest

from kuosan.cli import build_parser, main
from kuosan.cli.train import config_of
from kuosan.config import KEYS, Config, ConfigError
from kuosan.families.presets import PRESETS, PROCESSES, apply_preset, family_config, preset_keys

HAS_CONSISTENCY = "consistency" in (KEYS["objective.prediction"].choices or ())


def _cfg(argv: list[str]) -> Config:
    return config_of(build_parser("train").parse_args(["train", *argv]))


def _family(cfg: Config) -> tuple[str, str, str, str]:
    o = cfg.objective
    return cfg.path.kind, o.prediction, o.weighting, o.time_sampling


def test_the_families_of_the_brief():
    assert _family(family_config("vp")) == _family(Config()) == ("discrete_vp", "v", "none", "auto")
    assert _family(family_config("edm")) == ("ve", "edm", "edm", "log_normal")
    assert _family(family_config("flow")) == ("flow", "velocity", "none", "logit_normal")
    assert set(PROCESSES) == set(PRESETS) == {"vp", "edm", "flow", "consistency"}


@pytest.mark.skipif(not HAS_CONSISTENCY, reason="needs the consistency prediction (objective.prediction choice)")
def test_consistency_family():
    cfg = family_config("consistency")
    assert (cfg.path.kind, cfg.objective.prediction, cfg.consistency.method) == ("ve", "consistency", "ct")


@pytest.mark.parametrize("process", ["vp", "edm", "flow"])
def test_presets_build_a_valid_training(process):
    """Each preset is a coherent config: path, parameterisation and objective build as training builds them."""
    from kuosan.build import make_objective_from, make_param_from, make_path_from

    cfg = family_config(process, {"data.name": "moons"})
    path, param = make_path_from(cfg), make_param_from(cfg)
    obj = make_objective_from(cfg, path, param, bits=None)
    assert obj.times.kind == {"vp": "uniform_discrete", "edm": "log_normal", "flow": "logit_normal"}[process]


def test_vp_resets_a_non_default_base_and_explicit_keys_stay():
    base = apply_preset(Config(), "flow")
    assert _family(apply_preset(base, "vp")) == _family(Config())
    kept = apply_preset(base, "edm", explicit=["objective.prediction"])
    assert _family(kept) == ("ve", "velocity", "edm", "log_normal")


def test_precedence_preset_config_flags_set(tmp_path):
    """defaults < preset < --config < short flags < --set."""
    assert _family(_cfg(["--process", "edm"])) == ("ve", "edm", "edm", "log_normal")
    f = tmp_path / "c.toml"
    f.write_text('[objective]\nweighting = "min_snr"\ntime_sampling = "uniform"\n')
    assert _family(_cfg(["--process", "edm", "--config", str(f)])) == ("ve", "edm", "min_snr", "uniform")
    got = _cfg(["--process", "edm", "--config", str(f), "--prediction", "x0", "--set", "objective.weighting=none"])
    assert _family(got) == ("ve", "x0", "none", "uniform")
    # --set comes after a flag naming the same key
    assert _cfg(["--process", "flow", "--path", "ve", "--set", "path.kind=vp_cosine"]).path.kind == "vp_cosine"
    # the README's flow-matching command: the explicit prediction agrees with the preset
    assert _family(_cfg(["--process", "flow", "--prediction", "velocity"])) == ("flow", "velocity", "none",
                                                                                 "logit_normal")


def test_path_flag_sets_the_path_only():
    cfg = _cfg(["--path", "flow", "--prediction", "velocity"])
    assert _family(cfg) == ("flow", "velocity", "none", "auto")
    assert _cfg([]).path.kind == "discrete_vp"


def test_incoherent_explicit_combinations_are_the_cores_to_judge():
    """A preset never overrides an explicit key; the core refuses what it cannot train (ε on α = 0) and accepts the
    rest (x0-prediction on the flow path)."""
    with pytest.raises(ConfigError, match="α = 0|zero SNR|ε-prediction"):
        _cfg(["--process", "flow", "--prediction", "eps"]).validate()
    assert _cfg(["--process", "flow", "--prediction", "x0"]).validate().objective.prediction == "x0"


def test_unknown_process():
    with pytest.raises(ConfigError, match="did you mean 'flow'"):
        preset_keys("flwo")


def test_cli_errors_are_one_line(capsys, tmp_path):
    assert main(["train", "--process", "ddpm"]) == 2
    assert "invalid choice: 'ddpm'" in capsys.readouterr().err
    assert main(["train", "--process", "flow", "--resume", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert "--process cannot be combined with --resume" in err and len(err.strip().splitlines()) == 1
    assert main(["train", "--process", "flow", "--prediction", "eps", "--steps", "1"]) == 2
    assert len(capsys.readouterr().err.strip().splitlines()) == 1


def test_help_documents_the_precedence(capsys):
    assert main(["train", "--help"]) == 0
    out = " ".join(capsys.readouterr().out.split())
    assert "defaults < --process preset < --config FILE < short flags < --set" in out
    assert "--process {vp|edm|flow|consistency}" in out and "--path" in out


@pytest.mark.parametrize("process", PROCESSES)
def test_cli_trains_each_family(tmp_path, process):
    """`kuosan train --process P` end to end on a tiny budget; the run's saved config is the family's."""
    import json

    if process == "consistency" and not HAS_CONSISTENCY:
        pytest.skip("needs the consistency prediction")
    out = tmp_path / "run"
    assert main(["train", "--process", process, "--data", "ring", "--steps", "2", "--batch-size", "8", "--quiet",
                 "--out", str(out), "--set", "data.n=64", "--set", "net.mlp_hidden=16", "--set", "net.mlp_depth=1",
                 "--set", "log.n_samples=4", "--set", "log.sample_steps=2", "--threads", "1"]) == 0
    saved = json.loads(next((out / "checkpoints").glob("step_*/config.json")).read_text())
    for key, value in preset_keys(process).items():
        table, name = key.split(".")
        assert saved[table][name] == value, key
