"""The nested training config: TOML round trip, overrides, unknown tables/keys with suggestions, per-kind path
keys, the old flat format's migration, and every bad value as a one-line ConfigError."""

from __future__ import annotations

import json
import re
import tomllib
from dataclasses import fields

import pytest

from kuosan.config import (FLAT_KEYS, KEYS, TABLES, Config, ConfigError, apply_overrides, fill_retired_defaults,
                           from_dict, load_config, migrate_flat, set_key, to_dict, to_toml)
from kuosan.objectives import LOSS_TYPES
from kuosan.objectives.timesteps import TIME_SAMPLINGS
from kuosan.objectives.weighting import WEIGHTINGS
from kuosan.parameterisation import ALL_PREDICTIONS
from kuosan.paths import BETA_KINDS, PATH_KINDS

OLD_FLAT_FIELDS = (  # every field of the pre-redesign flat Config, in its order
    "data n_data val_fraction class_cond p_uncond schedule T beta_start beta_end target loss weighting min_snr_gamma "
    "learn_variance hybrid_lambda importance_sampling model channels channel_mult num_res_blocks attn_resolutions "
    "dropout mlp_hidden mlp_depth steps batch_size lr min_lr warmup weight_decay grad_clip ema_decay ema_warmup "
    "precision seed device threads out log_every val_every sample_every ckpt_every n_samples sample_steps").split()


def test_defaults_are_todays():
    """The defaults of the flat config before the redesign, now in their tables."""
    c = Config().validate()
    assert (c.data.name, c.data.n, c.data.val_fraction, c.data.class_cond, c.data.p_uncond) == ("digits", None, 0.05,
                                                                                               False, 0.1)
    assert (c.path.kind, c.path.schedule, c.path.T, c.path.zero_terminal_snr) == ("discrete_vp", "cosine", 1000, False)
    assert (c.objective.prediction, c.objective.loss, c.objective.weighting, c.objective.time_sampling) == \
        ("v", "l2", "none", "auto")
    assert (c.objective.min_snr_gamma, c.objective.learn_variance, c.objective.hybrid_lambda) == (5.0, False, 0.001)
    assert (c.net.model, c.net.channels, c.net.channel_mult, c.net.num_res_blocks, c.net.attn_resolutions,
            c.net.dropout, c.net.mlp_hidden, c.net.mlp_depth) == ("auto", 32, (1, 2), 1, (), 0.0, 256, 4)
    o = c.optim
    assert (o.steps, o.batch_size, o.lr, o.min_lr, o.warmup, o.weight_decay, o.grad_clip, o.ema_decay, o.ema_warmup) \
        == (1000, 128, 3e-3, 1e-4, 100, 0.0, 1.0, 0.99, True)
    assert o.betas == (0.9, 0.95)  # since 2026-11-24 20:30; runs recorded before the key existed keep (0.9, 0.999):
    assert fill_retired_defaults(to_dict(c))["optim"]["betas"] == [0.9, 0.95]  # a recorded key is kept
    old = to_dict(c)
    del old["optim"]["betas"]
    assert from_dict(fill_retired_defaults(old)).optim.betas == (0.9, 0.999)
    assert "betas" not in old["optim"]  # a copy
    lg = c.log
    assert (lg.out, lg.log_every, lg.val_every, lg.sample_every, lg.ckpt_every, lg.n_samples, lg.sample_steps) == \
        ("", 50, 500, 0, 500, 64, 50)
    assert (c.run.seed, c.run.device, c.run.threads, c.run.precision) == (0, "auto", 0, "auto")


def test_modes_match_the_modules_that_take_them():
    """Every Literal mode lists exactly the values its module accepts (no hand-synced list drifts)."""
    assert KEYS["path.kind"].choices == PATH_KINDS
    assert KEYS["path.schedule"].choices == BETA_KINDS
    assert KEYS["objective.prediction"].choices == ALL_PREDICTIONS
    assert KEYS["objective.weighting"].choices == WEIGHTINGS
    assert KEYS["objective.time_sampling"].choices == TIME_SAMPLINGS
    assert KEYS["objective.loss"].choices == LOSS_TYPES
    assert all(spec.help for spec in KEYS.values())


def test_nested_toml_round_trip(tmp_path):
    cfg = apply_overrides(Config(), ["path.kind=vp_linear", "path.beta_max=15", "path.t_max=0.999", "net.channels=16",
                                     "net.channel_mult=1,2,4", "net.attn_resolutions=[4]", "data.n=300",
                                     "objective.prediction=edm", "objective.sigma_data=0.7", "optim.ema_warmup=false",
                                     "log.out=runs/x", "run.precision=fp32"]).validate()
    text = to_toml(cfg)
    assert "[path]\nkind = \"vp_linear\"\nt_max = 0.999\nbeta_min = 0.1\nbeta_max = 15.0\n" in text
    assert "schedule" not in text and "sigma_max" not in text  # only the keys of the path's kind
    (tmp_path / "c.toml").write_text(text)
    back = from_dict(load_config(tmp_path / "c.toml"), "c.toml").validate()
    assert back == cfg and back.net.channel_mult == (1, 2, 4) and back.net.attn_resolutions == (4,)
    assert from_dict(json.loads(json.dumps(to_dict(cfg)))) == cfg  # the JSON a checkpoint stores
    (tmp_path / "c.json").write_text(json.dumps(to_dict(cfg)))
    assert from_dict(load_config(tmp_path / "c.json")) == cfg
    assert from_dict(tomllib.loads(to_toml(Config()))) == Config()


def test_partial_tables_keep_the_other_defaults(tmp_path):
    (tmp_path / "c.toml").write_text("[net]\nchannels = 8\n\n[optim]\nsteps = 7\n")
    cfg = from_dict(load_config(tmp_path / "c.toml"), "c.toml").validate()
    assert cfg.net.channels == 8 and cfg.optim.steps == 7 and cfg.net.channel_mult == (1, 2) and cfg.path.T == 1000


def test_set_key_and_overrides_copy_and_parse():
    base = Config()
    cfg = set_key(base, "net.channels", "64")
    assert cfg.net.channels == 64 and base.net.channels == 32  # a copy: base untouched
    cfg = apply_overrides(base, {"optim.lr": "1e-3", "data.class_cond": "true", "data.n": "none"})
    assert cfg.optim.lr == 1e-3 and cfg.data.class_cond is True and cfg.data.n is None
    cfg = apply_overrides(base, {"objective": {"prediction": "eps"}})
    assert cfg.objective.prediction == "eps"
    assert apply_overrides(base, None) == base and apply_overrides(base, []) is not base


@pytest.mark.parametrize("d,msg", [
    ({"net": {"chanels": 64}}, "unknown config key 'net.chanels' in t (did you mean 'net.channels'?)"),
    ({"net.chanels": 64}, "unknown config key 'net.chanels' in t (did you mean 'net.channels'?)"),
    ({"nett": {"channels": 64}}, "unknown config table 'nett' in t (did you mean 'net'?)"),
    ({"trainer": {"steps": 1}}, "unknown config table 'trainer' in t"),
    ({"optimm.steps": 1}, "unknown config table 'optimm' in t (did you mean 'optim'?)"),
    ({"net": 3}, "config table 'net' in t must be a table of keys"),
])
def test_unknown_tables_and_keys_are_one_line_errors_with_a_suggestion(d, msg):
    with pytest.raises(ConfigError) as e:
        from_dict(d, where="t")
    assert str(e.value).startswith(msg) and "\n" not in str(e.value)


def test_a_table_that_does_not_exist_in_a_file_is_an_error(tmp_path):
    (tmp_path / "c.toml").write_text("[net]\nchannels = 8\n\n[sampling]\nsteps = 3\n")
    with pytest.raises(ConfigError, match="unknown config table 'sampling'"):
        from_dict(load_config(tmp_path / "c.toml"), str(tmp_path / "c.toml"))


@pytest.mark.parametrize("items,msg", [
    (["channels=64"], "table-qualified key like net.channels, got 'channels' (did you mean 'net.channels'?)"),
    (["net.channels"], "needs the form table.key=value"),
    (["net.channels=abc"], "config key 'net.channels': cannot read 'abc' as int"),
    (["net.channels=2.5"], "cannot read '2.5' as int"),
    (["objective.prediction=epsilon"], "unknown value 'epsilon'; choose one of eps, x0, v, velocity, edm"),
    (["path.kind=edm"], "choose one of discrete_vp, vp_cosine, vp_linear, ve, flow"),
    (["data.class_cond=maybe"], "cannot read 'maybe' as bool"),
    (["net.channel_mult=1,x"], "cannot read"),
])
def test_bad_overrides(items, msg):
    with pytest.raises(ConfigError, match=re.escape(msg)):
        apply_overrides(Config(), items)


@pytest.mark.parametrize("items,msg", [
    (["net.channels=0"], "net.channels must be a positive integer, got 0"),
    (["optim.steps=-1"], "optim.steps must be a positive integer"),
    (["optim.lr=nan"], "optim.lr must be a positive number"),
    (["optim.lr=inf"], "optim.lr must be a positive number"),
    (["optim.min_lr=1"], r"optim.min_lr must be in \[0, lr\]"),
    (["optim.grad_clip=-1"], "optim.grad_clip must be >= 0"),
    (["optim.ema_decay=1"], r"optim.ema_decay must be in \[0, 1\)"),
    (["optim.betas=0.9,1"], r"optim.betas must be two numbers in \[0, 1\), got \(0.9, 1.0\)"),
    (["optim.betas=0.9"], r"optim.betas must be two numbers in \[0, 1\), got \(0.9,\)"),
    (["optim.betas=0.9,0.99,0.999"], "optim.betas must be two numbers"),
    (["optim.betas=-0.1,0.99"], "optim.betas must be two numbers"),
    (["data.val_fraction=1"], r"data.val_fraction must be in \[0, 1\)"),
    (["data.p_uncond=-0.1"], r"data.p_uncond must be in \[0, 1\)"),
    (["data.n=0"], "data.n must be a positive integer"),
    (["net.dropout=1"], r"net.dropout must be in \[0, 1\)"),
    (["net.channel_mult=1,0"], "net.channel_mult must be positive"),
    (["run.seed=-1"], "run.seed must be a non-negative integer"),
    (["run.device=bogus"], "run.device: unknown device 'bogus'"),
    (["log.sample_steps=0"], "log.sample_steps must be a positive integer"),
    (["objective.weighting=min_snr", "objective.min_snr_gamma=0"], "objective.min_snr_gamma must be positive"),
    (["objective.hybrid_lambda=0.1"], "hybrid_lambda .* needs objective.learn_variance = true"),
    (["objective.sigma_data=0.3"], "objective.sigma_data applies to the edm prediction or weighting only"),
    (["objective.min_snr_gamma=3"], "objective.min_snr_gamma applies to weighting 'min_snr' only"),
    (["objective.sigmoid_bias=1"], "objective.sigmoid_bias applies to weighting 'sigmoid' only"),
    (["objective.time_mean=0.5"], "objective.time_mean applies to time_sampling 'logit_normal' or 'log_normal'"),
    (["objective.time_sampling=uniform", "objective.time_std=0.5"], "objective.time_std applies to"),
    (["objective.time_sampling=log_normal", "objective.time_std=0"], "objective: log_normal needs .* p_std > 0"),
    (["path.kind=flow", "objective.time_sampling=uniform_discrete"],
     "objective: time sampling 'uniform_discrete' is defined on a discrete VP chain"),
    (["objective.time_sampling=importance"], "needs learn_variance = true"),
    (["path.T=0"], "path.T must be a positive integer"),
    (["path.sigma_max=10"], "path.sigma_max does not apply to path kind 'discrete_vp' \\(it is a key of ve\\)"),
    (["path.kind=flow", "path.T=50"], "path.T does not apply to path kind 'flow'"),
    (["path.kind=ve", "path.schedule=linear"], "path.schedule does not apply to path kind 've'"),
    (["path.beta_start=0.001"], "path.beta_start applies to the linear and scaled_linear schedules, not 'cosine'"),
    (["path.schedule=linear", "path.beta_end=1.5"], r"path.beta_end must lie in \(0, 1\)"),
    (["path.schedule=linear", "path.cosine_s=0.01"], "path.cosine_s applies to the cosine schedule"),
    (["path.kind=vp_cosine", "path.t_max=1.5"], "path: vp_cosine needs 0 < t_max <= 1"),
    (["path.kind=ve", "path.sigma_max=-1"], "path: ve needs a finite sigma_max > 0"),
    (["path.kind=flow", "objective.prediction=eps"], "objective: ε-prediction cannot recover x_0"),
    (["path.zero_terminal_snr=true", "objective.prediction=eps"], "objective: ε-prediction cannot recover x_0"),
    (["path.kind=flow", "objective.learn_variance=true", "objective.time_sampling=importance"],
     "objective: time sampling 'importance' is defined on a discrete VP chain"),
])
def test_bad_values_are_one_line_errors(items, msg):
    cfg = apply_overrides(Config(), items)
    with pytest.raises(ConfigError, match=msg) as e:
        cfg.validate()
    assert "\n" not in str(e.value)


@pytest.mark.parametrize("items", [
    ["path.kind=flow", "objective.prediction=velocity"], ["path.kind=ve", "objective.prediction=edm"],
    ["path.kind=vp_cosine", "objective.prediction=v", "path.t_max=0.999"],
    ["path.kind=vp_linear", "objective.prediction=eps"], ["path.zero_terminal_snr=true"],
    ["path.schedule=scaled_linear", "path.beta_start=0.001"], ["path.cosine_s=0.01"],
    ["objective.learn_variance=true", "objective.time_sampling=importance", "objective.hybrid_lambda=0.01"],
    ["objective.weighting=edm", "objective.sigma_data=0.3"],
    ["objective.weighting=min_snr", "objective.min_snr_gamma=2"],
    ["objective.weighting=sigmoid", "objective.sigmoid_bias=-2"],
    ["path.kind=flow", "objective.prediction=velocity", "objective.time_sampling=logit_normal",
     "objective.time_mean=0.5", "objective.time_std=0.8"],
])
def test_good_combinations_validate(items):
    apply_overrides(Config(), items).validate()


def test_old_flat_config_migrates():
    """Every field of the old flat Config maps to a key of the nested one, with today's meaning."""
    assert sorted(FLAT_KEYS) == sorted(OLD_FLAT_FIELDS)
    old = {"data": "moons", "n_data": 256, "schedule": "linear", "T": 100, "beta_start": 2e-4, "beta_end": 0.03,
           "target": "eps", "importance_sampling": True, "learn_variance": True, "model": "mlp", "mlp_hidden": 32,
           "steps": 30, "precision": "fp32", "threads": 1, "out": "r", "sample_steps": 10, "channel_mult": [1, 2]}
    cfg = from_dict(migrate_flat(old)).validate()
    assert (cfg.data.name, cfg.data.n, cfg.path.kind, cfg.path.schedule, cfg.path.T) == ("moons", 256, "discrete_vp",
                                                                                       "linear", 100)
    assert (cfg.path.beta_start, cfg.path.beta_end) == (2e-4, 0.03)
    assert (cfg.objective.prediction, cfg.objective.time_sampling, cfg.objective.learn_variance) == ("eps",
                                                                                                   "importance", True)
    assert (cfg.net.model, cfg.net.mlp_hidden, cfg.optim.steps, cfg.run.precision, cfg.run.threads, cfg.log.out,
            cfg.log.sample_steps) == ("mlp", 32, 30, "fp32", 1, "r", 10)
    # importance_sampling = false is the path's default sampling; keys the old trainer ignored are dropped
    cfg = from_dict(migrate_flat({"schedule": "cosine", "beta_start": 1e-4, "beta_end": 0.02, "min_snr_gamma": 3.0,
                                  "hybrid_lambda": 0.5, "importance_sampling": False})).validate()
    assert cfg.objective.time_sampling == "auto" and cfg.path.beta_start is None
    assert cfg.objective.min_snr_gamma == 5.0 and cfg.objective.hybrid_lambda == 0.001
    cfg = from_dict(migrate_flat({"weighting": "min_snr", "min_snr_gamma": 3.0, "learn_variance": "true",
                                  "hybrid_lambda": 0.5})).validate()
    assert cfg.objective.min_snr_gamma == 3.0 and cfg.objective.hybrid_lambda == 0.5
    assert from_dict(migrate_flat({})).validate() == Config()


def test_old_flat_file_loads_and_old_keys_that_no_longer_exist_are_errors(tmp_path):
    (tmp_path / "old.toml").write_text('data = "moons"\nschedule = "linear"\ntarget = "eps"\nsteps = 5\n')
    cfg = from_dict(load_config(tmp_path / "old.toml")).validate()
    assert ((cfg.data.name, cfg.path.schedule, cfg.objective.prediction, cfg.optim.steps)
            == ("moons", "linear", "eps", 5))
    (tmp_path / "train.toml").write_text('[train]\ndata = "ring"\n')
    assert from_dict(load_config(tmp_path / "train.toml")).data.name == "ring"
    (tmp_path / "gone.toml").write_text('data = "moons"\nschedul = "linear"\n')
    with pytest.raises(ConfigError, match=r"old-format config key 'schedul' .* no longer exists \(did you mean "
                                          r"'schedule'\?\)"):
        load_config(tmp_path / "gone.toml")
    (tmp_path / "mixed.toml").write_text('steps = 3\n[net]\nchannels = 8\n')
    with pytest.raises(ConfigError, match="mixes the old flat format with tables"):
        load_config(tmp_path / "mixed.toml")


def test_unreadable_files(tmp_path):
    with pytest.raises(ConfigError, match="does not exist"):
        load_config(tmp_path / "missing.toml")
    (tmp_path / "bad.toml").write_text("[net\nchannels = 8\n")
    with pytest.raises(ConfigError, match="cannot parse") as e:
        load_config(tmp_path / "bad.toml")
    assert "\n" not in str(e.value)
    (tmp_path / "list.json").write_text("[1, 2]")
    with pytest.raises(ConfigError, match="must hold tables"):
        load_config(tmp_path / "list.json")


def test_objective_keys_reach_the_objective():
    """sigma_data, sigmoid_bias and time_mean/time_std end up in the objective and its time sampler."""
    from kuosan.build import make_objective_from, make_param_from, make_path_from

    cfg = apply_overrides(Config(), ["path.kind=flow", "objective.prediction=velocity", "objective.weighting=edm",
                                     "objective.sigma_data=0.3", "objective.time_sampling=logit_normal",
                                     "objective.time_mean=0.5", "objective.time_std=0.8"]).validate()
    obj = make_objective_from(cfg, make_path_from(cfg), make_param_from(cfg), bits=None)
    assert (obj.sigma_data, obj.times.kind, obj.times.mean, obj.times.std) == (0.3, "logit_normal", 0.5, 0.8)
    cfg = apply_overrides(Config(), ["path.kind=ve", "objective.prediction=edm", "objective.sigma_data=0.7",
                                     "objective.time_sampling=log_normal", "objective.time_std=2"]).validate()
    obj = make_objective_from(cfg, make_path_from(cfg), make_param_from(cfg), bits=None)
    assert (obj.param.sigma_data, obj.sigma_data, obj.times.p_mean, obj.times.p_std) == (0.7, 0.7, -1.2, 2.0)
    cfg = apply_overrides(Config(), ["objective.weighting=sigmoid", "objective.sigmoid_bias=-2"]).validate()
    assert make_objective_from(cfg, make_path_from(cfg), make_param_from(cfg), bits=None).sigmoid_bias == -2


def test_keys_cover_every_field():
    assert set(KEYS) == {f"{t}.{f.name}" for t, cls in TABLES.items() for f in fields(cls)}
    assert KEYS["data.class_cond"].type is bool and KEYS["net.channels"].default == 32


# ------------------------------------------------------------------ the [consistency] table
CM = ["path.kind=ve", "objective.prediction=consistency"]


def test_consistency_table_defaults_and_toml():
    """The shared brief's defaults; written to config.toml only for consistency models, and read back."""
    c = Config().consistency
    assert (c.sigma_min, c.rho, c.s0, c.s1, c.p_mean, c.p_std, c.huber_c, c.method, c.teacher, c.teacher_sampler,
            c.cd_steps) == (0.002, 7.0, 10, 1280, -1.1, 2.0, 0.0, "ct", "", "heun", 18)
    assert all(KEYS[k].help for k in KEYS if k.startswith("consistency."))
    assert "[consistency]" not in to_toml(Config())
    cfg = apply_overrides(Config(), CM + ["consistency.s0=4", "consistency.huber_c=0.01"]).validate()
    text = to_toml(cfg)
    assert "[consistency]" in text
    back = from_dict(tomllib.loads(text)).validate()
    assert back == cfg


@pytest.mark.parametrize("items, msg", [
    (["consistency.s0=4"], "consistency.s0 applies to objective.prediction = 'consistency' only"),
    (["path.kind=ve", "consistency.method=cd"], "consistency.method applies to objective.prediction"),
    (["objective.prediction=consistency"], "needs path.kind = 've'"),
    (CM + ["consistency.method=cd"], "'cd' needs consistency.teacher"),
    (CM + ["consistency.s0=20", "consistency.s1=10"], "s0 .20. must be at most consistency.s1"),
    (CM + ["consistency.s0=0"], "consistency.s0 must be a positive integer"),
    (CM + ["consistency.teacher=runs/x"], "consistency.teacher does not apply to method 'ct'"),
    (CM + ["consistency.method=cd", "consistency.teacher=r", "consistency.s1=64"],
     "consistency.s1 does not apply to method 'cd' .it is a key of ct."),
    (CM + ["consistency.cd_steps=30"], "consistency.cd_steps does not apply to method 'ct'"),
    (CM + ["consistency.method=cd", "consistency.teacher=r", "consistency.teacher_sampler=sde"],
     "teacher_sampler must be a deterministic ODE sampler"),
    (CM + ["consistency.method=cd", "consistency.teacher=r", "consistency.cd_steps=1"], "cd_steps .* at least 2"),
    (CM + ["consistency.sigma_min=0"], r"consistency.sigma_min must be in \(0, path.sigma_max"),
    (CM + ["consistency.sigma_min=90"], r"consistency.sigma_min must be in \(0, path.sigma_max = 80"),
    (CM + ["consistency.p_std=0"], "consistency.p_std must be a finite number > 0"),
    (CM + ["consistency.huber_c=-1"], "consistency.huber_c must be >= 0"),
    (CM + ["consistency.rho=0"], "consistency.rho must be in"),
    (CM + ["objective.weighting=edm"], "objective.weighting does not apply to a consistency model"),
    (CM + ["objective.loss=l1"], "objective.loss does not apply to a consistency model"),
    (CM + ["objective.time_sampling=uniform"], "objective.time_sampling does not apply"),
    (CM + ["objective.learn_variance=true"], "objective.learn_variance does not apply"),
])
def test_bad_consistency_configs_are_one_line_errors(items, msg):
    cfg = apply_overrides(Config(), items)
    with pytest.raises(ConfigError, match=msg) as e:
        cfg.validate()
    assert "\n" not in str(e.value)


@pytest.mark.parametrize("items", [
    CM, CM + ["objective.sigma_data=0.3", "consistency.s0=2", "consistency.s1=2", "consistency.huber_c=0.03"],
    CM + ["consistency.method=cd", "consistency.teacher=runs/teacher", "consistency.cd_steps=40",
          "consistency.teacher_sampler=dpm++2m"],
])
def test_good_consistency_configs_validate_and_build_the_consistency_objective(items):
    """The objective of a consistency config is the consistency objective with the table's values (a cd teacher
    is loaded only for training, given a device, never by the checks)."""
    from kuosan.build import make_objective_from, make_param_from, make_path_from
    from kuosan.objectives import ConsistencyObjective

    cfg = apply_overrides(Config(), items).validate()
    obj = make_objective_from(cfg, make_path_from(cfg), make_param_from(cfg), bits=None)
    c = cfg.consistency
    assert isinstance(obj, ConsistencyObjective) and obj.teacher_step is None
    assert (obj.times.method, obj.times.s0, obj.times.s1, obj.times.cd_steps, obj.huber_c) == (c.method, c.s0, c.s1,
                                                                                             c.cd_steps, c.huber_c)
    assert (obj.param.sigma_data, obj.param.sigma_min, obj.times.sigma_max) == (cfg.objective.sigma_data,
                                                                                c.sigma_min, 80.0)
    assert obj.times.total_steps == cfg.optim.steps


def test_overrides_set_finds_a_prefix_in_every_form():
    """Whether overrides touch a key (the training loop asks for "log.out" and "path."): list and dict forms."""
    from kuosan.config import overrides_set

    assert overrides_set(["log.out=/tmp/x"], "log.out") and overrides_set([" path.kind = ve"], "path.")
    assert not overrides_set(["optim.steps=3"], "path.") and not overrides_set(None, "path.")
    assert overrides_set({"path.kind": "ve"}, "path.") and overrides_set({"path": {"kind": "ve"}}, "path.")
    assert overrides_set({"log": {"out": "x"}}, "log.out") and not overrides_set({"log": {"log_every": 5}}, "log.out")
    assert not overrides_set({"optim": {"steps": 3}}, "path.")
