"""The training loop: set up (data, path, network, objective, AdamW, EMA), restore a checkpoint, step, log,
checkpoint, preview. bf16 autocast on request, DDP under torchrun, Ctrl-C saves and stops."""

from __future__ import annotations

import os
import signal
import threading
import time
from pathlib import Path
from typing import Any, Mapping, Sequence

import torch
import torch.distributed as dist
from torch import nn

from ..build import build_net, data_meta, make_denoiser, make_objective_from, make_param_from, make_path_from
from ..checkpoint import load_checkpoint, load_weights, save_checkpoint
from ..config import Config, apply_overrides, from_dict, to_dict, to_toml
from ..data import load_dataset, split
from .ema import EMA
from .runlog import RunLog, sample_preview, save_preview
from .step import draw_batch, lr_at, train_step

class TrainingError(RuntimeError):
    """Training cannot go on (e.g. the loss stays non-finite); the last good checkpoint is kept."""


def bf16_is_fast(device: torch.device) -> bool:
    """bf16 autocast pays on CPUs with native bf16 (AVX512-BF16 or AMX: ~20% per digits step on Sapphire Rapids)
    and on bf16 GPUs; elsewhere bf16 is emulated and slower, so fp32 is kept."""
    if device.type == "cuda":
        return torch.cuda.is_bf16_supported()
    try:
        with open("/proc/cpuinfo") as f:
            flags = f.read()
    except OSError:
        return False
    return "avx512_bf16" in flags or "amx_bf16" in flags


def pick_device(name: str, local_rank: int) -> torch.device:
    """run.device -> a torch device (auto: this process's GPU if there is one, else the CPU)."""
    if name == "auto":
        return torch.device(f"cuda:{local_rank}" if torch.cuda.is_available() else "cpu")
    dev = torch.device(name)
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ValueError("device 'cuda' was asked for, but CUDA is not available")
    return torch.device(f"cuda:{local_rank}") if dev.type == "cuda" and dev.index is None else dev


def _time_sampler_state(obj: Any) -> dict[str, torch.Tensor] | None:
    """The time sampler's state tensors (the importance sampler's history: imp_losses, imp_count), for the
    checkpoint's extra.safetensors."""
    return (obj.times.state_dict() if hasattr(obj.times, "state_dict") else None) or None


def train(cfg: Config | None, *, resume: str | Path | None = None,
          overrides: Sequence[str] | Mapping[str, Any] | None = None, stop_at: int | None = None,
          progress: bool = True) -> Path:
    """Train per cfg, or continue the run (or checkpoint) ``resume`` with its stored config and ``overrides``
    ("table.key=value" strings or a {"table.key": value} mapping, e.g. {"optim.steps": 2000}); returns the run
    folder. ``stop_at`` stops (and checkpoints) early; resuming later continues bit for bit."""
    ckpt = None
    if resume is not None:
        ckpt = load_checkpoint(resume)
        cfg = from_dict(ckpt.config, where=f"checkpoint {ckpt.path}")
    if cfg is None:
        raise ValueError("train() needs a config or a run to resume")
    cfg = apply_overrides(cfg, overrides).validate()
    run_dir = Path(cfg.log.out or f"runs/{Path(cfg.data.name).name}-{time.strftime('%Y%m%d-%H%M%S')}")
    if ckpt is not None and not _overrides_out(overrides):
        run_dir = Path(ckpt.path).parent.parent  # a resumed run stays in its folder
    if run_dir.exists() and not run_dir.is_dir():
        raise ValueError(f"log.out {str(run_dir)!r} is a file, not a run folder")
    world = int(os.environ.get("WORLD_SIZE", "1"))
    rank, local_rank = int(os.environ.get("RANK", "0")), int(os.environ.get("LOCAL_RANK", "0"))
    device = pick_device(cfg.run.device, local_rank)
    if world > 1 and not dist.is_initialized():
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
    if cfg.optim.batch_size % world:
        raise ValueError(f"optim.batch_size {cfg.optim.batch_size} is not divisible by the {world} processes")
    if cfg.run.threads:
        torch.set_num_threads(cfg.run.threads)

    ds = load_dataset(cfg.data.name, n=cfg.data.n, seed=cfg.run.seed)
    if cfg.data.class_cond and ds.num_classes == 0:
        raise ValueError(f"data.class_cond needs labels, but data set {cfg.data.name!r} has none")
    train_ds, val_ds = split(ds, cfg.data.val_fraction, cfg.run.seed)
    meta = data_meta(ds)
    path, param = make_path_from(cfg), make_param_from(cfg)
    obj = make_objective_from(cfg, path, param, bits=meta["bits"])
    val_obj = make_objective_from(cfg, path, param, bits=meta["bits"])  # its own (untouched) time sampler
    torch.manual_seed(cfg.run.seed)  # the same initial weights on every process and every run of this seed
    net = build_net(cfg, meta).to(device)
    opt = torch.optim.AdamW(net.parameters(), lr=cfg.optim.lr, weight_decay=cfg.optim.weight_decay,
                            betas=(0.9, 0.999))
    ema = EMA(net, cfg.optim.ema_decay, cfg.optim.ema_warmup)
    start = 0
    if ckpt is not None:
        load_weights(net, ckpt.model, f"checkpoint {ckpt.path}")
        if ckpt.ema is not None:
            ema.shadow = {k: v.float() for k, v in ckpt.ema.items()}
        if ckpt.optim is not None:
            opt.load_state_dict(ckpt.optim)
        if ckpt.extra and hasattr(obj.times, "load_state_dict"):
            obj.times.load_state_dict(ckpt.extra)
        start = int(ckpt.state["step"])
    ema.to(device)
    train_net = nn.parallel.DistributedDataParallel(net) if world > 1 else net
    trainer = make_denoiser(train_net, cfg, path)  # .raw(x_t, t) calls the (DDP) network
    ema_net = build_net(cfg, meta).to(device).eval()
    ema_den = make_denoiser(ema_net, cfg, path)

    use_bf16 = cfg.run.precision == "bf16" or (cfg.run.precision == "auto" and bf16_is_fast(device))
    X, Y = train_ds.x.to(device), (train_ds.y.to(device) if train_ds.y is not None else None)
    end = cfg.optim.steps if stop_at is None else min(stop_at, cfg.optim.steps)
    if end <= start:  # nothing to train; saving would label step-`start` weights as step `end`
        raise ValueError(f"the run is already at step {start}; ask for more steps (optim.steps / stop_at > {start})")
    is_main = rank == 0
    if is_main:
        run_dir.mkdir(parents=True, exist_ok=True)
        (run_dir / "config.toml").write_text(to_toml(cfg))

    def save(step: int) -> None:
        if is_main:
            save_checkpoint(run_dir, step, to_dict(cfg), {"data": meta, "world_size": world}, net.state_dict(),
                            ema.shadow, opt.state_dict(), _time_sampler_state(obj))

    def val_loss() -> float:
        """The EMA model's loss on the first 512 held-out examples, the same t and ε at every evaluation."""
        if len(val_ds.x) == 0:
            return float("nan")
        ema.copy_to(ema_net)
        g = torch.Generator().manual_seed(cfg.run.seed + 12345)
        x0 = val_ds.x[:512]
        t = val_obj.times.sample(len(x0), g)[0]
        eps = torch.randn(x0.shape, generator=g)
        y = val_ds.y[:512].to(device) if (cfg.data.class_cond and val_ds.y is not None) else None
        with torch.no_grad():
            terms = val_obj(ema_den.raw, x0.to(device), t=t.to(device), eps=eps.to(device),
                            cond={"y": y} if y is not None else None)
        return terms.total.mean().item()

    def preview(step: int) -> None:
        ema.copy_to(ema_net)
        x = sample_preview(ema_den, meta["shape"], cfg.log.n_samples, cfg.log.sample_steps, cfg.run.seed, device)
        save_preview(x, run_dir, step if cfg.log.sample_every else None,
                     ds.x[:2000] if ds.kind == "vector" else None)

    log = RunLog(run_dir, start, end, cfg.optim.batch_size, is_main, progress)
    bad = 0
    interrupted: list[bool] = []
    old_handler = None
    if world == 1 and threading.current_thread() is threading.main_thread():
        # Ctrl-C finishes the current step, saves, and stops: nothing is lost, nothing half-applied.
        old_handler = signal.signal(signal.SIGINT, lambda *_: interrupted.append(True))
    try:
        for step in range(start, end):
            batch = draw_batch(cfg, obj, X, Y, ds.num_classes, step, rank, world)
            res = train_step(cfg, net, trainer.raw, obj, batch, opt, step, world, use_bf16)
            if not res.ok:
                bad += 1
                log.skip()
                log.note(f"step {step}: non-finite loss or gradient ({res.loss}); update skipped")
                if bad >= 10:
                    raise TrainingError(f"loss non-finite for {bad} steps in a row at step {step}; "
                                        f"last good checkpoint kept in {run_dir / 'checkpoints'}")
                continue
            bad = 0
            ema.update(net, step)
            log.add(res.loss, res.grad_norm)
            done = step + 1
            if is_main and (done % cfg.log.log_every == 0 or done == end):
                log.row(done, lr_at(cfg, step), val_loss() if (done % cfg.log.val_every == 0 or done == end) else None)
            if is_main and cfg.log.sample_every and done % cfg.log.sample_every == 0 and done != end:
                preview(done)
            if interrupted:
                save(done)
                raise KeyboardInterrupt(f"interrupted; saved a checkpoint at step {done} in {run_dir}")
            if done % cfg.log.ckpt_every == 0 and done != end:
                save(done)
    finally:
        if old_handler is not None:
            signal.signal(signal.SIGINT, old_handler)
        log.close()
    save(end)
    if is_main:
        log.plot(run_dir / "loss.png")
        preview(end)
    if world > 1:
        dist.barrier()
    return run_dir


def _overrides_out(overrides: Sequence[str] | Mapping[str, Any] | None) -> bool:
    """Whether the overrides move the run to another folder (log.out)."""
    if not overrides:
        return False
    if isinstance(overrides, Mapping):
        return "log.out" in overrides or "out" in (overrides.get("log") or {})
    return "log.out" in [kv.split("=", 1)[0].strip() for kv in overrides]
