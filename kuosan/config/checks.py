"""Cross-key checks of a training Config (``Config.validate``): one-line ConfigError naming the first bad value.

Per-key types and modes are checked when a value is read (kuosan.config.values); here: ranges, the keys each path
kind takes, and whether path, parameterisation and objective fit together (built once, as training would).
Numbers that cannot work are refused here, before anything runs: an AdamW lr above 1 moves every weight by about
lr per step (and 1e39 overflows float32), lr·weight_decay >= 1 flips the weights' sign each step, counts that
would overflow the per-step seeds or allocate without bound (path.T, the network's depth) are capped.
"""

from __future__ import annotations

import math
from dataclasses import fields
from typing import TYPE_CHECKING, Any

from .tables import CONSISTENCY_KEYS, PATH_KEYS, ConfigError, ConsistencyConfig, PathConfig, path_kwargs

if TYPE_CHECKING:
    from .tables import Config


def _need(ok: bool, msg: str) -> None:
    if not ok:
        raise ConfigError(msg)


def _only(given: bool, applies: bool, key: str, where: str) -> None:
    """A key set away from its default where it has no effect is an error, not silently dropped."""
    _need(not given or applies, f"{key} applies to {where} only")


def _pos_int(key: str, v: Any) -> None:
    _need(isinstance(v, int) and not isinstance(v, bool) and v > 0, f"{key} must be a positive integer, got {v!r}")


def _nonneg_int(key: str, v: Any) -> None:
    _need(isinstance(v, int) and not isinstance(v, bool) and v >= 0, f"{key} must be a non-negative integer, got {v!r}")


def _at_most(key: str, v: Any, hi: float, why: str = "") -> None:
    _need(v <= hi, f"{key} must be at most {hi if isinstance(hi, int) else format(hi, 'g')}{why}, got {v!r}")


MAX_SEED = 2**32 - 1  # seed·1_000_003 + step stays far inside the 64-bit seeds of torch generators
MAX_STEPS = 2**40
MAX_LR = 1.0


def _finite(key: str, v: float) -> None:
    _need(isinstance(v, (int, float)) and math.isfinite(v), f"{key} must be a finite number, got {v!r}")


def _check_path(p: PathConfig) -> None:
    takes = PATH_KEYS[p.kind]
    for f in fields(PathConfig):
        if f.name != "kind" and f.name not in takes and getattr(p, f.name) != f.default:
            users = [k for k, ks in PATH_KEYS.items() if f.name in ks]
            raise ConfigError(f"path.{f.name} does not apply to path kind {p.kind!r} (it is a key of "
                              f"{' and '.join(users)})")
    if p.kind == "discrete_vp":
        _pos_int("path.T", p.T)
        _at_most("path.T", p.T, 100_000, " (the β table and the importance sampler's history are O(T))")
        if p.schedule not in ("linear", "scaled_linear"):
            for k in ("beta_start", "beta_end"):
                _need(getattr(p, k) is None, f"path.{k} applies to the linear and scaled_linear schedules, "
                                             f"not {p.schedule!r}")
        _need(p.cosine_s is None or p.schedule == "cosine",
              f"path.cosine_s applies to the cosine schedule, not {p.schedule!r}")
        for k in ("beta_start", "beta_end"):
            v = getattr(p, k)
            _need(v is None or (math.isfinite(v) and 0 < v < 1), f"path.{k} must lie in (0, 1), got {v}")
    for k in ("cosine_s", "t_max", "beta_min", "beta_max", "sigma_max"):
        v = getattr(p, k)
        if v is not None:
            _finite(f"path.{k}", v)
    for k, hi in (("sigma_max", 1e6), ("beta_min", 1e4), ("beta_max", 1e4)):  # beyond, x_t or α(t) overflow
        _at_most(f"path.{k}", getattr(p, k), hi)
    from ..paths import make_path

    try:
        make_path(p.kind, **path_kwargs(p))
    except ValueError as e:
        raise ConfigError(f"path: {str(e).splitlines()[0]}") from None


def check(cfg: "Config") -> None:
    """Raise ConfigError naming the first bad value of cfg."""
    d, o, n, ob, lg, r = cfg.data, cfg.optim, cfg.net, cfg.objective, cfg.log, cfg.run
    _need(d.n is None or d.n > 0, f"data.n must be a positive integer, got {d.n}")
    _need(math.isfinite(d.val_fraction) and math.isfinite(d.p_uncond), "data.val_fraction and data.p_uncond must be "
                                                                       "finite numbers")
    _need(0 <= d.val_fraction < 1, f"data.val_fraction must be in [0, 1), got {d.val_fraction}")
    _need(0 <= d.p_uncond < 1, f"data.p_uncond must be in [0, 1), got {d.p_uncond}")
    _need(bool(d.name), "data.name must name a data set")
    _check_path(cfg.path)
    for k in ("channels", "num_res_blocks", "mlp_hidden", "mlp_depth"):
        _pos_int(f"net.{k}", getattr(n, k))
    for k, hi in (("channels", 2**16), ("mlp_hidden", 2**20), ("num_res_blocks", 64), ("mlp_depth", 1024)):
        _at_most(f"net.{k}", getattr(n, k), hi)
    _need(len(n.channel_mult) <= 8 and all(m <= 64 for m in n.channel_mult),
          f"net.channel_mult must have at most 8 levels of at most 64, got {list(n.channel_mult)}")
    _need(len(n.channel_mult) > 0 and all(m > 0 for m in n.channel_mult),
          f"net.channel_mult must be positive integers, got {list(n.channel_mult)}")
    _need(all(a > 0 for a in n.attn_resolutions),
          f"net.attn_resolutions must be positive, got {list(n.attn_resolutions)}")
    _need(0 <= n.dropout < 1, f"net.dropout must be in [0, 1), got {n.dropout}")
    _need(math.isfinite(ob.sigma_data) and 0 < ob.sigma_data <= 1e6,
          f"objective.sigma_data must be in (0, 1e6], got {ob.sigma_data}")
    _need(math.isfinite(ob.min_snr_gamma) and ob.min_snr_gamma > 0,
          f"objective.min_snr_gamma must be positive, got {ob.min_snr_gamma}")
    _need(math.isfinite(ob.hybrid_lambda) and ob.hybrid_lambda >= 0,
          f"objective.hybrid_lambda must be >= 0, got {ob.hybrid_lambda}")
    _need(math.isfinite(ob.sigmoid_bias), f"objective.sigmoid_bias must be a finite number, got {ob.sigmoid_bias}")
    _only(ob.sigma_data != 0.5, "edm" in (ob.prediction, ob.weighting) or ob.prediction == "consistency",
          "objective.sigma_data", "the edm prediction or weighting")  # (and consistency models)
    _only(ob.min_snr_gamma != 5.0, ob.weighting == "min_snr", "objective.min_snr_gamma", "weighting 'min_snr'")
    _only(ob.sigmoid_bias != 0.0, ob.weighting == "sigmoid", "objective.sigmoid_bias", "weighting 'sigmoid'")
    for k in ("time_mean", "time_std"):
        v = getattr(ob, k)
        _only(v is not None, ob.time_sampling in ("logit_normal", "log_normal"), f"objective.{k}",
              "time_sampling 'logit_normal' or 'log_normal'")
        _need(v is None or math.isfinite(v), f"objective.{k} must be a finite number, got {v}")
    _need(ob.learn_variance or ob.hybrid_lambda == 0.001,
          "objective.hybrid_lambda weights the learned variance's L_vlb term: it needs objective.learn_variance = true")
    _need(ob.time_sampling != "importance" or ob.learn_variance,
          "objective.time_sampling = 'importance' samples t by the L_vlb history, so it needs learn_variance = true")
    for k in ("steps", "batch_size"):
        _pos_int(f"optim.{k}", getattr(o, k))
    _at_most("optim.steps", o.steps, MAX_STEPS)
    _at_most("optim.batch_size", o.batch_size, 2**24)
    _nonneg_int("optim.warmup", o.warmup)
    _need(math.isfinite(o.lr) and 0 < o.lr <= MAX_LR,
          f"optim.lr must be a positive number at most {MAX_LR:g} (AdamW moves each weight by about lr per "
          f"step; 1e-4 to 1e-2 is usual), got {o.lr}")
    _need(math.isfinite(o.min_lr) and 0 <= o.min_lr <= o.lr, f"optim.min_lr must be in [0, lr], got {o.min_lr}")
    _need(math.isfinite(o.weight_decay) and o.weight_decay >= 0,
          f"optim.weight_decay must be >= 0, got {o.weight_decay}")
    _need(o.lr * o.weight_decay < 1, f"optim.weight_decay {o.weight_decay} times optim.lr {o.lr} must be below 1 "
                                     "(AdamW scales the weights by 1 - lr·weight_decay each step)")
    _need(math.isfinite(o.grad_clip) and o.grad_clip >= 0,
          f"optim.grad_clip must be >= 0 (0 disables), got {o.grad_clip}")
    _need(len(o.betas) == 2 and all(0 <= b < 1 for b in o.betas),
          f"optim.betas must be two numbers in [0, 1), got {o.betas}")
    _need(0 <= o.ema_decay < 1, f"optim.ema_decay must be in [0, 1), got {o.ema_decay}")
    for k in ("log_every", "val_every", "ckpt_every", "n_samples", "sample_steps"):
        _pos_int(f"log.{k}", getattr(lg, k))
    _at_most("log.n_samples", lg.n_samples, 4096)
    _at_most("log.sample_steps", lg.sample_steps, 10_000)
    _nonneg_int("log.sample_every", lg.sample_every)
    _nonneg_int("run.seed", r.seed)
    _at_most("run.seed", r.seed, MAX_SEED)
    _nonneg_int("run.threads", r.threads)
    _at_most("run.threads", r.threads, 1024)
    _check_device(r.device)
    _check_consistency(cfg)
    _check_objective(cfg)


def _check_device(device: str) -> None:
    if device == "auto":
        return
    import torch

    try:
        dev = torch.device(device)
    except (RuntimeError, ValueError):
        raise ConfigError(f"run.device: unknown device {device!r}; use auto, cpu, cuda or cuda:N") from None
    _need(dev.type in ("cpu", "cuda", "mps"),
          f"run.device: unsupported device {device!r}; use auto, cpu, cuda or cuda:N")


def _check_consistency(cfg: "Config") -> None:
    """The [consistency] table: read only for objective.prediction = 'consistency' (its keys keep their defaults
    otherwise), each method's own keys (CONSISTENCY_KEYS), ranges, and the diffusion-loss keys it replaces."""
    c, ob = cfg.consistency, cfg.objective
    changed = [f.name for f in fields(ConsistencyConfig) if getattr(c, f.name) != f.default]
    if ob.prediction != "consistency":
        _need(not changed, f"consistency.{changed[0] if changed else ''} applies to objective.prediction = "
                           "'consistency' only")
        return
    _need(cfg.path.kind == "ve", f"objective.prediction = 'consistency' needs path.kind = 've' (a consistency model "
                                 f"is a function of the VE noise level σ = t), got {cfg.path.kind!r}")
    for k in (k for k in changed if k != "method"):
        users = [m for m, ks in CONSISTENCY_KEYS.items() if k in ks]
        _need(k in CONSISTENCY_KEYS[c.method], f"consistency.{k} does not apply to method {c.method!r} (it is a key "
                                               f"of {' and '.join(users)})")
    for k, default, why in (("weighting", "none", "its weight is λ = 1/(σ_{i+1} - σ_i)"),
                            ("loss", "l2", "its distance is pseudo-Huber, see consistency.huber_c"),
                            ("time_sampling", "auto", "its noise levels come from the [consistency] table")):
        _need(getattr(ob, k) == default, f"objective.{k} does not apply to a consistency model ({why})")
    _need(not ob.learn_variance, "objective.learn_variance does not apply to a consistency model")
    _need(math.isfinite(c.sigma_min) and 0 < c.sigma_min < cfg.path.sigma_max,
          f"consistency.sigma_min must be in (0, path.sigma_max = {cfg.path.sigma_max:g}), got {c.sigma_min}")
    _need(math.isfinite(c.rho) and 0 < c.rho <= 100, f"consistency.rho must be in (0, 100], got {c.rho}")
    for k in ("s0", "s1", "cd_steps"):
        _pos_int(f"consistency.{k}", getattr(c, k))
        _at_most(f"consistency.{k}", getattr(c, k), 1_000_000)
    _need(c.cd_steps >= 2, f"consistency.cd_steps (noise levels) must be at least 2, got {c.cd_steps}")
    _need(c.s0 <= c.s1, f"consistency.s0 ({c.s0}) must be at most consistency.s1 ({c.s1}): the curriculum doubles "
                        "the discretisation from s0 up to s1")
    _finite("consistency.p_mean", c.p_mean)
    _need(math.isfinite(c.p_std) and c.p_std > 0, f"consistency.p_std must be a finite number > 0, got {c.p_std}")
    _need(math.isfinite(c.huber_c) and c.huber_c >= 0, f"consistency.huber_c must be >= 0 (0: 0.00054·√d), got "
                                                       f"{c.huber_c}")
    _need(c.method != "cd" or bool(c.teacher), "consistency.method = 'cd' needs consistency.teacher, the run to "
                                               "distil")
    if c.method == "ect":
        try:
            from ..objectives.ect import check_ect
        except ImportError:
            raise ConfigError("consistency.method = 'ect' needs kuosan.objectives.ect, which this kuosan lacks") \
                from None
        try:
            check_ect(c)
        except ValueError as e:
            raise ConfigError(str(e).splitlines()[0]) from None
    if c.method == "cd":
        from ..sampling import SAMPLERS

        spec = SAMPLERS.get(c.teacher_sampler)
        _need(spec is not None and spec.deterministic and c.teacher_sampler != "consistency",
              f"consistency.teacher_sampler must be a deterministic ODE sampler "
              f"({', '.join(k for k, v in SAMPLERS.items() if v.deterministic)}), got {c.teacher_sampler!r}")


def _check_objective(cfg: "Config") -> None:
    """Build path, parameterisation and objective as training will: an unfit combination (ε-prediction on a
    zero-terminal-SNR path, importance sampling on a continuous path, ...) is refused before anything runs."""
    from ..build import make_objective_from, make_path_from, make_param_from

    try:
        path = make_path_from(cfg)
        param = make_param_from(cfg)
        param.check_path(path)
        make_objective_from(cfg, path, param, bits=None)
    except ValueError as e:
        if isinstance(e, ConfigError):
            raise
        raise ConfigError(f"objective: {str(e).splitlines()[0]}") from None
