"""Checkpoints: weights in safetensors, config and training state in JSON; complete or invisible, never pickled.

A run folder holds ``checkpoints/step_NNNNNNN/`` folders and a ``checkpoints/latest`` pointer. A checkpoint
folder holds model.safetensors, config.json and state.json, and (from training) ema.safetensors,
optim.safetensors and extra.safetensors. state.json is written last and records (format 2) the manifest: every
other file with its size and SHA-256. Loading trusts nothing: the pointer must name a step folder of the run,
every field of state.json is type- and range-checked, the files are verified against the manifest, tensor
headers against the files' sizes before anything is allocated, and the tensors against the model (keys, shapes,
floating dtypes, finite values) before they are used.

``config.json`` holds the nested training config (``state.json`` records ``config_format`` = 2); checkpoints
written before the nested config (no ``config_format``) hold the old flat config, migrated when loaded.
Modules: layout.py (names, pointer, pruning, temp clean-up), write.py, read.py, fields.py (state.json and
tensor checks), files.py (bounded JSON, safetensors headers, hashes), optim.py (the optimizer's state).
"""

from __future__ import annotations

import torch
from torch import Tensor

from .errors import CheckpointError, DiskFullError, human_bytes, is_disk_full
from .fields import (ABSURD, CONFIG_FORMAT, FORMAT, FORMAT_V1, check_data_meta, check_finite, check_tensors,
                     first_bad)
from .layout import checkpoints_root, clean_temp, newest, resolve, run_of, step_dirs, step_of
from .optim import check_optim_state, optim_from_flat, optim_to_flat
from .read import Checkpoint, load_checkpoint
from .write import checkpoint_bytes, save_checkpoint, write_text_atomic


def load_weights(module: torch.nn.Module, weights: dict[str, Tensor], what: str) -> None:
    """Strict load after ``check_tensors`` (keys, shapes, floating dtypes), with one-line errors."""
    check_tensors(weights, module.state_dict(), what)
    own = module.state_dict()
    module.load_state_dict({k: v.to(own[k].dtype) for k, v in weights.items()})


__all__ = ["ABSURD", "CONFIG_FORMAT", "Checkpoint", "CheckpointError", "DiskFullError", "FORMAT", "FORMAT_V1",
           "check_data_meta", "check_finite", "check_optim_state", "check_tensors", "checkpoint_bytes",
           "checkpoints_root", "clean_temp", "first_bad", "human_bytes", "is_disk_full", "load_checkpoint",
           "load_weights", "newest", "optim_from_flat", "optim_to_flat", "resolve", "run_of", "save_checkpoint",
           "step_dirs", "step_of", "write_text_atomic"]
