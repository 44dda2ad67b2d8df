"""GPU checks: run only where CUDA is available (CI has none: they skip)."""

import pytest
import torch

from kuosan.build import load_denoiser
from kuosan.config import Config, apply_overrides
from kuosan.train import train

pytestmark = [pytest.mark.gpu, pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")]


def test_train_and_sample_on_gpu_bf16(tmp_path):
    from kuosan.sampling import sample

    cfg = apply_overrides(Config(), {"optim.steps": 30, "optim.batch_size": 64, "run.precision": "bf16",
                                     "run.device": "cuda", "log.ckpt_every": 30, "log.val_every": 10,
                                     "log.log_every": 10, "log.n_samples": 16, "log.sample_steps": 5,
                                     "log.out": str(tmp_path / "r")}).validate()
    run = train(cfg, progress=False)
    D, meta, _ = load_denoiser(run, device="cuda")
    for name in ("ddim", "dpm++2m", "ddpm"):
        x = sample(D, name, (8, *meta["shape"]), 10, device="cuda", seed=0)
        assert x.shape == (8, 1, 8, 8) and torch.isfinite(x).all()
    a = sample(D, "ddpm", (4, *meta["shape"]), 10, device="cuda", seed=3)
    b = sample(D, "ddpm", (4, *meta["shape"]), 10, device="cuda", seed=3)
    assert torch.equal(a, b)  # same seed, same samples on the GPU too


def test_gpu_matches_cpu_denoiser(tmp_path):
    cfg = apply_overrides(Config(), {"optim.steps": 5, "optim.batch_size": 32, "log.ckpt_every": 5,
                                     "log.n_samples": 4, "log.sample_steps": 2, "run.device": "cpu",
                                     "log.out": str(tmp_path / "c")}).validate()
    run = train(cfg, progress=False)
    Dc, meta, _ = load_denoiser(run, device="cpu")
    Dg, _, _ = load_denoiser(run, device="cuda")
    x = torch.randn(16, *meta["shape"])
    t = torch.full((16,), 500.0)
    torch.backends.cudnn.allow_tf32 = False
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.testing.assert_close(Dg(x.cuda(), t.cuda()).cpu(), Dc(x, t), rtol=1e-4, atol=1e-4)
