"""Training: ``accelerate launch -m clickseg.train CONFIG [key=value ...]``.

Reads top to bottom: build data, model and optimizer, resume from the last
checkpoint if there is one, then for every epoch stream SegNext-recipe samples with simulated
clicks, optimise the normalized focal loss, log to TensorBoard and write a
checkpoint.
"""
from __future__ import annotations

import argparse
import contextlib
import os
import signal
import socket
import time
import traceback
from pathlib import Path

# Bitwise-reproducible CPU runs: MKL otherwise picks code paths by memory alignment. Read when
# MKL starts, so it must be set before torch is imported (jobs.tasks also sets it for its launches).
os.environ.setdefault("MKL_CBWR", "AUTO,STRICT")

import numpy as np  # noqa: E402
import torch  # noqa: E402
from accelerate import Accelerator
from accelerate.utils import set_seed
from torch.utils.data import DataLoader

from clickseg import checkpoint, rundir
from clickseg.config import Config, ConfigError, load_config, save_config, to_dict
from clickseg.data.stream import TrainStream, one_thread_worker
from clickseg.losses import normalized_focal_loss
from clickseg.model import build_segnext
from clickseg.model.pretrained import load_mae_weights
from clickseg.schedule import make_scheduler
from clickseg.simulate import prepare_prompts
from clickseg.rundir import Status
from clickseg.visualize import click_overlay
from shards.manifest import MANIFEST_NAME
from shards.verify import verify_for_training

def batch_iou(logits: torch.Tensor, gt: torch.Tensor, thr: float = 0.49) -> float:
    pred = torch.sigmoid(logits) > thr
    obj = gt > 0.5
    inter = (pred & obj).sum(dim=(1, 2, 3)).float()
    union = (pred | obj).sum(dim=(1, 2, 3)).float().clamp(min=1)
    return (inter / union).mean().item()


def parameter_checksum(model: torch.nn.Module) -> torch.Tensor:
    """A float64 fingerprint of all parameters (sum of |w| weighted by position)."""
    total = torch.zeros(1, dtype=torch.float64)
    for i, p in enumerate(model.parameters()):
        total += p.detach().double().cpu().abs().sum() * (i + 1)
    return total


class StopRequest:
    """Set by SIGUSR2 (Slurm's warning before a time limit or preemption) or SIGTERM.

    The loop checks it after every optimizer step; all ranks agree on it
    (any rank signalled stops every rank), then an interrupt checkpoint is
    written at that exact step and the process exits so the job can be requeued.
    """

    SIGNALS = (signal.SIGUSR2, signal.SIGTERM)

    def __init__(self) -> None:
        self.flag = False
        self._previous = {s: signal.signal(s, self._set) for s in self.SIGNALS}

    def _set(self, signum, frame) -> None:
        self.flag = True

    def agreed(self, accelerator: Accelerator) -> bool:
        if accelerator.num_processes == 1:
            return self.flag
        flag = torch.tensor([float(self.flag)], device=accelerator.device)
        return bool(accelerator.reduce(flag, "max").item() > 0)

    def restore(self) -> None:
        for s, handler in self._previous.items():
            signal.signal(s, handler)


def make_optimizer(model: torch.nn.Module, cfg: Config) -> torch.optim.Optimizer:
    """``train.optimizer``: Adam (SegNext: lr 5e-5, betas (0.9, 0.999), eps 1e-8, no weight decay)
    or AdamW; fused into one kernel where this torch supports it for the parameters' device (CPU
    from torch 2.4): the per-tensor update loop otherwise costs a tenth of a small model's step."""
    t = cfg.train
    cls = torch.optim.Adam if t.optimizer == "adam" else torch.optim.AdamW
    kwargs = dict(lr=t.lr, betas=tuple(t.betas), eps=t.eps, weight_decay=t.weight_decay)
    try:
        return cls(model.parameters(), fused=True, **kwargs)
    except (RuntimeError, ValueError):
        return cls(model.parameters(), **kwargs)


def check_data(cfg: Config) -> None:
    """Before anything is created: every data directory is a shard set with its manifest."""
    sets = {"data.train": cfg.data.train, **{f"data.eval.{k}": v for k, v in cfg.data.eval.items()}}
    for key, path in sets.items():
        if not path:
            raise ConfigError(f"{key} is empty: set it to a shard directory")
        if not (Path(path) / MANIFEST_NAME).is_file():
            raise ConfigError(f"{key}={path}: no {MANIFEST_NAME} there (not a shard directory)")


# What a resumed run may change: how long it trains, how it is watched and where it runs.
RESUMABLE_KEYS = ("name", "train.epochs", "train.log_every", "train.num_vis", "data.num_workers", "data.cache_mb",
                  "data.eval", "eval", "executor")


def _flat(data: dict, prefix: str = "") -> dict:
    out = {}
    for k, v in data.items():
        out.update(_flat(v, f"{prefix}{k}.") if isinstance(v, dict) else {f"{prefix}{k}": v})
    return out


def check_resume_config(cfg: Config, run_dir: Path) -> None:
    """A run directory with checkpoints is resumed only with its own config (up to
    ``RESUMABLE_KEYS``): another config would silently continue, and overwrite, that run."""
    saved_path = rundir.config_path(run_dir)
    if not saved_path.exists() or not (rundir.list_checkpoints(run_dir) or rundir.interrupt_path(run_dir).exists()):
        return
    saved, new = _flat(to_dict(load_config(saved_path))), _flat(to_dict(cfg))
    changed = [k for k in sorted(set(saved) | set(new)) if saved.get(k) != new.get(k)
               and not any(k == p or k.startswith(p + ".") for p in RESUMABLE_KEYS)]
    if changed:
        diffs = ", ".join(f"{k}: {saved.get(k)!r} there, {new.get(k)!r} now" for k in changed)
        raise ConfigError(f"{run_dir} holds checkpoints of a training with another config ({diffs}); "
                          f"resuming would mix the two. Use a new run_dir, or the config in {saved_path}.")


def train(cfg: Config) -> None:
    """Train ``cfg``'s run, resuming from its last checkpoint. The main process holds the run
    directory's lock for the whole training; any error is recorded in ``train_state.json``
    (status failed, with the rank, host and traceback) before it is raised."""
    check_data(cfg)
    run_dir = Path(cfg.run_dir)
    main_rank = int(os.environ.get("RANK", "0")) == 0
    with contextlib.ExitStack() as held:
        if main_rank:
            held.enter_context(rundir.TrainingLock(run_dir))
            check_resume_config(cfg, run_dir)
        stop = StopRequest()
        held.callback(stop.restore)
        try:
            _train(cfg, run_dir, stop)
        except BaseException as e:
            if not (isinstance(e, SystemExit) and not e.code):
                where = f"rank {os.environ.get('RANK', '0')} on {socket.gethostname()}"
                rundir.mark_failed(run_dir, f"{where}: {traceback.format_exc()}")
            raise


def _train(cfg: Config, run_dir: Path, stop: StopRequest) -> None:
    use_cpu = not torch.cuda.is_available()
    accelerator = Accelerator(cpu=use_cpu, mixed_precision=cfg.train.mixed_precision,
                              log_with="tensorboard", project_dir=str(run_dir))
    if use_cpu:  # ranks x threads must not exceed the cores, or every rank slows down
        local = int(os.environ.get("LOCAL_WORLD_SIZE", accelerator.num_processes))
        threads = os.environ.get("OMP_NUM_THREADS") or (os.cpu_count() or 1) // local
        torch.set_num_threads(max(1, int(threads)))
    rank, world = accelerator.process_index, accelerator.num_processes
    set_seed(cfg.train.seed)  # same seed everywhere: identical initial weights on all ranks
    with accelerator.main_process_first():  # the main process hashes, the others read its cache
        accelerator.print(verify_for_training(cfg.data.train))
    if accelerator.is_main_process:
        save_config(cfg, rundir.config_path(run_dir))

    model = build_segnext(cfg.model.arch, cfg.model.input_size)
    if cfg.model.pretrained:
        report = load_mae_weights(model, cfg.model.pretrained, antialias=cfg.model.pos_embed_antialias)
        accelerator.print(report)
    optimizer = make_optimizer(model, cfg)
    steps_per_epoch = cfg.train.samples_per_epoch // (cfg.train.batch_size * world)
    scheduler = make_scheduler(optimizer, steps_per_epoch, cfg.train)

    start_epoch, step, resume_batch, ckpt = 0, 0, 0, None
    resume_from = checkpoint.resume_path(run_dir)
    if resume_from is not None:
        ckpt = checkpoint.load(resume_from)
        model.load_state_dict(ckpt["model"])
        optimizer.load_state_dict(ckpt["optimizer"])
        scheduler.load_state_dict(ckpt["scheduler"])
        start_epoch, step = ckpt["epoch"], ckpt["step"]
        resume_batch = ckpt.get("batch_in_epoch", 0)
        checkpoint.set_rng_state(ckpt["rng"])
        accelerator.print(f"resuming {run_dir} from {resume_from.name}: epoch {start_epoch}, "
                          f"batch {resume_batch}, step {step}")

    model, optimizer = accelerator.prepare(model, optimizer)
    accelerator.init_trackers("tb", config={"name": cfg.name})
    writer = accelerator.get_tracker("tensorboard", unwrap=True) if accelerator.is_main_process else None
    rundir.write_state(run_dir, Status.RUNNING, start_epoch, step) if accelerator.is_main_process else None

    for epoch in range(start_epoch, cfg.train.epochs):
        stream = TrainStream(cfg, rank, world, epoch)
        loader = DataLoader(stream, batch_size=cfg.train.batch_size, num_workers=cfg.data.num_workers,
                            worker_init_fn=one_thread_worker, pin_memory=torch.cuda.is_available())
        rng = np.random.default_rng([cfg.train.seed, epoch, rank, 1])
        model.train()
        skipped, t0, seen = 0, time.time(), 0
        batches = zip(loader, range(steps_per_epoch))
        if epoch == start_epoch and resume_batch:
            # Mid-epoch resume: replay the stream up to the interrupted batch (the data
            # position), then restore every RNG as it was at that step.
            for _ in zip(range(resume_batch), batches):
                pass
            rng.bit_generator.state = ckpt["click_rng"][rank]
            checkpoint.set_rng_state(ckpt["rng"])
        stopped = True
        for batch_index, (batch, _) in enumerate(batches, start=resume_batch if epoch == start_epoch else 0):
            images = batch["image"].to(accelerator.device).float() / 255.0
            gt = batch["mask"].to(accelerator.device)
            skipped += int(batch["skipped"].sum())
            clicks, prev = prepare_prompts(accelerator.unwrap_model(model), images, gt, batch["clicks"],
                                           cfg.clicks, rng)
            with accelerator.autocast():
                logits = model(images, clicks, prev)
                loss = normalized_focal_loss(logits.float(), gt).mean()
            accelerator.backward(loss)
            optimizer.step()
            scheduler.step()
            optimizer.zero_grad(set_to_none=True)
            step += 1
            seen += images.shape[0] * world
            if step % cfg.train.log_every == 0:
                accelerator.log({"train/loss": loss.item(), "train/lr": optimizer.param_groups[0]["lr"],
                                 "train/iou": batch_iou(logits.detach(), gt),
                                 "train/samples_per_s": seen / (time.time() - t0)}, step=step)
            # On the epoch's last batch the epoch checkpoint follows at once; stop after it instead.
            if batch_index + 1 < steps_per_epoch and stop.agreed(accelerator):
                save_interrupt(accelerator, model, optimizer, scheduler, cfg, epoch, batch_index + 1, step, rng)
                accelerator.print(f"stop requested: interrupt checkpoint at epoch {epoch}, "
                                  f"batch {batch_index + 1}, step {step}")
                break
        else:
            stopped = False
        if stopped:
            break
        skipped_all = int(accelerator.reduce(torch.tensor(skipped, device=accelerator.device), "sum"))
        accelerator.log({"train/skipped_samples": skipped_all, "train/epoch_seconds": time.time() - t0}, step=step)
        if writer is not None and cfg.train.num_vis:
            k = min(cfg.train.num_vis, images.shape[0])
            probs = torch.sigmoid(logits.detach()[:k].float())
            writer.add_images("train/samples", click_overlay(images[:k], gt[:k], probs, clicks[:k]), epoch + 1)
        if accelerator.is_main_process:
            checkpoint.atomic_save(checkpoint.contents(accelerator.unwrap_model(model), optimizer, scheduler, cfg,
                                                       epoch + 1, step), rundir.checkpoint_path(run_dir, epoch + 1))
            rundir.interrupt_path(run_dir).unlink(missing_ok=True)
            rundir.write_state(run_dir, Status.RUNNING, epoch + 1, step)
            accelerator.print(f"epoch {epoch + 1}/{cfg.train.epochs}: loss {loss.item():.4f}, "
                              f"{seen / (time.time() - t0):.1f} samples/s, skipped {skipped_all}")
        accelerator.wait_for_everyone()
        if epoch + 1 < cfg.train.epochs and stop.agreed(accelerator):
            if accelerator.is_main_process:
                rundir.write_state(run_dir, Status.INTERRUPTED, epoch + 1, step)
            accelerator.print(f"stop requested: stopping after the checkpoint of epoch {epoch + 1}")
            stopped = True
            break
    else:
        stopped = False

    if not stopped:
        checksums = accelerator.gather(parameter_checksum(model).to(accelerator.device)).tolist()
        if accelerator.is_main_process:
            # One checksum per rank: DDP keeps them identical; a difference means the ranks diverged.
            rundir.write_state(run_dir, Status.DONE, cfg.train.epochs, step, rank_param_checksums=checksums)
    accelerator.end_training()
    # Free DDP objects before the process group goes away (avoids a gloo teardown abort).
    del model, optimizer
    accelerator.free_memory()


def save_interrupt(accelerator: Accelerator, model, optimizer, scheduler, cfg: Config, epoch: int,
                   batch_in_epoch: int, step: int, rng: np.random.Generator) -> None:
    """The exact training state after ``batch_in_epoch`` batches of ``epoch`` (0-based)."""
    click_rng = [None] * accelerator.num_processes
    if accelerator.num_processes > 1:
        torch.distributed.all_gather_object(click_rng, rng.bit_generator.state)
    else:
        click_rng = [rng.bit_generator.state]
    if accelerator.is_main_process:
        run_dir = Path(cfg.run_dir)
        state = checkpoint.contents(accelerator.unwrap_model(model), optimizer, scheduler, cfg, epoch, step,
                                    batch_in_epoch=batch_in_epoch, click_rng=click_rng)
        checkpoint.atomic_save(state, rundir.interrupt_path(run_dir))
        rundir.write_state(run_dir, Status.INTERRUPTED, epoch, step)
    accelerator.wait_for_everyone()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m clickseg.train", description=__doc__.splitlines()[0])
    parser.add_argument("config", help="YAML config file")
    parser.add_argument("overrides", nargs="*", help="key=value overrides, e.g. train.epochs=3")
    args = parser.parse_args(argv)
    train(load_config(args.config, args.overrides))


if __name__ == "__main__":
    main()
