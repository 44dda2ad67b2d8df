"""GPU checks: run only where CUDA is available (CI has none: they skip)."""

import pytest
import torch

from kuosan.config import Config
from kuosan.model import load_denoiser
from kuosan.samplers import sample
from kuosan.train import train

pytestmark = [pytest.mark.gpu, pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")]


def test_train_and_sample_on_gpu_bf16(tmp_path):
    cfg = Config(steps=30, batch_size=64, precision="bf16", device="cuda", ckpt_every=30, val_every=10, log_every=10,
                 n_samples=16, sample_steps=5, out=str(tmp_path / "r"))
    run = train(cfg, progress=False)
    D, meta, _ = load_denoiser(run, device="cuda")
    for name in ("ddim", "dpm++2m", "ddpm"):
        x = sample(D, name, (8, *meta["shape"]), 10, device="cuda", seed=0)
        assert x.shape == (8, 1, 8, 8) and torch.isfinite(x).all()
    a = sample(D, "ddpm", (4, *meta["shape"]), 10, device="cuda", seed=3)
    b = sample(D, "ddpm", (4, *meta["shape"]), 10, device="cuda", seed=3)
    assert torch.equal(a, b)  # same seed, same samples on the GPU too


def test_gpu_matches_cpu_denoiser(tmp_path):
    run = train(Config(steps=5, batch_size=32, ckpt_every=5, n_samples=4, sample_steps=2, device="cpu",
                       out=str(tmp_path / "c")), progress=False)
    Dc, meta, _ = load_denoiser(run, device="cpu")
    Dg, _, _ = load_denoiser(run, device="cuda")
    x = torch.randn(16, *meta["shape"])
    t = torch.full((16,), 500.0)
    torch.backends.cudnn.allow_tf32 = False
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.testing.assert_close(Dg(x.cuda(), t.cuda()).cpu(), Dc(x, t), rtol=1e-4, atol=1e-4)
