"""The pre-redesign flat config (one 44-key dataclass, ``schedule``, ``target``, ``importance_sampling``, ...)
mapped onto the nested tables: old config files and run folders keep loading; and the values that keys added
later had before they existed, for the records of runs that trained before them."""

from __future__ import annotations

from typing import Any, Mapping

from .tables import ConfigError
from .values import _coerce, _suggest


# the pre-redesign flat Config: old key -> new "table.key" (target, importance_sampling handled below)
FLAT_KEYS: dict[str, str] = {
    "data": "data.name", "n_data": "data.n", "val_fraction": "data.val_fraction", "class_cond": "data.class_cond",
    "p_uncond": "data.p_uncond", "schedule": "path.schedule", "T": "path.T", "beta_start": "path.beta_start",
    "beta_end": "path.beta_end", "target": "objective.prediction", "loss": "objective.loss",
    "weighting": "objective.weighting", "min_snr_gamma": "objective.min_snr_gamma",
    "learn_variance": "objective.learn_variance", "hybrid_lambda": "objective.hybrid_lambda",
    "importance_sampling": "objective.time_sampling",
    **{k: f"net.{k}" for k in ("model", "channels", "channel_mult", "num_res_blocks", "attn_resolutions", "dropout",
                              "mlp_hidden", "mlp_depth")},
    **{k: f"optim.{k}" for k in ("steps", "batch_size", "lr", "min_lr", "warmup", "weight_decay", "grad_clip",
                                "ema_decay", "ema_warmup")},
    **{k: f"run.{k}" for k in ("precision", "seed", "device", "threads")},
    **{k: f"log.{k}" for k in ("out", "log_every", "val_every", "sample_every", "ckpt_every", "n_samples",
                              "sample_steps")}}


# (table, key, the value the trainer used before the key existed): a run's recorded config (a checkpoint's
# config.json, a run folder's config.toml) lacks such a key only when it trained before the key was added, and it
# trained with that value, not with today's default. optim.betas: AdamW's betas were (0.9, 0.999) until the key
# came (2026-11-24 17:00), and stayed the default until 20:30 that day, when β2 = 0.95 became it.
RETIRED_DEFAULTS: tuple[tuple[str, str, Any], ...] = (("optim", "betas", [0.9, 0.999]),)


def fill_retired_defaults(d: Mapping[str, Any]) -> dict[str, Any]:
    """A run's recorded nested config with the keys it predates set to the values it trained with (a copy)."""
    out = {k: dict(v) if isinstance(v, Mapping) else v for k, v in d.items()}
    for table, key, value in RETIRED_DEFAULTS:
        tab = out.setdefault(table, {})
        if isinstance(tab, dict):
            tab.setdefault(key, value)
    return out


def migrate_flat(d: Mapping[str, Any], where: str = "config") -> dict[str, Any]:
    """The pre-redesign flat config (every field of the old 44-key Config) as a nested dict.

    The old schedule was always a discrete VP chain; importance_sampling = true is time_sampling = 'importance',
    false the path's default sampling (uniform t in 1..T). Keys the old trainer ignored in that config are dropped
    (the new one refuses keys without effect): beta_start/beta_end except with the linear schedule, min_snr_gamma
    except with the min_snr weighting, hybrid_lambda without learn_variance."""
    out: dict[str, dict[str, Any]] = {"path": {"kind": "discrete_vp"}}
    for k, v in d.items():
        if k not in FLAT_KEYS:
            raise ConfigError(f"old-format config key {k!r} in {where} no longer exists"
                              f"{_suggest(k, list(FLAT_KEYS))}")
        table, name = FLAT_KEYS[k].split(".")
        if k == "importance_sampling":
            v = "importance" if _coerce("objective.learn_variance", v) else "auto"
        if not _had_effect(k, d):
            continue
        out.setdefault(table, {})[name] = v
    return out


def _had_effect(key: str, d: Mapping[str, Any]) -> bool:
    """Whether the old trainer used ``key`` of the flat config d."""
    if key in ("beta_start", "beta_end"):
        return d.get("schedule", "cosine") == "linear"
    if key == "min_snr_gamma":
        return d.get("weighting", "none") == "min_snr"
    if key == "hybrid_lambda":
        return bool(_coerce("objective.learn_variance", d.get("learn_variance", False)))
    return True
