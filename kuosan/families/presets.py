"""Family presets (``kuosan train --process vp|edm|flow|consistency``): each family is a path + parameterisation +
objective of the one core, so a preset only fills config keys.

- ``vp``: today's defaults (the discrete cosine VP chain, v-prediction, uniform integer times).
- ``edm``: Karras et al. 2022 (Table 1): path.kind ve, the EDM preconditioning, EDM's loss weight and log-normal σ.
- ``flow``: flow matching / rectified flow (Lipman et al. 2023; Liu et al. 2023): the linear path, velocity target,
  logit-normal times (Esser et al. 2024 §3.1), no weighting.
- ``consistency``: consistency training (Song & Dhariwal 2023): path.kind ve, the consistency prediction,
  consistency.method ct.

Precedence, lowest first: the defaults, the preset, a --config file, short flags, --set. A preset fills only the
keys nothing above it sets, so it never overrides an explicit key; an incoherent explicit combination (``--process
flow --prediction eps``) is the core's to accept or refuse (``Config.validate``).
"""

from __future__ import annotations

import difflib
from typing import Any, Literal, Mapping, Sequence, get_args

from ..config import KEYS, Config, ConfigError, apply_overrides

Process = Literal["vp", "edm", "flow", "consistency"]
PROCESSES: tuple[str, ...] = get_args(Process)

# process -> {"table.key": value}; vp lists the defaults it stands for, so it also resets a non-default base
PRESETS: dict[str, dict[str, Any]] = {
    "vp": {k: KEYS[k].default for k in ("path.kind", "objective.prediction", "objective.weighting",
                                        "objective.time_sampling")},
    "edm": {"path.kind": "ve", "objective.prediction": "edm", "objective.weighting": "edm",
            "objective.time_sampling": "log_normal"},
    "flow": {"path.kind": "flow", "objective.prediction": "velocity", "objective.weighting": "none",
             "objective.time_sampling": "logit_normal"},
    "consistency": {"path.kind": "ve", "objective.prediction": "consistency", "consistency.method": "ct"},
}
PROCESS_HELP = {"vp": "the discrete cosine VP chain, v-prediction (the defaults)",
                "edm": "ve path, EDM preconditioning, EDM weighting, log-normal σ (Karras et al. 2022)",
                "flow": "linear path, velocity target, logit-normal t (flow matching / rectified flow)",
                "consistency": "ve path, consistency model trained from scratch (improved CT, Song & Dhariwal 2023)"}


def preset_keys(process: str) -> dict[str, Any]:
    """The config keys ("table.key" -> value) the family ``process`` fills; ConfigError for an unknown name."""
    if process not in PRESETS:
        close = difflib.get_close_matches(str(process), PROCESSES, n=1)
        hint = f" (did you mean {close[0]!r}?)" if close else ""
        raise ConfigError(f"unknown process {process!r}{hint}; choose one of {', '.join(PROCESSES)}")
    return dict(PRESETS[process])


def apply_preset(cfg: Config, process: str, explicit: Sequence[str] = ()) -> Config:
    """A copy of cfg with the preset's keys set, except those named in ``explicit`` ("table.key")."""
    keys = {k: v for k, v in preset_keys(process).items() if k not in set(explicit)}
    return apply_overrides(cfg, keys, where=f"the {process} preset")


def family_config(process: str, overrides: Sequence[str] | Mapping[str, Any] | None = None) -> Config:
    """The defaults, then the preset, then ``overrides`` ("table.key=value" strings or a mapping); validated."""
    return apply_overrides(apply_preset(Config(), process), overrides).validate()
