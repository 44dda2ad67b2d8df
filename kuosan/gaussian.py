"""Gaussian KL divergences and decoder log-likelihoods, elementwise in nats (a leaf module: torch and math only).

Used by the variational bound (Ho et al. 2020 Eqs. (5), (13)), improved DDPM's hybrid objective (Nichol &
Dhariwal 2021 §3.1) and the reverse-variance tools; kept apart so that none of those import each other.
"""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import Tensor


def check_bits(bits: Any) -> None:
    """ValueError unless ``bits`` is a positive integer (the bit depth of the data)."""
    if not isinstance(bits, int) or isinstance(bits, bool) or bits < 1:
        raise ValueError(f"bits must be a positive integer (bit depth of the data), got {bits!r}")


def check_unit_range(x: Tensor) -> None:
    """ValueError if x leaves [-1, 1] (beyond 1e-6): discretised data must lie on the grid in [-1, 1]."""
    lo, hi = float(x.min()), float(x.max())
    if lo < -1 - 1e-6 or hi > 1 + 1e-6:
        raise ValueError(f"data outside [-1, 1] (min {lo:.4g}, max {hi:.4g}); discrete data must lie on the "
                         "2^bits grid in [-1, 1]")


def gaussian_kl(mean1: Tensor, var1: Tensor | float, mean2: Tensor, var2: Tensor | float) -> Tensor:
    """Elementwise KL(N(mean1, var1) || N(mean2, var2)) in nats; variances broadcast against the means."""
    var1, var2 = torch.as_tensor(var1, device=mean1.device), torch.as_tensor(var2, device=mean1.device)
    return 0.5 * (var1 / var2 - 1 + torch.log(var2) - torch.log(var1) + (mean1 - mean2) ** 2 / var2)


def gaussian_log_likelihood(x: Tensor, mean: Tensor, var: Tensor | float) -> Tensor:
    """log N(x; mean, var) per element (nats)."""
    var = torch.as_tensor(var, dtype=mean.dtype, device=mean.device)
    return -0.5 * (math.log(2 * math.pi) + var.log() + (x - mean) ** 2 / var)


def _log_normal_mass(a: Tensor, b: Tensor) -> Tensor:
    """log(Φ(b) - Φ(a)) for a < b, stable in both tails (use the mirrored interval when it lies right of 0)."""
    right = (a + b) > 0
    a, b = torch.where(right, -b, a), torch.where(right, -a, b)
    lb, la = torch.special.log_ndtr(b), torch.special.log_ndtr(a)
    return lb + torch.log1p(-torch.exp(la - lb).clamp(max=1 - 1e-16))


def discretised_gaussian_log_likelihood(x: Tensor, mean: Tensor, var: Tensor | float, bits: int = 8) -> Tensor:
    """Ho et al. Eq. (13): log ∫_{δ-(x)}^{δ+(x)} N(u; mean, var) du per element (nats), bins of the 2^bits grid.

    The grid is -1 + 2k/(2^bits - 1), k = 0..2^bits-1; a bin spans ±1/(2^bits - 1) around its point, and the
    end bins extend to ∓inf so the masses over the grid sum to 1. ``var`` broadcasts against x.
    """
    check_bits(bits)
    check_unit_range(x)
    half = 1.0 / (2**bits - 1)
    std = torch.as_tensor(var, dtype=mean.dtype, device=mean.device).sqrt()
    inf = torch.full_like(x, math.inf)
    lo = torch.where(x < -1 + half, -inf, (x - half - mean) / std)  # lowest bin: (-inf, -1 + half]
    hi = torch.where(x > 1 - half, inf, (x + half - mean) / std)  # highest bin: [1 - half, inf)
    return _log_normal_mass(lo, hi)


def decoder_nll(x0: Tensor, mean: Tensor, var: Tensor | float, bits: int | None = 8) -> Tensor:
    """-log p(x_0|x_1) per element (nats): discretised on the 2^bits grid, or the Gaussian density (bits=None)."""
    if bits is None:
        return -gaussian_log_likelihood(x0, mean, var)
    return -discretised_gaussian_log_likelihood(x0, mean, var, bits)


__all__ = ["check_bits", "check_unit_range", "decoder_nll", "discretised_gaussian_log_likelihood", "gaussian_kl",
           "gaussian_log_likelihood"]
