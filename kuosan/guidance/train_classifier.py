"""Training the noisy classifier p(y | x_t, t) of classifier guidance (Dhariwal & Nichol 2021 §4.1) on a run's data
and path: x_t = α(t) x_0 + σ(t) ε with t drawn by the run's own time sampler, cross-entropy on the labels.

Deterministic: the weights are seeded, and step i's indices, times and noise come from a generator seeded by
(seed, i). Its accuracy is reported on the held-out split at fixed fractions of t_max: it falls with the noise,
towards the largest class share at t_max (where x_t says nothing about x_0).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any

import torch
from torch import Tensor, nn

from ..nets.classifier import ClassifierConfig, ClassifierNet
from ..objectives.timesteps import TimeSampler, make_time_sampler
from ..paths import Path, f64
from .classifier import NoisyClassifier

NOISE_FRACTIONS = (0.05, 0.25, 0.5, 0.75, 0.95)  # t/t_max at which the held-out accuracy is reported


@dataclass(frozen=True)
class ClassifierTraining:
    steps: int = 2000
    batch_size: int = 128
    lr: float = 2e-3
    min_lr: float = 1e-4
    weight_decay: float = 1e-4
    seed: int = 0

    def validate(self) -> "ClassifierTraining":
        for name in ("steps", "batch_size"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int) or v < 1:
                raise ValueError(f"classifier training {name} must be a positive integer, got {v!r}")
        if not (0 < self.lr <= 1 and 0 <= self.min_lr <= self.lr and self.weight_decay >= 0):
            raise ValueError(f"classifier training needs 0 < lr <= 1, 0 <= min_lr <= lr, weight_decay >= 0; got "
                             f"lr={self.lr}, min_lr={self.min_lr}, weight_decay={self.weight_decay}")
        return self


def classifier_times(kind: str, path: Path, **kw: Any) -> TimeSampler:
    """The run's time sampler; 'importance' (which adapts to the diffusion loss) becomes its uniform start."""
    return make_time_sampler("uniform_discrete" if kind == "importance" else kind, path,
                             **({} if kind == "importance" else kw))


def noised(path: Path, x0: Tensor, t: Tensor, eps: Tensor) -> Tensor:
    """x_t = α(t) x_0 + σ(t) ε (B, *D)."""
    shape = (-1,) + (1,) * (x0.ndim - 1)
    return path.alpha(t).to(x0).reshape(shape) * x0 + path.sigma(t).to(x0).reshape(shape) * eps


def train_classifier(x: Tensor, y: Tensor, num_classes: int, path: Path, times: TimeSampler,
                     net_cfg: ClassifierConfig | None = None, train: ClassifierTraining | None = None, *,
                     device: str | torch.device = "cpu", progress: bool = False) -> tuple[NoisyClassifier, dict]:
    """A NoisyClassifier trained on (x (N, *D), y (N,)) noised along ``path`` at times from ``times``.

    Returns it in eval mode and a summary (final loss: mean of the last 50 steps)."""
    train = (train or ClassifierTraining()).validate()
    net_cfg = (net_cfg or ClassifierConfig(tuple(x.shape[1:]), num_classes)).validate()
    if tuple(net_cfg.shape) != tuple(x.shape[1:]) or net_cfg.num_classes != num_classes:
        raise ValueError(f"the classifier is built for {net_cfg.shape} with {net_cfg.num_classes} classes, the data "
                         f"has {tuple(x.shape[1:])} with {num_classes}")
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(train.seed)
        net = ClassifierNet(net_cfg)
    clf = NoisyClassifier(net, path, num_classes).to(device)
    opt = torch.optim.AdamW(net.parameters(), lr=train.lr, weight_decay=train.weight_decay)
    x, y = x.to(device), y.to(device)
    losses: list[float] = []
    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=train.steps, desc="classifier", unit="step", leave=False)
    clf.train()
    for step in range(train.steps):
        g = torch.Generator().manual_seed(train.seed * 1_000_003 + step)
        idx = torch.randint(len(x), (train.batch_size,), generator=g).to(device)
        t, _ = times.sample(train.batch_size, g)
        eps = torch.randn((train.batch_size, *x.shape[1:]), generator=g).to(device, x.dtype)
        t = t.to(device)
        loss = nn.functional.cross_entropy(clf.logits(noised(path, x[idx], t, eps), t), y[idx])
        for group in opt.param_groups:  # cosine decay from lr to min_lr
            group["lr"] = train.min_lr + 0.5 * (train.lr - train.min_lr) * (1 + math.cos(math.pi * step / train.steps))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        nn.utils.clip_grad_norm_(net.parameters(), 1.0)
        opt.step()
        losses.append(float(loss.detach()))
        if bar is not None:
            bar.update()
    if bar is not None:
        bar.close()
    clf.eval()
    tail = losses[-50:]
    return clf, {"final_loss": sum(tail) / len(tail), "training": asdict(train), "net": net_cfg.to_dict(),
                 "time_sampling": times.kind}


@torch.no_grad()
def accuracy_by_noise(clf: NoisyClassifier, x: Tensor, y: Tensor, fractions: tuple[float, ...] = NOISE_FRACTIONS,
                      seed: int = 0, batch_size: int = 1024) -> list[dict[str, float]]:
    """Held-out accuracy at t = fraction·t_max (whole steps on a discrete chain), one noise draw per example."""
    path = clf.path
    device = next(clf.parameters()).device
    out = []
    for f in fractions:
        t = f * path.t_max
        t = float(max(1, round(t))) if getattr(path, "T", None) is not None else t
        g = torch.Generator().manual_seed(seed + 17)
        eps = torch.randn(x.shape, generator=g)
        hits = 0
        for xb, eb, yb in zip(x.split(batch_size), eps.split(batch_size), y.split(batch_size)):
            tt = f64(t).expand(len(xb)).to(device)
            xt = noised(path, xb.to(device), tt, eb.to(device, xb.dtype))
            hits += int((clf.logits(xt, tt).argmax(1).cpu() == yb).sum())
        out.append({"t": t, "log_snr": float(path.log_snr(f64(t))), "accuracy": hits / max(1, len(x))})
    return out
