"""The EMA's warm-up and the learning-rate schedule, against their closed forms."""

from __future__ import annotations

import pytest
import torch

from kuosan.config import apply_overrides, Config
from kuosan.train import EMA, lr_at


def test_ema_warmup():
    net = torch.nn.Linear(2, 2)
    ema = EMA(net, decay=0.999)
    w0 = net.weight.detach().clone()
    with torch.no_grad():
        net.weight.add_(1.0)
    ema.update(net, 0)  # warm-up decay min(0.999, 1/10) = 0.1: mostly the new weights
    torch.testing.assert_close(ema.shadow["weight"], w0 + 0.9)
    assert ema.decay_at(0) == pytest.approx(0.1) and ema.decay_at(10**6) == 0.999
    assert EMA(net, decay=0.9, warmup=False).decay_at(0) == 0.9
    target = torch.nn.Linear(2, 2)
    ema.copy_to(target)
    torch.testing.assert_close(target.weight, w0 + 0.9)


def test_ema_copies_integer_buffers_and_keeps_float32_shadows():
    net = torch.nn.BatchNorm1d(3).to(torch.bfloat16)
    ema = EMA(net, decay=0.5, warmup=False)
    assert ema.shadow["weight"].dtype == torch.float32
    net.num_batches_tracked.fill_(7)
    with torch.no_grad():
        net.weight.fill_(3.0)
    ema.update(net, 0)
    assert int(ema.shadow["num_batches_tracked"]) == 7
    torch.testing.assert_close(ema.shadow["weight"], torch.full((3,), 2.0))  # 0.5·1 + 0.5·3


def test_lr_schedule():
    """Linear warm-up to lr over `warmup` steps, then cosine decay to min_lr at `steps`."""
    cfg = apply_overrides(Config(), {"optim.lr": 1.0, "optim.min_lr": 0.1, "optim.warmup": 10, "optim.steps": 110})
    assert lr_at(cfg, 0) == pytest.approx(0.1) and lr_at(cfg, 9) == pytest.approx(1.0)
    assert lr_at(cfg, 60) == pytest.approx(0.55) and lr_at(cfg, 110) == pytest.approx(0.1)
