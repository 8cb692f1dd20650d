"""Training checkpoints: atomic writes, discovery, and safe loading (``weights_only=True``).

A checkpoint is ``<run_dir>/checkpoints/epoch_NNNN.pt`` (paths: :mod:`clickseg.rundir`) holding the model
state dict, optimizer, scheduler, epoch/step, RNG states and the run config.
It is written to a temporary file in the same directory, flushed to disk and
renamed over the final name, so a crash never leaves a truncated checkpoint.
"""
from __future__ import annotations

import random
from pathlib import Path
from typing import Any

import numpy as np
import torch

from clickseg import rundir
from clickseg.config import Config, to_dict


def resume_path(run_dir: str | Path) -> Path | None:
    """The checkpoint to resume from: the interrupt checkpoint if it is newer than the last epoch's."""
    epochs = rundir.list_checkpoints(run_dir)
    interrupt = rundir.interrupt_path(run_dir)
    if interrupt.exists():
        last_epoch = epochs[-1][0] if epochs else 0
        if load(interrupt)["epoch"] >= last_epoch:
            return interrupt
    return epochs[-1][1] if epochs else None


def atomic_save(obj: Any, path: str | Path) -> None:
    """``torch.save`` that either leaves the complete file at ``path`` or nothing new
    (:func:`clickseg.rundir.atomic_write`; a full disk is an error naming the file)."""
    rundir.atomic_write(path, lambda f: torch.save(obj, f))


def contents(model: torch.nn.Module, optimizer, scheduler, cfg: Config, epoch: int, step: int,
             **extra: Any) -> dict[str, Any]:
    """What a training checkpoint holds: weights, optimizer, scheduler, progress (``epoch``
    completed epochs, or with ``batch_in_epoch`` the position inside epoch ``epoch``), the RNG
    states of this process and the run config. ``extra``: the interrupt checkpoint's fields."""
    return {"format": "clickseg", "version": 1, "model": model.state_dict(),
            "optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict(),
            "epoch": epoch, "step": step, "rng": rng_state(), "config": to_dict(cfg), **extra}


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
