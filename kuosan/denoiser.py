"""The one interface every sampler, loss, likelihood and wrapper uses: ``D(x_t, t, **cond) -> x̂_0``.

A denoiser maps a noisy x_t (B, *D) at time t (B,) of its ``path`` to x̂_0 = E[x_0 | x_t]; samplers are plain
functions of such a callable (k-diffusion's design) and never own a network. Time is float64 wherever the path
is evaluated; only the network's own inputs are cast to the data dtype. A learned reverse variance (improved
DDPM) is an optional capability, ``with_variance``, that the DDPM sampler and the VLB ask for. Wrappers take a
Denoiser and return one (counting here; guidance, editing and constraints build on the same shape).
"""

from __future__ import annotations

from typing import Any, Protocol, runtime_checkable

import torch
from torch import Tensor, nn

from .broadcast import batch_times, expand
from .parameterisation import Parameterisation, eps_from_x0
from .paths import Path


@runtime_checkable
class Denoiser(Protocol):
    path: Path

    def __call__(self, x_t: Tensor, t: Tensor, **cond: Any) -> Tensor: ...


@runtime_checkable
class VarianceDenoiser(Denoiser, Protocol):
    """A denoiser that also returns improved DDPM's variance interpolation output (Nichol & Dhariwal Eq. (15))."""

    def with_variance(self, x_t: Tensor, t: Tensor, **cond: Any) -> tuple[Tensor, Tensor | None]: ...


def has_variance(D: Any) -> bool:
    """Whether D offers a learned variance (``with_variance`` returning a tensor, not None)."""
    return bool(getattr(D, "learns_variance", False))


class NetDenoiser(nn.Module):
    """A network f(c_in·x_t, c_noise(t), **cond) read through a parameterisation; returns x̂_0.

    A network with twice the data channels (learned variance, improved DDPM) has its first half read as the
    prediction and its second half as the variance interpolation v ∈ [-1, 1] (``with_variance``).
    """

    def __init__(self, net: nn.Module, path: Path, param: Parameterisation, learns_variance: bool = False):
        super().__init__()
        param.check_path(path)
        self.net, self.path, self.param, self.learns_variance = net, path, param, learns_variance

    def raw(self, x_t: Tensor, t: Tensor, **cond: Any) -> Tensor:
        """The network's own output (B, C_out, ...) at times t (B,) or a scalar."""
        t = batch_times(t, x_t)
        c_in = expand(self.param.c_in(self.path, t), x_t)
        return self.net(c_in * x_t, self.param.c_noise(self.path, t).to(torch.float32), **cond)

    def with_variance(self, x_t: Tensor, t: Tensor, **cond: Any) -> tuple[Tensor, Tensor | None]:
        """(x̂_0, v) from one network call; v (B, C, ...) is None for a network without a variance output."""
        t = batch_times(t, x_t)
        out = self.raw(x_t, t, **cond).to(x_t.dtype)
        C = x_t.shape[1]
        x0 = self.param.to_x0(out[:, :C], x_t, self.path, t)
        return x0, (out[:, C:] if out.shape[1] > C else None)

    def forward(self, x_t: Tensor, t: Tensor, **cond: Any) -> Tensor:
        return self.with_variance(x_t, t, **cond)[0]


class Counting:
    """Denoiser -> Denoiser that counts network evaluations (NFE): each call on a batch counts once."""

    def __init__(self, denoiser: Denoiser):
        self.inner, self.path, self.nfe = denoiser, denoiser.path, 0
        self.kind = getattr(denoiser, "kind", None)  # a consistency model stays one (samplers check it)
        self.learns_variance = has_variance(denoiser)

    def __call__(self, x_t: Tensor, t: Tensor, **cond: Any) -> Tensor:
        self.nfe += 1
        return self.inner(x_t, t, **cond)

    def with_variance(self, x_t: Tensor, t: Tensor, **cond: Any) -> tuple[Tensor, Tensor | None]:
        self.nfe += 1
        if not hasattr(self.inner, "with_variance"):
            return self.inner(x_t, t, **cond), None
        return self.inner.with_variance(x_t, t, **cond)


def eps_of(D: Denoiser, x_t: Tensor, t: Tensor, x0: Tensor) -> Tensor:
    """ε̂ implied by x̂_0 at (x_t, t): (x_t - α x̂_0)/σ."""
    t = batch_times(t, x_t)
    return eps_from_x0(x_t, x0, expand(D.path.alpha(t), x_t), expand(D.path.sigma(t), x_t))


def score_of(D: Denoiser, x_t: Tensor, t: Tensor, x0: Tensor) -> Tensor:
    """∇ log p_t(x_t) = -(x_t - α x̂_0)/σ² (Tweedie)."""
    t = batch_times(t, x_t)
    a, s = expand(D.path.alpha(t), x_t), expand(D.path.sigma(t), x_t)
    return -(x_t - a * x0) / s**2


def velocity_of(D: Denoiser, x_t: Tensor, t: Tensor, x0: Tensor) -> Tensor:
    """The PF-ODE velocity dx/dt = dα/dt x̂_0 + dσ/dt ε̂ in the path's own time (flow matching's u)."""
    t = batch_times(t, x_t)
    e = eps_of(D, x_t, t, x0)
    return expand(D.path.dalpha_dt(t), x_t) * x0 + expand(D.path.dsigma_dt(t), x_t) * e
