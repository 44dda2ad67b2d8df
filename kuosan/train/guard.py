"""Catching a diverging run before anything of it is saved: a loss that stays non-finite, a loss far above its
running level for several steps, weights that become non-finite or grow without bound (the RMS of all weights
against that of the seeded initial weights), and, before every checkpoint, the weights, EMA and optimizer
moments themselves (finite, |w| <= ABSURD). Every verdict names the problem; the loop adds where the last good
checkpoint is and what to change."""

from __future__ import annotations

import math
from typing import Any, Mapping

import torch
from torch import Tensor, nn

from ..checkpoint import ABSURD, first_bad
from ..config import Config


class TrainingError(RuntimeError):
    """Training cannot go on (the loss stays non-finite, the run diverged); nothing of the diverged state is
    saved and the message names the checkpoint actually kept (or says there is none)."""


NAN_PATIENCE = 10  # non-finite losses in a row (each step's update is skipped) before giving up
LOSS_FACTOR = 100.0  # "far above": more than this times the running level ...
LOSS_PATIENCE = 5  # ... for this many steps in a row ...
LOSS_HISTORY = 20  # ... once the level has seen this many steps
LEVEL_DECAY = 0.9  # the running level: an EMA of the loss over ~10 steps (outliers excluded)
GROWTH = 100.0  # weights' RMS beyond this times the initial RMS: growing without bound


def weight_rms(params: list[Tensor]) -> float:
    """sqrt(mean of w²) over all the parameters (nan/inf when any weight is)."""
    if not params:
        return 0.0
    total_norm = getattr(torch.nn.utils, "get_total_norm", None)  # torch >= 2.6: one multi-tensor kernel
    if total_norm is not None:  # (2 launches a step on a GPU instead of 2 a parameter tensor)
        norm = float(total_norm([p.detach() for p in params], 2.0))
    else:
        norm = math.sqrt(torch.stack([torch.linalg.vector_norm(p.detach().float()) ** 2 for p in params]).sum().item())
    return norm / math.sqrt(max(1, sum(p.numel() for p in params)))


def advice(cfg: Config) -> str:
    o = cfg.optim
    return (f"lower optim.lr (now {o.lr:g}), lengthen optim.warmup (now {o.warmup}) or clip gradients "
            f"(optim.grad_clip, now {o.grad_clip:g})")


class Guard:
    """Watches one run's steps; ``after_step`` and ``unsaveable`` return a problem (one phrase) or None."""

    def __init__(self, net: nn.Module):
        self.params = [p for p in net.parameters()]
        self.rms0 = max(weight_rms(self.params), 1e-3)  # the seeded initial weights (before any checkpoint loads)
        self.level: float | None = None
        self.seen = self.high = self.bad = 0

    def after_step(self, ok: bool, loss: float) -> str | None:
        """Judge a step: ok False = non-finite loss or gradient (its update was skipped)."""
        if not ok:
            self.bad += 1
            return f"the loss was non-finite for {self.bad} steps in a row" if self.bad >= NAN_PATIENCE else None
        self.bad = 0
        if self.level is not None and self.level > 0 and self.seen >= LOSS_HISTORY and loss > LOSS_FACTOR * self.level:
            self.high += 1
            if self.high >= LOSS_PATIENCE:
                return (f"the loss ({loss:.3g}) stayed over {LOSS_FACTOR:g}x its running level ({self.level:.3g}) "
                        f"for {self.high} steps")
        else:
            self.high = 0
            self.level = loss if self.level is None else LEVEL_DECAY * self.level + (1 - LEVEL_DECAY) * loss
            self.seen += 1
        return self._weights()

    def _weights(self) -> str | None:
        rms = weight_rms(self.params)
        if not math.isfinite(rms):
            return "an update made the weights non-finite"
        if rms > GROWTH * self.rms0:
            return f"the weights grew to {rms / self.rms0:.0f}x their initial size (RMS {rms:.3g})"
        return None

    def unsaveable(self, model: Mapping[str, Tensor], ema: Mapping[str, Tensor] | None,
                   opt_state: dict[str, Any] | None) -> str | None:
        """Why this state must not become a checkpoint, or None."""
        bad = first_bad(model, ABSURD)
        if bad is not None:
            return f"the weights are not usable ({bad})"
        if ema is not None and (bad := first_bad(ema, ABSURD)) is not None:
            return f"the EMA weights are not usable ({bad})"
        if opt_state is not None:
            moments = {f"{pid}.{k}": v for pid, st in opt_state["state"].items() for k, v in st.items()
                       if isinstance(v, Tensor)}
            if (bad := first_bad(moments, math.inf)) is not None:
                return f"the optimizer state is not finite ({bad})"
        return self._weights()
