"""Likelihoods of a diffusion model: the discrete variational bound (``vlb``, discrete VP chain only), the
probability-flow ODE NLL (``ode_nll``, any path) and the reverse-process variances they, the DDPM sampler and
improved DDPM's hybrid objective share (``variances``). Gaussian KLs and decoder NLLs live in kuosan.gaussian."""

from __future__ import annotations

from .ode_nll import ODENLLResult, OdeBackend, ode_nll
from .stats import mean_stderr
from .variances import (VARIANCE_KINDS, AnalyticTable, VarianceKind, estimate_analytic_table, gamma_bounds,
                        hybrid_vlb_term, reverse_variance)
from .vlb import VLBResult, vlb

__all__ = ["VARIANCE_KINDS", "AnalyticTable", "ODENLLResult", "OdeBackend", "VLBResult", "VarianceKind",
           "estimate_analytic_table", "gamma_bounds", "hybrid_vlb_term", "mean_stderr", "ode_nll",
           "reverse_variance", "vlb"]
