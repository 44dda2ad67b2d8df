"""run.compile: the compiled network computes what the eager one does (fp32 tolerance), resume stays exact under
compile, CUDA graphs are refused off CUDA with one line; on a GPU (skipped without CUDA) reduce-overhead trains
what eager does, within bf16 tolerance."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from train_helpers import same_weights, tiny

from kuosan.build import build_net
from kuosan.cli import main
from kuosan.config import ConfigError, Config, apply_overrides
from kuosan.train import train
from kuosan.train.device import compiled

CPU = torch.device("cpu")


def test_off_is_the_network_itself_and_graphs_need_cuda() -> None:
    net = torch.nn.Linear(2, 2)
    assert compiled(net, "off", CPU) is net
    with pytest.raises(ValueError, match="reduce-overhead needs CUDA graphs, but the run trains on cpu"):
        compiled(net, "reduce-overhead", CPU)
    with pytest.raises(ConfigError, match="unknown value 'max-autotune'"):
        apply_overrides(Config(), {"run.compile": "max-autotune"})


def test_cli_refuses_graphs_on_the_cpu_in_one_line(tmp_path, capsys) -> None:
    code = main(["train", "--device", "cpu", "--compile", "reduce-overhead", "--steps", "1",
                 "--out", str(tmp_path / "r")])
    e = capsys.readouterr().err.strip()
    assert code == 2 and e.count("\n") == 0 and "reduce-overhead needs CUDA graphs" in e, (code, e)
    assert not (tmp_path / "r" / "checkpoints").exists()  # refused before any step


@pytest.mark.slow
def test_compiled_unet_agrees_with_eager() -> None:
    """Inductor's kernels for a small U-Net (attention included): fp32 rounding apart (the backward is checked
    through the training run below: its gradient norms)."""
    cfg = apply_overrides(Config(), {"net.channels": 8, "net.attn_resolutions": (4,)})
    torch.manual_seed(0)
    net = build_net(cfg, {"kind": "image", "shape": [1, 8, 8], "num_classes": 0}).eval()
    with torch.no_grad():  # the output convs start at zero: move every weight so each layer shows in the output
        for p in net.parameters():
            p.add_(0.2 * torch.randn_like(p))
    x, t = torch.randn(4, 1, 8, 8), torch.tensor([1.0, 200.0, 600.0, 999.0])
    with torch.no_grad():
        out, out_c = net(x, t), compiled(net, "default", CPU)(x, t)
    assert torch.allclose(out_c, out, rtol=1e-4, atol=1e-5)
    assert out.abs().mean() > 0.1


@pytest.mark.slow
def test_resume_is_exact_under_compile(tmp_path) -> None:
    """10 compiled steps straight = 5, resume, 5 (dropout on): the same weights bit for bit; without dropout (whose
    masks inductor draws from its own generator) close to eager's."""
    cfg = tiny(tmp_path / "straight", optim__steps=10, run__compile="default")
    train(cfg, progress=False)
    train(apply_overrides(cfg, {"log.out": str(tmp_path / "halves")}), stop_at=5, progress=False)
    train(None, resume=tmp_path / "halves", progress=False)
    assert same_weights(tmp_path / "straight", tmp_path / "halves")
    for mode in ("default", "off"):
        train(apply_overrides(cfg, {"log.out": str(tmp_path / mode), "run.compile": mode, "net.dropout": 0.0}),
              progress=False)
    # the logged losses, gradient norms and validation loss (weights would not do: Adam's g/√v turns rounding-level
    # differences of near-zero gradients into lr-sized steps)
    logs = [np.genfromtxt(tmp_path / mode / "log.csv", delimiter=",", names=True) for mode in ("default", "off")]
    for key in ("loss", "grad_norm", "val_loss"):
        assert np.allclose(logs[0][key], logs[1][key], rtol=2e-3, equal_nan=True), key


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_graphs_train_what_eager_trains(tmp_path) -> None:
    """reduce-overhead (CUDA graphs) on a GPU: bf16 training close to eager's; resume exact under graphs."""
    base = {"optim.steps": 20, "optim.batch_size": 64, "run.device": "cuda", "run.precision": "bf16",
            "net.channels": 16, "log.ckpt_every": 10, "log.n_samples": 4, "log.sample_steps": 2}
    runs = {}
    for mode in ("off", "reduce-overhead"):
        cfg = apply_overrides(Config(), {**base, "run.compile": mode, "log.out": str(tmp_path / mode)}).validate()
        runs[mode] = train(cfg, progress=False)
    logs = [np.genfromtxt(runs[mode] / "log.csv", delimiter=",", names=True) for mode in ("reduce-overhead", "off")]
    for key in ("loss", "grad_norm"):  # bf16 autocast on both sides: bf16 rounding apart
        assert np.allclose(logs[0][key], logs[1][key], rtol=2e-2), key
    half = apply_overrides(Config(), {**base, "run.compile": "reduce-overhead",
                                      "log.out": str(tmp_path / "halves")}).validate()
    train(half, stop_at=10, progress=False)
    train(None, resume=tmp_path / "halves", progress=False)
    assert same_weights(runs["reduce-overhead"], tmp_path / "halves")
