"""Training objectives: the diffusion loss on any path, its time samplers and its weightings w(λ)."""

from __future__ import annotations

from .diffusion import LOSS_TYPES, DiffusionObjective, LossTerms, LossType, distance, make_objective
from .timesteps import (TIME_SAMPLINGS, Importance, LogitNormal, LogNormal, TimeSampler, TimeSampling, Uniform,
                        UniformDiscrete, make_time_sampler)
from .weighting import WEIGHTINGS, WeightingKind, dlog_snr_dt, eps_weight, x0_factor, x0_weight

__all__ = ["LOSS_TYPES", "TIME_SAMPLINGS", "WEIGHTINGS", "DiffusionObjective", "Importance", "LogNormal",
           "LogitNormal", "LossTerms", "LossType", "TimeSampler", "TimeSampling", "Uniform", "UniformDiscrete",
           "WeightingKind", "distance", "dlog_snr_dt", "eps_weight", "make_objective", "make_time_sampler",
           "x0_factor", "x0_weight"]
