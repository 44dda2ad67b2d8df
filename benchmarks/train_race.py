"""A training-budget race: kuosan's default training against diffusers' ``UNet2DModel`` + ``DDPMScheduler`` trained
the way diffusers' own ``examples/unconditional_image_generation/train_unconditional.py`` does it, on the same data,
with the same parameter count (within 5%) and the same wall-clock training budget on the same machine; both sides'
samples scored by kuosan.metrics (FD with a bootstrap standard error, unbiased KID with its standard error) on the
feature network kuosan trains on the data's training split, beside the real-vs-real baseline.

- **Data.** ``kuosan.data.load_dataset`` and ``split`` exactly as ``kuosan train`` makes them: both sides train on the
  training split, the held-out split only serves the baseline. digits: 8x8, 1797 images; mnist5k: 28x28, 5000.
- **kuosan.** ``kuosan.train.train`` with the default config (digits) or the README's MNIST-5k recipe for CPU
  minutes (channels 32, channel_mult 1,2,2, bf16); ``optim.steps`` is set to the steps the budget affords (see
  *Budget*) in place of the recipe's. Samples from the EMA weights with ``kuosan.sampling.sample``: unipc and ddim
  (``--samplers``; ``--long-samplers`` at the longest step count, default unipc) on the uniform trailing grid
  (fixed grids only, no clipping).
- **diffusers.** The example's recipe: DDPMScheduler(1000, linear β, ε-prediction), MSE on the noise, integer
  timesteps drawn uniformly, AdamW(lr 1e-4, betas (0.95, 0.999), weight decay 1e-6, eps 1e-8), the ``cosine``
  schedule of ``diffusers.optimization.get_scheduler`` with 500 warm-up steps (at most a quarter of the run),
  gradient clipping at 1, ``EMAModel`` (max decay 0.9999, warm-up inv_gamma 1, power 3/4), batch 16, fp32 (its
  ``mixed_precision='no'``), no horizontal flip (``--random_flip`` is off by default and digits are not
  mirror-symmetric). Its ``UNet2DModel`` copies kuosan's layout (widths, residual blocks a level, attention where
  kuosan has it, FiLM time injection = ``resnet_time_scale_shift='scale_shift'``, head dim 32, GroupNorm with at
  least 4 channels a group, as the example's 128-channel first level has): the counts agree to < 0.1%.
  Samples from the EMA weights with its own pipelines and the scheduler's defaults (x̂_0 clipped to [-1, 1]):
  ``DDIMPipeline`` (η = 0) below the longest step count, ``DDPMPipeline`` (the example's sampler, 1000 steps) at the
  longest.
- **Budget.** The training loop's own seconds: kuosan's ``log.csv`` ``elapsed_s`` (the loop with its EMA and logging;
  not start-up, checkpoints or previews, nor the validation loss each ``train`` call ends with, timed separately:
  diffusers' example computes none), diffusers' loop timed around its steps (data, step, EMA).
  A short calibration (not counted) measures each side's steps/s and sets the run length (kuosan ``optim.steps``,
  diffusers' ``num_training_steps``) to budget × rate, so each learning-rate schedule ends with the budget. The two
  sides then train in alternating rounds (A, B, B, A, ...), so load from other processes falls on both alike; each
  stops at its planned steps or when its budget is spent, whichever comes first (both are printed). kuosan
  continues between rounds with ``train(None, resume=run, stop_at=k)``, which is exact. diffusers' EMA U-Net is saved
  in ``OUT/diffusers`` (its ``save_pretrained``: config + safetensors). ``--reuse DIR`` (an earlier race at the same
  data, budget, seed, threads and device) copies kuosan's run when it was trained with this script's recipe and,
  when DIR saved it, diffusers' model instead of training them, so the sampling can be redone at other step counts
  or sample sizes, or one side's recipe changed without training the other again; a side with no model to copy
  trains alone for the budget, its run length from a fresh calibration. A copied model's rows at the same sampler,
  steps, n, n-long and feature network (for diffusers also the same sampling batch) are copied too (sampling is
  seeded: ``--resample`` draws them again, and the smoke test checks they come out the same).
- **Metrics.** Samples are clamped to the data range [-1, 1] (diffusers' pipelines do it themselves). FD (Fréchet
  distance, biased upward by O(d/n): compare at equal n) and KID (unbiased) against the training split; the
  rows at the longest step count use ``--n-long`` samples (1000 network calls each is the cost), and every row is
  also scored on its first n-long samples, so the goals compare like with like. "FD @n_held" is the mean FD of 10
  random subsets of the held-out split's size: the column that compares with the real-vs-real baseline.
  These figures compare models on the same data; they are not comparable with published FIDs.
- **Goals** (issue 9): kuosan's FD at the fewest steps (10) <= diffusers' FD at the most (1000), and kuosan's FD at
  1000 steps <= 0.7 x diffusers'. kuosan's figure is its better sampler at that step count.

Cost: sampling dominates. A 1000-step row is 1000 network calls a sample, so the digits race with the defaults makes
about 1.5 million sample-forwards (the 8x8 U-Net: ~1000-1500 a second on one busy CPU core, several times that on a
quiet one); the 28x28 MNIST U-Net is ~40x costlier a sample, so the MNIST race wants a GPU (``--device cuda``) or
fewer steps and samples.

Usage: python benchmarks/train_race.py --data digits [--quick] [--n 2000] [--n-long N] [--threads 2] [--device cpu]
       [--reuse DIR [--resample]]
"""

from __future__ import annotations

import argparse
import copy
import csv
import json
import math
import os
import shutil
import sys
import time
from pathlib import Path
from typing import Any, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from kuosan.build import build_net, load_denoiser, make_denoiser, make_objective_from, make_param_from, make_path_from
from kuosan.config import Config, fill_retired_defaults, from_dict, load_config, to_dict
from kuosan.data import load_dataset, split
from kuosan.metrics import FeatureConfig, feature_extractor, frechet_distance, kid
from kuosan.nets.unet import norm_groups
from kuosan.sampling import SAMPLERS, sample
from kuosan.train import EMA, train
from kuosan.train.step import adamw
from kuosan.viz import save_samples

BUDGET = {"digits": 120.0, "mnist5k": 1200.0}  # seconds of training a side (issue 9)
QUICK_BUDGET = {"digits": 20.0, "mnist5k": 60.0}
# kuosan's MNIST-5k recipe for a CPU budget of minutes, from the README (the unconditional form of its 15-minute
# recipe): kuosan train --data mnist5k --channels 32 --channel-mult 1,2,2 --precision bf16, the rest default (batch
# 128, lr 3e-3, EMA 0.99). On 2 CPU cores a 20-minute budget is spent best on images seen: the 64-channel recipe
# for long runs (4.5M parameters) sees ~70k images in 20 minutes at batch 128 or 32 alike and stays at FD ~2 (see
# the README), the 32-channel one (1.1M) three times as many.
RECIPES: dict[str, dict[str, Any]] = {"digits": {},
                                      "mnist5k": {"data": {"name": "mnist5k"},
                                                  "net": {"channels": 32, "channel_mult": (1, 2, 2)},
                                                  "run": {"precision": "bf16"}}}
# diffusers' train_unconditional.py defaults (its README commands: batch 16, lr 1e-4, warm-up 500, EMA, fp32)
DIFFUSERS_RECIPE = {"batch_size": 16, "lr": 1e-4, "betas": (0.95, 0.999), "weight_decay": 1e-6, "eps": 1e-8,
                    "warmup": 500, "grad_clip": 1.0, "ema_max_decay": 0.9999, "ema_inv_gamma": 1.0, "ema_power": 0.75,
                    "T": 1000, "beta_schedule": "linear", "prediction_type": "epsilon"}
FIXED_GRID = sorted(set(SAMPLERS) - {"bespoke", "consistency"})  # a diffusion model's samplers on fixed grids
MATCHED_REPEATS = 10  # random subsets of the held-out split's size behind "FD @n_held"


# ---------------------------------------------------------------- the two models

def kuosan_config(data: str, threads: int, out: Path, steps: int, device: str = "cpu") -> Config:
    cfg = from_dict(copy.deepcopy(RECIPES[data]))
    cfg.run.threads, cfg.run.device = threads, device  # never 'auto': both sides train on the same device
    cfg.optim.steps = steps
    cfg.log.out = str(out)
    cfg.log.n_samples, cfg.log.sample_steps = 16, 10  # the preview after each round only (not timed)
    return cfg.validate()


def diffusers_unet(cfg: Config, shape: Sequence[int]) -> nn.Module:
    """diffusers' UNet2DModel with kuosan's layout (see the module docstring)."""
    from diffusers import UNet2DModel

    n, res = cfg.net, shape[-1]
    widths = tuple(n.channels * m for m in n.channel_mult)
    down, up_res = [], []
    for _ in widths:  # kuosan puts attention at level resolutions listed in attn_resolutions
        down.append("AttnDownBlock2D" if res in n.attn_resolutions else "DownBlock2D")
        up_res.append(res)
        res = (res + 1) // 2
    up = tuple("AttnUpBlock2D" if r in n.attn_resolutions else "UpBlock2D" for r in reversed(up_res))
    return UNet2DModel(sample_size=shape[-1], in_channels=shape[0], out_channels=shape[0], block_out_channels=widths,
                       layers_per_block=n.num_res_blocks, down_block_types=tuple(down), up_block_types=up,
                       resnet_time_scale_shift="scale_shift", attention_head_dim=32,
                       norm_num_groups=norm_groups(n.channels), dropout=n.dropout)


def n_params(net: nn.Module) -> int:
    return sum(p.numel() for p in net.parameters())


def diffusers_scheduler() -> Any:
    """The example's DDPMScheduler (1000 steps, linear β, ε-prediction): training and both pipelines use it."""
    from diffusers import DDPMScheduler

    r = DIFFUSERS_RECIPE
    return DDPMScheduler(num_train_timesteps=r["T"], beta_schedule=r["beta_schedule"],
                         prediction_type=r["prediction_type"])


class DiffusersTrainer:
    """train_unconditional.py's training loop on in-memory images X (N, C, H, W) in [-1, 1], with explicit
    generators (kuosan's training reseeds the global RNG between rounds)."""

    def __init__(self, unet: nn.Module, X: Tensor, total_steps: int, seed: int, device: str = "cpu"):
        from diffusers.optimization import get_scheduler
        from diffusers.training_utils import EMAModel

        r = DIFFUSERS_RECIPE
        self.unet, self.total_steps, self.device = unet.to(device), total_steps, torch.device(device)
        self.warmup = min(r["warmup"], total_steps // 4)
        self.noise_scheduler = diffusers_scheduler()
        self.opt = torch.optim.AdamW(unet.parameters(), lr=r["lr"], betas=r["betas"], weight_decay=r["weight_decay"],
                                     eps=r["eps"])
        self.lr_sched = get_scheduler("cosine", optimizer=self.opt, num_warmup_steps=self.warmup,
                                      num_training_steps=total_steps)
        self.ema = EMAModel(unet.parameters(), decay=r["ema_max_decay"], use_ema_warmup=True,
                            inv_gamma=r["ema_inv_gamma"], power=r["ema_power"])
        self.g = torch.Generator().manual_seed(seed)
        self.loader = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(X.to(device)),
                                                  batch_size=r["batch_size"],
                                                  shuffle=True, generator=torch.Generator().manual_seed(seed + 1))
        self.it = iter(self.loader)
        self.steps, self.seconds, self.losses, self.rate = 0, 0.0, [], 0.0

    def _batch(self) -> Tensor:
        try:
            return next(self.it)[0]
        except StopIteration:  # a new epoch, reshuffled
            self.it = iter(self.loader)
            return next(self.it)[0]

    def step(self) -> float:
        clean = self._batch()
        noise = torch.randn(clean.shape, generator=self.g).to(self.device)  # drawn on the CPU: device-independent
        timesteps = torch.randint(0, self.noise_scheduler.config.num_train_timesteps, (len(clean),),
                                  generator=self.g).long().to(self.device)
        noisy = self.noise_scheduler.add_noise(clean, noise, timesteps)
        self.unet.train()
        loss = F.mse_loss(self.unet(noisy, timesteps).sample.float(), noise.float())
        loss.backward()
        nn.utils.clip_grad_norm_(self.unet.parameters(), DIFFUSERS_RECIPE["grad_clip"])
        self.opt.step()
        self.lr_sched.step()
        self.opt.zero_grad()
        self.ema.step(self.unet.parameters())
        return float(loss.detach())

    def run(self, seconds: float) -> None:
        """Train for ``seconds`` of loop time or until total_steps (at least one step when any remain)."""
        t0, k = time.perf_counter(), 0
        while self.steps < self.total_steps:
            self.losses.append(self.step())
            self.steps, k = self.steps + 1, k + 1
            if time.perf_counter() - t0 >= seconds:
                break
        dt = time.perf_counter() - t0
        self.seconds += dt
        self.rate = k / max(dt, 1e-9) if k else self.rate

    def ema_unet(self) -> nn.Module:
        unet = copy.deepcopy(self.unet)
        self.ema.copy_to(unet.parameters())
        return unet.eval()


# ---------------------------------------------------------------- budget: calibration and the race

def _sync(device: str) -> None:
    if torch.device(device).type == "cuda":
        torch.cuda.synchronize()


def _rate(step: Any, seconds: float, device: str) -> float:
    """Steps/s of ``step()`` over ``seconds`` (at least 3 steps; the first, which allocates, is not timed)."""
    step()
    _sync(device)
    t0, k = time.perf_counter(), 0
    while k < 2 or time.perf_counter() - t0 < seconds:
        step()
        k += 1
    _sync(device)
    return k / (time.perf_counter() - t0)


def kuosan_step(cfg: Config, X: Tensor, meta: dict[str, Any], device: str) -> Any:
    """One step of kuosan's training, as ``train`` does it (loss, backward, clip, AdamW, EMA) on a throwaway copy:
    calibration only."""
    from kuosan.train.loop import bf16_is_fast

    path, param = make_path_from(cfg), make_param_from(cfg)
    obj = make_objective_from(cfg, path, param, bits=meta["bits"])
    with torch.random.fork_rng(devices=[]):
        net = build_net(cfg, meta).to(device)
    den = make_denoiser(net, cfg, path)
    opt, ema, n = adamw(cfg, net), EMA(net, cfg.optim.ema_decay, cfg.optim.ema_warmup), [0]  # the loop's update
    dev = torch.device(device)
    bf16 = cfg.run.precision == "bf16" or (cfg.run.precision == "auto" and bf16_is_fast(dev))
    g, B, X = torch.Generator().manual_seed(12345), cfg.optim.batch_size, X.to(dev)

    def step() -> None:  # t and ε drawn on the CPU as kuosan's training draws them
        x0 = X[torch.randint(len(X), (B,), generator=g).to(dev)]
        t = obj.times.sample(B, g)[0].to(dev)
        eps = torch.randn(x0.shape, generator=g).to(dev)
        with torch.autocast(dev.type, dtype=torch.bfloat16, enabled=bf16):
            loss = obj(den.raw, x0, t=t, eps=eps).total.mean()
        loss.backward()
        nn.utils.clip_grad_norm_(net.parameters(), cfg.optim.grad_clip)
        opt.step()
        opt.zero_grad(set_to_none=True)
        ema.update(net, n[0])
        n[0] += 1

    return step


def loop_seconds(run: Path, step: int) -> float:
    """elapsed_s of log.csv's row at ``step``: that train() call's loop time."""
    with open(run / "log.csv", newline="") as f:
        rows = [r for r in csv.DictReader(f) if int(r["step"]) == step]
    if not rows:
        raise RuntimeError(f"{run / 'log.csv'} has no row for step {step}")
    return float(rows[-1]["elapsed_s"])


def val_seconds(run: Path, held_x: Tensor, device: str) -> float:
    """Seconds of the validation loss ``train`` computes at the end of every call (the EMA model's loss on the first
    512 held-out examples, no autocast), timed the same way on the run's checkpoint: the best of two."""
    D, _, cfg = load_denoiser(run, device=device)
    obj = make_objective_from(cfg, D.path, make_param_from(cfg), bits=None)
    x0 = held_x[:512]
    g = torch.Generator().manual_seed(0)
    t, eps = obj.times.sample(len(x0), g)[0], torch.randn(x0.shape, generator=g)
    best = math.inf
    for _ in range(2):
        _sync(device)
        t0 = time.perf_counter()
        with torch.no_grad():
            obj(D.raw, x0.to(device), t=t.to(device), eps=eps.to(device)).total.mean().item()
        best = min(best, time.perf_counter() - t0)
    return best


class KuosanSide:
    """kuosan.train.train in rounds: train(cfg, stop_at=k), then train(None, resume=run, stop_at=k').

    Every call ends with a validation loss; a straight run computes it once, at its end, and diffusers' example
    never, so it is not counted: each round's loop time less ``val_s`` (timed after the first round)."""

    def __init__(self, cfg: Config, rate: float, held_x: Tensor):
        self.cfg, self.run_dir, self.rate, self.held_x = cfg, Path(cfg.log.out), rate, held_x
        self.total_steps, self.steps, self.seconds, self.calls = cfg.optim.steps, 0, 0.0, 0
        self.val_s: float | None = None

    def run(self, seconds: float) -> None:
        """One round of about ``seconds`` of loop time, sized by the latest measured steps/s."""
        k = min(self.total_steps, self.steps + max(1, int(self.rate * seconds)))
        if k <= self.steps:
            return
        if self.steps == 0:
            train(self.cfg, stop_at=k, progress=False)
        else:
            train(None, resume=self.run_dir, stop_at=k, progress=False)
        if self.val_s is None:
            self.val_s = val_seconds(self.run_dir, self.held_x, self.cfg.run.device) if len(self.held_x) else 0.0
        dt = max(loop_seconds(self.run_dir, k) - self.val_s, 1e-3)
        self.rate = (k - self.steps) / dt
        self.steps, self.seconds, self.calls = k, self.seconds + dt, self.calls + 1
        ckpts = self.run_dir / "checkpoints"  # keep only the newest checkpoint (each round writes one)
        for d in sorted(ckpts.glob("step_*"))[:-1]:
            shutil.rmtree(d)


def race(sides: dict[str, Any], budget: float, rounds: int) -> None:
    """Alternating rounds (A, B, B, A, ...) of budget/rounds seconds until each side's budget or steps are spent."""
    names = list(sides)
    for r in range(10 * rounds):  # more rounds than planned only when a side undershoots its round length
        order = names if r % 2 == 0 else names[::-1]
        active = False
        for name in order:
            s = sides[name]
            left = budget - s.seconds
            if s.steps >= s.total_steps or left <= 0.5 / max(s.rate, 1e-9):
                continue
            active = True
            s.run(min(budget / rounds, left))
            print(f"  round {r + 1}: {name:<9} step {s.steps:>6}/{s.total_steps:<6} {s.seconds:7.1f} s of training",
                  flush=True)
        if not active:
            return


def reusable(a: argparse.Namespace) -> dict[str, Any]:
    """``--reuse DIR``'s results.json when that race trained at this data, budget, seed, threads and device
    ({} without --reuse); anything else is refused with one line."""
    if a.reuse is None:
        return {}
    try:
        old = json.loads((Path(a.reuse) / "results.json").read_text())
        args = old["args"]
        same = {k: args[k] for k in ("data", "budget", "seed", "threads", "device")}
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise ValueError(f"--reuse {a.reuse}: not a finished race of this script ({e})") from None
    want = {"data": a.data, "budget": a.budget, "seed": a.seed, "threads": a.threads, "device": a.device}
    if same != want:
        raise ValueError(f"--reuse {a.reuse}: that race trained at {same}, this one asks for {want}")
    if not (Path(a.reuse) / "kuosan" / "checkpoints").is_dir():
        raise ValueError(f"--reuse {a.reuse}: its kuosan run folder is missing")
    return old


def same_recipe(run: Path, cfg: Config) -> bool:
    """Whether the kuosan run folder ``run`` was trained with ``cfg``'s recipe: every key but the run length
    (``optim.steps``, set by the calibration) and the [log] table."""
    def key(d: dict[str, Any]) -> dict[str, Any]:
        d = {t: dict(tab) for t, tab in d.items() if t != "log"}
        d["optim"].pop("steps")
        return d

    try:
        old = to_dict(from_dict(fill_retired_defaults(load_config(run / "config.toml"))))
    except ValueError:  # ConfigError: unreadable or no kuosan config
        return False
    return key(old) == key(to_dict(cfg))


def reused_row(old: dict[str, Any], a: argparse.Namespace, model: str, sampler: str, steps: int,
               n: int) -> dict[str, Any] | None:
    """The row of the race ``old`` (results.json) that this race would compute again for a model it copied from that
    race: same sampler, steps, n, n_long and feature network, and for diffusers the same sampling batch (its pipelines
    draw per batch; kuosan's sample i depends only on (seed, i)); the seed, data and device were checked by
    ``reusable``. So the same samples and figures. None when there is no such row."""
    keys = ("n_long", "feature_steps") + (("batch_size",) if model == "diffusers" else ())
    same = all(old["args"].get(k) == getattr(a, k) for k in keys)
    hits = [r for r in old["rows"] if (r["model"], r["sampler"], r["steps"], r["n"]) == (model, sampler, steps, n)]
    return dict(hits[0]) if same and hits else None


def calibrate(a: argparse.Namespace, cfg0: Config, meta: dict[str, Any], X: Tensor, unet: nn.Module,
              names: list[str]) -> dict[str, float]:
    """Steps/s of each named side's training step on throwaway copies (not counted), in the order A, B, B, A so
    that load from other processes falls on both alike; --calibrate seconds a side."""
    step: dict[str, Any] = {}
    if "kuosan" in names:
        step["kuosan"] = kuosan_step(cfg0, X, meta, a.device)
    if "diffusers" in names:
        step["diffusers"] = DiffusersTrainer(copy.deepcopy(unet), X, 10**9, a.seed, a.device).step
    rates = dict.fromkeys(names, 0.0)
    for name in names + names[::-1]:
        rates[name] += _rate(step[name], a.calibrate / 2, a.device) / 2
    return rates


def train_sides(a: argparse.Namespace, out: Path, cfg0: Config, meta: dict[str, Any], tr: Any, held: Any,
                unet: nn.Module, reused: dict[str, Any]) -> tuple[dict[str, Any], tuple[float, float], nn.Module]:
    """Both sides trained for the budget in alternating rounds, after a calibration that sets their run lengths;
    with ``reused`` (--reuse), kuosan's run and, when that race saved it, diffusers' EMA U-Net are copied instead and
    only a side without a saved model trains (alone). Returns the training table, the calibrated rates and
    diffusers' EMA U-Net."""
    from diffusers import UNet2DModel

    src = Path(a.reuse) if reused else None
    reuse = [] if src is None else ((["kuosan"] if same_recipe(src / "kuosan", cfg0) else [])
                                    + (["diffusers"] if (src / "diffusers" / "config.json").is_file() else []))
    if src is not None and "kuosan" not in reuse:
        print(f"kuosan: {src / 'kuosan'} was trained with another recipe than this script's; kuosan trains anew")
    fresh = [name for name in ("kuosan", "diffusers") if name not in reuse]
    rates = {**calibrate(a, cfg0, meta, tr.x, unet, fresh), **{name: reused["rates"][name] for name in reuse}}
    rk, rd = rates["kuosan"], rates["diffusers"]
    steps_k, steps_d = max(1, round(rk * a.budget)), max(1, round(rd * a.budget))
    print(f"calibration{' (reused: ' + str(src) + ')' if src else ''}: kuosan {rk:.2f} steps/s (batch "
          f"{cfg0.optim.batch_size}), diffusers {rd:.2f} steps/s (batch {DIFFUSERS_RECIPE['batch_size']}) -> planned "
          f"{steps_k} and {steps_d} steps in {a.budget:g} s")

    cfg = kuosan_config(a.data, a.threads, out / "kuosan", steps_k, a.device)
    from kuosan.train.loop import bf16_is_fast

    precision = cfg.run.precision
    if precision == "auto":
        precision = f"auto = {'bf16' if bf16_is_fast(torch.device(a.device)) else 'fp32'} on this {a.device}"
    d_trainer = DiffusersTrainer(unet, tr.x, steps_d, a.seed, a.device)
    d_trainer.rate = rd
    sides: dict[str, Any] = {name: side for name, side in (("kuosan", KuosanSide(cfg, rk, held.x)),
                                                           ("diffusers", d_trainer)) if name in fresh}
    recipe = " + README MNIST-5k recipe for CPU minutes" if a.data != "digits" else ""
    print(f"kuosan: default config{recipe}: {cfg.path.schedule} β, {cfg.objective.prediction}-prediction, lr "
          f"{cfg.optim.lr:g}, warm-up {cfg.optim.warmup}, EMA {cfg.optim.ema_decay}, batch {cfg.optim.batch_size}, "
          f"precision {precision}")
    print(f"diffusers: train_unconditional recipe: linear β, ε-prediction, lr {DIFFUSERS_RECIPE['lr']:g}, warm-up "
          f"{d_trainer.warmup}, cosine, EMA max {DIFFUSERS_RECIPE['ema_max_decay']}, batch "
          f"{DIFFUSERS_RECIPE['batch_size']}, fp32")
    training = {name: {**reused["training"][name], "reused": str(src)} for name in reuse}
    if "kuosan" in reuse:
        shutil.copytree(src / "kuosan", out / "kuosan")
    for name in reuse:
        print(f"  reused {name} from {src} ({training[name]['steps']} steps in {training[name]['seconds']:.1f} s "
              "of training)")
    t0 = time.perf_counter()
    if sides:
        race(sides, a.budget, a.rounds)
    race_wall = time.perf_counter() - t0
    training.update({name: {"steps": s.steps, "planned_steps": s.total_steps, "seconds": s.seconds, "rate": s.rate}
                     for name, s in sides.items()})
    if "kuosan" in sides:
        ks_ = sides["kuosan"]
        training["kuosan"].update(train_calls=ks_.calls, val_s=ks_.val_s)
        print(f"kuosan's {ks_.calls} train() calls each ended with a validation loss ({ks_.val_s or 0:.2f} s, not "
              f"counted); race wall time {race_wall:.0f} s (start-up, checkpoints and previews included)")
    for name, t in training.items():
        print(f"{name}: {t['steps']} of {t['planned_steps']} planned steps in {t['seconds']:.1f} s of training")
    if "diffusers" in reuse:
        unet_ema = UNet2DModel.from_pretrained(src / "diffusers").to(a.device).eval()  # type: ignore[operator]
    else:
        unet_ema = d_trainer.ema_unet()
    return training, (rk, rd), unet_ema


# ---------------------------------------------------------------- sampling and scoring

def diffusers_sample(unet: nn.Module, config: Any, steps: int, n: int, seed: int, batch: int, ddpm: bool) -> Tensor:
    """n samples (n, C, H, W) in [-1, 1] from diffusers' own pipeline (its scheduler built from ``config``)."""
    from diffusers import DDIMPipeline, DDPMPipeline, DDPMScheduler

    pipe = (DDPMPipeline if ddpm else DDIMPipeline)(unet=unet, scheduler=DDPMScheduler.from_config(config))
    pipe.set_progress_bar_config(disable=True)
    out = []
    for i, start in enumerate(range(0, n, batch)):
        g = torch.Generator().manual_seed(seed * 1_000_003 + i)
        img = pipe(batch_size=min(batch, n - start), generator=g, num_inference_steps=steps, output_type="np").images
        out.append(torch.from_numpy(img).permute(0, 3, 1, 2) * 2 - 1)  # (b, H, W, C) in [0, 1] -> (b, C, H, W)
    return torch.cat(out).float()


def fd_at_n(f_train: Tensor, f: Tensor, n: int, g: torch.Generator) -> float:
    """Mean FD of MATCHED_REPEATS random subsets of size n of f (compares with a baseline of n examples)."""
    return sum(frechet_distance(f_train, f[torch.randperm(len(f), generator=g)[:n]], n_boot=0).value
               for _ in range(MATCHED_REPEATS)) / MATCHED_REPEATS


def score(f_train: Tensor, f: Tensor, n_long: int, n_held: int, seed: int) -> dict[str, Any]:
    fd, kd = frechet_distance(f_train, f, seed=seed), kid(f_train, f, seed=seed)
    fl = frechet_distance(f_train, f[:n_long], seed=seed) if len(f) > n_long else fd
    return {"n": len(f), "fd": fd.value, "fd_se": fd.stderr, "kid": kd.value, "kid_se": kd.stderr,
            "fd_long": fl.value, "fd_long_se": fl.stderr, "n_long": min(n_long, len(f)),
            "fd_held": fd_at_n(f_train, f, n_held, torch.Generator().manual_seed(seed + 3))
            if f.shape[1] < n_held <= len(f) else None}


# ---------------------------------------------------------------- the script

def parse(argv: Sequence[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--data", default="digits", choices=sorted(RECIPES))
    p.add_argument("--quick", action="store_true", help="short budgets (digits 20 s, mnist5k 60 s), fewer samples")
    p.add_argument("--budget", type=float, help="training seconds a side (default: digits 120, mnist5k 1200)")
    p.add_argument("--steps", default="10,20,50,1000", help="sampling step counts, ascending (comma-separated)")
    p.add_argument("--n", type=int, help="samples a row (default 2000; --quick 500)")
    p.add_argument("--n-long", type=int, help="samples of the rows at the longest step count, and the n at which "
                                                 "every row is also scored (default 500; --quick 200)")
    p.add_argument("--samplers", default="unipc,ddim", help="kuosan's samplers (fixed grids) below the longest step "
                                                            f"count, comma-separated, of: {','.join(FIXED_GRID)}")
    p.add_argument("--long-samplers", help="kuosan's samplers at the longest step count (default: the first of "
                                           "--samplers), e.g. unipc,ddpm")
    p.add_argument("--threads", type=int, default=2, help="torch intra-op threads for both sides")
    p.add_argument("--device", default="cpu", choices=["cpu", "cuda"], help="where both sides train and sample")
    p.add_argument("--sample-device", choices=["cpu", "cuda"], help="where both sides sample (default: --device); "
                   "with --reuse, a CPU race's models can be sampled on a GPU")
    p.add_argument("--rounds", type=int, default=6, help="alternating training rounds a side")
    p.add_argument("--calibrate", type=float, help="calibration seconds a side (default: budget/12, at most 10)")
    p.add_argument("--batch-size", type=int, help="samples a network batch when sampling (default: 256 on a CPU, "
                   "where 500 draws 28x28 images at half the speed of 100-256 on 2 cores, 500 on a GPU); diffusers' "
                   "pipelines draw per batch, so its rows depend on it (the races before 2026-11-24 17:00 used 500)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--feature-steps", type=int, default=FeatureConfig().steps,
                   help="feature network training steps (the default is kuosan eval's)")
    p.add_argument("--feature-cache", help="feature networks' cache (default: kuosan's)")
    p.add_argument("--out", help="output folder (default runs/train-race-<data>-<time>)")
    p.add_argument("--reuse", metavar="DIR", help="an earlier race at the same data, budget, seed, threads and "
                   "device: its kuosan run (when trained with this script's recipe) and (when saved) diffusers' "
                   "model are copied, not retrained, and so are their rows at the same step counts and n; a side "
                   "without a model to copy trains alone for the budget")
    p.add_argument("--resample", action="store_true", help="with --reuse: sample the copied models again instead "
                   "of copying their rows (seeded: the same figures)")
    a = p.parse_args(argv)
    a.budget = a.budget if a.budget is not None else (QUICK_BUDGET if a.quick else BUDGET)[a.data]
    a.n = a.n if a.n is not None else (500 if a.quick else 2000)
    a.sample_device = a.sample_device or a.device
    a.batch_size = a.batch_size if a.batch_size is not None else (500 if a.sample_device == "cuda" else 256)
    a.n_long = min(a.n, a.n_long if a.n_long is not None else (200 if a.quick else 500))
    a.calibrate = a.calibrate if a.calibrate is not None else min(10.0, a.budget / 12)
    try:
        a.steps = [int(s) for s in a.steps.split(",")]
    except ValueError:
        raise ValueError(f"--steps must be comma-separated integers, got {a.steps!r}") from None
    a.samplers = [s for s in a.samplers.split(",") if s]
    a.long_samplers = [s for s in (a.long_samplers or ",".join(a.samplers[:1])).split(",") if s]
    if not a.steps or any(s < 1 for s in a.steps) or a.steps != sorted(set(a.steps)) or a.steps[-1] > 1000:
        raise ValueError(f"--steps must be distinct ascending step counts in [1, 1000], got {a.steps}")
    for k in ("n", "n_long", "threads", "rounds", "batch_size", "feature_steps"):
        if getattr(a, k) < 1:
            raise ValueError(f"--{k.replace('_', '-')} must be a positive integer, got {getattr(a, k)}")
    if not (a.budget > 0 and a.calibrate > 0):
        raise ValueError(f"--budget and --calibrate must be > 0, got {a.budget} and {a.calibrate}")
    if not a.samplers or not a.long_samplers:
        raise ValueError("--samplers and --long-samplers must name a sampler")
    bad = [smp for smp in a.samplers + a.long_samplers if smp not in FIXED_GRID]
    if bad:
        raise ValueError(f"unknown or unsuitable kuosan sampler {bad[0]!r}: choose from {FIXED_GRID}")
    if a.resample and a.reuse is None:
        raise ValueError("--resample redraws the rows of models copied by --reuse: give --reuse DIR too")
    if "cuda" in (a.device, a.sample_device) and not torch.cuda.is_available():
        raise ValueError("--device or --sample-device cuda was asked for, but CUDA is not available")
    return a


def fmt(v: float | None, se: float | None = None) -> str:
    if v is None:
        return "—"
    s = f"{v:.4g}" if abs(v) >= 1e-3 or v == 0 else f"{v:.2e}"
    return s + (f" ± {se:.2g}" if se is not None and math.isfinite(se) else "")


def goals(rows: list[dict[str, Any]], steps: list[int]) -> list[dict[str, Any]]:
    """Issue 9's goals on the FD at n_long (equal n on both sides)."""
    def best(model: str, s: int) -> dict[str, Any] | None:
        c = [r for r in rows if r["model"] == model and r["steps"] == s]
        return min(c, key=lambda r: r["fd_long"]) if c else None

    lo, hi = steps[0], steps[-1]
    k_lo, k_hi, d_hi = best("kuosan", lo), best("kuosan", hi), best("diffusers", hi)
    out = []
    for name, a, b, factor in ((f"kuosan FD@{lo} <= diffusers FD@{hi}", k_lo, d_hi, 1.0),
                               (f"kuosan FD@{hi} <= 0.7 x diffusers FD@{hi}", k_hi, d_hi, 0.7)):
        if a is None or b is None:
            out.append({"goal": name, "met": None})
            continue
        gap = abs(a["fd_long"] - factor * b["fd_long"])
        se = math.hypot(a["fd_long_se"] or 0.0, factor * (b["fd_long_se"] or 0.0))
        out.append({"goal": name, "met": a["fd_long"] <= factor * b["fd_long"], "kuosan": a["fd_long"],
                    "kuosan_sampler": a["sampler"], "diffusers": b["fd_long"], "factor": factor,
                    "n": a["n_long"], "resolved": gap > 2 * se})
    return out


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    a = parse(argv)
    torch.set_num_threads(a.threads)
    out = Path(a.out or f"runs/train-race-{a.data}-{time.strftime('%Y%m%d-%H%M%S')}")
    if (out / "kuosan").exists():
        raise ValueError(f"{out} already holds a race; choose another --out")
    (out / "samples").mkdir(parents=True, exist_ok=True)
    t_start = time.perf_counter()
    try:
        import diffusers
    except ImportError:
        raise SystemExit("train_race.py needs diffusers: pip install 'kuosan[bench]'") from None

    # the data, split as kuosan train splits it; the feature network on the training split
    cfg0 = kuosan_config(a.data, a.threads, out / "kuosan", 1, a.device)
    ds = load_dataset(cfg0.data.name, n=cfg0.data.n, seed=cfg0.run.seed)
    tr, held = split(ds, cfg0.data.val_fraction, cfg0.run.seed)
    meta = {"kind": ds.kind, "shape": list(ds.x.shape[1:]), "num_classes": ds.num_classes, "name": ds.name,
            "bits": ds.bits}
    feats = feature_extractor(tr.x, tr.y, tr.num_classes, FeatureConfig(steps=a.feature_steps),
                              cache_dir=a.feature_cache)
    f_train, f_held = feats.features(tr.x), feats.features(held.x)
    print(f"torch {torch.__version__}, diffusers {diffusers.__version__}, threads {torch.get_num_threads()}, "
          f"load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs")
    print(f"data {a.data}: {tuple(ds.x.shape)}, training split {len(tr)}, held-out {len(held)}; features: "
          f"{feats.kind} ({feats.dim}-d, {'cached' if feats.info.get('classifier', {}).get('cached') else 'trained'})")

    # the two networks, parameter counts within 5%
    with torch.random.fork_rng(devices=[]):
        n_k = n_params(build_net(cfg0, meta))
        torch.manual_seed(a.seed)
        unet = diffusers_unet(cfg0, meta["shape"])
    n_d = n_params(unet)
    print(f"parameters: kuosan U-Net {n_k:,}, diffusers UNet2DModel {n_d:,} (ratio {n_d / n_k:.4f}); "
          f"diffusers blocks {unet.config.block_out_channels}, {unet.config.layers_per_block} a level, "
          f"{unet.config.down_block_types}")
    if abs(n_d / n_k - 1) > 0.05:
        raise RuntimeError(f"parameter counts differ by more than 5%: {n_k} vs {n_d}")

    reused = reusable(a)
    training, (rk, rd), unet_ema = train_sides(a, out, cfg0, meta, tr, held, unet, reused)
    unet_ema.save_pretrained(out / "diffusers")  # config.json + safetensors: --reuse reads it back

    # sampling and scoring
    D, _, _ = load_denoiser(out / "kuosan", device=a.sample_device)
    unet_ema = unet_ema.to(a.sample_device)
    sched_config = diffusers_scheduler().config
    shape = tuple(meta["shape"])
    jobs: list[tuple[str, str, int]] = []
    for s in a.steps:
        long = s == a.steps[-1]
        jobs += [("kuosan", smp, s) for smp in (a.long_samplers if long else a.samplers)]
        jobs.append(("diffusers", "ddpm" if long else "ddim", s))
    rows: list[dict[str, Any]] = []
    # the held-out split keeps the data's order (MNIST-5k is sorted by label): its first n_long are no fair subset
    f_held = f_held[torch.randperm(len(f_held), generator=torch.Generator().manual_seed(a.seed))]
    base = {"model": "real", "sampler": "held-out", "steps": None,
            **score(f_train, f_held, a.n_long, len(held), a.seed), "seconds": 0.0}
    base["fd_held"] = base["fd"]

    def n_of(steps: int) -> int:  # samples a row: n_long at the longest step count
        return a.n_long if steps == a.steps[-1] else a.n

    # a model copied by --reuse draws the same samples as before: its rows (and their pictures) are copied too
    copied = {name for name, t in training.items() if "reused" in t}
    old_rows = {job: reused_row(reused, a, *job, n_of(job[2])) for job in jobs if job[0] in copied and not a.resample}
    t_sampling, done_work = time.perf_counter(), 0
    todo_jobs = [job for job in jobs if old_rows.get(job) is None]
    for model, smp, s in jobs:
        n = n_of(s)
        old = old_rows.get((model, smp, s))
        if old is not None:
            rows.append({**old, "reused": a.reuse})
            png = Path(a.reuse) / "samples" / f"{model}-{smp}-{s}.png"
            if png.is_file():
                shutil.copy2(png, out / "samples" / png.name)
            print(f"  copied {model} {smp} {s} steps from {a.reuse}: {n} samples, FD {fmt(old['fd'], old['fd_se'])}",
                  flush=True)
            continue
        t0 = time.perf_counter()
        with torch.no_grad():
            if model == "kuosan":
                x = sample(D, smp, (n, *shape), s, seed=a.seed, batch_size=a.batch_size, device=a.sample_device)
            else:
                x = diffusers_sample(unet_ema, sched_config, s, n, a.seed, a.batch_size, ddpm=smp == "ddpm")
        x = x.cpu().clamp(-1, 1)  # both return CPU tensors: the device's work is done
        secs = time.perf_counter() - t0
        save_samples(x[:100], out / "samples" / f"{model}-{smp}-{s}.png")
        row = {"model": model, "sampler": smp, "steps": s, **score(f_train, feats.features(x), a.n_long, len(held),
                                                                    a.seed), "seconds": secs}
        rows.append(row)
        done_work += n * s
        todo = sum(n_of(js) * js for _, _, js in todo_jobs) - done_work
        eta = todo * (time.perf_counter() - t_sampling) / done_work
        print(f"  sampled {model} {smp} {s} steps: {n} samples in {secs:.0f} s, FD {fmt(row['fd'], row['fd_se'])}; "
              f"sampling left: about {eta:.0f} s", flush=True)

    # the table and the goals
    hdr = (f"{'model':<10} {'sampler':<9} {'steps':>5} {'n':>5}  {'FD ± se':<16} {'KID ± se':<20} "
           f"{'FD ± se @n=' + str(a.n_long):<17} {'FD @n_held=' + str(len(held)):<15} {'sample s':>8}")
    lines = [f"train race on {a.data}: {a.budget:g} s of training a side, {os.cpu_count()} CPUs, {a.threads} threads; "
             f"FD/KID on kuosan's {feats.dim}-d {feats.kind} features vs the training split ({len(tr)})", hdr,
             "-" * len(hdr)]
    for r in [base] + rows:
        lines.append(f"{r['model']:<10} {r['sampler']:<9} {r['steps'] or '—':>5} {r['n']:>5}  "
                     f"{fmt(r['fd'], r['fd_se']):<16} {fmt(r['kid'], r['kid_se']):<20} "
                     f"{fmt(r['fd_long'], r['fd_long_se']):<17} {fmt(r['fd_held']):<15} {r['seconds']:>8.0f}")
    lines.append("real = the held-out split vs the training split (what new data scores); FD is biased upward by "
                 "O(d/n): compare columns at equal n. Not comparable with published FIDs.")
    gl = goals(rows, a.steps)
    for g in gl:
        if g["met"] is None:
            lines.append(f"goal: {g['goal']}: n/a (the step counts lack it)")
            continue
        lines.append(f"goal: {g['goal']}: {'MET' if g['met'] else 'NOT MET'} (kuosan {g['kuosan_sampler']} "
                     f"{g['kuosan']:.4g} vs {g['factor']:g} x {g['diffusers']:.4g}, n = {g['n']}"
                     f"{'' if g['resolved'] else '; within 2 standard errors'})")
    total = time.perf_counter() - t_start
    lines.append(f"total wall time {total:.0f} s; load average now {os.getloadavg()[0]:.1f}")
    print("\n".join(lines))
    result = {"args": dict(vars(a)), "params": {"kuosan": n_k, "diffusers": n_d},
              "rates": {"kuosan": rk, "diffusers": rd}, "training": training, "baseline": base, "rows": rows,
              "goals": gl, "table": lines, "wall_s": total}
    (out / "results.json").write_text(json.dumps(result, indent=1, default=str))
    print(f"results: {out / 'results.json'}; samples: {out / 'samples'}")
    return result


if __name__ == "__main__":
    try:
        reusable(parse(None))  # bad arguments or --reuse: one line and exit code 2, before any work
    except ValueError as err:
        print(f"train_race.py: error: {err}", file=sys.stderr)
        sys.exit(2)
    main()
