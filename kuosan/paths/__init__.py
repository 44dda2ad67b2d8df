"""Gaussian paths x_t = α(t) x_0 + σ(t) ε: the protocol, the discrete VP chain and the continuous paths."""

from __future__ import annotations

from typing import Any, Literal, get_args

from .base import (Path, PathError, TimeLike, coefficients, f64, fingerprint_matches, require_discrete,
                   sde_coefficients, terminal_snr_is_zero, ve_sigma)
from .continuous import VE, Linear, VPCosine, VPLinear
from .discrete_vp import BETA_FNS, BETA_KINDS, DiscreteVP, discrete_vp, rescale_zero_terminal_snr

PathKind = Literal["discrete_vp", "vp_cosine", "vp_linear", "ve", "flow"]
PATH_KINDS: tuple[str, ...] = get_args(PathKind)


def make_path(kind: str = "discrete_vp", **kw: Any) -> Path:
    """A path by name: discrete_vp (schedule, T, zero_terminal_snr, beta_start, beta_end), vp_cosine (s, t_max),
    vp_linear (beta_min, beta_max, t_max), ve (sigma_max) or flow."""
    if kind == "discrete_vp":
        return discrete_vp(kw.pop("schedule", "linear"), kw.pop("T", 1000), **kw)
    ctor = {"vp_cosine": VPCosine, "vp_linear": VPLinear, "ve": VE, "flow": Linear}.get(kind)
    if ctor is None:
        raise ValueError(f"unknown path {kind!r}; choose one of {', '.join(PATH_KINDS)}")
    try:
        return ctor(**kw)
    except TypeError as e:
        raise ValueError(f"path {kind!r}: {e}") from None


__all__ = ["BETA_FNS", "BETA_KINDS", "PATH_KINDS", "VE", "DiscreteVP", "Linear", "Path", "PathError", "PathKind",
           "TimeLike", "VPCosine", "VPLinear", "coefficients", "discrete_vp", "f64", "fingerprint_matches", "make_path",
           "require_discrete", "rescale_zero_terminal_snr", "sde_coefficients", "terminal_snr_is_zero", "ve_sigma"]
