"""Reflow (Liu et al. 2023, "Flow straight and fast", Alg. 1): the (k+1)-rectified flow is the rectified flow of the
k-rectified flow's own coupling (Z_0, Z_1) — Z_1 = noise, Z_0 its ODE endpoint — trained by flow matching on those
pairs, initialised from the k-rectified flow's weights (as Liu et al.'s code does).

Pieces, each a plain function: ``check_flow`` (which runs can be reflowed), ``draw_pairs`` (N couplings with a
deterministic sampler of ``kuosan.sampling``: the noise z is exactly the x_T = prior_std·z that ``sample()`` drew from
(seed, i)), ``write_pairs`` (an .npz with ``x`` and ``noise``, atomically; kuosan.data reads it as paired data, and
training takes ε = noise[idx]), ``reflow_config`` and ``write_init`` (the new run's config and its step-0 checkpoint
holding the old run's EMA weights, so ``kuosan.train.train(resume=NEW_RUN)`` starts from them with a fresh
optimizer), and ``flow_report`` (straightness before and after, with Liu et al. Thm 3.3 checked numerically).
"""

from __future__ import annotations

import os
from dataclasses import replace
from pathlib import Path as FilePath
from typing import Any

import numpy as np
import torch
from torch import Tensor

from ..config import Config
from ..denoiser import Denoiser
from .straightness import Method, coupling_cost, independent_cost, straightness, velocity_field

PAIRS_FILE = "pairs.npz"


class ReflowError(ValueError):
    """A run that cannot be reflowed, or a reflow that cannot start; one line, exit code 2 on the command line."""


def check_flow(cfg: Config, D: Denoiser | None = None, what: str = "RUN") -> None:
    """Reflow rectifies a flow: the run must be on the Linear ("flow") path with an ODE velocity to follow; a
    consistency model (a one-step map, no velocity field) or a diffusion path is refused, naming why."""
    pred = cfg.objective.prediction
    if pred == "consistency" or getattr(D, "kind", None) == "consistency":
        raise ReflowError(f"{what} is a consistency model: it maps noise to data in one step and has no velocity "
                          "field to rectify; reflow needs a flow (trained with --process flow)")
    if cfg.path.kind != "flow":
        raise ReflowError(f"{what} is on the {cfg.path.kind!r} path; reflow needs a flow (path.kind = 'flow', "
                          "trained with --process flow): rectified flow is defined on the linear interpolant")
    if cfg.data.class_cond:
        raise ReflowError(f"{what} is class-conditional; reflow of conditional flows is not supported (its pairs "
                          "would need labels)")
    if cfg.objective.learn_variance:
        raise ReflowError(f"{what} learns a variance (objective.learn_variance); a flow has none to rectify")


def check_sampler(name: str, steps: int, D: Denoiser) -> None:
    """The couplings need a deterministic ODE sampler that runs on D's path with ``steps`` steps."""
    from ..sampling import get_sampler

    spec = get_sampler(name)
    if not spec.deterministic:
        raise ReflowError(f"sampler {name!r} is stochastic; reflow's couplings need a deterministic ODE sampler "
                          "(noise -> its ODE endpoint), e.g. heun, euler, dpm++2m, unipc or ode")
    reason = spec.supports(D.path)
    if reason is not None:
        raise ReflowError(f"sampler {name!r} cannot run on this model's {D.path.kind} path: {reason}")


def draw_pairs(D: Denoiser, shape: tuple[int, ...], *, sampler: str = "heun", steps: int = 50, seed: int = 0,
               batch_size: int = 1024, device: str | torch.device = "cpu", progress: bool = False
               ) -> tuple[Tensor, Tensor]:
    """(noise z, x_0) (n, *D) float32 on the CPU: x_0 = sample(D, sampler, shape, steps, seed) is the ODE endpoint of
    x_T = prior_std·z, z the first draw of each sample's stream (kuosan.sampling.noise), recomputed here per batch
    exactly as ``sample()`` draws it."""
    from ..sampling import sample
    from ..sampling.noise import NoiseSource

    check_sampler(sampler, steps, D)
    x0 = sample(D, sampler, shape, steps, seed=seed, batch_size=batch_size, device=device, progress=progress)
    n, dims = shape[0], tuple(shape[1:])
    z = torch.cat([NoiseSource(seed, start, min(batch_size, n - start))(torch.empty(min(batch_size, n - start), *dims))
                   for start in range(0, n, batch_size)])
    return z, x0


def write_pairs(path: FilePath, noise: Tensor, x: Tensor) -> None:
    """``x`` and ``noise`` (n, *D) as float32 arrays of an .npz, all or nothing (a temp file, flushed, renamed)."""
    path = FilePath(path)
    tmp = path.parent / f".tmp-{path.stem}-{os.getpid()}.npz"  # np.savez would append .npz to another suffix
    try:
        with open(tmp, "wb") as f:
            np.savez(f, x=x.float().cpu().numpy(), noise=noise.float().cpu().numpy())
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()


def reflow_config(cfg: Config, pairs: FilePath, out: FilePath) -> Config:
    """RUN's config for the next rectified flow: data.name = the pairs file (absolute, so a resume works from any
    folder), every pair used (data.n unset), log.out = the new run; path, network and objective unchanged."""
    return replace(cfg, data=replace(cfg.data, name=str(FilePath(pairs).resolve()), n=None),
                   log=replace(cfg.log, out=str(out)))


def write_init(out: FilePath, cfg: Config, weights: dict[str, Tensor], meta: dict[str, Any]) -> FilePath:
    """The new run's step-0 checkpoint: network and EMA = ``weights`` (the old run's EMA), no optimizer state (AdamW
    starts afresh), so ``train(None, resume=out)`` fine-tunes from them; training's own checks verify the weights
    fit the network of ``cfg``."""
    from ..build import make_path_from
    from ..checkpoint import save_checkpoint
    from ..config import to_dict

    state = {"data": meta, "world_size": 1, "path": make_path_from(cfg).fingerprint()}
    w = {k: v.detach().cpu() for k, v in weights.items()}
    return save_checkpoint(out, 0, to_dict(cfg), state, w, {k: v.float() for k, v in w.items()})


def training_cost(data: Any, prior_std: float) -> tuple[float, float, str]:
    """E||X_1 - X_0||² of the coupling a flow was trained on: the pairs for paired data (k-rectified flow, k >= 2),
    the independent coupling of the data with N(0, prior_std² I) otherwise (1-rectified flow); and which it is."""
    if data.noise is not None:
        return (*coupling_cost(data.x, prior_std * data.noise), "pairs")
    return (*independent_cost(data.x, prior_std), "independent")


def flow_report(D: Denoiser, x1: Tensor, data: Any, *, steps: int = 64, method: Method = "heun",
                batch_size: int = 1024) -> dict[str, Any]:
    """Straightness of D's flow from the noises x1 (n, *D) (prior scale included) and Liu et al. 2023 Thm 3.3 checked:
    E∫||v||² dt <= E||X_1 - X_0||² of the coupling D was trained on (``data``: its Dataset)."""
    est = straightness(velocity_field(D), x1, steps=steps, method=method, batch_size=batch_size)
    cost, cost_se, kind = training_cost(data, D.path.prior_std)
    margin, se = cost - est.kinetic, (est.kinetic_se**2 + cost_se**2) ** 0.5  # independent samples: variances add
    # a learned flow only approximates the rectified flow; a nearly straight one has E∫||v||² dt ≈ its pairs' cost
    status = "holds" if margin >= 0 else "within 2 standard errors" if -margin < 2 * se else "violated"
    return {**est.as_dict(), "training_coupling": kind, "training_cost": cost, "training_cost_se": cost_se,
            "thm_3_3": status, "thm_3_3_holds": margin >= 0, "thm_3_3_margin": margin, "thm_3_3_margin_se": se}
