"""Adapters: a diffusers UNet2DModel sampled by diffusers' own DDIMScheduler and by kuosan's ``ddim`` on the same
network, alphas_cumprod and x_T agree to float32 round-off; a k-diffusion-style σ-denoiser reproduces the exact
denoiser on VE, VP and flow paths."""

from __future__ import annotations

import pytest
import torch

from kuosan.adapters import from_diffusers_unet, from_k_diffusion, path_from_diffusers
from kuosan.exact import ExactDenoiser, GaussianMixture, ring
from kuosan.paths import VE, Linear, PathError, VPCosine, VPLinear, discrete_vp, f64
from kuosan.sampling import ddim

diffusers = pytest.importorskip("diffusers")

F64 = torch.float64


def tiny_unet(channels: int = 3, out_channels: int | None = None, num_class_embeds: int | None = None, seed: int = 0):
    torch.manual_seed(seed)
    return diffusers.UNet2DModel(sample_size=8, in_channels=channels, out_channels=out_channels or channels,
                                 layers_per_block=1, block_out_channels=(8, 16), norm_num_groups=4,
                                 down_block_types=("DownBlock2D", "DownBlock2D"),
                                 up_block_types=("UpBlock2D", "UpBlock2D"), num_class_embeds=num_class_embeds).eval()


def diffusers_ddim(unet, scheduler, x_T: torch.Tensor, steps: int) -> tuple[torch.Tensor, list[float]]:
    """diffusers' own loop (as in DDIMPipeline, η = 0) and the grid it walks, in kuosan's paper indexing."""
    scheduler.set_timesteps(steps)
    x, grid = x_T.clone(), []
    T = scheduler.config.num_train_timesteps
    with torch.no_grad():
        for tau in scheduler.timesteps:
            x = scheduler.step(unet(x, tau).sample, tau, x, eta=0.0).prev_sample
            grid.append(float(tau) + 1)  # diffusers' timestep τ is kuosan's t = τ + 1
    prev = int(scheduler.timesteps[-1]) - T // steps
    grid.append(float(prev + 1) if prev >= 0 else 0.0)  # the last step goes to ᾱ = 1, t = 0 (set_alpha_to_one)
    return x, grid


@pytest.mark.parametrize("prediction,beta_schedule,spacing,zero_snr", [
    ("eps", "linear", "trailing", False),
    ("eps", "scaled_linear", "leading", False),
    ("v", "linear", "leading", False),
    ("v", "scaled_linear", "trailing", True),  # Lin et al. 2024: zero terminal SNR needs v, trailing starts at T
])
def test_diffusers_ddim_equals_kuosan_ddim_on_the_same_unet(prediction, beta_schedule, spacing, zero_snr):
    sched = diffusers.DDIMScheduler(num_train_timesteps=1000, beta_schedule=beta_schedule, clip_sample=False,
                                    set_alpha_to_one=True, timestep_spacing=spacing, rescale_betas_zero_snr=zero_snr,
                                    prediction_type={"eps": "epsilon", "v": "v_prediction"}[prediction])
    unet = tiny_unet()
    x_T = torch.randn(4, 3, 8, 8, generator=torch.Generator().manual_seed(1))
    want, grid = diffusers_ddim(unet, sched, x_T, 10)
    path = path_from_diffusers(sched)
    assert path.zero_terminal_snr == zero_snr and path.T == 1000
    D = from_diffusers_unet(unet, path, prediction)
    with torch.no_grad():
        got = ddim(D, x_T.clone(), torch.tensor(grid, dtype=F64))
    assert grid[-1] == 0 and (grid[0] == 1000) == (spacing == "trailing")
    scale = float(want.abs().max())
    assert scale > 0.1 and bool(torch.isfinite(want).all())
    torch.testing.assert_close(got, want, rtol=0, atol=4e-6 * scale)  # float32 round-off (measured: 3-5e-7)


def test_the_timestep_index_is_t_minus_one_and_not_t():
    """The network sees τ = t - 1: calling it with τ = t would change x̂_0 by far more than round-off."""
    sched = diffusers.DDIMScheduler(num_train_timesteps=1000, beta_schedule="linear", clip_sample=False)
    unet = tiny_unet(seed=2)
    path = path_from_diffusers(sched)
    D = from_diffusers_unet(unet, path, "eps")
    x = torch.randn(2, 3, 8, 8, generator=torch.Generator().manual_seed(3))
    t = torch.tensor([500.0, 500.0], dtype=F64)
    with torch.no_grad():
        got = D(x, t)
        eps = unet(x, 499).sample
        eps_wrong = unet(x, 500).sample
    ab = sched.alphas_cumprod[499]
    torch.testing.assert_close(got, (x - (1 - ab).sqrt() * eps) / ab.sqrt(), rtol=1e-5, atol=1e-5)
    assert float((eps - eps_wrong).abs().max()) > 1e-4


def test_path_from_diffusers_has_the_schedulers_alphas_cumprod():
    for kw in ({"beta_schedule": "linear"}, {"beta_schedule": "scaled_linear"},
               {"beta_schedule": "squaredcos_cap_v2"}, {"beta_schedule": "linear", "rescale_betas_zero_snr": True}):
        sched = diffusers.DDIMScheduler(num_train_timesteps=1000, **kw)
        path = path_from_diffusers(sched)
        t = torch.arange(1, 1001, dtype=F64)
        torch.testing.assert_close(path.alpha_bar(t), sched.alphas_cumprod.double(), rtol=1e-12, atol=1e-15)
    # and diffusers' linear table is kuosan's to float32 precision (Ho et al.'s 1e-4 .. 0.02)
    lin = path_from_diffusers(diffusers.DDIMScheduler(num_train_timesteps=1000, beta_schedule="linear"))
    torch.testing.assert_close(lin.alpha_bar(t), discrete_vp("linear", 1000).alpha_bar(t), rtol=2e-5, atol=0)


def test_class_labels_and_learned_variance_reach_the_unet():
    sched = diffusers.DDPMScheduler(num_train_timesteps=100, beta_schedule="linear", variance_type="learned_range")
    unet = tiny_unet(out_channels=6, num_class_embeds=5, seed=4)
    path = path_from_diffusers(sched)
    D = from_diffusers_unet(unet, path, "eps")
    assert D.learns_variance
    x = torch.randn(3, 3, 8, 8, generator=torch.Generator().manual_seed(5))
    t = torch.tensor([10.0, 50.0, 100.0], dtype=F64)
    y = torch.tensor([0, 3, 4])
    with torch.no_grad():
        x0, v = D.with_variance(x, t, y=y)
        out = unet(x, torch.tensor([9, 49, 99]), class_labels=y).sample
        other = D(x, t, y=torch.tensor([1, 1, 1]))
    ab = sched.alphas_cumprod[[9, 49, 99]].view(3, 1, 1, 1)
    torch.testing.assert_close(x0, (x - (1 - ab).sqrt() * out[:, :3]) / ab.sqrt(), rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(v, out[:, 3:])
    assert float((other - x0).abs().max()) > 1e-5  # the label changes the output


def test_diffusers_adapter_refusals():
    sched = diffusers.DDIMScheduler(num_train_timesteps=100, rescale_betas_zero_snr=True)
    with pytest.raises(PathError, match="discrete VP chain"):
        from_diffusers_unet(tiny_unet(), VPCosine(), "eps")
    with pytest.raises(ValueError, match="'eps' or 'v'"):
        from_diffusers_unet(tiny_unet(), path_from_diffusers(sched), "sample")
    with pytest.raises(PathError, match="ε-prediction cannot recover x_0"):
        from_diffusers_unet(tiny_unet(), path_from_diffusers(sched), "eps")


# ------------------------------------------------------------------ k-diffusion-style σ-denoisers
def k_model(mix: GaussianMixture):
    """kuosan's exact denoiser on the VE path, wrapped as k-diffusion's model(x, sigma) -> denoised."""
    D_ve = ExactDenoiser(mix, VE(sigma_max=1e4))

    def model(x, sigma, **extra):
        assert sigma.shape == (x.shape[0],) and not extra
        return D_ve(x, sigma)

    return model


@pytest.mark.parametrize("path", [VE(sigma_max=80.0), VPLinear(), discrete_vp("cosine", 1000), Linear()],
                         ids=["ve", "vp_linear", "discrete", "flow"])
def test_k_diffusion_adapter_reproduces_the_exact_denoiser(path):
    mix = ring()
    D = from_k_diffusion(k_model(mix), path)
    exact = ExactDenoiser(mix, path)
    g = torch.Generator().manual_seed(6)
    t = path.t_max * torch.tensor([1e-3, 0.05, 0.3, 0.6, 0.9, 0.999], dtype=F64)
    x0 = mix.sample(6, g)
    x_t = path.alpha(t)[:, None] * x0 + path.sigma(t)[:, None] * torch.randn(6, 2, generator=g, dtype=F64)
    torch.testing.assert_close(D(x_t, t), exact(x_t, t), rtol=1e-9, atol=1e-9)
    # sampling with either gives the same x_0 (deterministic DDIM on a log-SNR-even grid)
    from kuosan.sampling import make_grid

    ts = make_grid(path, 12, "logsnr")
    x_T = path.prior_std * torch.randn(8, 2, generator=g, dtype=F64)
    torch.testing.assert_close(ddim(D, x_T, ts), ddim(exact, x_T, ts), rtol=1e-7, atol=1e-7)


def test_k_diffusion_adapter_at_infinite_ve_sigma():
    """At α = 0 the model is asked at σ̃ = 1e3 with the same ε: x̂_0 is the data mean to O(Var/σ̃²)."""
    mix = ring()
    for path in (Linear(), discrete_vp("linear", 100, zero_terminal_snr=True)):
        D = from_k_diffusion(k_model(mix), path)
        x = torch.randn(5, 2, generator=torch.Generator().manual_seed(7), dtype=F64)
        got = D(x, f64(path.t_max))
        assert bool(torch.isfinite(got).all())
        torch.testing.assert_close(got, mix.mean.expand(5, 2), rtol=0, atol=1e-5)
