"""Training: ``accelerate launch -m clickseg.train CONFIG [key=value ...]``.

:func:`train` reads top to bottom: check the data, lock the run directory, build the model
and optimizer, resume from the last checkpoint if there is one, then train epoch by epoch
(:func:`train_epoch`: SegNext-recipe samples with simulated clicks, the normalized focal
loss) and write a checkpoint after each (:func:`save_checkpoint`, also the only writer of the
interrupt checkpoint). A stop request (Slurm's warning signal) ends an epoch early; the
interrupt checkpoint then holds the exact position, and the next start continues there.
"""
from __future__ import annotations

import argparse
import contextlib
import itertools
import os
import signal
import socket
import time
import sys
import traceback
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

# Bitwise-reproducible CPU runs: MKL otherwise picks code paths by memory alignment. Read when
# MKL starts, so it must be set before torch is imported (jobs.tasks also sets it for its launches).
os.environ.setdefault("MKL_CBWR", "AUTO,STRICT")

import numpy as np  # noqa: E402
import torch  # noqa: E402
from accelerate import Accelerator
from accelerate.state import AcceleratorState
from accelerate.utils import gather_object, set_seed
from torch.utils.data import DataLoader
from tqdm import tqdm

from clickseg import checkpoint, rundir
from clickseg.config import Config, ConfigError, load_config, save_config, to_dict
from clickseg.data.stream import EpochSequence, TrainStream, loader_workers
from clickseg.losses import normalized_focal_loss
from clickseg.model import build_segnext
from clickseg.model.pretrained import load_mae_weights
from clickseg.schedule import make_scheduler
from clickseg.rundir import Status
from clickseg.simulate import ClickSimulation
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
RESUMABLE_KEYS = ("name", "train.epochs", "train.log_every", "train.num_vis", "data.num_workers",
                  "data.prefetch_batches", "data.cache_mb", "data.eval", "eval", "executor")


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
        # However it ends: the next train() in this process may use another mixed precision
        # (accelerate keeps one per process unless its state is reset).
        held.callback(AcceleratorState._reset_state)
        try:
            _train(cfg, run_dir, stop)
        except BaseException as e:
            if not (isinstance(e, SystemExit) and not e.code):
                where = f"rank {os.environ.get('RANK', '0')} on {socket.gethostname()}"
                rundir.mark_failed(run_dir, f"{where}: {traceback.format_exc()}")
            raise


@dataclass
class Position:
    """Where a training stands: ``batch`` batches of epoch ``epoch`` (0-based) done, ``step``
    optimizer steps in all. Resuming mid-epoch also needs the RNG states of that moment."""

    epoch: int = 0
    batch: int = 0
    step: int = 0
    rng: dict | None = None  # this process's Python/NumPy/torch RNGs (checkpoint.rng_state)
    click_rng: list | None = None  # every rank's click-simulation generator state


@dataclass
class Run:
    """What the steps of one training share."""

    cfg: Config
    run_dir: Path
    accelerator: Accelerator
    model: torch.nn.Module  # prepared by accelerate (DDP); its parts compiled with train.compile
    module: torch.nn.Module  # the plain model: state dicts, the click simulation
    optimizer: torch.optim.Optimizer
    scheduler: Any
    steps_per_epoch: int
    stop: StopRequest
    hosts: list[str]  # the host of every rank
    steps_per_s: float = 0.0  # the latest measured speed
    nonfinite_in_row: int = 0  # optimizer steps skipped in a row for a non-finite gradient

    def record(self, status: Status, position: Position, **extra) -> None:
        """Write ``train_state.json`` (main process only)."""
        if self.accelerator.is_main_process:
            rundir.write_state(self.run_dir, status, position.epoch, position.step, hosts=self.hosts,
                               total_steps=self.cfg.train.epochs * self.steps_per_epoch,
                               steps_per_s=self.steps_per_s, **extra)


@dataclass
class EpochEnd:
    """How an epoch ended: where, whether a stop was requested, and its last batch (for images)."""

    position: Position
    stop_requested: bool
    loss: float
    skipped: int
    seconds: float
    samples: int
    last: dict | None = None
    click_rng: np.random.Generator | None = None


def _train(cfg: Config, run_dir: Path, stop: StopRequest) -> None:
    accelerator = Accelerator(cpu=not torch.cuda.is_available(), mixed_precision=cfg.train.mixed_precision,
                              log_with="tensorboard", project_dir=str(run_dir))
    set_cpu_threads(accelerator)
    set_seed(cfg.train.seed)  # same seed everywhere: identical initial weights on all ranks
    with accelerator.main_process_first():  # the main process hashes, the others read its cache
        accelerator.print(verify_for_training(cfg.data.train))
    if accelerator.is_main_process:
        save_config(cfg, rundir.config_path(run_dir))

    model = build_segnext(cfg.model.arch, cfg.model.input_size)
    if cfg.model.pretrained:
        accelerator.print(load_mae_weights(model, cfg.model.pretrained, antialias=cfg.model.pos_embed_antialias))
    optimizer = make_optimizer(model, cfg)
    steps_per_epoch = cfg.train.samples_per_epoch // (cfg.train.batch_size * accelerator.num_processes)
    scheduler = make_scheduler(optimizer, steps_per_epoch, cfg.train)
    position = resume(run_dir, model, optimizer, scheduler, accelerator)
    module = model
    model, optimizer = accelerator.prepare(model, optimizer)
    if cfg.train.compile:  # the parts, in place: the click simulation stays eager, the keys stay plain
        for part in (module.image_encoder, module.prompt_encoder, module.decoder):
            part.compile()
    hosts = gather_object([socket.gethostname()]) if accelerator.num_processes > 1 else [socket.gethostname()]
    run = Run(cfg, run_dir, accelerator, model, module, optimizer, scheduler, steps_per_epoch, stop, hosts)
    rank = accelerator.process_index
    print(f"[rank {rank} of {accelerator.num_processes} on {hosts[rank]}] reads "
          f"{TrainStream(cfg, rank, accelerator.num_processes).describe_rank()}", flush=True)
    accelerator.init_trackers("tb", config={"name": cfg.name})
    progress = Progress(run, position)

    batches = training_batches(cfg, rank, accelerator.num_processes, position, steps_per_epoch)
    while position.epoch < cfg.train.epochs:
        end = train_epoch(run, position, progress, batches)
        position = end.position
        if position.batch:  # stopped inside the epoch
            save_checkpoint(run, position, end.click_rng)
            break
        log_epoch(run, end)
        save_checkpoint(run, position)
        if end.stop_requested and position.epoch < cfg.train.epochs:
            accelerator.print(f"stop requested: stopped after the checkpoint of epoch {position.epoch}")
            run.record(Status.INTERRUPTED, position)
            break
    progress.close()
    if position.epoch >= cfg.train.epochs:
        checksums = accelerator.gather(parameter_checksum(model).to(accelerator.device)).tolist()
        # One checksum per rank: DDP keeps them identical; a difference means the ranks diverged.
        run.record(Status.DONE, position, rank_param_checksums=checksums)
    accelerator.end_training()
    # Free DDP objects before the process group goes away (avoids a gloo teardown abort).
    del model, module, optimizer, run, progress, batches
    accelerator.free_memory()


def set_cpu_threads(accelerator: Accelerator) -> None:
    """On CPU, ranks x threads must not exceed the cores, or every rank slows down."""
    if accelerator.device.type == "cpu":
        local = int(os.environ.get("LOCAL_WORLD_SIZE", accelerator.num_processes))
        threads = os.environ.get("OMP_NUM_THREADS") or (os.cpu_count() or 1) // local
        torch.set_num_threads(max(1, int(threads)))


def resume(run_dir: Path, model, optimizer, scheduler, accelerator: Accelerator) -> Position:
    """Load the last checkpoint of the run, if any, into the model, optimizer and scheduler and
    this process's RNGs; return where it stands."""
    path = checkpoint.resume_path(run_dir)
    if path is None:
        return Position()
    ckpt = checkpoint.load(path)
    model.load_state_dict(ckpt["model"])
    optimizer.load_state_dict(ckpt["optimizer"])
    scheduler.load_state_dict(ckpt["scheduler"])
    checkpoint.set_rng_state(ckpt["rng"])
    position = Position(ckpt["epoch"], ckpt.get("batch_in_epoch", 0), ckpt["step"], ckpt["rng"], ckpt.get("click_rng"))
    accelerator.print(f"resuming {run_dir} from {path.name}: epoch {position.epoch}, "
                      f"batch {position.batch}, step {position.step}")
    return position


def training_batches(cfg: Config, rank: int, world: int, start: Position, steps_per_epoch: int) -> Iterator[dict]:
    """This rank's batches from epoch ``start.epoch`` (batch 0) to the last: one DataLoader whose
    workers live for the whole training (``clickseg.data.stream.EpochSequence``)."""
    data = EpochSequence(cfg, rank, world, start.epoch, cfg.train.epochs, steps_per_epoch, cfg.train.batch_size)
    workers = cfg.data.num_workers
    # Its own generator: starting an iterator draws a seed, which must not come from the global
    # RNG that a resumed run restores (the step after a resume would see another dropout draw).
    seed = torch.Generator().manual_seed(cfg.train.seed)
    return iter(DataLoader(data, batch_size=cfg.train.batch_size, **loader_workers(workers), generator=seed,
                           pin_memory=torch.cuda.is_available(),
                           prefetch_factor=cfg.data.prefetch_batches if workers else None))


def train_epoch(run: Run, start: Position, progress: "Progress", batches: Iterator[dict]) -> EpochEnd:
    """Train epoch ``start.epoch`` from batch ``start.batch`` (``batches`` is at the epoch's batch
    0 when ``start.batch`` > 0), until its end or a stop request."""
    cfg, accelerator, model = run.cfg, run.accelerator, run.model
    rank, world = accelerator.process_index, accelerator.num_processes
    rng = np.random.default_rng([cfg.train.seed, start.epoch, rank, 1])
    model.train()
    if start.batch:
        # Mid-epoch resume: replay the stream up to the interrupted batch (the data position),
        # then restore every RNG as it was at that step.
        for _ in itertools.islice(batches, start.batch):
            pass
        rng.bit_generator.state = start.click_rng[rank]
        checkpoint.set_rng_state(start.rng)
    progress.start_epoch(start)
    step, skipped, samples, t0 = start.step, 0, 0, time.time()
    epoch = itertools.islice(batches, run.steps_per_epoch - start.batch)
    for batch_index, batch in enumerate(epoch, start=start.batch):
        images = batch["image"].to(accelerator.device).float() / 255.0
        gt = batch["mask"].to(accelerator.device)
        skipped += int(batch["skipped"].sum())
        prompts = ClickSimulation(gt, cfg.clicks, rng)  # runs inside the forward, on the step's features
        prev = torch.zeros_like(gt)
        with accelerator.autocast():
            logits = model(images, batch["clicks"].to(accelerator.device), prev, simulate=prompts)
            loss = normalized_focal_loss(logits.float(), gt).mean()
        accelerator.backward(loss)
        # The same answer on every rank: DDP has averaged the gradients. 0 applies every step (SegNext).
        if cfg.train.max_nonfinite_steps == 0 or finite_gradients(run.module):
            run.optimizer.step()
            run.nonfinite_in_row = 0
        else:
            skip_nonfinite_step(run, step + 1, batch["key"])
        run.scheduler.step()
        run.optimizer.zero_grad(set_to_none=True)
        step += 1
        samples += images.shape[0] * world
        if step % cfg.train.log_every == 0:
            accelerator.log({"train/loss": loss.item(), "train/lr": run.optimizer.param_groups[0]["lr"],
                             "train/iou": batch_iou(logits.detach(), gt),
                             "train/samples_per_s": samples / (time.time() - t0)}, step=step)
        progress.update(step)
        stop = run.stop.agreed(accelerator)  # every rank asks after every step: all stop at the same one
        if stop:
            print(f"[rank {rank} on {run.hosts[rank]}] stop requested: stopping after step {step}", flush=True)
        if stop and batch_index + 1 < run.steps_per_epoch:
            return EpochEnd(Position(start.epoch, batch_index + 1, step), True, loss.item(), skipped,
                            time.time() - t0, samples, click_rng=rng)
    last = {"images": images, "gt": gt, "logits": logits.detach(), "clicks": prompts.clicks}
    return EpochEnd(Position(start.epoch + 1, 0, step), stop, loss.item(), skipped, time.time() - t0, samples, last)


def finite_gradients(model: torch.nn.Module) -> bool:
    grads = [p.grad for p in model.parameters() if p.grad is not None]
    return bool(torch.stack(torch._foreach_norm(grads)).isfinite().all()) if grads else True


def skip_nonfinite_step(run: Run, step: int, keys: list[str]) -> None:
    """A non-finite gradient (a NaN or inf loss) is not applied: the step is skipped and logged
    with the batch's samples; ``train.max_nonfinite_steps`` in a row stop the training."""
    run.nonfinite_in_row += 1
    print(f"[rank {run.accelerator.process_index}] step {step}: non-finite gradient, step skipped "
          f"(samples {', '.join(keys)})", flush=True)
    run.accelerator.log({"train/skipped_nonfinite_steps": run.nonfinite_in_row}, step=step)
    if run.nonfinite_in_row >= run.cfg.train.max_nonfinite_steps:
        raise FloatingPointError(f"{run.nonfinite_in_row} optimizer steps in a row ending at step {step} had "
                                 f"non-finite gradients; the last checkpoint is the last good state")


def log_epoch(run: Run, end: EpochEnd) -> None:
    """The epoch's skipped-sample count (all ranks), time and sample images to TensorBoard."""
    accelerator, epoch = run.accelerator, end.position.epoch
    skipped = int(accelerator.reduce(torch.tensor(end.skipped, device=accelerator.device), "sum"))
    accelerator.log({"train/skipped_samples": skipped, "train/epoch_seconds": end.seconds}, step=end.position.step)
    if accelerator.is_main_process and run.cfg.train.num_vis:
        writer = accelerator.get_tracker("tensorboard", unwrap=True)
        last, k = end.last, min(run.cfg.train.num_vis, end.last["images"].shape[0])
        probs = torch.sigmoid(last["logits"][:k].float())
        writer.add_images("train/samples", click_overlay(last["images"][:k], last["gt"][:k], probs,
                                                         last["clicks"][:k]), epoch)
    accelerator.print(f"epoch {epoch}/{run.cfg.train.epochs}: loss {end.loss:.4f}, "
                      f"{end.samples / max(end.seconds, 1e-9):.1f} samples/s, skipped {skipped}")


def save_checkpoint(run: Run, position: Position, click_rng: np.random.Generator | None = None) -> None:
    """The one writer of checkpoints and of the state that goes with them: at an epoch's end
    (``position.batch == 0``) ``epoch_NNNN.pt`` with the run still running; inside an epoch the
    interrupt checkpoint with every rank's click generator, the run interrupted."""
    accelerator, run_dir = run.accelerator, run.run_dir
    extra = {}
    if position.batch:
        states = [None] * accelerator.num_processes
        if accelerator.num_processes > 1:
            torch.distributed.all_gather_object(states, click_rng.bit_generator.state)
        else:
            states = [click_rng.bit_generator.state]
        extra = {"batch_in_epoch": position.batch, "click_rng": states}
    if accelerator.is_main_process:
        contents = checkpoint.contents(run.module, run.optimizer, run.scheduler, run.cfg,
                                       position.epoch, position.step, **extra)
        if position.batch:
            checkpoint.atomic_save(contents, rundir.interrupt_path(run_dir))
            run.record(Status.INTERRUPTED, position)
            accelerator.print(f"stop requested: interrupt checkpoint at epoch {position.epoch}, "
                              f"batch {position.batch}, step {position.step}")
        else:
            checkpoint.atomic_save(contents, rundir.checkpoint_path(run_dir, position.epoch))
            rundir.interrupt_path(run_dir).unlink(missing_ok=True)
            run.record(Status.RUNNING, position)
    accelerator.wait_for_everyone()


class Progress:
    """The main process's view of the run while it trains: a progress bar per epoch in the
    log (plain periodic lines when the log is a file) and, every ``every_s`` seconds, the
    step and speed in ``train_state.json`` (what ``launch.py status --watch`` shows)."""

    def __init__(self, run: Run, start: Position, every_s: float = 10.0) -> None:
        self.run, self.every_s = run, every_s
        self.active = run.accelerator.is_main_process
        self.bar = None
        self.mark = (time.time(), start.step)
        self.epoch = start.epoch
        run.record(Status.RUNNING, start)

    def start_epoch(self, start: Position) -> None:
        self.close()
        self.epoch = start.epoch
        if self.active:
            tty = sys.stderr.isatty()
            self.bar = tqdm(total=self.run.steps_per_epoch, initial=start.batch, unit="step", ascii=not tty,
                            desc=f"epoch {start.epoch + 1}/{self.run.cfg.train.epochs}", file=sys.stderr,
                            mininterval=0.5 if tty else 30.0, dynamic_ncols=tty)

    def update(self, step: int) -> None:
        if not self.active:
            return
        self.bar.update(1)
        now = time.time()
        if now - self.mark[0] >= self.every_s:
            self.run.steps_per_s = round((step - self.mark[1]) / (now - self.mark[0]), 4)
            self.run.record(Status.RUNNING, Position(self.epoch, 0, step))
            self.mark = (now, step)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
            self.bar = None


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m clickseg.train", description=__doc__.splitlines()[0])
    parser.add_argument("config", help="YAML config file")
    parser.add_argument("overrides", nargs="*", help="key=value overrides, e.g. train.epochs=3")
    args = parser.parse_args(argv)
    train(load_config(args.config, args.overrides))


if __name__ == "__main__":
    main()
