"""Continuing from a checkpoint: which run folder, whether it may continue there, and the training state restored
only after every tensor is checked against what this run built (weights, EMA, optimizer, time sampler)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from torch import nn

from ..checkpoint import (Checkpoint, CheckpointError, check_finite, check_optim_state, check_tensors, newest,
                          run_of, step_of)
from .ema import EMA


def run_folder_of(ckpt: Path) -> Path:
    """The run folder a resumed checkpoint folder continues in (RUN/checkpoints/step_N -> RUN)."""
    run = run_of(ckpt)
    if run is None:
        raise CheckpointError(f"checkpoint {str(ckpt)!r} is not inside a run folder (RUN/checkpoints/step_N); "
                              "continue it in a new run folder with --set log.out=DIR")
    return run


def check_may_continue(root: Path, ckpt: Checkpoint | None, run_dir: Path) -> None:
    """A run folder holds one run whose checkpoints only move forward: a fresh run may not start in a folder
    holding checkpoints, and a resume may not go back behind the folder's newest checkpoint."""
    have = newest(root)
    if have is None:
        return
    if ckpt is None or run_of(ckpt.path) is None or Path(run_of(ckpt.path)).resolve() != run_dir.resolve():
        raise CheckpointError(f"run folder {str(run_dir)!r} already holds a run (checkpoint {have.name}); continue "
                              f"it with --resume {run_dir}, or train into another folder (--out)")
    if (step_of(have.name) or 0) > int(ckpt.state["step"]):
        raise CheckpointError(f"run folder {str(run_dir)!r} has a newer checkpoint ({have.name}) than the one to "
                              f"resume ({ckpt.path.name}); resume the run itself, continue {ckpt.path.name} in "
                              "another folder (--set log.out=DIR), or delete the newer checkpoint first")


def restore(ckpt: Checkpoint, net: nn.Module, ema: EMA, opt: torch.optim.Optimizer, obj: Any,
            meta: dict[str, Any]) -> int:
    """Load the checkpoint into this run's network, EMA, optimizer and time sampler; returns its step."""
    what = f"checkpoint {str(ckpt.path)!r}"
    shape = (ckpt.state.get("data") or {}).get("shape")
    if shape is not None and list(shape) != list(meta["shape"]):
        raise CheckpointError(f"{what} was trained on samples of shape {shape}; data set {meta['name']!r} has "
                              f"{meta['shape']}")
    own = net.state_dict()
    check_tensors(ckpt.model, own, what)
    check_finite(ckpt.model, f"the weights of {what}")
    if ckpt.ema is not None:
        check_tensors(ckpt.ema, own, f"{what} (its EMA)", floating=True)
        check_finite(ckpt.ema, f"the EMA weights of {what}")
    params = list(net.parameters())
    if ckpt.optim is not None:
        check_optim_state(ckpt.optim, params, what)
    template = obj.times.state_dict() if hasattr(obj.times, "state_dict") else {}
    if set(ckpt.extra) != set(template):
        raise CheckpointError(f"{what} holds time-sampler state {sorted(ckpt.extra)[:3]}; this run's "
                              f"objective.time_sampling keeps {sorted(template) or 'none'}")
    check_tensors(ckpt.extra, template, f"{what} (its time-sampler state)")
    check_finite(ckpt.extra, f"the time-sampler state of {what}")

    net.load_state_dict({k: v.to(own[k].dtype) for k, v in ckpt.model.items()})
    ema.shadow = ({k: v.float() for k, v in ckpt.ema.items()} if ckpt.ema is not None
                  else {k: v.detach().clone().float() for k, v in net.state_dict().items()})
    if ckpt.optim is not None:  # the moments from the checkpoint, the hyperparameters from this run's config
        opt.load_state_dict({"state": ckpt.optim["state"], "param_groups": opt.state_dict()["param_groups"]})
    if template:
        obj.times.load_state_dict(ckpt.extra)
    return int(ckpt.state["step"])
