"""The one denoiser interface every sampler, loss and likelihood uses: ``D(x_t, t, **cond) -> x̂_0``.

A denoiser maps a noisy x_t (B, *D) at time t (B,) (paper indexing, float in [0, T]) to the
estimate x̂_0 = E[x_0 | x_t] and carries the ``schedule`` that defines α(t), σ(t). Samplers are plain
functions of such a callable (k-diffusion's design); they never own a network.
"""

from __future__ import annotations

from typing import Any, Protocol, runtime_checkable

import torch
from torch import Tensor, nn

from .forward import PREDICTIONS, expand, to_x0, x0_to_eps
from .schedules import Schedule


@runtime_checkable
class Denoiser(Protocol):
    schedule: Schedule

    def __call__(self, x_t: Tensor, t: Tensor, **cond: Any) -> Tensor: ...


class NetDenoiser(nn.Module):
    """Wraps a network f(x_t, t', y) that predicts eps, x0 or v, and returns x̂_0.

    The network sees t' = t·1000/T, so its time embedding has the same scale for any T. A network with
    twice the data channels (learned variance, improved DDPM) has its first half used as the prediction.
    """

    def __init__(self, net: nn.Module, schedule: Schedule, prediction: str = "eps"):
        super().__init__()
        if prediction not in PREDICTIONS:
            raise ValueError(f"unknown prediction {prediction!r}; choose one of {', '.join(PREDICTIONS)}")
        self.net, self.schedule, self.prediction = net, schedule, prediction

    def raw(self, x_t: Tensor, t: Tensor, **cond: Any) -> Tensor:
        """The network's own output (B, C_out, ...) at time t."""
        t = torch.as_tensor(t, device=x_t.device, dtype=torch.float32).expand(x_t.shape[0])
        return self.net(x_t, t * (1000.0 / self.schedule.T), **cond)

    def with_v(self, x_t: Tensor, t: Tensor, **cond: Any) -> tuple[Tensor, Tensor | None]:
        """(x̂_0, v) from one network call; v (B, C, ...) in [-1, 1] is the learned-range variance output
        (Nichol & Dhariwal Eq. (15)), None for a network without one."""
        t = torch.as_tensor(t, device=x_t.device, dtype=torch.float32).expand(x_t.shape[0])
        out = self.raw(x_t, t, **cond).to(x_t.dtype)
        C = x_t.shape[1]
        a, s = expand(self.schedule.alpha(t), x_t), expand(self.schedule.sigma(t), x_t)
        return to_x0(out[:, :C], self.prediction, x_t, a, s), (out[:, C:] if out.shape[1] > C else None)

    def forward(self, x_t: Tensor, t: Tensor, **cond: Any) -> Tensor:
        return self.with_v(x_t, t, **cond)[0]


class CountingDenoiser:
    """Counts network evaluations (NFE) of a wrapped denoiser: each call on a batch counts once."""

    def __init__(self, denoiser: Denoiser):
        self.inner, self.schedule, self.nfe = denoiser, denoiser.schedule, 0

    def __call__(self, x_t: Tensor, t: Tensor, **cond: Any) -> Tensor:
        self.nfe += 1
        return self.inner(x_t, t, **cond)

    def __getattr__(self, name: str) -> Any:
        if name == "with_v" and hasattr(self.inner, "with_v"):  # learned variance: counted like a call
            def with_v(x_t: Tensor, t: Tensor, **cond: Any) -> tuple[Tensor, Tensor | None]:
                self.nfe += 1
                return self.inner.with_v(x_t, t, **cond)
            return with_v
        raise AttributeError(name)


def eps_of(D: Denoiser, x_t: Tensor, t: Tensor, x0: Tensor) -> Tensor:
    """ε̂ implied by x̂_0 at (x_t, t): (x_t - α x̂_0)/σ."""
    sched = D.schedule
    return x0_to_eps(x_t, x0, expand(sched.alpha(t), x_t), expand(sched.sigma(t), x_t))
