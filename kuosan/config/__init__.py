"""Training configuration: nested dataclasses, one per TOML table, with command-line overrides of any key.

Tables and keys (``kuosan train --config FILE``; every key also ``--set table.key=value``):
  [data]       name, n, val_fraction, class_cond, p_uncond
  [path]       kind (discrete_vp | vp_cosine | vp_linear | ve | flow) and its keys: discrete_vp: schedule, T,
               zero_terminal_snr, beta_start/beta_end (linear, scaled_linear), cosine_s (cosine);
               vp_cosine: cosine_s, t_max; vp_linear: beta_min, beta_max, t_max; ve: sigma_max; flow: none
  [net]        model, channels, channel_mult, num_res_blocks, attn_resolutions, dropout, mlp_hidden, mlp_depth
  [objective]  prediction, sigma_data, loss, weighting, min_snr_gamma, time_sampling, learn_variance, hybrid_lambda
  [optim]      steps, batch_size, lr, min_lr, warmup, weight_decay, betas, grad_clip, ema_decay, ema_warmup
  [log]        out, log_every, val_every, sample_every, ckpt_every, n_samples, sample_steps
  [run]        seed, device, threads, precision
  [consistency] (only with objective.prediction = "consistency") sigma_min, rho, s0, s1, p_mean, p_std, huber_c,
               method (ct | cd | ect) and its keys: teacher, teacher_sampler, cd_steps (cd); ect_q, ect_k, ect_b,
               ect_stages (ect); see CONSISTENCY_KEYS

Public API (stable; the CLI is built on it):
  Config                      the nested config; ``cfg.validate()`` raises ConfigError or returns cfg
  ConfigError                 ValueError with a one-line message
  KEYS                        {"net.channels": KeySpec(key, table, name, type, default, choices, help), ...}
  load_config(path) -> dict   a TOML/JSON file as a nested dict (an old flat file is migrated, see migrate_flat)
  from_dict(d, where, base=None) -> Config   a nested dict (dotted keys "net.channels" allowed too) over base
  set_key(cfg, "net.channels", "64") -> Config      a copy with one key set (values parsed from strings)
  apply_overrides(cfg, ["net.channels=64", ...] | {"net.channels": 64}) -> Config
  to_dict(cfg) -> dict (nested), to_toml(cfg) -> str
  migrate_flat(d) -> dict     the pre-redesign flat format (``schedule``, ``target``, ...) as a nested dict
  fill_retired_defaults(d)    a run's recorded config with keys it predates set to what it trained with
  path_kwargs(cfg.path) -> dict     the keyword arguments of ``kuosan.paths.make_path`` for the [path] table
Unknown tables and keys are errors with a suggestion: ``unknown config key 'net.chanels' (did you mean
'net.channels'?)``. Nothing validates across tables except ``Config.validate``.
Modules: tables.py (the dataclasses, KEYS), values.py (reading, overrides, TOML), migrate.py (the old flat
format), checks.py (``Config.validate``).
"""

from .migrate import FLAT_KEYS, RETIRED_DEFAULTS, fill_retired_defaults, migrate_flat
from .tables import (CONSISTENCY_KEYS, KEYS, PATH_KEYS, TABLES, Config, ConfigError, ConsistencyConfig, DataConfig,
                     KeySpec, LogConfig, NetConfig, ObjectiveConfig, OptimConfig, PathConfig, RunConfig, path_kwargs)
from .values import (apply_overrides, from_dict, is_flat, load_config, normalise, overrides_set, set_key, to_dict,
                     to_toml)

__all__ = ["CONSISTENCY_KEYS", "ConsistencyConfig", "FLAT_KEYS", "KEYS", "PATH_KEYS", "TABLES", "Config", "ConfigError",
           "DataConfig", "KeySpec", "LogConfig", "NetConfig", "ObjectiveConfig", "OptimConfig", "PathConfig",
           "RETIRED_DEFAULTS", "RunConfig", "apply_overrides", "fill_retired_defaults", "from_dict", "is_flat",
           "load_config", "migrate_flat", "normalise", "overrides_set", "path_kwargs", "set_key", "to_dict", "to_toml"]
