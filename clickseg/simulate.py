"""Prompt simulation during training: the clicks and previous mask the model is trained on.

Runs without gradient and may call the model on the batch first (correction
clicks for ``multi``; the previous interaction for ``single_any``).
"""
from __future__ import annotations

import numpy as np
import torch

from clickseg.config import ClickConfig
from clickseg.data.clicks import random_error_click
from clickseg.eval.clickers import center_click
from clickseg.model import SegNext


class _Frozen:
    """The model in eval mode for the ``with`` block (switched once, not per click), run without
    gradient; image features computed once for all the clicks."""

    def __init__(self, model: SegNext, images: torch.Tensor):
        self.model, self.images, self.features = model, images, None

    def __enter__(self) -> "_Frozen":
        self.was_training = self.model.training
        self.model.eval()
        return self

    def __exit__(self, *exc) -> None:
        self.model.train(self.was_training)

    @torch.no_grad()
    def predict(self, clicks: torch.Tensor, prev: torch.Tensor) -> torch.Tensor:
        if self.features is None:
            self.features = self.model.encode_image(self.images)
        return torch.sigmoid(self.model.decode(self.features, clicks, prev).float())


def prepare_prompts(model: SegNext, images: torch.Tensor, gt: torch.Tensor, clicks: torch.Tensor,
                    cfg: ClickConfig, rng: np.random.Generator, thr: float = 0.49) -> tuple[torch.Tensor, torch.Tensor]:
    """Return ``(clicks, prev_mask)`` on the images' device for one training step.

    Args:
        images: (B, 3, T, T) in [0, 1]; gt: (B, 1, T, T) object masks.
        clicks: (B, P, 3) initial clicks from the data stream (padded with -1).
    """
    device = images.device
    b, _, t, _ = images.shape
    prev = torch.zeros(b, 1, t, t, device=device)
    clicks = clicks.to(device)
    gt_np = gt[:, 0].cpu().numpy() > 0.5

    if cfg.mode == "multi":
        n_extra = int(rng.integers(0, cfg.max_correction_clicks + 1))
        if n_extra == 0:
            return clicks, prev
        clicks = torch.cat([clicks, clicks.new_full((b, n_extra, 3), -1.0)], dim=1)
        base = clicks.shape[1] - n_extra
        gt_int, everywhere = gt_np.astype(np.int64), np.ones_like(gt_np[0])
        with _Frozen(model, images) as frozen:
            for i in range(n_extra):
                prev = frozen.predict(clicks, prev)
                pred = prev[:, 0].cpu().numpy() > thr
                for j in range(b):
                    c = center_click(gt_int[j], pred[j], everywhere)
                    clicks[j, base + i] = torch.tensor([c.y, c.x, float(c.is_positive)], device=device)
        return clicks, prev

    if cfg.mode == "single_any":
        redo = rng.random(b) < 0.5
        if redo.any():
            with _Frozen(model, images) as frozen:
                guess = frozen.predict(clicks, prev)
            pred = guess[:, 0].cpu().numpy() > thr
            for j in np.flatnonzero(redo):
                c = random_error_click(gt_np[j], pred[j], rng)
                if c is not None:
                    clicks[j, 0] = torch.tensor(c, dtype=clicks.dtype, device=device)
                    prev[j] = guess[j]
    return clicks, prev
