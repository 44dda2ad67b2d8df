"""Other libraries' networks as kuosan Denoisers, each in one line.

- diffusers (von Platen et al. 2022): a ``UNet2DModel`` trained on the discrete chain with ε- or v-prediction.
  diffusers indexes timesteps from 0 with ``alphas_cumprod[i]`` = ᾱ after i + 1 steps, so kuosan's paper-indexed
  t (ᾱ_t, t = 1..T) is diffusers' timestep t - 1; the network returns an output object whose ``.sample`` is the
  prediction. ``path_from_diffusers`` builds the chain from a scheduler's own ``alphas_cumprod``.
- k-diffusion (Crowson; Karras et al. 2022): a σ-denoiser ``model(x, sigma) -> denoised`` in VE coordinates,
  i.e. D(x_t, t) = model(x_t/α, σ̃) with σ̃ = σ/α.

Neither library is imported here: the adapters only call the objects they are given.
"""

from __future__ import annotations

from typing import Any, Literal

import torch
from torch import Tensor

from .broadcast import batch_times, expand
from .parameterisation import make_parameterisation
from .paths import DiscreteVP, Path, require_discrete
from .pf_ode import VE_SIGMA_CAP

DiffusersPrediction = Literal["eps", "v"]


def path_from_diffusers(scheduler: Any) -> DiscreteVP:
    """The discrete chain of a diffusers scheduler, from its ``alphas_cumprod`` (ᾱ_1..ᾱ_T):
    β_t = 1 - ᾱ_t/ᾱ_{t-1} in float64, so kuosan's ᾱ equals the scheduler's; ᾱ_T = 0
    (``rescale_betas_zero_snr``) gives zero terminal SNR."""
    ac = torch.as_tensor(scheduler.alphas_cumprod).detach().to(torch.float64).cpu().flatten()
    prev = torch.cat([ac.new_ones(1), ac[:-1]])
    return DiscreteVP(1 - ac / prev, zero_terminal_snr=bool(ac[-1] == 0))


class DiffusersUNet:
    """Denoiser for a diffusers UNet2DModel: x̂_0 from ``unet(x_t, t - 1, class_labels=y).sample`` read as ε or v
    (Salimans & Ho 2022, v = α ε - σ x_0). An output with twice the input channels carries improved DDPM's
    variance interpolation in its second half (diffusers' ``learned_range``), offered by ``with_variance``."""

    def __init__(self, unet: Any, path: Path, prediction: DiffusersPrediction = "eps"):
        if prediction not in ("eps", "v"):
            raise ValueError(f"a diffusers UNet predicts 'eps' or 'v' (diffusers' epsilon / v_prediction), "
                             f"got {prediction!r}")
        require_discrete(path, "a diffusers UNet2DModel (trained on timesteps 0..T-1 of a β table)")
        self.param = make_parameterisation(prediction)
        self.param.check_path(path)
        config = getattr(unet, "config", None)
        cin, cout = getattr(config, "in_channels", None), getattr(config, "out_channels", None)
        self.unet, self.path, self.prediction = unet, path, prediction
        self.learns_variance = cin is not None and cout == 2 * cin

    def with_variance(self, x_t: Tensor, t: Tensor, **cond: Any) -> tuple[Tensor, Tensor | None]:
        """(x̂_0, v) from one network call; v is None for a UNet without a variance output."""
        t = batch_times(t, x_t)
        dtype = getattr(self.unet, "dtype", x_t.dtype)
        y = cond.pop("y", None)
        kw = {"class_labels": y} if y is not None else {}
        # diffusers' timestep index is t - 1; its time embedding casts it to float32 itself
        out = self.unet(x_t.to(dtype), (t - 1).to(torch.float32), **kw, **cond).sample.to(x_t.dtype)
        C = x_t.shape[1]
        x0 = self.param.to_x0(out[:, :C], x_t, self.path, t)
        return x0, (out[:, C:] if out.shape[1] > C else None)

    def __call__(self, x_t: Tensor, t: Tensor, **cond: Any) -> Tensor:
        return self.with_variance(x_t, t, **cond)[0]


def from_diffusers_unet(unet: Any, path: Path, prediction: DiffusersPrediction = "eps") -> DiffusersUNet:
    """A diffusers UNet2DModel as a Denoiser on ``path`` (usually ``path_from_diffusers(scheduler)``)."""
    return DiffusersUNet(unet, path, prediction)


class KDiffusionModel:
    """Denoiser for a k-diffusion-style σ-denoiser ``model(x, sigma, **cond) -> denoised`` (Karras et al. 2022's
    D(x; σ) with x = x_0 + σ n): D(x_t, t) = model(x_t/α, σ̃), σ̃ = σ/α (exact on every path,
    as x_t/α = x_0 + σ̃ ε).

    Where α = 0 (σ̃ = ∞: zero terminal SNR, flow at t_max) the exact x̂_0 is E[x_0] whatever x_t; the model is
    asked at the finite σ̃ = VE_SIGMA_CAP with input x_t/σ (|y| ≪ σ̃), which gives
    E[x_0] + O(Var[x_0]/σ̃_cap²)."""

    def __init__(self, model: Any, path: Path):
        self.model, self.path = model, path

    def __call__(self, x_t: Tensor, t: Tensor, **cond: Any) -> Tensor:
        t = batch_times(t, x_t)
        a, s = self.path.alpha(t), self.path.sigma(t)
        finite = a > 0  # σ̃ < ∞
        ve_sigma = torch.where(finite, s / a.clamp_min(1e-300), torch.full_like(s, VE_SIGMA_CAP))
        scale = torch.where(finite, 1 / a.clamp_min(1e-300), 1 / s.clamp_min(1e-300))
        return self.model(expand(scale, x_t) * x_t, ve_sigma.to(x_t.dtype), **cond)


def from_k_diffusion(model: Any, path: Path) -> KDiffusionModel:
    """A k-diffusion-style σ-denoiser as a Denoiser on ``path`` (VE for EDM/k-diffusion models, or any other)."""
    return KDiffusionModel(model, path)
