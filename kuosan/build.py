"""Building a model from its config: the path, the parameterisation, the network for the data's shape, the
objective, and a trained denoiser from a run folder."""

from __future__ import annotations

import math
from pathlib import Path as FilePath
from typing import TYPE_CHECKING, Any

import torch
from torch import Tensor, nn

from .checkpoint import Checkpoint, CheckpointError, check_data_meta, check_finite, check_tensors, load_checkpoint
from .config import Config, from_dict, path_kwargs
from .denoiser import NetDenoiser
from .nets import MLP, MLPConfig, UNet, UNetConfig
from .parameterisation import Consistency, Parameterisation, make_parameterisation
from .paths import Path, fingerprint_matches, make_path

if TYPE_CHECKING:
    from .data import Dataset
    from .objectives import ConsistencyObjective, DiffusionObjective


def make_path_from(cfg: Config) -> Path:
    """The [path] table as a path."""
    return make_path(cfg.path.kind, **path_kwargs(cfg.path))


def make_param_from(cfg: Config) -> Parameterisation:
    """objective.prediction (and sigma_data for edm and consistency, consistency.sigma_min) as a parameterisation."""
    return make_parameterisation(cfg.objective.prediction, sigma_data=cfg.objective.sigma_data,
                                 sigma_min=cfg.consistency.sigma_min)


def make_objective_from(cfg: Config, path: Path, param: Parameterisation, bits: int | None, *,
                        device: torch.device | str | None = None, data_shape: Any = None
                        ) -> "DiffusionObjective | ConsistencyObjective":
    """The [objective] table as a loss; hybrid_lambda counts only with a learned variance (it trains v only).
    ``time_sampling = 'auto'`` on a ve path is log_normal (see kuosan.objectives.timesteps).

    A consistency model (objective.prediction = 'consistency') gets the consistency objective of the [consistency]
    table; with method cd and a ``device`` (training, not config checks) the teacher run is loaded there
    (kuosan.families.distill.load_teacher, checked against the data's per-sample ``data_shape``) and one step of
    consistency.teacher_sampler on it is the teacher's ODE step."""
    from .objectives import make_objective

    if cfg.objective.prediction == "consistency":
        return _consistency_objective(cfg, path, param, device, data_shape)
    ob = cfg.objective
    return make_objective(path, param, weighting=ob.weighting, time_sampling=ob.time_sampling, loss=ob.loss,
                          min_snr_gamma=ob.min_snr_gamma, hybrid_lambda=ob.hybrid_lambda if ob.learn_variance else 0.0,
                          bits=bits, sigma_data=ob.sigma_data, sigmoid_bias=ob.sigmoid_bias, **time_kwargs(cfg))


def _consistency_objective(cfg: Config, path: Path, param: Parameterisation, device: torch.device | str | None,
                           data_shape: Any) -> "ConsistencyObjective":
    from .objectives.consistency import make_consistency_objective

    c = cfg.consistency
    teacher = None
    if c.method == "cd" and device is not None:
        from .families.distill import load_teacher, teacher_step  # the teacher run; its sampler's one ODE step

        teacher = teacher_step(load_teacher(cfg, torch.device(device), data_shape), c.teacher_sampler)
    return make_consistency_objective(path, param, method=c.method, total_steps=cfg.optim.steps,
                                      rho=c.rho, s0=c.s0, s1=c.s1, p_mean=c.p_mean, p_std=c.p_std,
                                      huber_c=c.huber_c, cd_steps=c.cd_steps, teacher_step=teacher,
                                      ect_cfg=cfg if c.method == "ect" else None)


def time_kwargs(cfg: Config) -> dict[str, float]:
    """objective.time_mean/time_std as the time sampler's own parameter names (logit_normal: mean, std;
    log_normal: p_mean, p_std); unset ones are left to the sampler's defaults."""
    ob = cfg.objective
    names = {"logit_normal": ("mean", "std"), "log_normal": ("p_mean", "p_std")}.get(ob.time_sampling)
    if names is None:
        return {}
    return {k: v for k, v in zip(names, (ob.time_mean, ob.time_std)) if v is not None}


def data_meta(ds: "Dataset") -> dict[str, Any]:
    """What a checkpoint must know of its data to rebuild the network and sample: shape, kind, classes."""
    return {"kind": ds.kind, "shape": list(ds.x.shape[1:]), "num_classes": ds.num_classes, "name": ds.name,
            "bits": ds.bits}


class MLPFlat(nn.Module):
    """Lets the MLP serve data of any per-sample shape by flattening (B, *D) -> (B, prod D) and back."""

    def __init__(self, mlp: nn.Module):
        super().__init__()
        self.mlp = mlp

    def forward(self, x: Tensor, t: Tensor, y: Tensor | None = None) -> Tensor:
        out = self.mlp(x.flatten(1), t, y)  # (B, k·D), k = 2 with a learned variance
        return out.reshape(x.shape[0], -1, *x.shape[2:]) if x.ndim > 2 else out


def build_net(cfg: Config, meta: dict[str, Any]) -> nn.Module:
    """U-Net for images (C, H, W), MLP (on flattened samples) for vectors (D,), per net.model."""
    n, shape, kind = cfg.net, meta["shape"], cfg.net.model
    if kind == "auto":
        kind = "unet" if meta["kind"] == "image" else "mlp"
    ncls = meta["num_classes"] if cfg.data.class_cond else 0
    out_mult = 2 if cfg.objective.learn_variance else 1  # mean and variance halves
    if kind == "unet":
        if len(shape) != 3:
            raise ValueError(f"the unet needs image data (C, H, W), got samples of shape {tuple(shape)}")
        return UNet(UNetConfig(in_channels=shape[0], channels=n.channels, channel_mult=tuple(n.channel_mult),
                               num_res_blocks=n.num_res_blocks, attn_resolutions=tuple(n.attn_resolutions),
                               dropout=n.dropout, num_classes=ncls, image_size=shape[-1],
                               out_channels=out_mult * shape[0]))
    dim = math.prod(shape)
    return MLPFlat(MLP(MLPConfig(dim=dim, hidden=n.mlp_hidden, depth=n.mlp_depth, dropout=n.dropout,
                                 num_classes=ncls, out_dim=out_mult * dim)))


def make_denoiser(net: nn.Module, cfg: Config, path: Path | None = None) -> NetDenoiser:
    """The network read through the config's parameterisation on its path. A consistency model's carries
    ``kind = "consistency"``: it returns the ODE endpoint f(x_t, t), not E[x_0|x_t], and only the consistency
    sampler takes it (kuosan.sampling.draw)."""
    D = NetDenoiser(net, path if path is not None else make_path_from(cfg), make_param_from(cfg),
                    learns_variance=cfg.objective.learn_variance)
    if isinstance(D.param, Consistency):
        D.kind = "consistency"
    return D


def build_net_for(cfg: Config, meta: dict[str, Any], weights: dict[str, Tensor], what: str) -> nn.Module:
    """The network of cfg and meta, after checking ``weights`` fit it (keys, shapes, floating dtypes) on a copy
    built on the meta device: a config describing a huge network allocates nothing before it is refused."""
    with torch.random.fork_rng(devices=[]), torch.device("meta"):
        probe = build_net(cfg, meta)
    check_tensors(weights, probe.state_dict(), what)
    return build_net(cfg, meta)


def check_recorded_path(ckpt: Checkpoint, path: Path) -> None:
    """The path a checkpoint's config describes is the one it was trained on (state.json records the path's
    fingerprint): an edited config.json (another schedule, T, kind) is refused, never sampled with."""
    recorded = ckpt.state.get("path")
    if recorded is not None and not fingerprint_matches(path, recorded):
        raise CheckpointError(f"checkpoint {str(ckpt.path)!r} was trained on another path than its config.json "
                              f"describes (now {path.kind} with fingerprint {path.fingerprint()}, trained with "
                              f"{recorded}); was config.json edited?")


def load_denoiser(run_or_ckpt: str | FilePath, *, use_ema: bool = True, device: str | torch.device = "cpu"
                  ) -> tuple[NetDenoiser, dict[str, Any], Config]:
    """Rebuild the trained denoiser of a run or checkpoint folder (EMA weights by default), in eval mode.

    Returns (D, data meta, config); old-format checkpoints load through the migrated config. Everything is checked
    first (see kuosan.checkpoint): the config against the path the run trained on, the data description, the
    weights against the network (keys, shapes, floating dtypes) before it is allocated, and the weights finite."""
    ckpt = load_checkpoint(run_or_ckpt, with_optim=False)
    where = f"checkpoint {str(ckpt.path)!r}"
    cfg = from_dict(ckpt.config, where=where).validate()
    meta = ckpt.state.get("data")
    if meta is None:
        raise CheckpointError(f"{where} does not record its data shape")
    check_data_meta(meta, where)
    path = make_path_from(cfg)
    check_recorded_path(ckpt, path)
    ema = use_ema and ckpt.ema is not None  # a checkpoint without EMA (its manifest lists none): the raw weights
    weights = ckpt.ema if ema else ckpt.model
    assert weights is not None
    what = f"the {'EMA ' if ema else ''}weights of {where}"
    net = build_net_for(cfg, meta, weights, where)
    if ema:  # the raw weights are not used, but a checkpoint holding int64 or misshapen ones is not whole
        check_tensors(ckpt.model, net.state_dict(), where)
    check_finite(weights, what)
    own = net.state_dict()
    net.load_state_dict({k: v.to(own[k].dtype) for k, v in weights.items()})
    net.to(device).eval()
    return make_denoiser(net, cfg, path), meta, cfg
