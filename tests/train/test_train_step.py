"""The training step's speed-ups change nothing but rounding: fused AdamW against torch's reference (for-loop)
AdamW, and the multi-tensor EMA against one lerp a tensor; the step itself reports the loss and the unclipped gradient
norm, and skips the update when either is non-finite (checked once, after the backward)."""

from __future__ import annotations

import math

import pytest
import torch

from kuosan.config import apply_overrides, Config
from kuosan.train import EMA
from kuosan.train.step import adamw


def _net() -> torch.nn.Module:
    torch.manual_seed(0)
    return torch.nn.Sequential(torch.nn.Conv2d(1, 8, 3, padding=1), torch.nn.GroupNorm(4, 8), torch.nn.SiLU(),
                               torch.nn.Conv2d(8, 1, 3, padding=1))


@pytest.mark.parametrize("betas", [None, (0.8, 0.999)])
def test_fused_adamw_takes_the_reference_adamw_steps(betas):
    """The default betas and optim.betas reach the fused update: it takes the steps of torch's reference AdamW
    built with the same betas."""
    over = {"optim.lr": 1e-2, "optim.weight_decay": 0.1, **({"optim.betas": betas} if betas else {})}
    cfg = apply_overrides(Config(), over)
    a, b = _net(), _net()
    opt_a = adamw(cfg, a)
    assert opt_a.defaults["fused"], "CPU float weights get the fused kernel"
    opt_b = torch.optim.AdamW(b.parameters(), lr=1e-2, weight_decay=0.1, betas=betas or (0.9, 0.95), foreach=False)
    x = torch.randn(16, 1, 8, 8, generator=torch.Generator().manual_seed(1))
    for _ in range(20):
        for net, opt in ((a, opt_a), (b, opt_b)):
            net(x).square().mean().backward()
            opt.step()
            opt.zero_grad(set_to_none=True)
    moved = max((p - q).abs().max().item() for p, q in zip(_net().parameters(), b.parameters()))
    assert moved > 0.1  # 20 steps of lr 1e-2 move the weights: the comparison is not of initial weights
    for p, q in zip(a.parameters(), b.parameters()):
        torch.testing.assert_close(p, q, rtol=1e-5, atol=1e-6)


def test_multi_tensor_ema_equals_one_lerp_a_tensor():
    net = _net()
    ema = EMA(net, decay=0.9)
    ref = {k: v.detach().clone().float() for k, v in net.state_dict().items()}
    for n in range(5):
        with torch.no_grad():
            for p in net.parameters():
                p.add_(torch.randn_like(p))
        ema.update(net, n)
        d = ema.decay_at(n)
        for k, v in net.state_dict().items():
            ref[k].lerp_(v.float(), 1 - d)
    for k in ref:
        torch.testing.assert_close(ema.shadow[k], ref[k], rtol=0, atol=1e-7)


class _Objective:
    """A stand-in objective: per-sample MSE of the network's output to ε, times ``scale`` (inf/nan make it non-finite);
    ``sqrt_grad`` adds sqrt(|f - f.detach()|), finite (0) in value with a non-finite gradient."""

    times = object()  # no importance sampler to update

    def __init__(self, scale: float = 1.0, sqrt_grad: bool = False):
        self.scale, self.sqrt_grad = scale, sqrt_grad

    def __call__(self, fn, x0, t, eps, cond=None):
        from types import SimpleNamespace

        out = fn(x0)
        total = (out - eps).square().flatten(1).mean(1) * self.scale
        if self.sqrt_grad:
            total = total + (out - out.detach()).abs().sqrt().flatten(1).mean(1)
        return SimpleNamespace(total=total, vlb=None)


def _step(obj: _Objective):
    from kuosan.train.step import Batch, train_step

    cfg = apply_overrides(Config(), {"optim.lr": 1e-2, "optim.grad_clip": 0.5})
    net = _net()
    opt = adamw(cfg, net)
    g = torch.Generator().manual_seed(2)
    x0, eps = torch.randn(8, 1, 8, 8, generator=g), torch.randn(8, 1, 8, 8, generator=g)
    before = [p.detach().clone() for p in net.parameters()]
    res = train_step(cfg, net, net, obj, Batch(x0, torch.rand(8), eps, None, None, torch.rand(8)), opt, 50, 1, False)
    return res, net, before, (x0, eps)


def test_a_finite_step_reports_the_loss_and_the_norm_before_clipping():
    res, net, before, (x0, eps) = _step(_Objective())
    ref = _net()
    loss = (ref(x0) - eps).square().flatten(1).mean(1).mean()
    loss.backward()
    norm = torch.linalg.vector_norm(torch.stack([torch.linalg.vector_norm(p.grad) for p in ref.parameters()]))
    assert res.ok and not res.stop
    assert res.loss == pytest.approx(loss.item(), rel=1e-6) and res.grad_norm == pytest.approx(norm.item(), rel=1e-5)
    assert res.grad_norm > 0.5  # the clip was active
    assert all(not torch.equal(p, q) for p, q in zip(net.parameters(), before))
    assert all(p.grad is None for p in net.parameters())


@pytest.mark.parametrize("obj", [_Objective(float("inf")), _Objective(float("nan")), _Objective(sqrt_grad=True)],
                         ids=["inf-loss", "nan-loss", "finite-loss-nan-gradient"])
def test_a_non_finite_loss_or_gradient_skips_the_update(obj):
    res, net, before, _ = _step(obj)
    assert not res.ok
    assert not (math.isfinite(res.loss) and math.isfinite(res.grad_norm))
    assert all(torch.equal(p, q) for p, q in zip(net.parameters(), before))  # no update, and no moment either
    assert all(p.grad is None for p in net.parameters())
