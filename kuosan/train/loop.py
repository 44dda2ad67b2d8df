"""The training loop: set up (data, path, network, objective, AdamW, EMA), restore a checkpoint, step, log,
checkpoint, preview; bf16 autocast on request, DDP under torchrun.

It stops cleanly whatever happens: a stop signal finishes the step, writes a checkpoint and raises Interrupted
(signals.py); a diverging run stops before anything of it is saved (guard.py); a full disk or an unusable
checkpoint is one line (kuosan.checkpoint); one process trains a run folder at a time (lock.py), and temporary
files an earlier process left are removed at start.
"""

from __future__ import annotations

import os
import signal
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator, Mapping, Sequence

import torch
import torch.distributed as dist
from torch import nn

from ..build import build_net, check_recorded_path, data_meta, make_denoiser, make_objective_from, make_param_from, \
    make_path_from
from ..checkpoint import (CheckpointError, DiskFullError, check_tensors, checkpoints_root, clean_temp, is_disk_full,
                          load_checkpoint, newest, resolve, save_checkpoint, write_text_atomic)
from ..config import Config, apply_overrides, from_dict, overrides_set, to_dict, to_toml
from ..data import load_dataset, split
from ..families.distill import init_from_teacher
from .device import bf16_is_fast, compiled, pick_device
from .ema import EMA
from .guard import Guard, TrainingError, advice
from .lock import RunLock
from .preflight import check_disk, check_memory, meta_net
from .resume import check_may_continue, restore, run_folder_of
from .runlog import RunLog, check_tensorboard, sample_preview, save_preview
from .signals import Interrupted, StopSignals, signal_name
from .step import adamw, draw_batch, lr_at, train_step, validation_loss
from .threads import pick_threads


def kept(run_dir: Path) -> str:
    """Which checkpoint a stopped run leaves: 'the last good checkpoint is ...' or that there is none."""
    try:
        c = newest(run_dir / "checkpoints") if (run_dir / "checkpoints").is_dir() else None
    except (CheckpointError, OSError):
        c = None
    return f"the last good checkpoint is {str(c)!r}" if c is not None else "no checkpoint of this run exists"


def train(cfg: Config | None, *, resume: str | Path | None = None,
          overrides: Sequence[str] | Mapping[str, Any] | None = None, stop_at: int | None = None,
          progress: bool = True) -> Path:
    """Train per cfg, or continue the run (or checkpoint) ``resume`` with its stored config and ``overrides``
    ("table.key=value" strings or a {"table.key": value} mapping, e.g. {"optim.steps": 2000}); returns the run
    folder. ``stop_at`` stops (and checkpoints) early; resuming later continues bit for bit.

    Raises Interrupted (a KeyboardInterrupt whose ``exit_code`` is 130, 143 or 138) after a stop signal, once the
    checkpoint of the finished step is written; TrainingError when the run diverged (nothing of it saved);
    CheckpointError, ConfigError, DiskFullError, RunLockedError (one line each) when it cannot start or save."""
    sig = StopSignals().install()  # first: a signal during start-up is one line too
    threads_before = torch.get_num_threads()
    try:
        return _train(sig, cfg, resume, overrides, stop_at, progress)
    finally:
        sig.restore()
        torch.set_num_threads(threads_before)


def _train(sig: StopSignals, cfg: Config | None, resume: str | Path | None,
           overrides: Sequence[str] | Mapping[str, Any] | None, stop_at: int | None, progress: bool) -> Path:
    rank = int(os.environ.get("RANK", "0"))
    try:
        run_dir = None
        if resume is not None and not overrides_set(overrides, "log.out"):  # the run stays in its folder: lock it
            run_dir = run_folder_of(resolve(resume))  # before reading, so a live run is refused, not half-read
        with _lock(run_dir, rank):
            ckpt, cfg = _config_of(cfg, resume, overrides)
            if run_dir is not None:
                return _locked(sig, cfg, ckpt, run_dir, stop_at, progress)
        run_dir = Path(cfg.log.out or f"runs/{Path(cfg.data.name).name}-{time.strftime('%Y%m%d-%H%M%S')}")
        with _lock(run_dir, rank):
            return _locked(sig, cfg, ckpt, run_dir, stop_at, progress)
    except Interrupted as e:
        if str(e) != f"stopped by {signal_name(e.signum)}":  # already says where the run stands
            raise
        raise Interrupted(e.signum, f"stopped by {signal_name(e.signum)} during start-up; nothing was written") \
            from None


def _config_of(cfg: Config | None, resume: str | Path | None, overrides: Sequence[str] | Mapping[str, Any] | None
               ) -> tuple[Any, Config]:
    """(checkpoint or None, the validated config): cfg, or the resumed checkpoint's, with the overrides."""
    ckpt = load_checkpoint(resume) if resume is not None else None
    if ckpt is not None:
        cfg = from_dict(ckpt.config, where=f"checkpoint {str(ckpt.path)!r}")
    if cfg is None:
        raise ValueError("train() needs a config or a run to resume")
    cfg = apply_overrides(cfg, overrides).validate()
    if ckpt is not None and not overrides_set(overrides, "path."):  # an edited config.json is refused
        check_recorded_path(ckpt, make_path_from(cfg))
    return ckpt, cfg


@contextmanager
def _lock(run_dir: Path | None, rank: int) -> Iterator[None]:
    """Hold run_dir's lock (process 0; created first). A full disk there is one line; an unforeseen full disk
    inside is one line naming the checkpoint kept."""
    if run_dir is None or rank != 0:
        yield
        return
    if os.path.lexists(run_dir) and not run_dir.is_dir():
        raise ValueError(f"log.out {str(run_dir)!r} is a file, not a run folder")
    try:
        run_dir.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        if is_disk_full(e):
            raise DiskFullError(f"no space left on the device to create the run folder {str(run_dir)!r}") from None
        raise
    with RunLock(run_dir):
        try:
            yield
        except OSError as e:
            if is_disk_full(e):  # a write the specific checks did not foresee
                raise DiskFullError(f"no space left on the device writing {e.filename or str(run_dir)!r}; free some "
                                    f"space and resume; {kept(run_dir)}") from None
            raise


def _locked(sig: StopSignals, cfg: Config, ckpt: Any, run_dir: Path, stop_at: int | None, progress: bool) -> Path:
    world = int(os.environ.get("WORLD_SIZE", "1"))
    rank, local_rank = int(os.environ.get("RANK", "0")), int(os.environ.get("LOCAL_RANK", "0"))
    is_main = rank == 0
    try:
        check_tensorboard(cfg.log.tensorboard)  # before any work: a missing package is one line, nothing written
        if is_main:  # holding the lock: every temp entry here is an earlier process's leftover
            root = checkpoints_root(run_dir)
            for d in (root, run_dir, run_dir / "samples"):
                clean_temp(d)
            check_may_continue(root, ckpt, run_dir)
        device = pick_device(cfg.run.device, local_rank)
        if world > 1 and not dist.is_initialized():
            dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
        if cfg.optim.batch_size % world:
            raise ValueError(f"optim.batch_size {cfg.optim.batch_size} is not divisible by the {world} processes")
        threads, _ = pick_threads(cfg.run.threads, ckpt.state.get("threads") if ckpt is not None else None)
        torch.set_num_threads(threads)
        ds = load_dataset(cfg.data.name, n=cfg.data.n, seed=cfg.run.seed)
        if cfg.data.class_cond and ds.num_classes == 0:
            raise ValueError(f"data.class_cond needs labels, but data set {cfg.data.name!r} has none")
        train_ds, val_ds = split(ds, cfg.data.val_fraction, cfg.run.seed)
        meta = data_meta(ds)
        path, param = make_path_from(cfg), make_param_from(cfg)
        obj = make_objective_from(cfg, path, param, bits=meta["bits"], device=device, data_shape=meta["shape"])
        # its own (untouched) time sampler; a consistency objective is stateless and may hold a teacher: shared
        val_obj = obj if cfg.objective.prediction == "consistency" else make_objective_from(cfg, path, param,
                                                                                            bits=meta["bits"])
        probe = meta_net(lambda: build_net(cfg, meta))  # sizes checked before anything is allocated
        if ckpt is not None:
            check_tensors(ckpt.model, probe.state_dict(), f"checkpoint {str(ckpt.path)!r}")
        check_memory(cfg, probe, meta, device)
        if is_main:
            check_disk(run_dir, probe)
        torch.manual_seed(cfg.run.seed)  # the same initial weights on every process and every run of this seed
        net = build_net(cfg, meta).to(device)
        from_teacher = ckpt is None and init_from_teacher(cfg, net)  # cd / ect: start from the teacher's weights
        guard = Guard(net)  # measures the initial weights
        opt = adamw(cfg, net)
        ema = EMA(net, cfg.optim.ema_decay, cfg.optim.ema_warmup)
        start = restore(ckpt, net, ema, opt, obj, meta) if ckpt is not None else 0
        end = cfg.optim.steps if stop_at is None else min(stop_at, cfg.optim.steps)
        if end <= start:  # nothing to train; saving would label step-`start` weights as step `end`
            raise ValueError(f"the run is already at step {start}; ask for more steps (optim.steps / stop_at > "
                             f"{start})")
        ema.to(device)
        train_net = nn.parallel.DistributedDataParallel(net) if world > 1 else net
        train_net = compiled(train_net, cfg.run.compile, device)  # checkpoints and EMA read the plain `net`
        trainer = make_denoiser(train_net, cfg, path)  # .raw(x_t, t) calls the (DDP) network
        ema_net = build_net(cfg, meta).to(device).eval()
        ema_den = make_denoiser(ema_net, cfg, path)
        use_bf16 = cfg.run.precision == "bf16" or (cfg.run.precision == "auto" and bf16_is_fast(device))
        X, Y = train_ds.x.to(device), (train_ds.y.to(device) if train_ds.y is not None else None)
        Z = train_ds.noise.to(device) if train_ds.noise is not None else None  # paired data (reflow): each x's ε
        if is_main:
            write_text_atomic(run_dir / "config.toml", to_toml(cfg))
        log = RunLog(run_dir, start, end, cfg.optim.batch_size, is_main, progress,
                     tensorboard=cfg.log.tensorboard)
        if from_teacher and is_main:
            log.note(f"initialised the weights from the teacher run {cfg.consistency.teacher!r}")
    except Interrupted as e:
        raise Interrupted(e.signum, f"stopped by {signal_name(e.signum)} during start-up; nothing was trained; "
                                    f"{kept(run_dir)}") from None
    state = {"data": meta, "world_size": world, "path": path.fingerprint(), "threads": threads}

    def checkpoint(step: int) -> Path | None:
        """Write the step's checkpoint (process 0), never a diverged one; no signal interrupts it."""
        with sig.critical():
            opt_state = opt.state_dict()
            problem = guard.unsaveable(net.state_dict(), ema.shadow, opt_state)  # every process: same weights
            if problem is not None:
                raise TrainingError(f"training diverged by step {step}: {problem}; it was not saved; "
                                    f"{kept(run_dir)}; {advice(cfg)}")
            saved, err = None, None
            if is_main:
                try:
                    saved = save_checkpoint(run_dir, step, to_dict(cfg), state, net.state_dict(), ema.shadow,
                                            opt_state, _time_sampler_state(obj))
                except Exception as e:  # noqa: BLE001 - re-raised below, once the other processes know
                    err = e
            if world > 1:
                flag = torch.tensor([float(err is not None)], device=device)
                dist.all_reduce(flag)
                if flag.item() > 0 and err is None:
                    raise TrainingError(f"process 0 could not write the checkpoint of step {step} (see its message)")
            if err is not None:
                raise err
            return saved

    def val_loss() -> float:
        ema.copy_to(ema_net)
        return validation_loss(val_obj, ema_den.raw, val_ds, cfg.data.class_cond, cfg.run.seed, device)

    def preview(step: int) -> None:
        def draw() -> None:
            ema.copy_to(ema_net)
            x = sample_preview(ema_den, meta["shape"], cfg.log.n_samples, cfg.log.sample_steps, cfg.run.seed, device)
            save_preview(x, run_dir, step if cfg.log.sample_every else None,
                         ds.x[:2000] if ds.kind == "vector" else None)

        log.attempt("samples.png", draw)

    sig.deferred = True  # from here on a signal stops the run after its current step, with a checkpoint
    stopped_at, saved, step = None, None, start
    try:
        for step in range(start, end):
            batch = draw_batch(cfg, obj, X, Y, ds.num_classes, step, rank, world, noise=Z)
            res = train_step(cfg, net, trainer.raw, obj, batch, opt, step, world, use_bf16, stop=sig.requested)
            stop = res.stop or (world == 1 and sig.requested)
            problem = guard.after_step(res.ok, res.loss)
            if problem is not None:
                raise TrainingError(f"training diverged at step {step + 1}: {problem}; it was not saved; "
                                    f"{kept(run_dir)}; {advice(cfg)}")
            done = step + 1
            if not res.ok:
                log.skip()
                log.note(f"step {done}: non-finite loss or gradient ({res.loss}); update skipped")
                if stop:
                    stopped_at = done
                    break
                continue
            ema.update(net, step)
            log.add(res.loss, res.grad_norm)
            if is_main and (done % cfg.log.log_every == 0 or done == end):
                log.row(done, lr_at(cfg, step), val_loss() if (done % cfg.log.val_every == 0 or done == end) else None)
            if is_main and cfg.log.sample_every and done % cfg.log.sample_every == 0 and done != end:
                preview(done)
            if stop:
                stopped_at = done
                break
            if done % cfg.log.ckpt_every == 0 and done != end:
                saved = checkpoint(done)
                if world == 1 and sig.requested:  # signalled during this save: it is the one to stop with
                    stopped_at = done
                    break
                saved = None
    except Interrupted as e:  # signalled again while stepping: stop now, without a checkpoint of this step
        raise Interrupted(e.signum, f"stopped by a second {signal_name(e.signum)} during step {step + 1}, "
                                    f"which was not saved; {kept(run_dir)}") from None
    finally:
        log.close()
    if stopped_at is not None and stopped_at != end:
        saved = saved or checkpoint(stopped_at)
        where = f"checkpoint saved in {str(saved)!r}" if saved is not None else "process 0 saved the checkpoint"
        raise Interrupted(sig.signum or signal.SIGTERM, f"stopped by {sig.name} after step {stopped_at}; {where}; "
                                                        f"continue with: kuosan train --resume {run_dir}")
    final = checkpoint(end)
    if sig.requested:  # asked to stop during the last step or the final save: the run is complete anyway
        raise Interrupted(sig.signum or signal.SIGTERM, f"stopped by {sig.name} after the last step ({end}); the "
                                                        f"final checkpoint is in {str(final)!r}")
    sig.deferred = False  # the rest (pictures) is not worth waiting for: a signal stops it at once
    try:
        if is_main:
            log.plot(run_dir / "loss.png")
            preview(end)
        if world > 1:
            dist.barrier()
    except Interrupted as e:
        raise Interrupted(e.signum, f"stopped by {signal_name(e.signum)} after the run finished; its final "
                                    f"checkpoint is in {str(final)!r}") from None
    return run_dir


def _time_sampler_state(obj: Any) -> dict[str, torch.Tensor] | None:
    """The time sampler's state tensors (the importance sampler's history: imp_losses, imp_count), for the
    checkpoint's extra.safetensors."""
    return (obj.times.state_dict() if hasattr(obj.times, "state_dict") else None) or None
