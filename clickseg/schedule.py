"""Learning-rate schedules, stepped once per optimizer step (so a resumed run continues mid-epoch)."""
from __future__ import annotations

import math

import torch

from clickseg.config import TrainConfig


def lr_factor(step: int, steps_per_epoch: int, cfg: TrainConfig) -> float:
    """Multiplier of ``cfg.lr`` for optimizer step ``step`` (0-based)."""
    warmup = min(1.0, (step + 1) / cfg.warmup_steps) if cfg.warmup_steps else 1.0
    if cfg.lr_schedule == "cosine":
        total = max(1, cfg.epochs * steps_per_epoch)
        return warmup * 0.5 * (1.0 + math.cos(math.pi * min(step, total) / total))
    epoch = step // max(1, steps_per_epoch)
    return warmup * cfg.lr_gamma ** sum(1 for m in cfg.lr_milestones if epoch >= m)


def make_scheduler(optimizer: torch.optim.Optimizer, steps_per_epoch: int,
                   cfg: TrainConfig) -> torch.optim.lr_scheduler.LambdaLR:
    return torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: lr_factor(step, steps_per_epoch, cfg))
