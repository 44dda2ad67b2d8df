"""Inpainting with an unconditional model and any fixed-step sampler: fill x where the binary mask is 0, keeping the
known values y where it is 1. Three methods:

- ``replace`` — after every step the known part is set to its forward-noised value α_s y + σ_s z, fresh z per step
  from per-sample streams (the fixed-values projection of :mod:`.step`; Song et al. 2021 App. I.2). Biased: each
  step sees y only through a re-noised copy drawn independently of the unknown part, so the unknown part does not
  follow p(x_s^U | y); with the exact denoiser on an 8-dim correlated Gaussian (data std 0.5) its conditional mean
  is off by 0.6 and its covariance by 25-80 %, and more steps do not help (benchmarks/inpainting_exact.py).
- ``repaint`` — Lugmayr et al. 2022 Alg. 1: after the step into s and the replacement, R - 1 times jump back to t by
  the path's forward transition x_t = (α_t/α_s) x_s + √(σ_t² - (α_t/α_s)² σ_s²) z and step to s again, then
  replace. The re-step is the ancestral posterior step q(x_s | x_t, x̂_0) (RePaint's DDPM step, DDIM η = 1) whatever
  the sampler: jump-back and a deterministic re-step would not form a Markov chain that mixes towards p(x_s | y). No
  resampling into s = 0. NFE: N + (R - 1)(N - 1), the re-steps made by the hook through the wrapped denoiser. With
  R = 10 both errors fall 3-9 times at 50-200 steps (1.2-8 times at 10), not to zero: each level's chain still
  conditions on a re-noised y.
- ``dps`` — Chung et al. 2023 (DPS) on x̂_0: x̂_0 <- x̂_0 - ζ ∇_{x_t} ‖m ⊙ (y - x̂_0(x_t))‖², a
  Denoiser -> Denoiser wrapper (autograd through the denoiser inside ``torch.enable_grad``; one forward and one backward
  per call). By Tweedie this is the score of p_t(x_t) p̃(y | x_t) with p̃ ∝ exp(-(ζ α_t/σ_t²)
  ‖m ⊙ (y - x̂_0)‖²); near the data the true p(y | x_t) has width σ_t/α_t, i.e. ζ = α_t/2 → 1/2, which
  makes the known part of x̂_0 equal to y to first order; at high noise p̃ is far wider than p(y | x_t), so larger ζ
  help. The default ζ = 1 is a middle value of the useful range on the exact test beds (ζ from 0.5 to 2 reduce
  replacement's errors, 2 most at 50-200 steps: benchmarks/inpainting_exact.py; ζ = 4 overshot in a trial with
  ancestral steps, covariance error 0.6-5). The known values are imposed only by the final projection.
Every method ends with the final projection (known values exact, other constraints too). Sample i depends only on
(seed, i): the hook's noise comes from per-sample streams (:mod:`.batch`).
"""

from __future__ import annotations

import math
from typing import Any, Literal, get_args

import torch
from torch import Tensor

from ..broadcast import batch_times
from ..denoiser import Denoiser
from ..forward import jump_variance
from ..paths import Path, coefficients, f64
from ..sampling.sde import posterior_step
from .batch import Batch, Plan, begin_each_run
from .project import Affine, make_constraint
from .step import ProjectedDenoiser, ProjectStep

InpaintMethod = Literal["replace", "repaint", "dps"]
INPAINT_METHODS: tuple[str, ...] = get_args(InpaintMethod)
DEFAULT_RESAMPLE = 10  # RePaint's r = 10 resamplings per step (Lugmayr et al. 2022 §5)
DEFAULT_DPS_SCALE = 1.0  # ζ: see the module docstring


def jump_back(path: Path, x_s: Tensor, s: float, t: float, z: Tensor) -> Tensor:
    """x_t ~ q(x_t | x_s) for s < t: (α_t/α_s) x_s + √(σ_t² - (α_t/α_s)² σ_s²) z (Lugmayr et al. 2022 Eq. (9)
    on any path), with standard normal z shaped like x_s."""
    a_s, a_t = coefficients(path, s)[0], coefficients(path, t)[0]
    var = float(jump_variance(path, f64(t), f64(s)))
    return (a_t / a_s) * x_s + math.sqrt(max(var, 0.0)) * z


class Resample:
    """RePaint's resampling around a projection hook: (i, x, x̂_0) -> x (module docstring)."""

    def __init__(self, project: ProjectStep, D: Denoiser, ts: Tensor, batch: Batch, resample: int):
        self.project, self.D, self.batch, self.resample = project, D, batch, resample
        self.grid = [float(t) for t in torch.as_tensor(ts, dtype=torch.float64).cpu()]

    def __call__(self, i: int, x: Tensor, x0: Tensor) -> Tensor:
        x = self.project(i, x, x0)
        t, s = self.grid[i], self.grid[i + 1]
        if s == 0:
            return x
        path = self.D.path
        for _ in range(self.resample - 1):
            x_t = jump_back(path, x, s, t, self.batch.noise(x))
            x0 = self.D(x_t, batch_times(t, x_t), **self.batch.cond)
            x = self.project(i, posterior_step(path, x_t, x0, t, s, self.batch.noise(x)), x0)
        return x


class GradientGuided:
    """Denoiser -> Denoiser: DPS on x̂_0, x̂_0 - ζ ∇_{x_t} ‖m ⊙ (y - x̂_0(x_t))‖²
    (Chung et al. 2023 Alg. 1)."""

    def __init__(self, inner: Denoiser, fixed: Affine, scale: float, batch: Batch):
        self.inner, self.fixed, self.scale, self.batch, self.path = inner, fixed, scale, batch, inner.path

    def __call__(self, x_t: Tensor, t: Tensor, **cond: Any) -> Tensor:
        if self.scale == 0:
            return self.inner(x_t, t, **cond)
        m, y = self.fixed.fixed_values(self.batch.rows_of(x_t), x_t)
        with torch.enable_grad():  # samplers run under no_grad
            x = x_t.detach().requires_grad_(True)
            x0 = self.inner(x, t, **cond)
            loss = (m * (y - x0)).pow(2).sum()  # rows do not interact: the batch sum gives per-sample gradients
            (g,) = torch.autograd.grad(loss, x, allow_unused=True)
        return x0.detach() if g is None else (x0 - self.scale * g).detach()


def _check(method: str, resample: int | None, scale: float | None) -> tuple[int, float]:
    if method not in INPAINT_METHODS:
        raise ValueError(f"unknown inpainting method {method!r}; choose one of {', '.join(INPAINT_METHODS)}")
    if resample is not None and method != "repaint":
        raise ValueError(f"resample applies only to inpainting method 'repaint', not {method!r}")
    if scale is not None and method != "dps":
        raise ValueError(f"the gradient-guidance scale applies only to inpainting method 'dps', not {method!r}")
    r = DEFAULT_RESAMPLE if resample is None else resample
    if isinstance(r, bool) or not isinstance(r, int) or r < 1:
        raise ValueError(f"resample must be an integer >= 1, got {r!r}")
    z = DEFAULT_DPS_SCALE if scale is None else scale
    if isinstance(z, bool) or not isinstance(z, (int, float)) or not (math.isfinite(z) and z >= 0):
        raise ValueError(f"the gradient-guidance scale must be a finite number >= 0, got {z!r}")
    return r, float(z)


def inpainting(D: Denoiser, ts: Tensor, shape: tuple[int, ...], mask: Tensor, known: Tensor,
               method: InpaintMethod = "replace", *, resample: int | None = None, scale: float | None = None,
               box: tuple[float, float] | None = None, A: Tensor | None = None, b: Tensor | None = None,
               project_x0: bool = False, seed: int = 0) -> Plan:
    """The plan for filling samples of ``shape`` (one sample's dims) where ``mask`` (K or 1 rows, 1 = known) is 0,
    with ``method`` on grid ``ts``; a box or A x = b may constrain the result too (projected as in :mod:`.step`)."""
    r, z = _check(method, resample, scale)
    full = make_constraint(shape, box=box, mask=mask, known=known, A=A, b=b)
    batch = Batch(seed)
    inner: Any = D
    if method == "dps":
        inner = GradientGuided(D, full.affine, z, batch)  # type: ignore[arg-type]
        others = box is not None or A is not None
        step_c = make_constraint(shape, box=box, A=A, b=b) if others else None
    else:
        step_c = full
    if project_x0:
        inner = ProjectedDenoiser(inner, full, batch)
    hook: Any = None if step_c is None else ProjectStep(step_c, ts, D.path, batch)
    if method == "repaint":
        hook = Resample(hook, inner, ts, batch, r)
    return Plan(batch.denoiser(inner), None if hook is None else begin_each_run(batch, hook), full, batch)
