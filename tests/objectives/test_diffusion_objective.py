"""The diffusion objective: what it draws and in which order, its terms, the hybrid loss, distances, bad input."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from kuosan.objectives import LOSS_TYPES, LossTerms, make_objective
from kuosan.parameterisation import make_parameterisation
from kuosan.paths import VE, Linear, PathError, VPCosine, discrete_vp


def gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


class Recorder:
    """A network that records the (x_t, t) it was given and returns a fixed linear map of x_t."""

    def __init__(self, out_channels: int = 3):
        self.calls: list[tuple[torch.Tensor, torch.Tensor, dict]] = []
        self.W = torch.randn(3, out_channels, generator=gen(0))

    def __call__(self, x_t, t, **cond):
        self.calls.append((x_t, t, cond))
        return x_t @ self.W.to(x_t.dtype)


def test_draws_t_then_eps_from_the_generator_and_passes_float64_times():
    """Ho et al. Algorithm 1 with the first half's draw order: t ~ U{1..T}, then ε; x_t = α x_0 + σ ε."""
    path = discrete_vp("linear", 100)
    obj = make_objective(path, "eps")
    x0 = torch.randn(8, 3, generator=gen(1))
    net = Recorder()
    r = obj(net, x0, generator=gen(2), cond={"y": torch.arange(8)})
    g = gen(2)
    t = torch.randint(1, 101, (8,), generator=g)
    eps = torch.randn(8, 3, generator=g)
    x_t, t_net, cond = net.calls[0]
    assert isinstance(r, LossTerms) and r.vlb is None and r.weight is None
    assert r.t.dtype == torch.float64 and t_net.dtype == torch.float64 and torch.equal(r.t, t.double())
    assert torch.equal(cond["y"], torch.arange(8))
    a, s = path.alpha(t).float()[:, None], path.sigma(t).float()[:, None]
    torch.testing.assert_close(x_t, a * x0 + s * eps, rtol=0, atol=0)
    assert torch.equal(r.total, ((x_t @ net.W - eps) ** 2).mean(1))


@pytest.mark.parametrize("path,pred", [(VE(), "edm"), (Linear(), "velocity"), (VPCosine(), "v")], ids=["ve", "flow",
                                                                                                    "vp_cosine"])
def test_continuous_paths_draw_their_own_times_and_never_need_T(path, pred):
    obj = make_objective(path, pred)
    x0 = torch.randn(256, 3, generator=gen(3))
    r = obj(Recorder(), x0, generator=gen(4))
    assert r.t.dtype == torch.float64 and float(r.t.min()) > 0 and float(r.t.max()) <= path.t_max
    assert len(set(r.t.tolist())) == 256  # continuous times, not a grid
    assert bool(torch.isfinite(r.total).all()) and r.total.shape == (256,)


def test_explicit_t_and_eps_are_used_as_given_and_scalar_t_broadcasts():
    path = discrete_vp("cosine", 50)
    obj = make_objective(path, "x0", weighting="min_snr")
    x0, eps = torch.randn(4, 3, generator=gen(5)), torch.randn(4, 3, generator=gen(6))
    a = obj(Recorder(), x0, t=torch.full((4,), 7, dtype=torch.long), eps=eps)
    b = obj(Recorder(), x0, t=7.0, eps=eps)
    assert torch.equal(a.total, b.total) and torch.equal(a.t, torch.full((4,), 7.0, dtype=torch.float64))


@pytest.mark.parametrize("loss", LOSS_TYPES)
def test_distances(loss):
    path = discrete_vp("linear", 100)
    x0, eps = torch.randn(6, 2, 3, generator=gen(7)), torch.randn(6, 2, 3, generator=gen(8))
    out = torch.randn(6, 2, 3, generator=gen(9))
    r = make_objective(path, "eps", loss=loss)(lambda x, t: out, x0, t=torch.arange(1, 7), eps=eps)
    d = {"l2": (out - eps) ** 2, "l1": (out - eps).abs(),
         "huber": F.huber_loss(out, eps, reduction="none", delta=1.0)}[loss]
    assert torch.equal(r.total, d.flatten(1).mean(1))


def test_weighting_multiplies_the_networks_own_distance():
    """w(λ)·k(t)·distance for l1 too (the first half's convention)."""
    path = discrete_vp("linear", 100)
    x0, eps = torch.randn(6, 3, generator=gen(10)), torch.randn(6, 3, generator=gen(11))
    t = torch.arange(1, 7).double() * 10
    out = torch.randn(6, 3, generator=gen(12))
    obj = make_objective(path, "v", weighting="min_snr", loss="l1")
    plain = make_objective(path, "v", loss="l1")(lambda x, t: out, x0, t=t, eps=eps).total
    got = obj(lambda x, t: out, x0, t=t, eps=eps).total
    torch.testing.assert_close(got, plain * obj.loss_factor(t).float())
    snr = path.log_snr(t).exp()
    torch.testing.assert_close(obj.loss_factor(t), snr.clamp(max=5.0) / (snr + 1), rtol=1e-12, atol=0)


def test_bfloat16_output_is_scored_in_float32_and_float64_stays_float64():
    path = discrete_vp("linear", 100)
    x0 = torch.randn(4, 3, generator=gen(13))
    r = make_objective(path, "eps")(lambda x, t: x.bfloat16(), x0, generator=gen(14))
    assert r.total.dtype == torch.float32
    r = make_objective(path, "eps", weighting="vlb")(lambda x, t: x, x0.double(), generator=gen(14))
    assert r.total.dtype == torch.float64


# ------------------------------------------------------------------ improved DDPM's hybrid loss
def test_hybrid_loss_adds_lambda_times_the_vlb_term_which_trains_the_variance_only():
    from kuosan.likelihood.variances import hybrid_vlb_term

    path = discrete_vp("cosine", 20)
    obj = make_objective(path, "eps", hybrid_lambda=0.001, bits=8)
    x0 = (torch.randint(0, 256, (16, 3), generator=gen(15)).float() / 127.5 - 1)
    eps = torch.randn(16, 3, generator=gen(16))
    t = torch.arange(1, 17)
    out = torch.randn(16, 6, generator=gen(17), requires_grad=True)
    r = obj(lambda x, tt: out, x0, t=t, eps=eps)
    x_t = path.alpha(t).float()[:, None] * x0 + path.sigma(t).float()[:, None] * eps
    x0_hat = make_parameterisation("eps").to_x0(out[:, :3], x_t, path, t.double())
    want_vlb = hybrid_vlb_term(path, x0, x_t, t.double(), x0_hat, out[:, 3:], bits=8)
    simple = ((out[:, :3] - eps) ** 2).mean(1)
    torch.testing.assert_close(r.vlb, want_vlb.detach())
    torch.testing.assert_close(r.total, simple + 0.001 * want_vlb)
    assert not r.vlb.requires_grad and r.total.requires_grad
    r.total.sum().backward()
    g_simple = torch.autograd.grad(simple.sum(), out)[0]
    torch.testing.assert_close(out.grad[:, :3], g_simple[:, :3])  # the mean is stopped inside L_vlb
    assert float(out.grad[:, 3:].abs().sum()) > 0  # the variance channels learn from L_vlb


def test_hybrid_loss_refusals():
    path = discrete_vp("linear", 20)
    with pytest.raises(ValueError, match="learned variance"):
        make_objective(path, "eps", hybrid_lambda=0.001)(lambda x, t: x, torch.randn(4, 3), generator=gen(0))
    with pytest.raises(PathError, match="discrete VP chain"):
        make_objective(VPCosine(t_max=0.99), "eps", hybrid_lambda=0.001)
    with pytest.raises(ValueError, match="integer times"):
        make_objective(path, "eps", hybrid_lambda=0.001, time_sampling="uniform")
    with pytest.raises(ValueError, match="hybrid_lambda"):
        make_objective(path, "eps", hybrid_lambda=-1.0)
    with pytest.raises(ValueError, match="bits"):
        make_objective(path, "eps", hybrid_lambda=0.001, bits=0)


def test_bad_input_is_refused_with_one_line():
    path = discrete_vp("linear", 20)
    with pytest.raises(ValueError, match="unknown loss type 'l3'"):
        make_objective(path, "eps", loss="l3")
    with pytest.raises(ValueError, match="unknown prediction 'score'"):
        make_objective(path, "score")
    with pytest.raises(PathError, match="zero SNR"):
        make_objective(Linear(), "eps")
    with pytest.raises(PathError, match="zero SNR"):
        make_objective(discrete_vp("linear", 20, zero_terminal_snr=True), "eps")


def test_zero_terminal_snr_chain_with_v_prediction_scores_t_equal_T():
    """At t = T (α = 0, σ = 1) x_t is pure noise, v = -x_0 is the target, and every weighting stays finite."""
    path = discrete_vp("linear", 20, zero_terminal_snr=True)
    x0, eps = torch.randn(5, 3, generator=gen(18)), torch.randn(5, 3, generator=gen(19))
    t = torch.full((5,), 20.0, dtype=torch.float64)
    net = Recorder()
    for w in ("none", "vlb", "min_snr", "edm", "flow", "sigmoid"):
        r = make_objective(path, "v", weighting=w)(net, x0, t=t, eps=eps)
        assert bool(torch.isfinite(r.total).all()), w
    torch.testing.assert_close(net.calls[0][0], eps)
    torch.testing.assert_close(make_parameterisation("v").target(x0, eps, path, t), -x0)
