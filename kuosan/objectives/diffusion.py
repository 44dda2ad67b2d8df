"""The denoising diffusion objective on any Gaussian path: draw t and ε, noise x_0, score the network's output.

Ho et al. 2020 Algorithm 1 generalised: t ~ the objective's time sampler, x_t = α(t) x_0 + σ(t) ε, and the per-sample
loss w(λ)·k(t)·distance(out, target) with the parameterisation's target and k (so w is the weight on the ε-MSE,
Kingma & Gao 2023); 'none' is the plain distance. Optionally improved DDPM's hybrid loss L_simple + λ·L_vlb
(Nichol & Dhariwal 2021 §3.1) for a network with a learned variance. The objective never reads T: the time
sampler and the path know it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Literal, NamedTuple, get_args

import torch
import torch.nn.functional as F
from torch import Tensor

from ..broadcast import batch_times
from ..forward import q_sample
from ..gaussian import check_bits
from ..parameterisation import EDM, Parameterisation, make_parameterisation
from ..paths import Path, require_discrete
from .timesteps import TimeSampler, make_time_sampler
from .weighting import WEIGHTINGS, WeightingKind, x0_factor, x0_weight

LossType = Literal["l2", "l1", "huber"]
LOSS_TYPES: tuple[str, ...] = get_args(LossType)


def distance(pred: Tensor, target: Tensor, loss_type: str, huber_delta: float = 1.0) -> Tensor:
    """Per-sample mean over data dimensions: (B, *D) -> (B,)."""
    if loss_type == "l2":
        d = (pred - target) ** 2
    elif loss_type == "l1":
        d = (pred - target).abs()
    elif loss_type == "huber":
        d = F.huber_loss(pred, target, reduction="none", delta=huber_delta)
    else:
        raise ValueError(f"unknown loss type {loss_type!r}; choose one of {', '.join(LOSS_TYPES)}")
    return d.flatten(1).mean(1)


class LossTerms(NamedTuple):
    total: Tensor  # (B,) per-sample loss, WITHOUT the importance weight: average total·weight to back-propagate
    vlb: Tensor | None  # (B,) the hybrid loss's L_vlb term in nats/dim (detached), None without one
    t: Tensor  # (B,) float64 times used
    weight: Tensor | None  # (B,) importance weights 1/(T p_t) when the objective drew t itself, else None


@dataclass(frozen=True)
class DiffusionObjective:
    """A per-sample diffusion loss; call it as ``obj(net_fn, x0, generator=g)`` (see ``__call__``)."""

    path: Path
    param: Parameterisation
    weighting: WeightingKind
    times: TimeSampler
    loss: LossType = "l2"
    gamma: float = 5.0  # min-SNR γ
    hybrid_lambda: float = 0.0
    bits: int | None = None  # bit depth of discrete data for the hybrid loss's decoder (None: continuous data)
    sigma_data: float = 0.5  # EDM weighting's σ_d
    sigmoid_bias: float = 0.0  # sigmoid weighting's b

    def __post_init__(self) -> None:
        self.param.check_path(self.path)
        if self.weighting not in WEIGHTINGS:
            raise ValueError(f"unknown weighting {self.weighting!r}; choose one of {', '.join(WEIGHTINGS)}")
        if self.loss not in LOSS_TYPES:
            raise ValueError(f"unknown loss type {self.loss!r}; choose one of {', '.join(LOSS_TYPES)}")
        for name in ("gamma", "sigma_data"):
            v = getattr(self, name)
            if not (isinstance(v, (int, float)) and v > 0 and math.isfinite(v)):
                raise ValueError(f"{name} must be a finite number > 0, got {v!r}")
        if not (isinstance(self.hybrid_lambda, (int, float)) and 0 <= self.hybrid_lambda < math.inf):
            raise ValueError(f"hybrid_lambda must be a finite number >= 0, got {self.hybrid_lambda!r}")
        if self.bits is not None:
            check_bits(self.bits)
        if self.hybrid_lambda > 0:
            require_discrete(self.path, "the hybrid loss L_simple + λ·L_vlb")
            if not self.times.discrete:
                raise ValueError(f"the hybrid loss needs integer times (uniform_discrete or importance), got time "
                                 f"sampling {self.times.kind!r}")

    def loss_factor(self, t: Tensor) -> Tensor | None:
        """w(λ)·k(t) (B,) float64, the factor on the network's own distance; None for 'none' (no multiplication)."""
        if self.weighting == "none":
            return None
        w = x0_weight(self.weighting, self.path, t, param=self.param, times=self.times, gamma=self.gamma,
                      sigma_data=self.sigma_data, sigmoid_bias=self.sigmoid_bias)
        return w * x0_factor(self.param, self.path, t)

    def __call__(self, net_fn: Any, x0: Tensor, *, generator: torch.Generator | None = None, t: Tensor | None = None,
                 eps: Tensor | None = None, cond: dict[str, Any] | None = None) -> LossTerms:
        """Per-sample loss terms for data x0 (B, C, ...).

        net_fn(x_t, t, **cond) returns the raw network output (B, C, ...) at float64 times t (B,) (NetDenoiser.raw),
        or (B, 2C, ...) with a learned variance v in the second half; ``hybrid_lambda`` > 0 then adds λ·L_vlb,
        which trains v only (the mean is stopped inside the term). t (B,) and ε default to draws from
        ``generator``: t first (``self.times.sample``), then ε, as the first half's trainer drew them.
        """
        B, C = x0.shape[0], x0.shape[1]
        weight = None
        if t is None:
            t, weight = self.times.sample(B, generator)
            weight = None if weight is None else weight.to(x0.device)
        t = batch_times(t, x0)  # (B,) float64 on x0's device
        if eps is None:
            eps = torch.randn(x0.shape, device=x0.device, dtype=x0.dtype, generator=generator)
        x_t = q_sample(self.path, x0, t, eps)
        raw = net_fn(x_t, t, **(cond or {}))
        pred = raw[:, :C]
        target = self.param.target(x0, eps, self.path, t)
        dt = torch.promote_types(pred.dtype, torch.float32)  # bf16 under autocast is scored in float32
        loss = distance(pred.to(dt), target.to(dt), self.loss)
        factor = self.loss_factor(t)
        if factor is not None:
            loss = loss * factor.to(loss.dtype)
        if self.hybrid_lambda <= 0:
            return LossTerms(loss, None, t, weight)
        if raw.shape[1] != 2 * C:
            raise ValueError("the hybrid loss needs a network with a learned variance (2x output channels)")
        from ..likelihood.variances import hybrid_vlb_term  # deferred: likelihood imports the denoiser stack

        x0_hat = self.param.to_x0(pred.to(dt), x_t.to(dt), self.path, t)
        vlb = hybrid_vlb_term(self.path, x0.to(dt), x_t.to(dt), t, x0_hat, raw[:, C:].to(dt), bits=self.bits)
        return LossTerms(loss + self.hybrid_lambda * vlb, vlb.detach(), t, weight)


def make_objective(path: Path, param: Parameterisation | str, *, weighting: str = "none", time_sampling: str = "auto",
                   loss: str = "l2", min_snr_gamma: float = 5.0, hybrid_lambda: float = 0.0, bits: int | None = None,
                   sigma_data: float | None = None, sigmoid_bias: float = 0.0, **time_kw: Any) -> DiffusionObjective:
    """A DiffusionObjective; ``time_kw`` go to the time sampler (kuosan.objectives.timesteps.make_time_sampler).

    ``sigma_data`` (EDM weighting) defaults to the EDM parameterisation's own σ_d, else 0.5."""
    if isinstance(param, str):
        param = make_parameterisation(param)
    if sigma_data is None:
        sigma_data = param.sigma_data if isinstance(param, EDM) else 0.5
    times = make_time_sampler(time_sampling, path, **time_kw)
    return DiffusionObjective(path, param, weighting, times, loss=loss, gamma=min_snr_gamma,
                              hybrid_lambda=hybrid_lambda, bits=bits, sigma_data=sigma_data, sigmoid_bias=sigmoid_bias)
