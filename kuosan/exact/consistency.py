"""The exact consistency function of a Gaussian mixture (Song et al. 2023 Def. 1, Eq. (3)): f(x, σ̃) is the
endpoint at σ̃_min of the probability-flow ODE trajectory through x at noise level σ̃, on the VE path (α = 1,
σ = t, so t = σ̃), computed by the exact solver ``pf_ode_solve``. f(x, σ_min) = x by definition.
"""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import Tensor

from ..broadcast import batch_times
from ..paths import VE
from .mixture import GaussianMixture, pf_ode_solve


class ExactConsistency:
    """f(x_t, t) of a GaussianMixture on the VE path (t = σ̃ >= sigma_min); x_t (B, *D). Shaped like a denoiser
    (``path``, ``kind = "consistency"``), so consistency samplers can be run on the exact answer."""

    kind = "consistency"

    def __init__(self, mixture: GaussianMixture, sigma_min: float = 0.002, sigma_max: float = 80.0,
                 rtol: float = 1e-11, atol: float = 1e-12):
        if not (0 < sigma_min < sigma_max and math.isfinite(sigma_max)):
            raise ValueError(f"need 0 < sigma_min < sigma_max < inf, got {sigma_min}, {sigma_max}")
        self.mixture, self.sigma_min, self.path = mixture, float(sigma_min), VE(sigma_max=sigma_max)
        self.rtol, self.atol = rtol, atol

    def __call__(self, x_t: Tensor, t: Tensor, **cond: Any) -> Tensor:
        """f(x_t, t) (B, *D): one exact ODE solve per distinct time in t (B,) (float64)."""
        t = batch_times(t, x_t)
        if bool((t < self.sigma_min).any()) or bool((t > self.path.sigma_max).any()):
            raise ValueError(f"consistency times must lie in [sigma_min, sigma_max] = [{self.sigma_min}, "
                             f"{self.path.sigma_max}], got {float(t.min()):.4g}..{float(t.max()):.4g}")
        flat = x_t.reshape(x_t.shape[0], -1)
        out = flat.clone()  # rows at t = sigma_min stay x exactly (the boundary condition)
        for level in torch.unique(t).tolist():
            if level == self.sigma_min:
                continue
            rows = t == level
            # VE state y = x; pf_ode_solve takes and returns the VP state y/√(1 + σ̃²)
            vp = pf_ode_solve(self.mixture, flat[rows].to(torch.float64) / math.sqrt(1 + level**2), level,
                              self.sigma_min, rtol=self.rtol, atol=self.atol)
            out[rows] = (vp * math.sqrt(1 + self.sigma_min**2)).to(flat.dtype)
        return out.reshape(x_t.shape)
