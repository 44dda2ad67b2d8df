"""kuosan's own feature network, trained deterministically on a run's training split and cached on disk: the
feature space of FD, KID and PRDC without downloading Inception or DINOv2 weights.

- images with labels: a small CNN classifier; features are its penultimate layer, and its softmax gives the class
  statistics (:mod:`.classes`);
- images without labels: a convolutional autoencoder; features are its code;
- vectors (the 2-D toys, curves, .npz tables): the identity: the samples themselves are the features (a learned
  feature would only hide the coordinates a user can read); with labels, a small MLP classifier is trained for
  the class statistics only.

Every feature is standardised by the training split's per-dimension mean and standard deviation, so that KID's
kernel (aᵀb/d + 1)³ sees O(1) inputs and FDs read in units of the data's own spread.

**Determinism.** Training runs on the CPU in float32 on one thread with deterministic algorithms, initial weights
from a fixed seed and mini-batches from a fixed ``torch.Generator``: the same data, config and torch build give the
same weights bit for bit (another torch version or CPU may differ in the last bits). The global RNG state is left
as it was.

**Cache.** ``<cache>/<key>.safetensors`` (weights and standardisation) + ``<key>.json`` (config, data description,
training summary), where ``<cache>`` is ``$KUOSAN_CACHE/features`` or ``~/.cache/kuosan/features`` and the key is a
SHA-256 of the data tensors' bytes (x, y), their shapes and the feature config. Never pickle.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import math
import os
from dataclasses import asdict, replace
from pathlib import Path
from typing import Any, Iterator, Literal

import torch
from torch import Tensor

from .feature_net import FeatureConfig, FeatureNet

FEATURE_VERSION = 1  # bump when the architecture or training changes: old cache entries are then not reused


def default_cache_dir() -> Path:
    """$KUOSAN_CACHE/features, else ~/.cache/kuosan/features."""
    root = os.environ.get("KUOSAN_CACHE")
    return (Path(root).expanduser() if root else Path.home() / ".cache" / "kuosan") / "features"


def cache_key(x: Tensor, y: Tensor | None, cfg: FeatureConfig) -> str:
    """SHA-256 over the data's bytes and shapes (float32 x, int64 y) and the config: the cache file name."""
    h = hashlib.sha256()
    h.update(json.dumps({"version": FEATURE_VERSION, "config": asdict(cfg), "x": list(x.shape),
                         "y": None if y is None else list(y.shape)}, sort_keys=True).encode())
    h.update(x.detach().to("cpu", torch.float32).contiguous().numpy().tobytes())
    if y is not None:
        h.update(y.detach().to("cpu", torch.int64).contiguous().numpy().tobytes())
    return h.hexdigest()[:32]


@contextlib.contextmanager
def deterministic_cpu() -> Iterator[None]:
    """One intra-op thread and deterministic algorithms inside; the previous settings and RNG state after."""
    threads, det = torch.get_num_threads(), torch.are_deterministic_algorithms_enabled()
    torch.set_num_threads(1)
    torch.use_deterministic_algorithms(True)
    try:
        with torch.random.fork_rng(devices=[]):
            yield
    finally:
        torch.use_deterministic_algorithms(det)
        torch.set_num_threads(threads)


def _train(net: FeatureNet, x: Tensor, y: Tensor | None, cfg: FeatureConfig, progress: bool) -> dict[str, float]:
    """Adam on mini-batches drawn by a seeded generator; returns the final loss (mean of the last 50 steps)."""
    g = torch.Generator().manual_seed(cfg.seed + 1)
    opt = torch.optim.Adam(net.parameters(), lr=cfg.lr)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, cfg.steps)
    losses: list[float] = []
    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=cfg.steps, desc=f"feature net ({net.kind})", leave=False)
    net.train()
    for _ in range(cfg.steps):
        i = torch.randint(len(x), (min(cfg.batch_size, len(x)),), generator=g)
        loss = net.loss(x[i], None if y is None else y[i])
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
        losses.append(float(loss.detach()))
        if bar is not None:
            bar.update()
    if bar is not None:
        bar.close()
    net.eval()
    tail = losses[-50:]
    return {"final_loss": sum(tail) / len(tail)}


@torch.no_grad()
def _batched(fn: Any, x: Tensor, batch_size: int = 1024) -> Tensor:
    return torch.cat([fn(xb) for xb in x.split(batch_size)]) if len(x) else fn(x)


class Features:
    """A trained (or identity) feature map with its class probabilities when the data is labelled.

    ``features(x)`` -> standardised float64 (n, d); ``probs(x)`` -> (n, num_classes) or None; ``info`` is JSON-able.
    """

    def __init__(self, kind: str, net: FeatureNet | None, mean: Tensor, std: Tensor, classifier: FeatureNet | None,
                 num_classes: int, shape: tuple[int, ...], info: dict[str, Any]):
        self.kind, self.net, self.classifier = kind, net, classifier
        self.mean, self.std = mean.double(), std.double()
        self.num_classes, self.shape, self.info = num_classes, tuple(shape), info

    @property
    def dim(self) -> int:
        return len(self.mean)

    def _check(self, x: Tensor) -> Tensor:
        if tuple(x.shape[1:]) != self.shape:
            raise ValueError(f"samples of shape {tuple(x.shape[1:])} do not match the data's {self.shape}")
        return x.detach().to("cpu", torch.float32)

    def features(self, x: Tensor) -> Tensor:
        x = self._check(x)
        with deterministic_cpu():
            raw = x.flatten(1) if self.net is None else _batched(self.net.raw_features, x)
        return (raw.double() - self.mean) / self.std

    def probs(self, x: Tensor) -> Tensor | None:
        if self.classifier is None:
            return None
        x = self._check(x)
        with deterministic_cpu():
            return _batched(lambda b: torch.softmax(self.classifier.head(self.classifier.raw_features(b)).double(), 1),
                            x)


def feature_dim(shape: tuple[int, ...], cfg: FeatureConfig | None = None) -> int:
    """The feature dimension d for examples of ``shape`` before anything is trained: the data's own size for the
    identity (vectors, by default), else cfg.dim."""
    cfg = cfg or FeatureConfig()
    identity = cfg.kind == "identity" or (cfg.kind == "auto" and len(shape) == 1)
    return math.prod(shape) if identity else cfg.dim


def _resolve(cfg: FeatureConfig, x: Tensor, labelled: bool) -> tuple[str, str | None]:
    """(feature kind, classifier kind or None) for data x and the config."""
    image = x.ndim == 4
    kind = cfg.kind
    if kind == "auto":
        kind = ("classifier" if labelled else "autoencoder") if image else "identity"
    if kind in ("classifier", "autoencoder") and not image:
        raise ValueError(f"a {kind} feature network needs image data (N, C, H, W), got {tuple(x.shape)}")
    if kind == "classifier" and not labelled:
        raise ValueError("a classifier feature network needs labelled data; use the autoencoder or identity")
    clf = None
    if labelled:
        clf = "classifier" if kind == "classifier" else ("classifier" if image else "mlp_classifier")
    return kind, clf


def _load_or_train(kind: Literal["classifier", "autoencoder", "mlp_classifier"], x: Tensor, y: Tensor | None,
                   num_classes: int, cfg: FeatureConfig, cache: Path | None, progress: bool
                   ) -> tuple[FeatureNet, dict[str, Any]]:
    from safetensors.torch import load_file, save_file

    cfg = replace(cfg, kind=kind)  # type: ignore[arg-type]  # the net, not the request: shared by both
    key = cache_key(x, y, cfg)
    meta = {"version": FEATURE_VERSION, "kind": kind, "config": asdict(cfg), "shape": list(x.shape[1:]),
            "num_classes": num_classes, "n_train": len(x), "key": key}
    if cache is not None and (cache / f"{key}.json").is_file() and (cache / f"{key}.safetensors").is_file():
        stored = json.loads((cache / f"{key}.json").read_text())
        if all(stored.get(k) == v for k, v in meta.items()):
            net = FeatureNet(kind, tuple(x.shape[1:]), num_classes, cfg)
            net.load_state_dict(load_file(str(cache / f"{key}.safetensors")))
            return net.eval(), {**stored, "cached": True}
    with deterministic_cpu():
        torch.manual_seed(cfg.seed)
        net = FeatureNet(kind, tuple(x.shape[1:]), num_classes, cfg)
        summary = _train(net, x, y, cfg, progress)
        with torch.no_grad():
            f = _batched(net.raw_features, x).double()
            net.feat_mean.copy_(f.mean(0))
            net.feat_std.copy_(f.std(0).clamp_min(1e-6))  # a dead unit must not divide by zero
            if y is not None:
                summary["train_accuracy"] = float((_batched(lambda b: net.head(net.raw_features(b)), x).argmax(1)
                                                   == y).double().mean())
    meta = {**meta, **summary, "torch": torch.__version__}
    if cache is not None:
        cache.mkdir(parents=True, exist_ok=True)
        tmp = cache / f".{key}.{os.getpid()}.tmp"
        save_file({k: v.contiguous() for k, v in net.state_dict().items()}, str(tmp))
        os.replace(tmp, cache / f"{key}.safetensors")
        (cache / f".{key}.{os.getpid()}.json").write_text(json.dumps(meta, indent=1, sort_keys=True))
        os.replace(cache / f".{key}.{os.getpid()}.json", cache / f"{key}.json")  # the JSON last: marks it complete
    return net, {**meta, "cached": False}


def feature_extractor(x: Tensor, y: Tensor | None = None, num_classes: int = 0, cfg: FeatureConfig | None = None, *,
                      cache_dir: str | Path | None = None, use_cache: bool = True, progress: bool = False) -> Features:
    """The feature map for data x (N, C, H, W) or (N, D) with optional labels y (N,): trained or read from cache."""
    cfg = (cfg or FeatureConfig()).validate()
    x = torch.as_tensor(x).detach().to("cpu", torch.float32).contiguous()
    if x.ndim not in (2, 4) or len(x) < 2:
        raise ValueError(f"feature training data must be (N, C, H, W) or (N, D) with N >= 2, got {tuple(x.shape)}")
    if not torch.isfinite(x).all():
        raise ValueError("feature training data contain NaN or infinite values")
    labelled = y is not None and num_classes > 1
    if labelled:
        y = torch.as_tensor(y).detach().to("cpu", torch.int64).contiguous()
        if y.shape != (len(x),) or int(y.min()) < 0 or int(y.max()) >= num_classes:
            raise ValueError(f"labels must be (N,) = ({len(x)},) integers in [0, {num_classes}), got shape "
                             f"{tuple(y.shape)}")
    else:
        y = None
    kind, clf_kind = _resolve(cfg, x, labelled)
    cache = (Path(cache_dir) if cache_dir is not None else default_cache_dir()) if use_cache else None
    info: dict[str, Any] = {"kind": kind, "cache_dir": None if cache is None else str(cache)}
    classifier = None
    if clf_kind is not None:
        classifier, info["classifier"] = _load_or_train(clf_kind, x, y, num_classes, cfg, cache,
                                                        progress)  # type: ignore[arg-type]
    if kind == "identity":
        flat = x.flatten(1).double()
        net, mean, std = None, flat.mean(0), flat.std(0).clamp_min(1e-6)
    elif kind == "classifier":
        net = classifier
        mean, std = net.feat_mean, net.feat_std  # type: ignore[union-attr]
    else:
        net, info["autoencoder"] = _load_or_train("autoencoder", x, None, 0, cfg, cache, progress)
        mean, std = net.feat_mean, net.feat_std
    info["dim"] = len(mean)
    return Features(kind, net, mean, std, classifier, num_classes if labelled else 0, tuple(x.shape[1:]), info)
