"""Training checkpoints: atomic writes, discovery, and safe loading (``weights_only=True``).

A checkpoint is ``<run_dir>/checkpoints/epoch_NNNN.pt`` holding the model
state dict, optimizer, scheduler, epoch/step, RNG states and the run config.
It is written to a temporary file in the same directory, flushed to disk and
renamed over the final name, so a crash never leaves a truncated checkpoint.
"""
from __future__ import annotations

import os
import random
import re
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import torch

CHECKPOINT_DIR = "checkpoints"
_NAME = re.compile(r"^epoch_(\d{4,})\.pt$")


def checkpoint_path(run_dir: str | Path, epoch: int) -> Path:
    return Path(run_dir) / CHECKPOINT_DIR / f"epoch_{epoch:04d}.pt"


def interrupt_path(run_dir: str | Path) -> Path:
    """The mid-epoch checkpoint written when a job is told to stop (preemption, time limit)."""
    return Path(run_dir) / CHECKPOINT_DIR / "interrupt.pt"


def resume_path(run_dir: str | Path) -> Path | None:
    """The checkpoint to resume from: the interrupt checkpoint if it is newer than the last epoch's."""
    epochs = list_checkpoints(run_dir)
    interrupt = interrupt_path(run_dir)
    if interrupt.exists():
        last_epoch = epochs[-1][0] if epochs else 0
        if load(interrupt)["epoch"] >= last_epoch:
            return interrupt
    return epochs[-1][1] if epochs else None


def list_checkpoints(run_dir: str | Path) -> list[tuple[int, Path]]:
    """(epoch, path) of every complete checkpoint of a run, by epoch."""
    folder = Path(run_dir) / CHECKPOINT_DIR
    if not folder.is_dir():
        return []
    found = [(int(m.group(1)), p) for p in folder.iterdir() if (m := _NAME.match(p.name))]
    return sorted(found)


def atomic_save(obj: Any, path: str | Path) -> None:
    """``torch.save`` that either leaves the complete file at ``path`` or nothing new."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            torch.save(obj, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    dir_fd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)


def load(path: str | Path, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """Load a checkpoint with ``weights_only=True``; a file needing more is refused."""
    try:
        return torch.load(path, map_location=map_location, weights_only=True)
    except Exception as e:  # pickle refusal or a damaged file
        raise ValueError(f"cannot load checkpoint {path} safely (weights_only=True): {e}") from e


def rng_state() -> dict[str, Any]:
    np_state = np.random.get_state()
    return {
        "python": random.getstate(),
        "numpy": [np_state[0], np_state[1].tolist(), *np_state[2:]],
        "torch": torch.get_rng_state(),
    }


def set_rng_state(state: dict[str, Any]) -> None:
    random.setstate(state["python"])
    name, keys, *rest = state["numpy"]
    np.random.set_state((name, np.asarray(keys, dtype=np.uint32), *rest))
    torch.set_rng_state(state["torch"])
