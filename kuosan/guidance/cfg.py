"""Classifier-free guidance (Ho & Salimans 2022) as a Denoiser -> Denoiser wrapper, on every sampler and path.

**Scale convention.** kuosan's w is diffusers' ``guidance_scale``:
    ε̃ = ε̂(x_t, ∅) + w (ε̂(x_t, y) - ε̂(x_t, ∅)),   i.e. x̃_0 = x̂_∅ + w (x̂_y - x̂_∅),
so w = 1 is the conditional model unguided, w = 0 the unconditional model and w > 1 guides. Ho & Salimans'
w_HS in ε̃ = (1 + w_HS) ε_y - w_HS ε_∅ is w - 1. The combination is done on x̂_0, equal to the
ε / score / velocity combination by linearity (:mod:`.combine`). The label reaches the network as ``cond["y"]``
(B,) int64; the unconditional call passes the null label (kuosan's networks: ``num_classes``, what label dropout
trains, see train/step.py) or, with ``null_label=None``, no ``y`` at all (a kuosan network reads that as null).

**What CFG samples (Bradley & Nakkiran 2024).** The guided field is the score of p_t(x|y)^w p_t(x)^{1-w} at each
noise level: the tilt of the *noisy* marginals. Noising (a Gaussian convolution) does not commute with powers, so
these are not the noisy marginals of any one distribution; in particular no sampler draws the tilted data density
p_0(x|y)^w p_0(x)^{1-w}/Z, and the ODE and the SDE draw different distributions. The ODE draws the push-forward of
the prior through the flow of the guided field; B&N show that with the reverse SDE CFG is, in the limit, a
predictor–corrector: a denoising step of p_t(x|y) followed by Langevin steps on p_t(x|y)^w p_t(x)^{1-w}, a
sharpening at every noise level. tests/guidance/test_cfg_exact.py computes them on p(x|0) = N(-1, ¼),
p(x|1) = N(1, ¼), equal weights, w = 3: the tilted density has mean -1.05 and variance 0.21, the CFG ODE draws
mean -1.52, variance 0.099 (exact, by quadrature), the CFG reverse SDE mean -1.24, variance 0.19 (Monte Carlo):
CFG sharpens the class and pushes it away from the others far more than the tilt does, and by how much depends on
the sampler.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from ..denoiser import Denoiser
from .combine import Guided, Interval


def null_cond(cond: dict[str, Any], null_label: int | None) -> dict[str, Any]:
    """cond with the label replaced by the null label (or removed when null_label is None)."""
    if "y" not in cond:
        raise ValueError("classifier-free guidance needs class labels: pass cond={'y': labels (B,)}")
    rest = {k: v for k, v in cond.items() if k != "y"}
    if null_label is None:
        return rest
    y = cond["y"]
    return {**rest, "y": torch.full_like(y, null_label) if isinstance(y, Tensor) else null_label}


def classifier_free(D: Denoiser, scale: float, *, null_label: int | None = None,
                    interval: Interval | None = None) -> Guided:
    """Ho & Salimans 2022 Eq. (6) with w = ``scale`` (1: unguided), guided only for λ ∈ ``interval`` if given.

    D must be a class-conditional denoiser called as D(x_t, t, y=labels); NFE: two per step where guided."""

    def unconditional(x_t: Tensor, t: Tensor, cond: dict[str, Any]) -> Tensor:
        return D(x_t, t, **null_cond(cond, null_label))

    return Guided(D, unconditional, scale, interval, name="cfg")

