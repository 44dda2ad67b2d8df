"""Exact inpainting answers: for Gaussian(-mixture) data the law of the missing coordinates given the known ones
is closed form, so an inpainting method run with the exact denoiser can be scored by the error of the conditional
mean and covariance it produces.

For x ~ N(μ, Σ) split into unknown U and known K coordinates, x_U | x_K = y ~ N(μ_U + Σ_UK Σ_KK⁻¹ (y - μ_K),
Σ_UU - Σ_UK Σ_KK⁻¹ Σ_KU) (the Schur complement). A mixture's conditional is the mixture of its components'
conditionals with weights ∝ π_k N(y; μ_k,K, Σ_k,KK). Data are vectors (D,); the mask is (D,), 1 = known.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from typing import Any

import torch
from torch import Tensor

from ..paths import Path
from .mixture import ExactDenoiser, GaussianMixture


def _split(mask: Tensor) -> tuple[Tensor, Tensor]:
    m = torch.as_tensor(mask).reshape(-1)
    if not bool(((m == 0) | (m == 1)).all()) or not bool((m == 1).any()) or not bool((m == 0).any()):
        raise ValueError("the mask must be binary with at least one known (1) and one unknown (0) coordinate")
    return (m == 0).nonzero().squeeze(1), (m == 1).nonzero().squeeze(1)


def gaussian_conditional(mean: Tensor, cov: Tensor, mask: Tensor, known: Tensor) -> tuple[Tensor, Tensor]:
    """(mean (U,), cov (U, U)) of x_U given x_K = known[K] for x ~ N(mean, cov), in float64 (Schur complement)."""
    U, K = _split(mask)
    mu, S = torch.as_tensor(mean, dtype=torch.float64), torch.as_tensor(cov, dtype=torch.float64)
    y = torch.as_tensor(known, dtype=torch.float64).reshape(-1)[K]
    G = torch.linalg.solve(S[K][:, K], S[K][:, U]).T  # Σ_UK Σ_KK⁻¹ (U, K)
    return mu[U] + G @ (y - mu[K]), S[U][:, U] - G @ S[K][:, U]


def missing_given_known(mixture: GaussianMixture, mask: Tensor, known: Tensor) -> GaussianMixture:
    """The mixture's law of x_U given x_K = known[K] (a mixture over the unknown coordinates)."""
    U, K = _split(mask)
    y = torch.as_tensor(known, dtype=torch.float64).reshape(-1)[K]
    means, covs, logw = [], [], []
    for mu, S, pi in zip(mixture.means, mixture.covs, mixture.weights):
        m, C = gaussian_conditional(mu, S, mask, known)
        means.append(m)
        covs.append(C)
        logw.append(pi.log() + torch.distributions.MultivariateNormal(mu[K], S[K][:, K]).log_prob(y))
    return GaussianMixture(torch.stack(means), torch.stack(covs), torch.softmax(torch.stack(logw), 0))


@dataclass(frozen=True)
class InpaintingError:
    """Errors of the unknown coordinates' sample moments against the exact conditional, with their Monte Carlo
    floors (what an exact sampler's n samples would show on average, Gaussian approximation)."""

    mean_error: float  # ‖m̂ - m‖₂
    cov_error: float  # ‖Ĉ - C‖_F / ‖C‖_F
    mean_floor: float  # √(tr C / n)
    cov_floor: float  # √((tr C)² + ‖C‖_F²) / (√n ‖C‖_F)
    known_error: float  # largest |x_K - y_K| of the output (0 after the final projection)
    n: int
    nfe: int = 0  # denoiser calls per sample, the hook's re-steps included (DPS: each also has a backward pass)


def moment_errors(samples: Tensor, target: GaussianMixture, mask: Tensor, known: Tensor) -> InpaintingError:
    """Score samples (n, D) of the completed data against the exact conditional ``target`` (over U)."""
    U, K = _split(mask)
    x = samples.to(torch.float64)
    n = x.shape[0]
    u = x[:, U]
    m, C = target.mean, target.cov
    m_hat, C_hat = u.mean(0), torch.cov(u.T).reshape(len(U), len(U))
    fro = float(C.norm())
    y = torch.as_tensor(known, dtype=torch.float64).reshape(-1)[K]
    tr = float(C.trace())
    return InpaintingError(float((m_hat - m).norm()), float((C_hat - C).norm()) / fro, math.sqrt(tr / n),
                           math.sqrt(tr**2 + fro**2) / (math.sqrt(n) * fro), float((x[:, K] - y).abs().max()), n)


def inpainting_errors(mixture: GaussianMixture, path: Path, mask: Tensor, known: Tensor, method: str = "replace", *,
                      sampler: str = "ddim", steps: int = 50, n: int = 4096, seed: int = 0,
                      options: dict[str, Any] | None = None, resample: int | None = None, scale: float | None = None,
                      dtype: torch.dtype = torch.float64) -> list[InpaintingError]:
    """Run inpainting ``method`` (kuosan.constraints.inpainting) with the mixture's exact denoiser and ``sampler``
    on the uniform grid of ``steps`` steps, n samples for each row of ``known`` ((D,) or (K, D): sample i fills row
    i mod K), and score each row against its exact conditional. The same seed gives every method the same x_T and
    sampler noise (common random numbers)."""
    from ..constraints import inpainting
    from ..denoiser import Counting
    from ..sampling import NoiseSource, get_sampler, make_grid

    d = mixture.dim
    known = torch.as_tensor(known, dtype=torch.float64).reshape(-1, d)
    K, total = known.shape[0], n * known.shape[0]
    ts = make_grid(path, steps, "uniform")
    D = Counting(ExactDenoiser(mixture, path))
    plan = inpainting(D, ts, (d,), mask, known, method, resample=resample, scale=scale, seed=seed)  # type: ignore
    noise = NoiseSource(seed, 0, total)
    x_T = path.prior_std * noise(torch.empty(total, d, dtype=dtype))
    out = get_sampler(sampler).fn(plan.denoiser, x_T, ts, noise=noise, cond=plan.cond(total),
                                  callback=plan.callback, **(options or {}))
    out = plan.finish(out, torch.arange(total))
    return [replace(moment_errors(out[k::K], missing_given_known(mixture, mask, y), mask, y), nfe=D.nfe) for k, y in
            enumerate(known)]


def inpainting_error(mixture: GaussianMixture, path: Path, mask: Tensor, known: Tensor, method: str = "replace",
                     **kw: Any) -> InpaintingError:
    """:func:`inpainting_errors` for one row of known values (D,)."""
    return inpainting_errors(mixture, path, mask, torch.as_tensor(known).reshape(1, -1), method, **kw)[0]
