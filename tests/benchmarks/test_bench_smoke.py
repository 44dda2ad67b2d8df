"""Smoke tests: unet_throughput.py, unet_profile.py, sample_throughput.py and digits_quality.py run end to end at
their tiniest settings and report sane numbers."""

from __future__ import annotations

import importlib.util
import math
from pathlib import Path
from types import ModuleType

import numpy as np
import pytest
import torch

BENCH = Path(__file__).resolve().parents[2] / "benchmarks"
HAS_DIFFUSERS = importlib.util.find_spec("diffusers") is not None


def _load(name: str) -> ModuleType:
    """benchmarks/ is no package: import a script from its path."""
    spec = importlib.util.spec_from_file_location(f"bench_{name}", BENCH / f"{name}.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)  # type: ignore[union-attr]
    return mod


def test_unet_throughput_quick(capsys: pytest.CaptureFixture[str]) -> None:
    mod = _load("unet_throughput")
    rows = mod.main(["--quick", "--device", "cpu", "--threads", "1"])
    out = capsys.readouterr().out
    models = {"kuosan", "diffusers"} if HAS_DIFFUSERS else {"kuosan"}
    assert {r["model"] for r in rows} == models
    assert HAS_DIFFUSERS or "diffusers is not installed" in out
    combos = {(r["size"], r["model"], r["mode"], r["dtype"]) for r in rows}
    assert len(combos) == len(rows) == 2 * 4 * len(models)  # mnist and digits, train/infer x fp32/bf16
    assert all(math.isfinite(r["samples_per_s"]) and r["samples_per_s"] > 0 for r in rows)
    flops = {(r["size"], r["model"], r["mode"]): r["flops_per_sample"] for r in rows}
    for size in ("mnist", "digits"):
        # backward costs about two forwards (no input gradient for the first conv: a little less)
        assert 2.5 < flops[(size, "kuosan", "train")] / flops[(size, "kuosan", "infer")] <= 3
    assert flops[("mnist", "kuosan", "infer")] > 10 * flops[("digits", "kuosan", "infer")]
    if HAS_DIFFUSERS:  # the twin has the same layout: the same matmul/conv work
        assert all(math.isclose(flops[(s, "diffusers", m)], flops[(s, "kuosan", m)], rel_tol=0.01)
                   for s in ("mnist", "digits") for m in ("train", "infer"))
    peaks = {}
    for r in rows:
        assert r["gflops"] == pytest.approx(r["flops_per_sample"] * r["samples_per_s"] / 1e9)
        peaks.setdefault(r["dtype"], set()).add(round(r["gflops"] / r["peak_fraction"], 6))
        assert r["optim"] == ("default" if r["mode"] == "train" else "-")
    assert all(len(p) == 1 for p in peaks.values())  # one peak a dtype, fp32 rows against fp32's
    assert f"fp32 {next(iter(peaks['fp32'])):.1f} GFLOP/s" in out
    assert "samples/s" in out and "% peak" in out and "threads: 1" in out
    assert "(matmul " in out and ", conv " in out  # both candidates of the peak are printed


def test_peak_is_the_better_of_matmul_and_convolution() -> None:
    """On the CPU torch's matmul (MKL) and convolution (oneDNN) are different kernels; the peak is the faster one."""
    mod = _load("unet_throughput")
    best, mm, conv = mod.peak(torch.device("cpu"), torch.float32, mod.DEFAULTS["quick"])
    assert mm > 0 and conv > 0 and best == max(mm, conv)
    assert mod.conv_peak(torch.device("cpu"), torch.float32, 8, 1) > 0


def test_unet_throughput_cifar_mfu(capsys: pytest.CaptureFixture[str]) -> None:
    """The 3-channel cifar size runs (at the quick width) and --spec-peak adds MFU = achieved / datasheet peak."""
    mod = _load("unet_throughput")
    rows = mod.main(["--quick", "--device", "cpu", "--threads", "1", "--size", "cifar", "--dtype", "fp32",
                     "--mode", "train", "--no-diffusers", "--spec-peak", "2"])
    assert [(r["size"], r["model"]) for r in rows] == [("cifar", "kuosan")]
    assert rows[0]["mfu"] == pytest.approx(rows[0]["gflops"] / 2000)
    assert "MFU cifar kuosan train fp32" in capsys.readouterr().out
    with pytest.raises(ValueError, match="--spec-peak must be > 0"):
        mod.parse(["--spec-peak", "0"])


def test_unet_throughput_compile_takes_an_optional_mode() -> None:
    mod = _load("unet_throughput")
    assert mod.parse([]).compile is None and mod.parse(["--compile"]).compile == "default"
    assert mod.parse(["--compile", "reduce-overhead", "--quick"]).compile == "reduce-overhead"
    with pytest.raises(SystemExit):
        mod.parse(["--compile", "fast"])


def test_unet_profile_on_the_cpu(capsys: pytest.CaptureFixture[str]) -> None:
    """The profile runs a real training step (digits net, bf16 autocast) and reports it; no kernels on the CPU."""
    mod = _load("unet_profile")
    mod.main(["--device", "cpu", "--size", "digits", "--batch", "4", "--steps", "1", "--rows", "5", "--bf16",
              "--threads", "1"])
    out = capsys.readouterr().out
    assert "aten::convolution_backward" in out  # the backward ran under the profiler
    assert "kuosan digits batch 4 bf16=True channels_last=False compile=None:" in out
    assert "0.00 ms of device kernels, 0 kernel launches" in out
    with pytest.raises(ValueError, match="--steps must be a positive integer"):
        mod.main(["--device", "cpu", "--steps", "0"])
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="CUDA is not available"):
            mod.main(["--size", "digits"])


def test_count_flops_by_hand() -> None:
    """A 1x1 conv into self-attention: the counter's FLOPs a sample are the hand count, attention included."""
    mod = _load("unet_throughput")

    class Tiny(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.conv = torch.nn.Conv2d(1, 4, 1, bias=False)

        def forward(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
            h = self.conv(x).flatten(2).transpose(1, 2)[:, None]  # (B, 1 head, L = 16 positions, D = 4)
            return torch.nn.functional.scaled_dot_product_attention(h, h, h)

    conv, attn = 2 * 16 * 4, 2 * (2 * 16 * 16 * 4)  # QKᵀ and AV, 2 FLOPs a multiply-add
    cpu = torch.device("cpu")
    assert mod.count_flops(Tiny(), (1, 4, 4), "infer", cpu) == conv + attn
    # backward: the conv's weight gradient (no input gradient), two matmuls for each of QKᵀ and AV
    assert mod.count_flops(Tiny(), (1, 4, 4), "train", cpu) == 2 * conv + 3 * attn


@pytest.mark.skipif(not HAS_DIFFUSERS, reason="diffusers is not installed")
@pytest.mark.parametrize(("size", "channels", "at_least"), [("mnist", 64, 6_000_000), ("digits", 32, 700_000),
                                                        ("cifar", 128, 38_000_000)])
def test_matched_parameter_count(size: str, channels: int, at_least: int) -> None:
    """The default-width diffusers twins are within 1% of kuosan's parameter count; digits is kuosan's default;
    cifar is DDPM's CIFAR-10 layout (35.7M parameters with its additive time injection, 38.3M with FiLM)."""
    from kuosan.build import build_net
    from kuosan.config import from_dict

    mod = _load("unet_throughput")
    a, b = mod.n_params(mod.kuosan_unet(size, channels)), mod.n_params(mod.diffusers_unet(size, channels))
    assert a > at_least and abs(b / a - 1) < 0.01
    if size == "cifar":
        x = torch.randn(1, 3, 32, 32)
        assert a == 38_307_203 and mod.kuosan_unet(size, 16)(x, torch.tensor([9.0])).shape == x.shape
    if size == "digits":
        default = build_net(from_dict({}), {"kind": "image", "shape": [1, 8, 8], "num_classes": 0})
        assert a == mod.n_params(default)


@pytest.mark.parametrize("optim", ["default", "same"])
@pytest.mark.parametrize("lib", ["kuosan", pytest.param("diffusers", marks=pytest.mark.skipif(
    not HAS_DIFFUSERS, reason="diffusers is not installed"))])
def test_train_step_updates_weights(lib: str, optim: str) -> None:
    """The timed training step really runs backward and the optimiser: the weights move (not a forward-only loop)."""
    mod = _load("unet_throughput")
    net = mod.kuosan_unet("digits", 16) if lib == "kuosan" else mod.diffusers_unet("digits", 16)
    before = [p.detach().clone() for p in net.parameters()]
    x, t, target = torch.randn(2, 1, 8, 8), torch.tensor([10.0, 500.0]), torch.randn(2, 1, 8, 8)
    update = mod.updater(lib, net, optim, mod.kuosan_cfg("digits", 16))
    mod.make_step(net, "train", False, x, t, target, update)()
    assert any(not torch.equal(p0, p) for p0, p in zip(before, net.parameters()))
    assert all(p.grad is None for p in net.parameters())  # zero_grad(set_to_none) ran after the step


def test_digits_quality_two_steps(tmp_path: Path) -> None:
    res = _load("digits_quality").main(
        ["--threads", "1", "--chunk", "1", "--max-steps", "2", "--n", "20", "--sample-steps", "2",
         "--set", "log.n_samples=4", "--set", "log.sample_steps=2", "--out", str(tmp_path)])
    ref, rows = res["classifier"], res["rows"]
    # the judge is a good classifier, and real held-out digits meet the criterion's threshold
    assert ref["accuracy"] > 0.95 and ref["real_mean_maxp"] >= 0.9 > ref["noise_mean_maxp"]
    assert [r["step"] for r in rows] == [1, 2]
    assert 0 < rows[0]["train_s"] < rows[1]["train_s"] <= rows[1]["wall_s"]
    assert all(sum(r["hist"]) == 20 and 0 <= r["mean_maxp"] <= 1 for r in rows)
    assert res["reached"] is None  # two training steps cannot draw recognisable digits
    assert res["grid"].is_file() and (tmp_path / "quality.csv").is_file()
    assert (tmp_path / "run" / "checkpoints" / "latest").read_text().strip() == "step_0000002"


def test_digits_quality_guided_class_conditional(tmp_path: Path) -> None:
    """A class-conditional run sampled with CFG: class i mod 10 asked of sample i, the judge's agreement reported."""
    mod = _load("digits_quality")
    res = mod.main(["--threads", "1", "--chunk", "2", "--max-steps", "2", "--n", "20", "--sample-steps", "2",
                    "--set", "data.class_cond=true", "--guidance", "2", "--set", "log.n_samples=4",
                    "--set", "log.sample_steps=2", "--out", str(tmp_path / "a")])
    assert 0 <= res["rows"][0]["label_acc"] <= 1
    assert "label_acc" in (tmp_path / "a" / "quality.csv").read_text().splitlines()[0]
    with pytest.raises(ValueError, match="--guidance needs a class-conditional run"):
        mod.main(["--guidance", "2", "--out", str(tmp_path / "b")])
    with pytest.raises(ValueError, match="--guidance must be a number >= 0"):
        mod.parse(["--guidance", "-1"])


def test_score_label_accuracy() -> None:
    """score's label accuracy against a classifier whose answers are known: the share of matching labels."""
    mod = _load("digits_quality")

    class Fixed:  # predicts class 0 for rows with a positive first pixel, else class 1
        classes_ = np.array([0, 1])

        def predict_proba(self, x: np.ndarray) -> np.ndarray:
            p0 = (x[:, 0] > 0).astype(float)
            return np.stack([p0, 1 - p0], 1)

    x = torch.tensor([[0.5], [-0.5], [0.5], [-0.5]])
    s = mod.score(Fixed(), x, 2, 0.9, torch.tensor([0, 1, 1, 1]))
    assert s["label_acc"] == 0.75 and s["hist"] == [2, 2] and s["mean_maxp"] == 1.0
    assert math.isnan(mod.score(Fixed(), x, 2, 0.9)["label_acc"])


def test_digits_quality_refuses_an_unknown_key(tmp_path: Path) -> None:
    """--set takes the nested keys; an old flat key is refused with the new name suggested, before any work."""
    from kuosan.config import ConfigError

    with pytest.raises(ConfigError, match=r"did you mean 'optim.steps'\?"):
        _load("digits_quality").main(["--set", "steps=5", "--out", str(tmp_path)])


def test_sample_throughput_quick(capsys: pytest.CaptureFixture[str]) -> None:
    rows = _load("sample_throughput").main(["--quick", "--threads", "1"])
    out = capsys.readouterr().out
    timing = [r for r in rows if r["kind"] == "timing"]
    impls = {"diffusers", "kuosan+d-net", "kuosan"} if HAS_DIFFUSERS else {"kuosan"}
    combos = {(r["size"], r["dtype"], r["sampler"], r["impl"]) for r in timing}
    assert len(combos) == len(timing) == 2 * 2 * 3 * len(impls)  # sizes x dtypes x samplers x impls
    assert {r["impl"] for r in timing} == impls
    assert all(math.isfinite(r["samples_per_s"]) and r["samples_per_s"] > 0 for r in timing)
    # a ratio exactly where there is a diffusers row of the same combination to divide by
    assert all((r["ratio"] is not None) == (HAS_DIFFUSERS and r["impl"] != "diffusers") for r in timing)
    assert all(r["ratio"] > 0 for r in timing if r["ratio"] is not None)
    assert "samples/s" in out and "threads: 1" in out
    if not HAS_DIFFUSERS:
        assert "diffusers is not installed" in out and not any(r["kind"] == "agreement" for r in rows)


@pytest.mark.skipif(not HAS_DIFFUSERS, reason="diffusers is not installed")
def test_same_nets_and_same_ddim_samples(capsys: pytest.CaptureFixture[str]) -> None:
    """Both sizes: parameter counts within 1%, and kuosan's ddim on diffusers' UNet reproduces DDIMPipeline."""
    mod = _load("sample_throughput")
    rows = mod.main(["--quick", "--threads", "1", "--dtype", "fp32", "--samplers", "ddim"])
    out = capsys.readouterr().out
    agree = {r["size"]: r for r in rows if r["kind"] == "agreement"}
    assert set(agree) == {"digits", "mnist"} and out.count("DDIM agreement") == 2
    for r in agree.values():
        assert r["raw_scale"] > 1  # random weights: x_0 far from [-1, 1], so the unclamped check is not vacuous
        assert r["image_diff"] < 1e-4 and r["raw_diff"] < 1e-5
    for size in ("digits", "mnist"):
        own, dnet = mod.build_nets(size, True)
        assert abs(mod.n_params(dnet) / mod.n_params(own) - 1) < 0.01
