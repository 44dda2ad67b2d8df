"""The training loop (Ho et al. 2020 Algorithm 1): AdamW with warm-up and cosine decay, clipping before
the optimizer step, EMA with warm-up, optional bf16 autocast, DDP under torchrun, exact resume.

Randomness is a pure function of (seed, step): each step draws its batch indices, timesteps and noise
for the *global* batch from a generator seeded with (seed, step) and each process takes its slice. So a
resumed run continues bit-for-bit, and N DDP processes train the same model as one process would.
"""

from __future__ import annotations

import csv
import math
import os
import signal
import threading
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
from torch import Tensor, nn

from .checkpoint import load_checkpoint, load_weights, save_checkpoint
from .config import Config, from_dict, to_toml
from .data import load_dataset, split
from .denoiser import NetDenoiser
from .losses import diffusion_loss
from .model import build_net, data_meta, load_denoiser, make_schedule_from
from .samplers import ddim, uniform_grid
from .variance import ImportanceTimesteps
from .viz import plot_loss, save_samples

__all__ = ["EMA", "TrainingError", "load_denoiser", "lr_at", "train"]


class TrainingError(RuntimeError):
    """Training cannot go on (e.g. the loss stays non-finite); the last good checkpoint is kept."""


class EMA:
    """Exponential moving average of parameters and buffers, decay warmed up as min(d, (1+n)/(10+n))."""

    def __init__(self, model: nn.Module, decay: float, warmup: bool = True):
        self.decay, self.warmup = decay, warmup
        self.shadow = {k: v.detach().clone().float() for k, v in model.state_dict().items()}

    @torch.no_grad()
    def update(self, model: nn.Module, n_updates: int) -> None:
        d = min(self.decay, (1 + n_updates) / (10 + n_updates)) if self.warmup else self.decay
        for k, v in model.state_dict().items():
            if v.dtype.is_floating_point:
                self.shadow[k].lerp_(v.float(), 1 - d)
            else:
                self.shadow[k].copy_(v)

    def copy_to(self, model: nn.Module) -> None:
        model.load_state_dict({k: v.to(model.state_dict()[k].dtype) for k, v in self.shadow.items()})


def lr_at(cfg: Config, step: int) -> float:
    """Linear warm-up to cfg.lr over cfg.warmup steps, then cosine decay to cfg.min_lr at cfg.steps."""
    if step < cfg.warmup:
        return cfg.lr * (step + 1) / cfg.warmup
    frac = min(1.0, (step - cfg.warmup) / max(1, cfg.steps - cfg.warmup))
    return cfg.min_lr + 0.5 * (cfg.lr - cfg.min_lr) * (1 + math.cos(math.pi * frac))


def bf16_is_fast(device: torch.device) -> bool:
    """bf16 autocast pays on CPUs with native bf16 (AVX512-BF16 or AMX: Sapphire Rapids, ~20% per digits
    step here) and on bf16 GPUs; elsewhere bf16 is emulated and slower, so fp32 is kept."""
    if device.type == "cuda":
        return torch.cuda.is_bf16_supported()
    try:
        with open("/proc/cpuinfo") as f:
            flags = f.read()
    except OSError:
        return False
    return "avx512_bf16" in flags or "amx_bf16" in flags


def step_generator(seed: int, step: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed * 1_000_003 + step)


def _device(cfg: Config, local_rank: int) -> torch.device:
    if cfg.device == "auto":
        return torch.device(f"cuda:{local_rank}" if torch.cuda.is_available() else "cpu")
    dev = torch.device(cfg.device)
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ValueError("device 'cuda' was asked for, but CUDA is not available")
    return torch.device(f"cuda:{local_rank}") if dev.type == "cuda" and dev.index is None else dev


@torch.no_grad()
def sample_preview(denoiser: NetDenoiser, meta: dict[str, Any], n: int, steps: int, seed: int,
                   device: torch.device) -> Tensor:
    """n samples with DDIM (η = 0, trailing grid) from a fixed seed; (n, *shape) on the CPU."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randn((n, *meta["shape"]), generator=g).to(device)
    out = ddim(denoiser, x, uniform_grid(denoiser.schedule.T, min(steps, denoiser.schedule.T), "trailing"))
    return out.cpu()


def train(cfg: Config, *, resume: str | Path | None = None, overrides: dict[str, Any] | None = None,
          stop_at: int | None = None, progress: bool = True) -> Path:
    """Train per cfg (or continue the run at ``resume``); returns the run folder."""
    ckpt = None
    if resume is not None:
        ckpt = load_checkpoint(resume)
        cfg = from_dict({**ckpt.config, **(overrides or {})}, where=f"checkpoint {ckpt.path}")
    cfg.validate()
    world = int(os.environ.get("WORLD_SIZE", "1"))
    rank, local_rank = int(os.environ.get("RANK", "0")), int(os.environ.get("LOCAL_RANK", "0"))
    device = _device(cfg, local_rank)
    if world > 1 and not dist.is_initialized():
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
    if cfg.batch_size % world:
        raise ValueError(f"batch_size {cfg.batch_size} is not divisible by the {world} processes")
    if cfg.threads:
        torch.set_num_threads(cfg.threads)

    ds = load_dataset(cfg.data, n=cfg.n_data, seed=cfg.seed)
    if cfg.class_cond and ds.num_classes == 0:
        raise ValueError(f"class_cond needs labels, but data set {cfg.data!r} has none")
    train_ds, val_ds = split(ds, cfg.val_fraction, cfg.seed)
    meta = data_meta(ds)
    sched = make_schedule_from(cfg)
    torch.manual_seed(cfg.seed)  # the same initial weights on every process and every run of this seed
    net = build_net(cfg, meta)
    net.to(device)
    opt = torch.optim.AdamW(net.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay, betas=(0.9, 0.999))
    ema = EMA(net, cfg.ema_decay, cfg.ema_warmup)
    imp = ImportanceTimesteps(cfg.T) if cfg.importance_sampling else None
    start = 0
    run_dir = Path(cfg.out or f"runs/{Path(cfg.data).name}-{time.strftime('%Y%m%d-%H%M%S')}")
    if ckpt is not None:
        load_weights(net, ckpt.model, f"checkpoint {ckpt.path}")
        if ckpt.ema is not None:
            ema.shadow = {k: v.float().to(device) for k, v in ckpt.ema.items()}
        if ckpt.optim is not None:
            opt.load_state_dict(ckpt.optim)
        if imp is not None and "imp_losses" in ckpt.extra:
            imp.losses, imp.count = ckpt.extra["imp_losses"], ckpt.extra["imp_count"]
        start = int(ckpt.state["step"])
        run_dir = Path(ckpt.path).parent.parent if not (overrides or {}).get("out") else run_dir
    ema.shadow = {k: v.to(device) for k, v in ema.shadow.items()}
    train_net = nn.parallel.DistributedDataParallel(net) if world > 1 else net
    trainer = NetDenoiser(train_net, sched, cfg.target)  # .raw(x_t, t) calls the (DDP) network
    ema_net = build_net(cfg, meta)
    ema_net = ema_net.to(device).eval()
    ema_den = NetDenoiser(ema_net, sched, cfg.target)

    use_bf16 = cfg.precision == "bf16" or (cfg.precision == "auto" and bf16_is_fast(device))
    X, Y = train_ds.x.to(device), (train_ds.y.to(device) if train_ds.y is not None else None)
    end = cfg.steps if stop_at is None else min(stop_at, cfg.steps)
    if end <= start:  # nothing to train; saving would label step-`start` weights as step `end`
        raise ValueError(f"the run is already at step {start}; ask for more steps (--steps/--stop-at > {start})")
    is_main = rank == 0
    if is_main:
        run_dir.mkdir(parents=True, exist_ok=True)
        (run_dir / "config.toml").write_text(to_toml(cfg))
    log_path = run_dir / "log.csv"
    fields_ = ["step", "loss", "lr", "grad_norm", "val_loss", "samples_per_s", "elapsed_s"]
    if is_main and (start == 0 or not log_path.exists()):
        with open(log_path, "w", newline="") as f:
            csv.writer(f).writerow(fields_)

    def save(step: int) -> None:
        if is_main:
            extra = {"imp_losses": imp.losses, "imp_count": imp.count} if imp is not None else None
            save_checkpoint(run_dir, step, asdict(cfg), {"data": meta, "world_size": world}, net.state_dict(),
                            ema.shadow, opt.state_dict(), extra)

    loss_kw = dict(target=cfg.target, loss_type=cfg.loss, weighting=cfg.weighting, gamma=cfg.min_snr_gamma,
                   hybrid_lambda=cfg.hybrid_lambda if cfg.learn_variance else 0.0, bits=meta["bits"])

    def val_loss() -> float:
        if len(val_ds.x) == 0:
            return float("nan")
        ema.copy_to(ema_net)
        g = torch.Generator().manual_seed(cfg.seed + 12345)  # the same t and noise at every evaluation
        x0 = val_ds.x[:512]
        t = torch.randint(1, sched.T + 1, (len(x0),), generator=g)
        eps = torch.randn(x0.shape, generator=g)
        y = val_ds.y[:512].to(device) if (cfg.class_cond and val_ds.y is not None) else None
        with torch.no_grad():
            return diffusion_loss(ema_den.raw, sched, x0.to(device), t=t.to(device), eps=eps.to(device),
                                  cond={"y": y} if y is not None else None, **loss_kw).total.mean().item()

    def preview(step: int) -> None:
        ema.copy_to(ema_net)
        x = sample_preview(ema_den, meta, cfg.n_samples, cfg.sample_steps, cfg.seed, device)
        save_samples(x, run_dir / "samples.png", reference=ds.x[:2000] if ds.kind == "vector" else None)
        if cfg.sample_every:
            (run_dir / "samples").mkdir(exist_ok=True)
            save_samples(x, run_dir / "samples" / f"step_{step:07d}.png")

    from tqdm.auto import tqdm

    bar = tqdm(range(start, end), initial=start, total=end, disable=not (progress and is_main), desc="training",
               dynamic_ncols=True)
    local_b = cfg.batch_size // world
    acc, acc_n, gn, bad, t0, last_t, last_step = 0.0, 0, 0.0, 0, time.time(), time.time(), start
    interrupted: list[bool] = []
    old_handler = None
    if world == 1 and threading.current_thread() is threading.main_thread():
        # Ctrl-C finishes the current step, saves, and stops: nothing is lost, nothing half-applied.
        old_handler = signal.signal(signal.SIGINT, lambda *_: interrupted.append(True))
    try:
        for step in bar:
            g = step_generator(cfg.seed, step)
            idx = torch.randint(len(X), (cfg.batch_size,), generator=g)[rank * local_b:(rank + 1) * local_b]
            if imp is None:
                t_all, w_all = torch.randint(1, sched.T + 1, (cfg.batch_size,), generator=g), None
            else:  # importance-sampled t with weights 1/(T p_t): the weighted loss stays unbiased
                t_all, w_all = imp.sample(cfg.batch_size, generator=g)
            t = t_all[rank * local_b:(rank + 1) * local_b]
            eps = torch.randn((cfg.batch_size, *X.shape[1:]), generator=g)[rank * local_b:(rank + 1) * local_b]
            drop = torch.rand(cfg.batch_size, generator=g)[rank * local_b:(rank + 1) * local_b] < cfg.p_uncond
            torch.manual_seed(cfg.seed * 1_000_003 + step * world + rank)  # dropout masks
            idx, t, eps = idx.to(device), t.to(device), eps.to(device)
            cond = None
            if cfg.class_cond:
                cond = {"y": torch.where(drop.to(device), ds.num_classes, Y[idx])}
            net.train()
            with torch.autocast(device.type, dtype=torch.bfloat16, enabled=use_bf16):
                terms = diffusion_loss(trainer.raw, sched, X[idx], t=t, eps=eps, cond=cond, **loss_kw)
            per_sample = terms.total
            if w_all is not None:
                per_sample = per_sample * w_all[rank * local_b:(rank + 1) * local_b].to(device, per_sample.dtype)
                vlb = terms.vlb.double()
                if world > 1:  # every process keeps the same history: gather the global batch's terms
                    parts = [torch.empty_like(vlb) for _ in range(world)]
                    dist.all_gather(parts, vlb)
                    vlb = torch.cat(parts)
                imp.update(t_all, vlb.cpu())
            loss = per_sample.mean()
            loss_val = loss.detach().clone()
            if world > 1:
                dist.all_reduce(loss_val)
                loss_val /= world
            ok = bool(torch.isfinite(loss_val))
            if ok:
                loss.backward()
                gnorm = nn.utils.clip_grad_norm_(net.parameters(), cfg.grad_clip if cfg.grad_clip > 0 else float("inf"))
                ok = bool(torch.isfinite(gnorm))  # clipped *before* the step (seed 000 clips after it)
            if not ok:
                opt.zero_grad(set_to_none=True)
                bad += 1
                tqdm.write(f"step {step}: non-finite loss or gradient ({loss_val.item()}); update skipped")
                if bad >= 10:
                    raise TrainingError(f"loss non-finite for {bad} steps in a row at step {step}; "
                                        f"last good checkpoint kept in {run_dir / 'checkpoints'}")
                continue
            bad = 0
            for group in opt.param_groups:
                group["lr"] = lr_at(cfg, step)
            opt.step()
            opt.zero_grad(set_to_none=True)
            ema.update(net, step)
            acc, acc_n, gn = acc + loss_val.item(), acc_n + 1, gn + float(gnorm)
            done = step + 1
            if is_main and (done % cfg.log_every == 0 or done == end):
                now = time.time()
                rate = (done - last_step) * cfg.batch_size / max(now - last_t, 1e-9)
                vl = val_loss() if (done % cfg.val_every == 0 or done == end) else None
                with open(log_path, "a", newline="") as f:
                    csv.writer(f).writerow([done, f"{acc / acc_n:.6g}", f"{lr_at(cfg, step):.6g}", f"{gn / acc_n:.4g}",
                                            "" if vl is None else f"{vl:.6g}", f"{rate:.1f}", f"{now - t0:.2f}"])
                bar.set_postfix(loss=f"{acc / acc_n:.4f}", img_s=f"{rate:.0f}")
                acc, acc_n, gn, last_t, last_step = 0.0, 0, 0.0, now, done
            if is_main and cfg.sample_every and done % cfg.sample_every == 0 and done != end:
                preview(done)
            if interrupted:
                save(done)
                raise KeyboardInterrupt(f"interrupted; saved a checkpoint at step {done} in {run_dir}")
            if done % cfg.ckpt_every == 0 and done != end:
                save(done)
    finally:
        if old_handler is not None:
            signal.signal(signal.SIGINT, old_handler)
    bar.close()
    save(end)
    if is_main:
        plot_loss(log_path, run_dir / "loss.png")
        preview(end)
    if world > 1:
        dist.barrier()
    return run_dir

