"""The training step's speed-ups change nothing but rounding: fused AdamW against torch's reference (for-loop)
AdamW, and the multi-tensor EMA against one lerp a tensor."""

from __future__ import annotations

import torch

from kuosan.config import apply_overrides, Config
from kuosan.train import EMA
from kuosan.train.step import adamw


def _net() -> torch.nn.Module:
    torch.manual_seed(0)
    return torch.nn.Sequential(torch.nn.Conv2d(1, 8, 3, padding=1), torch.nn.GroupNorm(4, 8), torch.nn.SiLU(),
                               torch.nn.Conv2d(8, 1, 3, padding=1))


def test_fused_adamw_takes_the_reference_adamw_steps():
    cfg = apply_overrides(Config(), {"optim.lr": 1e-2, "optim.weight_decay": 0.1})
    a, b = _net(), _net()
    opt_a = adamw(cfg, a)
    assert opt_a.defaults["fused"], "CPU float weights get the fused kernel"
    opt_b = torch.optim.AdamW(b.parameters(), lr=1e-2, weight_decay=0.1, betas=(0.9, 0.999), foreach=False)
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
