"""Checks of every field a checkpoint's state.json holds (types and ranges, before anything uses them) and of
its tensors against the model they must fit (keys, shapes, floating dtypes, finite values)."""

from __future__ import annotations

import math
import re
from pathlib import Path
from typing import Any, Mapping

import torch
from torch import Tensor

from .errors import CheckpointError

FORMAT_V1 = "kuosan-checkpoint-1"  # no manifest (written before checkpoints recorded their files)
FORMAT = "kuosan-checkpoint-2"  # format 1 plus the manifest: every file with its size and SHA-256
CONFIG_FORMAT = 2  # 1: the flat pre-redesign config; 2: nested tables
TENSOR_FILES = ("model.safetensors", "ema.safetensors", "optim.safetensors", "extra.safetensors")
FILES = TENSOR_FILES + ("config.json",)
MAX_STEP = 2**53
MAX_SAMPLE_NUMEL = 2**24  # elements of one data sample (a 4096x4096 RGB image is 5e7: far beyond any use here)
MAX_CLASSES = 100_000
ABSURD = 1e10  # |weight| beyond this is a diverged run, never a trained model
OPTIM_KEYS = frozenset({"step", "exp_avg", "exp_avg_sq", "max_exp_avg_sq"})  # AdamW's per-parameter state


def _int(v: Any, lo: int, hi: int) -> bool:
    return isinstance(v, int) and not isinstance(v, bool) and lo <= v <= hi


def check_state(state: Any, p: Path) -> dict[str, Any]:
    """state.json's fields: format, config_format, step (an integer >= 0 matching the folder name), data,
    world_size, path fingerprint, threads, manifest (format 2) and the optimizer's JSON part."""
    where = f"checkpoint {str(p)!r}"
    if not isinstance(state, dict):
        raise CheckpointError(f"{where}: state.json must hold a table, got {type(state).__name__}")
    fmt = state.get("format")
    if fmt not in (FORMAT, FORMAT_V1):
        shown = fmt if isinstance(fmt, (str, int, float, type(None))) else type(fmt).__name__
        raise CheckpointError(f"{str(p)!r} is not a {FORMAT} checkpoint (format {shown!r})")
    cf = state.get("config_format", 1)
    if not _int(cf, 1, CONFIG_FORMAT):
        raise CheckpointError(f"checkpoint {str(p)!r} has a config of unknown format {cf!r}")
    step = state.get("step")
    if not _int(step, 0, MAX_STEP):
        raise CheckpointError(f"{where}: step must be an integer >= 0, got {step!r}")
    from .layout import step_of

    named = step_of(p.name)
    if named is not None and named != step:
        raise CheckpointError(f"{where}: state.json says step {step}, the folder name step {named}")
    check_data_meta(state.get("data"), where, required=False)
    if "world_size" in state and not _int(state["world_size"], 1, 2**20):
        raise CheckpointError(f"{where}: world_size must be a positive integer, got {state['world_size']!r}")
    if "threads" in state and not _int(state["threads"], 1, 1024):
        raise CheckpointError(f"{where}: threads must be a positive integer, got {state['threads']!r}")
    if "path" in state and not (isinstance(state["path"], str) and re.fullmatch(r"[0-9a-f]{8,64}", state["path"])):
        raise CheckpointError(f"{where}: the path fingerprint must be a hex string, got {state['path']!r}")
    if fmt == FORMAT:
        check_manifest(state.get("manifest"), where)
    if "optim" in state:
        check_optim_meta(state["optim"], where)
    return state


def check_data_meta(meta: Any, where: str, required: bool = True) -> None:
    """The data description (kind, shape, num_classes, name, bits) a model is rebuilt from."""
    if meta is None and not required:
        return
    bad = f"{where}: its data description"
    if not isinstance(meta, dict):
        raise CheckpointError(f"{bad} must be a table, got {type(meta).__name__}")
    if meta.get("kind") not in ("image", "vector"):
        raise CheckpointError(f"{bad} has kind {meta.get('kind')!r}, not 'image' or 'vector'")
    shape = meta.get("shape")
    if not (isinstance(shape, list) and 1 <= len(shape) <= 3 and all(_int(d, 1, MAX_SAMPLE_NUMEL) for d in shape)
            and math.prod(shape) <= MAX_SAMPLE_NUMEL and (len(shape) == 3) == (meta["kind"] == "image")):
        raise CheckpointError(f"{bad} has an impossible sample shape {str(shape)[:80]}")
    if not _int(meta.get("num_classes", 0), 0, MAX_CLASSES):
        raise CheckpointError(f"{bad} has num_classes {meta.get('num_classes')!r}, not an integer in "
                              f"[0, {MAX_CLASSES}]")
    if not isinstance(meta.get("name", ""), str):
        raise CheckpointError(f"{bad} names its data set with {type(meta.get('name')).__name__}, not text")
    if meta.get("bits") is not None and not _int(meta.get("bits"), 1, 32):
        raise CheckpointError(f"{bad} has bits {meta.get('bits')!r}, not an integer in [1, 32]")


def check_manifest(manifest: Any, where: str) -> None:
    if not isinstance(manifest, dict) or "model.safetensors" not in manifest or "config.json" not in manifest:
        raise CheckpointError(f"{where} is incomplete: its state.json lists no model and config files")
    for name, entry in manifest.items():
        if name not in FILES:
            raise CheckpointError(f"{where}: its manifest lists {str(name)[:60]!r}, not a checkpoint file")
        if not (isinstance(entry, dict) and _int(entry.get("size"), 0, 2**50) and isinstance(entry.get("sha256"), str)
                and re.fullmatch(r"[0-9a-f]{64}", entry["sha256"])):
            raise CheckpointError(f"{where}: the manifest entry of {name} is malformed")


def check_optim_meta(meta: Any, where: str) -> None:
    """The optimizer's JSON part: one parameter group (its hyperparameters come from the config on resume) and
    per-parameter scalars."""
    bad = f"{where}: its optimizer state"
    if not isinstance(meta, dict) or not isinstance(meta.get("param_groups"), list) \
            or not isinstance(meta.get("scalars", {}), dict):
        raise CheckpointError(f"{bad} is malformed")
    groups = meta["param_groups"]
    if len(groups) != 1 or not isinstance(groups[0], dict) or not isinstance(groups[0].get("params"), list):
        raise CheckpointError(f"{bad} must hold one parameter group")
    params = groups[0]["params"]
    if params != list(range(len(params))):
        raise CheckpointError(f"{bad} numbers its parameters {str(params)[:40]}, not 0, 1, 2, ...")
    for k, v in list(groups[0].items()) + list(meta.get("scalars", {}).items()):
        if k != "params" and not _json_scalar(v):
            raise CheckpointError(f"{bad}: {str(k)[:40]} is {type(v).__name__}, not a number")


def _json_scalar(v: Any) -> bool:
    if isinstance(v, list):
        return len(v) <= 4 and all(isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x)
                                   for x in v)
    return v is None or isinstance(v, (bool, str)) or (isinstance(v, (int, float)) and math.isfinite(v))


def check_tensors(got: Mapping[str, Tensor], want: Mapping[str, Tensor], what: str, *, floating: bool = False) -> None:
    """``got`` has exactly the keys of ``want`` (a model's state_dict, meta tensors will do) with the same shapes;
    where ``want`` is floating (or ``floating``) the dtype must be floating too (int64 weights are refused,
    never converted), elsewhere it must equal ``want``'s."""
    missing = sorted(set(want) - set(got))
    extra = sorted(set(got) - set(want))
    if missing or extra:
        detail = f"missing {missing[:2]}" if missing else f"unexpected {extra[:2]}"
        raise CheckpointError(f"{what} holds a different model than its config describes ({detail})")
    for k, w in want.items():
        g = got[k]
        if tuple(g.shape) != tuple(w.shape):
            raise CheckpointError(f"{what} holds a different model than its config describes (shape of {k} is "
                                  f"{tuple(g.shape)}, expected {tuple(w.shape)})")
        if (w.dtype.is_floating_point or floating) and not g.dtype.is_floating_point:
            raise CheckpointError(f"{what}: tensor {k} is {str(g.dtype).replace('torch.', '')}, not floating point")
        if not (w.dtype.is_floating_point or floating) and g.dtype != w.dtype:
            raise CheckpointError(f"{what}: tensor {k} is {str(g.dtype).replace('torch.', '')}, expected "
                                  f"{str(w.dtype).replace('torch.', '')}")


def first_bad(tensors: Mapping[str, Tensor], limit: float = ABSURD) -> str | None:
    """The first floating tensor holding NaN, ±inf or |x| > limit, described ('mlp.w has NaN'), or None."""
    for k, v in tensors.items():
        if not v.dtype.is_floating_point or v.numel() == 0:
            continue
        if not bool(torch.isfinite(v).all()):
            return f"{k} has {'NaN' if bool(torch.isnan(v).any()) else 'inf'}"
        big = v.detach().abs().max().item()
        if big > limit:
            return f"{k} has |x| = {big:.3g}"
    return None


def check_finite(tensors: Mapping[str, Tensor], what: str) -> None:
    """Refuse weights that are not finite (or absurdly large: a diverged run)."""
    bad = first_bad(tensors)
    if bad is not None:
        raise CheckpointError(f"{what} are not usable: {bad}")
