"""Constrained sampling and inpainting on any sampler and path, through the sampler step hook and Denoiser ->
Denoiser wrappers (Christopher et al. 2024; Lugmayr et al. 2022; Chung et al. 2023).

- ``project``: the constraint sets (box, fixed values, A x = b) and their exact projections.
- ``step``: the projection hook after every step (what projecting a noisy x_t means), the x̂_0 wrapper.
- ``inpaint``: replacement, RePaint resampling, DPS gradient guidance.
- ``batch``: per-sample indices and noise streams for hooks; the Plan a sampler is given.

Use: ``plan = constrained(D, C, ts)`` or ``inpainting(D, ts, shape, mask, known, "repaint")``, then
``x = plan.finish(sampler(plan.denoiser, x_T, ts, cond={**cond, **plan.cond(n)}, callback=plan.callback),
rows)``.
"""

from .batch import ROW_KEY, Batch, Plan
from .inpaint import (DEFAULT_DPS_SCALE, DEFAULT_RESAMPLE, INPAINT_METHODS, GradientGuided, InpaintMethod, Resample,
                      inpainting, jump_back)
from .project import Affine, Box, Constraint, ConstraintError, make_constraint
from .step import ProjectedDenoiser, ProjectStep, constrained

__all__ = ["Affine", "Batch", "Box", "Constraint", "ConstraintError", "DEFAULT_DPS_SCALE", "DEFAULT_RESAMPLE",
           "GradientGuided", "INPAINT_METHODS", "InpaintMethod", "Plan", "ProjectStep", "ProjectedDenoiser",
           "ROW_KEY", "Resample", "constrained", "inpainting", "jump_back", "make_constraint"]
