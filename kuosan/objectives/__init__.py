"""Training objectives: the diffusion loss on any path, its time samplers and its weightings w(λ); the consistency
objective (consistency training, distillation and tuning) with its noise-level pairs."""

from __future__ import annotations

from .consistency import (ConsistencyLevels, ConsistencyObjective, curriculum_points, karras_levels, level_probs,
                          make_consistency_objective, pseudo_huber)
from .diffusion import LOSS_TYPES, DiffusionObjective, LossTerms, LossType, distance, make_objective
from .timesteps import (TIME_SAMPLINGS, Importance, LogitNormal, LogNormal, TimeSampler, TimeSampling, Uniform,
                        UniformDiscrete, make_time_sampler)
from .weighting import WEIGHTINGS, WeightingKind, dlog_snr_dt, eps_weight, x0_factor, x0_weight

__all__ = ["LOSS_TYPES", "TIME_SAMPLINGS", "WEIGHTINGS", "ConsistencyLevels", "ConsistencyObjective",
           "DiffusionObjective", "Importance", "LogNormal", "LogitNormal", "LossTerms", "LossType",
           "TimeSampler", "TimeSampling", "Uniform", "UniformDiscrete", "WeightingKind",
           "curriculum_points", "distance", "dlog_snr_dt", "eps_weight", "karras_levels", "level_probs",
           "make_consistency_objective", "make_objective", "make_time_sampler", "pseudo_huber", "x0_factor",
           "x0_weight"]
