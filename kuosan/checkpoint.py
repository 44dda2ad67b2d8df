"""Checkpoints: weights in safetensors, config and training state in JSON; written atomically, never pickled.

A run folder holds ``checkpoints/step_XXXXXXX/`` directories and a ``checkpoints/latest`` pointer file.
A checkpoint directory is written under a temporary name, flushed, then renamed; ``latest`` is replaced
with os.replace only afterwards, so a crash at any moment leaves the previous checkpoint intact.

``config.json`` holds the nested training config (``state.json`` records ``config_format`` = 2); checkpoints
written before the nested config (no ``config_format``) hold the old flat config, migrated when loaded.
"""

from __future__ import annotations

import json
import os
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file
from torch import Tensor

FORMAT = "kuosan-checkpoint-1"  # the file layout (unchanged by the nested config)
CONFIG_FORMAT = 2  # 1: the flat pre-redesign config; 2: nested tables


class CheckpointError(ValueError):
    """A missing, incomplete or mismatched checkpoint; the CLI prints it as one line."""


@dataclass
class Checkpoint:
    path: Path
    config: dict[str, Any]  # nested (an old flat config is migrated on load)
    state: dict[str, Any]  # step, data shape, optimizer's non-tensor state, ...
    model: dict[str, Tensor]
    ema: dict[str, Tensor] | None
    optim: dict[str, Tensor] | None
    extra: dict[str, Tensor]  # other training-state tensors (e.g. the importance sampler's loss history)


def _fsync_dir(path: Path) -> None:
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:  # pragma: no cover - platforms without directory fds
        return
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _write_json(path: Path, obj: Any) -> None:
    with open(path, "w") as f:
        json.dump(obj, f, indent=1)
        f.flush()
        os.fsync(f.fileno())


def optim_to_flat(opt_state: dict[str, Any]) -> tuple[dict[str, Tensor], dict[str, Any]]:
    """Split an optimizer state_dict into tensors (for safetensors) and JSON-able rest."""
    tensors, scalars = {}, {}
    for pid, st in opt_state["state"].items():
        for k, v in st.items():
            if isinstance(v, Tensor):
                tensors[f"{pid}.{k}"] = v.detach().cpu().contiguous()
            else:
                scalars[f"{pid}.{k}"] = v
    return tensors, {"param_groups": opt_state["param_groups"], "scalars": scalars}


def optim_from_flat(tensors: dict[str, Tensor], meta: dict[str, Any]) -> dict[str, Any]:
    state: dict[int, dict[str, Any]] = {}
    for key, v in list(tensors.items()) + list(meta["scalars"].items()):
        pid, k = key.split(".", 1)
        state.setdefault(int(pid), {})[k] = v
    return {"state": state, "param_groups": meta["param_groups"]}


def save_checkpoint(run_dir: str | Path, step: int, config: dict[str, Any], state: dict[str, Any],
                    model: dict[str, Tensor], ema: dict[str, Tensor] | None = None,
                    optim: dict[str, Any] | None = None, extra: dict[str, Tensor] | None = None,
                    keep: int = 2) -> Path:
    """Write checkpoints/step_<step> atomically, point ``latest`` at it, keep the newest ``keep``."""
    root = Path(run_dir) / "checkpoints"
    root.mkdir(parents=True, exist_ok=True)
    name = f"step_{step:07d}"
    tmp, final = root / f".tmp-{name}-{os.getpid()}", root / name
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    cpu = lambda sd: {k: v.detach().cpu().contiguous() for k, v in sd.items()}  # noqa: E731
    save_file(cpu(model), str(tmp / "model.safetensors"))
    if ema is not None:
        save_file(cpu(ema), str(tmp / "ema.safetensors"))
    if extra:
        save_file(cpu(extra), str(tmp / "extra.safetensors"))
    state = dict(state, format=FORMAT, config_format=CONFIG_FORMAT, step=step)
    if optim is not None:
        tensors, meta = optim_to_flat(optim)
        save_file(tensors, str(tmp / "optim.safetensors"))
        state["optim"] = meta
    _write_json(tmp / "config.json", config)
    _write_json(tmp / "state.json", state)  # written last: its presence marks a complete checkpoint
    for f in tmp.iterdir():
        with open(f, "rb") as fh:
            os.fsync(fh.fileno())
    if final.exists():
        shutil.rmtree(final)
    os.replace(tmp, final)
    _fsync_dir(root)
    ptr = root / f".latest-{os.getpid()}"
    ptr.write_text(name + "\n")
    os.replace(ptr, root / "latest")
    _fsync_dir(root)
    old = sorted(p for p in root.glob("step_*") if p.is_dir() and p.name != name)
    for p in old[: max(0, len(old) - (keep - 1))]:
        shutil.rmtree(p, ignore_errors=True)
    return final


def resolve(path: str | Path) -> Path:
    """A run folder (its latest checkpoint) or a checkpoint folder -> the checkpoint folder."""
    p = Path(path)
    if not p.exists():
        raise CheckpointError(f"checkpoint {str(p)!r} does not exist")
    if (p / "checkpoints" / "latest").is_file():
        name = (p / "checkpoints" / "latest").read_text().strip()
        p = p / "checkpoints" / name
    elif (p / "latest").is_file():
        p = p / (p / "latest").read_text().strip()
    if not (p / "state.json").is_file() or not (p / "model.safetensors").is_file():
        raise CheckpointError(f"{str(path)!r} is not a kuosan run or checkpoint (no state.json/model.safetensors)")
    return p


def load_checkpoint(path: str | Path, *, with_optim: bool = True) -> Checkpoint:
    """Read a checkpoint without unpickling anything: safetensors and JSON only."""
    p = resolve(path)
    try:
        state = json.loads((p / "state.json").read_text())
        config = json.loads((p / "config.json").read_text())
    except (OSError, json.JSONDecodeError) as e:
        raise CheckpointError(f"checkpoint {str(p)!r} has an unreadable state/config: {e}") from None
    if state.get("format") != FORMAT:
        raise CheckpointError(f"{str(p)!r} is not a {FORMAT} checkpoint (format {state.get('format')!r})")
    version = state.get("config_format", 1)
    if version not in (1, CONFIG_FORMAT) or not isinstance(config, dict):
        raise CheckpointError(f"checkpoint {str(p)!r} has a config of unknown format {version!r}")
    if version == 1:
        from .config import migrate_flat

        config = migrate_flat(config, where=f"checkpoint {str(p)!r}")
    try:
        model = load_file(str(p / "model.safetensors"))
        ema = load_file(str(p / "ema.safetensors")) if (p / "ema.safetensors").is_file() else None
        extra = load_file(str(p / "extra.safetensors")) if (p / "extra.safetensors").is_file() else {}
        optim = None
        if with_optim and (p / "optim.safetensors").is_file() and "optim" in state:
            optim = optim_from_flat(load_file(str(p / "optim.safetensors")), state["optim"])
    except (SafetensorError, OSError, ValueError) as e:
        raise CheckpointError(f"checkpoint {str(p)!r} has corrupt weights: {e}") from None
    return Checkpoint(p, config, state, model, ema, optim, extra)


def load_weights(module: torch.nn.Module, weights: dict[str, Tensor], what: str) -> None:
    """Strict load with a one-line error when the checkpoint holds another model."""
    own = module.state_dict()
    missing = sorted(set(own) - set(weights))
    extra = sorted(set(weights) - set(own))
    shapes = [k for k in own.keys() & weights.keys() if own[k].shape != weights[k].shape]
    if missing or extra or shapes:
        detail = (f"missing {missing[:2]}" if missing else f"unexpected {extra[:2]}" if extra
                  else f"shape of {shapes[0]} is {tuple(weights[shapes[0]].shape)}, expected {tuple(own[shapes[0]].shape)}")
        raise CheckpointError(f"{what} holds a different model than its config describes ({detail})")
    module.load_state_dict(weights)
