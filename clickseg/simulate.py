"""Prompt simulation during training: the clicks and previous mask the model is trained on.

Runs without gradient and may call the model on the batch first (correction
clicks for ``multi``; the previous interaction for ``single_any``).
"""
from __future__ import annotations

import numpy as np
import torch

from clickseg.config import ClickConfig
from clickseg.data.clicks import correction_click
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
                    cfg: ClickConfig, rng: np.random.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """Return ``(clicks, prev_mask)`` on the images' device for one training step.

    ``multi`` (SegNext's trainer): n uniform in 0..``max_correction_clicks`` for the batch; n
    times, the model's probabilities become the previous mask and every sample gets a click by
    the correction rule (``clickseg.data.clicks.correction_click``) in row ``max_positive - i``
    (positive) or the i-th last row (negative); a sample without error gets none.
    ``single_any``: half of the samples replace their positive click by a correction click in
    the error of the model's prediction for it, which becomes their previous mask.

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
        clicks = clicks.clone()
        rows = clicks.shape[1]
        with _Frozen(model, images) as frozen:
            for i in range(1, n_extra + 1):
                prev = frozen.predict(clicks, prev)
                prob = prev[:, 0].cpu().numpy()
                for j in range(b):
                    c = correction_click(gt_np[j], prob[j], cfg.threshold, rng)
                    if c is not None:
                        row = cfg.max_positive - i if c[2] else rows - i
                        clicks[j, row] = torch.tensor(c, dtype=clicks.dtype, device=device)
        return clicks, prev

    if cfg.mode == "single_any":
        redo = rng.random(b) < 0.5
        if redo.any():
            with _Frozen(model, images) as frozen:
                guess = frozen.predict(clicks, prev)
            prob = guess[:, 0].cpu().numpy()
            clicks = clicks.clone()
            for j in np.flatnonzero(redo):
                c = correction_click(gt_np[j], prob[j], cfg.threshold, rng)
                if c is not None:
                    clicks[j, 0] = torch.tensor(c, dtype=clicks.dtype, device=device)
                    prev[j] = guess[j]
    return clicks, prev
