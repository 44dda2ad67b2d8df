"""Training configuration: one flat dataclass, readable from TOML/JSON and overridable on the command line."""

from __future__ import annotations

import dataclasses
import difflib
import json
import math
import sys
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any, Literal, get_args, get_origin, get_type_hints

from .forward import PREDICTIONS
from .losses import LOSS_TYPES, WEIGHTINGS
from .schedules import BETA_FNS

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

ModelKind = Literal["auto", "unet", "mlp"]
Precision = Literal["auto", "fp32", "bf16"]


class ConfigError(ValueError):
    """A bad configuration value or key; the CLI prints it as one line."""


@dataclass
class Config:
    # data
    data: str = "digits"  # built-in name (digits, mnist5k, moons, swissroll, ring, curves) or a path
    n_data: int | None = None  # use at most this many examples
    val_fraction: float = 0.05
    class_cond: bool = False  # train a class-conditional model (labels needed) with label dropout
    p_uncond: float = 0.1  # probability of the null label, for classifier-free guidance
    # diffusion
    schedule: str = "cosine"
    T: int = 1000
    beta_start: float = 1e-4  # linear schedule only
    beta_end: float = 0.02
    target: str = "v"  # v with the cosine schedule: well-conditioned at t = T (eps is not: α_T ≈ 0)
    loss: str = "l2"
    weighting: str = "none"
    min_snr_gamma: float = 5.0
    learn_variance: bool = False  # improved DDPM: the network also outputs v for σ² (learned range)
    hybrid_lambda: float = 0.001  # weight of L_vlb in the hybrid loss (with learn_variance)
    importance_sampling: bool = False  # sample t ∝ sqrt(E[L_vlb,t²]) (with learn_variance)
    # network
    model: ModelKind = "auto"  # auto: unet for images, mlp for vectors
    channels: int = 32
    channel_mult: tuple[int, ...] = (1, 2)
    num_res_blocks: int = 1
    attn_resolutions: tuple[int, ...] = ()
    dropout: float = 0.0
    mlp_hidden: int = 256
    mlp_depth: int = 4
    # optimisation
    steps: int = 1000
    batch_size: int = 128  # global batch, split over DDP processes
    lr: float = 3e-3
    min_lr: float = 1e-4
    warmup: int = 100
    weight_decay: float = 0.0
    grad_clip: float = 1.0
    ema_decay: float = 0.99  # short runs: a ~100-step horizon (0.999 lags a 1000-step run)
    ema_warmup: bool = True
    precision: str = "auto"  # fp32 | bf16 (autocast) | auto: bf16 on CPUs with AVX512-BF16/AMX, bf16 GPUs
    seed: int = 0
    device: str = "auto"
    threads: int = 0  # torch intra-op threads; 0: torch's default
    # logging, evaluation, checkpoints
    out: str = ""  # run folder; default runs/<data>-<time>
    log_every: int = 50
    val_every: int = 500
    sample_every: int = 0  # 0: only at the end
    ckpt_every: int = 500
    n_samples: int = 64
    sample_steps: int = 50  # DDIM steps for preview grids

    def validate(self) -> "Config":
        """Raise ConfigError naming the first bad value."""
        def need(ok: bool, msg: str) -> None:
            if not ok:
                raise ConfigError(msg)

        need(self.schedule in BETA_FNS, f"unknown schedule {self.schedule!r}; choose one of {', '.join(BETA_FNS)}")
        need(self.target in PREDICTIONS, f"unknown target {self.target!r}; choose one of {', '.join(PREDICTIONS)}")
        need(self.loss in LOSS_TYPES, f"unknown loss {self.loss!r}; choose one of {', '.join(LOSS_TYPES)}")
        need(self.weighting in WEIGHTINGS, f"unknown weighting {self.weighting!r}; choose one of {', '.join(WEIGHTINGS)}")
        need(self.precision in get_args(Precision),
             f"unknown precision {self.precision!r}; choose one of {', '.join(get_args(Precision))}")
        need(self.model in get_args(ModelKind), f"unknown model {self.model!r}; choose one of auto, unet, mlp")
        for name in ("T", "steps", "batch_size", "channels", "num_res_blocks", "mlp_hidden", "mlp_depth",
                     "log_every", "val_every", "ckpt_every", "n_samples", "sample_steps"):
            v = getattr(self, name)
            need(isinstance(v, int) and v > 0, f"{name} must be a positive integer, got {v!r}")
        for name in ("warmup", "sample_every", "threads", "seed"):
            v = getattr(self, name)
            need(isinstance(v, int) and v >= 0, f"{name} must be a non-negative integer, got {v!r}")
        need(self.n_data is None or self.n_data > 0, f"n_data must be positive, got {self.n_data}")
        need(0 < self.beta_start < 1 and 0 < self.beta_end < 1,
             f"beta_start and beta_end must lie in (0, 1), got {self.beta_start} and {self.beta_end}")
        need(0 <= self.val_fraction < 1, f"val_fraction must be in [0, 1), got {self.val_fraction}")
        need(0 <= self.p_uncond < 1, f"p_uncond must be in [0, 1), got {self.p_uncond}")
        need(0 <= self.dropout < 1, f"dropout must be in [0, 1), got {self.dropout}")
        need(0 <= self.ema_decay < 1, f"ema_decay must be in [0, 1), got {self.ema_decay}")
        need(self.lr > 0 and math.isfinite(self.lr), f"lr must be a positive number, got {self.lr}")
        need(0 <= self.min_lr <= self.lr, f"min_lr must be in [0, lr], got {self.min_lr}")
        need(self.grad_clip >= 0, f"grad_clip must be >= 0 (0 disables), got {self.grad_clip}")
        need(self.hybrid_lambda >= 0, f"hybrid_lambda must be >= 0, got {self.hybrid_lambda}")
        need(not self.importance_sampling or self.learn_variance,
             "importance_sampling samples t by the L_vlb history, so it needs learn_variance = true")
        need(self.min_snr_gamma > 0, f"min_snr_gamma must be positive, got {self.min_snr_gamma}")
        need(len(self.channel_mult) > 0 and all(m > 0 for m in self.channel_mult),
             f"channel_mult must be positive integers, got {self.channel_mult}")
        return self

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


_HINTS = get_type_hints(Config)


def _coerce(name: str, value: Any) -> Any:
    """Convert a TOML/JSON/CLI value to the field's type, or raise ConfigError."""
    hint = _HINTS[name]
    args = get_args(hint)
    try:
        if get_origin(hint) is tuple or hint is tuple:
            if isinstance(value, str):
                value = [v for v in value.replace(" ", "").split(",") if v]
            return tuple(int(v) for v in value)
        if type(None) in args:  # Optional[int]
            if value is None or (isinstance(value, str) and value.lower() in ("none", "")):
                return None
            return int(value)
        if hint is bool:
            if isinstance(value, str):
                if value.lower() in ("1", "true", "yes", "on"):
                    return True
                if value.lower() in ("0", "false", "no", "off"):
                    return False
                raise ValueError
            return bool(value)
        if hint is int:
            if isinstance(value, float) and not value.is_integer():
                raise ValueError
            return int(value)
        if hint is float:
            return float(value)
        return str(value)
    except (TypeError, ValueError):
        raise ConfigError(f"config key {name!r}: cannot read {value!r} as {getattr(hint, '__name__', hint)}") from None


def check_keys(d: dict[str, Any], where: str) -> None:
    names = [f.name for f in fields(Config)]
    for k in d:
        if k not in names:
            close = difflib.get_close_matches(k, names, n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            raise ConfigError(f"unknown config key {k!r} in {where}{hint}")


def from_dict(d: dict[str, Any], where: str = "config", base: Config | None = None) -> Config:
    """A Config from a (possibly partial) dict; unknown keys and bad values raise ConfigError."""
    check_keys(d, where)
    cfg = dataclasses.replace(base) if base is not None else Config()
    for k, v in d.items():
        setattr(cfg, k, _coerce(k, v))
    return cfg


def load_file(path: str | Path) -> dict[str, Any]:
    """Read a TOML or JSON config file into a dict (a [train] table in TOML is accepted too)."""
    p = Path(path)
    if not p.is_file():
        raise ConfigError(f"config file {str(p)!r} does not exist")
    try:
        if p.suffix == ".json":
            d = json.loads(p.read_text())
        else:
            d = tomllib.loads(p.read_text())
    except (json.JSONDecodeError, tomllib.TOMLDecodeError, UnicodeDecodeError) as e:
        raise ConfigError(f"cannot parse {str(p)!r}: {e}") from None
    if not isinstance(d, dict):
        raise ConfigError(f"{str(p)!r} must hold a table of config keys")
    return d.get("train", d) if isinstance(d.get("train"), dict) else d


def to_toml(cfg: Config) -> str:
    """Write a Config as TOML (None values are left out: they mean the default)."""
    lines = []
    for k, v in cfg.to_dict().items():
        if v is None:
            continue
        if isinstance(v, bool):
            lines.append(f"{k} = {'true' if v else 'false'}")
        elif isinstance(v, (int, float)):
            lines.append(f"{k} = {v!r}")
        elif isinstance(v, (tuple, list)):
            lines.append(f"{k} = [{', '.join(str(x) for x in v)}]")
        else:
            lines.append(f"{k} = {json.dumps(v)}")
    return "\n".join(lines) + "\n"
