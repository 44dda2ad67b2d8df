"""The U-Net's parts against hand computations: multi-head attention (both memory layouts, fp32 and bf16), the
sinusoidal embedding, GroupNorm's group count, and the whole net's shapes, starting point and conditioning."""

from __future__ import annotations

import math

import pytest
import torch

from kuosan.nets.unet import Attention, UNet, UNetConfig, norm_groups, timestep_embedding


def reference_attention(att: Attention, x: torch.Tensor) -> torch.Tensor:
    """x + out(softmax(QKᵀ/√d) V) per head, written out in float64 from the module's own weights."""
    att = att.double()
    B, C, H, W = x.shape
    n, d = att.heads, C // att.heads
    qkv = att.qkv(att.norm(x.double())).reshape(B, 3, n, d, H * W)  # channel order: (q|k|v, head, dim)
    q, k, v = (qkv[:, i].transpose(-1, -2) for i in range(3))  # (B, n, HW, d)
    a = torch.softmax(q @ k.transpose(-1, -2) / math.sqrt(d), dim=-1)
    h = (a @ v).transpose(-1, -2).reshape(B, C, H, W)
    return x.double() + att.out(h)


@pytest.mark.parametrize("side", [4, 7])
def test_attention_is_multi_head_softmax_attention(side: int) -> None:
    torch.manual_seed(0)
    att = Attention(64, head_dim=32)
    with torch.no_grad():  # the output projection starts at zero: give it weights so the attention shows
        att.out.weight.normal_(0, 0.2)
    x = torch.randn(3, 64, side, side)
    ref = reference_attention(att, x)
    got = Attention.forward(att.float(), x)  # fp32: the contiguous (flash) layout
    assert torch.allclose(got.double(), ref, atol=1e-5)
    assert (got - x).abs().mean() > 0.05  # the attention term is not negligible: the check has teeth
    with torch.autocast("cpu", dtype=torch.bfloat16):  # bf16 on the CPU: the strided (math) layout
        got_bf16 = att(x)
    assert torch.allclose(got_bf16.double(), ref, atol=0.05)


def test_timestep_embedding_closed_form() -> None:
    t = torch.tensor([0.0, 1.0, 500.0])
    e = timestep_embedding(t, 7)  # odd dim: one zero column of padding
    assert e.shape == (3, 7) and torch.all(e[:, -1] == 0)
    freqs = torch.exp(-math.log(10000.0) * torch.arange(3) / 3)
    assert torch.allclose(e[:, :3], torch.cos(t[:, None] * freqs))
    assert torch.allclose(e[:, 3:6], torch.sin(t[:, None] * freqs))


@pytest.mark.parametrize(("c", "groups"), [(128, 32), (64, 16), (32, 8), (24, 4), (8, 2), (6, 1), (3, 1)])
def test_norm_groups(c: int, groups: int) -> None:
    """Up to 32 groups, dividing c, with >= 4 channels a group where c allows."""
    assert norm_groups(c) == groups
    assert c % groups == 0


def test_unet_shapes_start_and_conditioning() -> None:
    """28x28 (odd sizes on the way down), attention at 7x7, a learned-variance head; it starts at zero output
    (zero-initialised last conv) and, once moved, depends on t and on the class, the null class included."""
    cfg = UNetConfig(channels=16, channel_mult=(1, 2, 2), num_res_blocks=1, attn_resolutions=(7,), num_classes=10,
                     out_channels=2, image_size=28, dropout=0.0)
    torch.manual_seed(0)
    net = UNet(cfg).eval()
    x, t = torch.randn(2, 1, 28, 28), torch.tensor([10.0, 900.0])
    assert torch.equal(net(x, t), torch.zeros(2, 2, 28, 28))
    assert sum(isinstance(m, Attention) for m in net.modules()) == 1 + 1 + 2  # down, mid, up at 7x7
    with torch.no_grad():
        for p in net.parameters():
            p.add_(0.1 * torch.randn_like(p))
        y = torch.tensor([3, 3])
        out = net(x, t, y)
        assert out.shape == (2, 2, 28, 28)
        assert not torch.allclose(out, net(x, t.flip(0), y), atol=1e-4)
        assert not torch.allclose(out, net(x, t, torch.tensor([4, 4])), atol=1e-4)
        assert torch.equal(net(x, t), net(x, t, torch.tensor([10, 10])))  # no label: the null class
