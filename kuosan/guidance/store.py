"""A trained noisy classifier on disk: ``classifier.safetensors`` (weights) + ``classifier.json`` (network config,
data description, the path it was trained on, training summary, accuracy by noise level), in a folder that is
replaced whole (written under a temporary name, then renamed): complete or absent, never unpickled.

The classifier reads (x_t/√(α² + σ²), λ), which depend only on x_t/α and λ, so it serves any path of the same
data; the path it was trained on is recorded for information.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path as FilePath
from typing import Any

import torch

from ..checkpoint import CheckpointError
from ..checkpoint.fields import check_finite, check_tensors
from ..checkpoint.files import read_json, read_tensors
from ..checkpoint.write import fsync_dir, write_json
from ..nets.classifier import ClassifierConfig, ClassifierNet
from ..paths import Path
from .classifier import NoisyClassifier

WEIGHTS, INFO = "classifier.safetensors", "classifier.json"
FORMAT = 1


def save_classifier(clf: NoisyClassifier, out: str | FilePath, info: dict[str, Any]) -> FilePath:
    """Write clf and ``info`` (JSON-able) to the folder ``out``, replacing it atomically; returns it."""
    from safetensors.torch import save_file

    out = FilePath(out)
    if out.exists() and not out.is_dir():
        raise ValueError(f"classifier folder {str(out)!r} exists and is not a folder")
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.parent / f".{out.name}.tmp-{os.getpid()}"
    old = out.parent / f".{out.name}.old-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    try:
        save_file({k: v.detach().cpu().contiguous() for k, v in clf.net.state_dict().items()}, str(tmp / WEIGHTS))
        write_json(tmp / INFO, {"format": FORMAT, "net": clf.net.cfg.to_dict(), "num_classes": clf.num_classes,
                                "path": clf.path.spec(), "path_fingerprint": clf.path.fingerprint(), **info})
        fsync_dir(tmp)
        if out.exists():
            os.replace(out, old)
        os.replace(tmp, out)
        fsync_dir(out.parent)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
        shutil.rmtree(old, ignore_errors=True)
    return out


def classifier_dir(where: str | FilePath) -> FilePath:
    """The classifier folder named by ``where``: the folder itself, or a run's RUN/classifier/."""
    p = FilePath(where)
    for cand in (p, p / "classifier"):
        if (cand / INFO).is_file():
            return cand
    raise CheckpointError(f"no classifier in {str(p)!r} (expected {INFO} there or in its classifier/ folder; "
                          "train one with `kuosan train-classifier RUN`)")


def load_classifier(where: str | FilePath, path: Path, *, shape: tuple[int, ...] | None = None,
                    num_classes: int | None = None, device: str | torch.device = "cpu"
                    ) -> tuple[NoisyClassifier, dict[str, Any]]:
    """The classifier in ``where`` (see classifier_dir) read on ``path``, in eval mode, and its info; ``shape`` and
    ``num_classes``, when given, must be those it was trained for (else CheckpointError)."""
    d = classifier_dir(where)
    info = read_json(d / INFO, "classifier description")
    try:
        if info.get("format") != FORMAT:
            raise ValueError(f"format {info.get('format')!r}, this kuosan reads {FORMAT}")
        cfg = ClassifierConfig.from_dict(info["net"])
    except (KeyError, TypeError, ValueError, AttributeError) as e:
        raise CheckpointError(f"classifier {str(d)!r} has an unreadable description: {e}") from None
    if shape is not None and tuple(cfg.shape) != tuple(shape):
        raise CheckpointError(f"classifier {str(d)!r} was trained on examples of shape {tuple(cfg.shape)}, the model "
                              f"draws {tuple(shape)}")
    if num_classes is not None and cfg.num_classes != num_classes:
        raise CheckpointError(f"classifier {str(d)!r} has {cfg.num_classes} classes, the model's data "
                              f"{num_classes}")
    weights = read_tensors(d / WEIGHTS, "classifier weights")
    net = ClassifierNet(cfg)
    check_tensors(weights, net.state_dict(), f"classifier {str(d)!r}")
    check_finite(weights, f"the weights of classifier {str(d)!r}")
    net.load_state_dict(weights)
    return NoisyClassifier(net, path, cfg.num_classes).to(device).eval(), info
