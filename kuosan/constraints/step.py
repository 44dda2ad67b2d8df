"""Constrained sampling (projected diffusion, Christopher et al. 2024: x_{t-1} = Π_C(μ_θ(x_t, t) + σ_t ε)) on any
sampler and path, through the step hook, with a final projection that puts the output in C to float precision.

**What projecting x_t means.** C constrains x_0, but a sampler's state x_s = α_s x_0 + σ_s ε is noisy and scaled:
Π_C(x_s) itself would clamp the noise away at high noise levels (and off the data scale), handing the denoiser
states it has never seen. The states consistent with x_0 ∈ C and a noise draw n are α_s C + σ_s n, and the hook
projects onto that set, Π(x_s) = σ_s n + α_s Π_C((x_s - σ_s n)/α_s), with two choices of n:
- affine C (fixed values, A x = b): n = a fresh per-sample draw z. Π_{α C + σ z}(x) = L x + σ (I - L) z + α c for
  Π_C(u) = L u + c, so nothing divides by α (α = 0 is fine), the free directions of x are left alone, and the
  constrained directions get exactly their forward-noised law: A x_s = α_s b + σ_s A z with A z ~ N(0, A Aᵀ), the
  law of A x_s given A x_0 = b. For fixed values this *is* replacement inpainting (x_M = α_s y_M + σ_s z_M; Song et
  al. 2021 App. I.2, Lugmayr et al. 2022 Eq. (8)).
- a box: n = the step's own noise estimate (x_s - α_s x̂_0)/σ_s, so Π(x_s) = x_s + α_s (Π_C(x̂_0) - x̂_0), x̂_0
  the estimate the step used: the denoised part is projected and the noise part kept. A fresh n would re-randomise every
  coordinate at every step, since a box constrains all of them (α_s C + σ_s N(0, I) has full support).
At s = 0 (α = 1, σ = 0) both are Π_C itself. The optional x̂_0 wrapper (``project_x0``) also projects every x̂_0 a
sampler sees (DDIM's x̂_0 clipping generalised to any C); it changes what the sampler integrates, the hook changes the
state. Neither samples p(x_0 | x_0 ∈ C) exactly (a projection puts mass on the boundary of a box): this is the
projection method the seed describes, with exact feasibility.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from ..denoiser import Denoiser
from ..paths import coefficients
from .batch import Batch, Plan, begin_each_run
from .project import Constraint


class ProjectStep:
    """The step hook Π onto α_s C + σ_s n after the step t_i -> s = t_{i+1} (module docstring); (i, x,
    x̂_0) -> x."""

    def __init__(self, constraint: Constraint, ts: Tensor, path: Any, batch: Batch):
        self.constraint, self.batch = constraint, batch
        self.grid = [float(t) for t in torch.as_tensor(ts, dtype=torch.float64).cpu()]
        self.coef = [coefficients(path, t) for t in self.grid]

    def __call__(self, i: int, x: Tensor, x0: Tensor) -> Tensor:
        rows = self.batch.rows_of(x)
        a, s, _ = self.coef[i + 1]
        if s == 0:
            return self.constraint.project(x, rows)
        box, affine = self.constraint.box, self.constraint.affine
        if box is not None:
            x = x + a * (box.project(x0) - x0)
        if affine is not None:
            z = self.batch.noise(x)
            x = affine.project(x - s * z, rows, scale=a) + s * z
        return x


class ProjectedDenoiser:
    """Denoiser -> Denoiser: x̂_0 <- Π_C(x̂_0) for the batch's samples."""

    def __init__(self, inner: Denoiser, constraint: Constraint, batch: Batch):
        self.inner, self.constraint, self.batch, self.path = inner, constraint, batch, inner.path

    def __call__(self, x_t: Tensor, t: Tensor, **cond: Any) -> Tensor:
        return self.constraint.project(self.inner(x_t, t, **cond), self.batch.rows_of(x_t))


def constrained(D: Denoiser, constraint: Constraint, ts: Tensor, *, seed: int = 0, project_x0: bool = False) -> Plan:
    """The plan for sampling D on grid ``ts`` under ``constraint``: the projection hook after every step (and on
    every x̂_0 when ``project_x0``), then the final projection."""
    batch = Batch(seed)
    inner = ProjectedDenoiser(D, constraint, batch) if project_x0 else D
    hook = ProjectStep(constraint, ts, D.path, batch)
    return Plan(batch.denoiser(inner), begin_each_run(batch, hook), constraint, batch)
