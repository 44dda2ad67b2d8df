"""Reading a checkpoint without unpickling anything (safetensors and JSON only), trusting nothing in it.

Order: the folder (through ``latest``, inside the run), state.json (bounded, every field checked), the manifest
(each file present, a regular file, of its recorded size; the files read are hashed and compared), then the
tensors (headers checked against the file sizes before loading). A checkpoint of the first format (no manifest)
is read with the same checks except the checksums.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from torch import Tensor

from .errors import CheckpointError
from .fields import FORMAT, TENSOR_FILES, check_state
from .files import need_file, read_json, read_tensors, sha256_of
from .layout import resolve
from .optim import optim_from_flat


@dataclass
class Checkpoint:
    path: Path
    config: dict[str, Any]  # nested (an old flat config is migrated on load)
    state: dict[str, Any]  # step, data shape, optimizer's non-tensor state, manifest, ...
    model: dict[str, Tensor]
    ema: dict[str, Tensor] | None
    optim: dict[str, Any] | None
    extra: dict[str, Tensor]  # other training-state tensors (e.g. the importance sampler's loss history)


def _verify(p: Path, name: str, entry: dict[str, Any], hash_it: bool) -> None:
    f = p / name
    if not os.path.lexists(f):
        raise CheckpointError(f"checkpoint {str(p)!r} is incomplete: {name} is missing")
    size = need_file(f, "checkpoint file")
    if size != entry["size"]:
        raise CheckpointError(f"checkpoint {str(p)!r} is damaged: {name} has {size} bytes, its manifest "
                              f"records {entry['size']}")
    if hash_it and sha256_of(f) != entry["sha256"]:
        raise CheckpointError(f"checkpoint {str(p)!r} is damaged or was altered: the SHA-256 of {name} differs "
                              "from its manifest")


def present_files(p: Path, state: dict[str, Any]) -> set[str]:
    """The tensor files that belong to the checkpoint: those its manifest lists (format 2) or, in format 1, those
    present (where anything present under such a name must be a regular file)."""
    if state["format"] == FORMAT:
        manifest = state["manifest"]
        for name in TENSOR_FILES:
            if name not in manifest and os.path.lexists(p / name):
                raise CheckpointError(f"checkpoint {str(p)!r} holds {name}, which its manifest does not list")
        if ("optim.safetensors" in manifest) != ("optim" in state):
            raise CheckpointError(f"checkpoint {str(p)!r} is incomplete: its optimizer state is half there")
        return {n for n in manifest if n in TENSOR_FILES}
    out = set()
    for name in TENSOR_FILES:
        if os.path.lexists(p / name):
            need_file(p / name, "checkpoint file")
            out.add(name)
    if "model.safetensors" not in out:
        raise CheckpointError(f"checkpoint {str(p)!r} is incomplete: model.safetensors is missing")
    if "optim" in state and "optim.safetensors" not in out:
        raise CheckpointError(f"checkpoint {str(p)!r} is incomplete: optim.safetensors is missing")
    return out


def load_checkpoint(path: str | Path, *, with_optim: bool = True) -> Checkpoint:
    """Read and check a checkpoint (a run folder: its newest one). Every problem is a one-line CheckpointError
    (or ConfigError for an old config key that no longer exists)."""
    p = resolve(path)
    if not os.path.lexists(p / "state.json"):
        raise CheckpointError(f"checkpoint {str(p)!r} is incomplete: state.json is missing")
    state = check_state(read_json(p / "state.json", "state file"), p)
    files = present_files(p, state)
    wanted = {"model.safetensors", "ema.safetensors", "extra.safetensors"} & files
    if with_optim and "optim.safetensors" in files:
        wanted.add("optim.safetensors")
    if state["format"] == FORMAT:
        for name, entry in state["manifest"].items():
            _verify(p, name, entry, hash_it=name in wanted or name == "config.json")
    elif not os.path.lexists(p / "config.json"):
        raise CheckpointError(f"checkpoint {str(p)!r} is incomplete: config.json is missing")
    config = read_json(p / "config.json", "config file")
    version = state.get("config_format", 1)
    if not isinstance(config, dict):
        raise CheckpointError(f"checkpoint {str(p)!r}: config.json must hold tables of keys, got "
                              f"{type(config).__name__}")
    from ..config import fill_retired_defaults, migrate_flat

    if version == 1:
        config = migrate_flat(config, where=f"checkpoint {str(p)!r}")
    config = fill_retired_defaults(config)  # keys added since it was written: the values it trained with
    t = {name: read_tensors(p / name, "checkpoint file") for name in sorted(wanted)}
    optim = None
    if "optim.safetensors" in t:
        optim = optim_from_flat(t["optim.safetensors"], state["optim"], where=f"checkpoint {str(p)!r}")
    return Checkpoint(p, config, state, t["model.safetensors"], t.get("ema.safetensors"), optim,
                      t.get("extra.safetensors", {}))
