"""The optimizer's state in a checkpoint: its tensors as "<param index>.<name>" in optim.safetensors, the rest in
state.json; read back only after every key, shape, dtype and value is checked against the model's parameters."""

from __future__ import annotations

import math
from typing import Any, Sequence

import torch
from torch import Tensor

from .errors import CheckpointError
from .fields import OPTIM_KEYS, first_bad


def optim_to_flat(opt_state: dict[str, Any]) -> tuple[dict[str, Tensor], dict[str, Any]]:
    """Split an optimizer state_dict into tensors (for safetensors) and a JSON-able rest."""
    tensors, scalars = {}, {}
    for pid, st in opt_state["state"].items():
        for k, v in st.items():
            if isinstance(v, Tensor):
                tensors[f"{pid}.{k}"] = v.detach().cpu().contiguous()
            else:
                scalars[f"{pid}.{k}"] = v
    return tensors, {"param_groups": opt_state["param_groups"], "scalars": scalars}


def _split(key: str, where: str) -> tuple[int, str]:
    pid, _, name = key.partition(".")
    if not (pid.isdigit() and len(pid) <= 9 and name in OPTIM_KEYS):
        raise CheckpointError(f"{where}: its optimizer state has an unknown entry {key[:60]!r}")
    return int(pid), name


def optim_from_flat(tensors: dict[str, Tensor], meta: dict[str, Any], where: str = "checkpoint") -> dict[str, Any]:
    """The optimizer state_dict back from ``optim_to_flat``'s two parts (meta already checked by check_state)."""
    state: dict[int, dict[str, Any]] = {}
    for key, v in list(tensors.items()) + list(meta.get("scalars", {}).items()):
        pid, k = _split(key, where)
        state.setdefault(pid, {})[k] = v
    return {"state": state, "param_groups": meta["param_groups"]}


def check_optim_state(opt_state: dict[str, Any], params: Sequence[Tensor], what: str) -> None:
    """AdamW's per-parameter state fits the model: indices of its parameters, the moments shaped like their
    parameter, floating and finite, the second moment >= 0, the step count an integer >= 0."""
    groups = opt_state["param_groups"]
    if len(groups[0]["params"]) != len(params):
        raise CheckpointError(f"{what} has optimizer state for {len(groups[0]['params'])} parameters; the model has "
                              f"{len(params)}")
    for pid, st in opt_state["state"].items():
        if pid >= len(params):
            raise CheckpointError(f"{what} has optimizer state for parameter {pid}; the model has {len(params)}")
        if not {"step", "exp_avg", "exp_avg_sq"} <= set(st):
            raise CheckpointError(f"{what}: the optimizer state of parameter {pid} lacks "
                                  f"{sorted({'step', 'exp_avg', 'exp_avg_sq'} - set(st))}")
        step = st["step"]
        if isinstance(step, Tensor):
            ok = step.numel() == 1 and step.dtype.is_floating_point and bool(torch.isfinite(step).all())
            step_v = step.item() if ok else -1.0
        else:
            ok = isinstance(step, (int, float)) and not isinstance(step, bool) and math.isfinite(step)
            step_v = float(step) if ok else -1.0
        if not ok or step_v < 0 or step_v != int(step_v):
            raise CheckpointError(f"{what}: the optimizer step count of parameter {pid} is not an integer >= 0")
        for k in ("exp_avg", "exp_avg_sq", "max_exp_avg_sq"):
            if k not in st:
                continue
            v = st[k]
            if not isinstance(v, Tensor) or tuple(v.shape) != tuple(params[pid].shape) \
                    or not v.dtype.is_floating_point:
                raise CheckpointError(f"{what}: the optimizer's {k} of parameter {pid} does not fit it "
                                      f"({'not a tensor' if not isinstance(v, Tensor) else tuple(v.shape)})")
        bad = first_bad({f"{pid}.{k}": v for k, v in st.items() if isinstance(v, Tensor)}, limit=math.inf)
        if bad is not None or ("exp_avg_sq" in st and bool((st["exp_avg_sq"] < 0).any())):
            raise CheckpointError(f"{what}: the optimizer state is not usable ({bad or f'{pid}.exp_avg_sq < 0'})")
