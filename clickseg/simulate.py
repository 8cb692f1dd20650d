"""Prompt simulation during training: the clicks and previous mask the model is trained on.

SegNext's trainer encodes each batch's images once per step, with gradient, and runs its
correction-click passes on those features without gradient, the model in eval mode for each
pass; the final prediction reuses the same features. :class:`ClickSimulation` is that
simulation as a callable the model's forward runs on its own image tokens
(``model(images, clicks, prev, simulate=ClickSimulation(...))``), so the step encodes the
images once and a distributed wrapper (DDP) still sees one forward.
"""
from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor
from typing import Callable, Sequence

import numpy as np
import torch

from clickseg.config import ClickConfig
from clickseg.data.clicks import draw_correction_click, error_depth
from clickseg.model import SegNext

Tokens = torch.Tensor | Callable[[], torch.Tensor]


class _Frozen:
    """The model in eval mode for the ``with`` block (switched once, not per click), decoding
    without gradient; ``tokens`` are the image features, or a function computing them on first
    use (no encoder pass when no click is simulated)."""

    def __init__(self, model: SegNext, tokens: Tokens):
        self.model, self.tokens = model, tokens

    def __enter__(self) -> "_Frozen":
        self.was_training = self.model.training
        self.model.eval()
        return self

    def __exit__(self, *exc) -> None:
        self.model.train(self.was_training)

    @torch.no_grad()
    def predict(self, clicks: torch.Tensor, prev: torch.Tensor) -> torch.Tensor:
        if callable(self.tokens):
            self.tokens = self.tokens()
        return torch.sigmoid(self.model.decode(self.tokens, clicks, prev).float())


def simulate_prompts(model: SegNext, tokens: Tokens, gt: torch.Tensor, clicks: torch.Tensor, prev: torch.Tensor,
                     cfg: ClickConfig, rng: np.random.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """Return ``(clicks, prev_mask)`` for one training step (new tensors; the inputs are kept).

    ``multi`` (SegNext's trainer): n uniform in 0..``max_correction_clicks`` for the batch; n
    times, the model's probabilities become the previous mask and every sample gets a click by
    the correction rule (``clickseg.data.clicks.correction_click``) in row ``max_positive - i``
    (positive) or the i-th last row (negative); a sample without error gets none.
    ``single_any``: half of the samples replace their positive click by a correction click in
    the error of the model's prediction for it, which becomes their previous mask.
    Other modes return the inputs.

    Args:
        tokens: the batch's image tokens (B, N, C), or a function computing them.
        gt: (B, 1, T, T) object masks.
        clicks: (B, P, 3) initial clicks from the data stream (padded with -1).
        prev: (B, 1, T, T) the previous mask before any simulated pass (zeros in training).
    """
    device = prev.device
    b = prev.shape[0]

    if cfg.mode == "multi":
        n_extra = int(rng.integers(0, cfg.max_correction_clicks + 1))
        if n_extra == 0:
            return clicks, prev
        clicks = clicks.clone()
        rows = clicks.shape[1]
        with _Frozen(model, tokens) as frozen:
            for i in range(1, n_extra + 1):
                prev = frozen.predict(clicks, prev)
                for j, c in enumerate(correction_clicks(gt, prev, cfg.threshold, rng)):
                    if c is not None:
                        row = cfg.max_positive - i if c[2] else rows - i
                        clicks[j, row] = torch.tensor(c, dtype=clicks.dtype, device=device)
        return clicks, prev

    if cfg.mode == "single_any":
        redo = rng.random(b) < 0.5
        if redo.any():
            with _Frozen(model, tokens) as frozen:
                guess = frozen.predict(clicks, prev)
            clicks, prev = clicks.clone(), prev.clone()
            samples = np.flatnonzero(redo).tolist()
            for j, c in zip(samples, correction_clicks(gt, guess, cfg.threshold, rng, samples)):
                if c is not None:
                    clicks[j, 0] = torch.tensor(c, dtype=clicks.dtype, device=device)
                    prev[j] = guess[j].to(prev.dtype)
    return clicks, prev


_POOL: ThreadPoolExecutor | None = None


def _pool() -> ThreadPoolExecutor:
    global _POOL
    if _POOL is None:
        _POOL = ThreadPoolExecutor(max_workers=min(8, os.cpu_count() or 1), thread_name_prefix="clickseg-clicks")
    return _POOL


def correction_clicks(gt: torch.Tensor, prob: torch.Tensor, threshold: float, rng: np.random.Generator,
                      samples: Sequence[int] | None = None) -> list[tuple[int, int, int] | None]:
    """``clickseg.data.clicks.correction_click`` for the ``samples`` of a batch (default: all), in
    that order: the same clicks and the same draws from ``rng`` as calling it per sample.

    The error regions are found on the tensors' device and reach the CPU as two boolean maps; the
    distance transforms (the costly part: about 5 ms per sample at 512 px, 19 ms at 1024) run in
    a thread pool, as OpenCV releases the GIL; the draws are then made in sample order.

    Args:
        gt: (B, 1, T, T) object masks; prob: (B, 1, T, T) probabilities.
    """
    idx = list(range(gt.shape[0])) if samples is None else list(samples)
    if not idx:
        return []
    target = gt[idx, 0] > 0.5
    p = prob[idx, 0]
    fn = (target & (p < threshold)).cpu().numpy()
    fp = (~target & (p > threshold)).cpu().numpy()
    depths = _pool().map(error_depth, fn, fp) if len(idx) > 1 else [error_depth(fn[0], fp[0])]
    return [draw_correction_click(positive, dt, rng) for positive, dt in depths]


class ClickSimulation:
    """One training batch's prompt simulation, run by ``SegNext.forward(..., simulate=self)`` on the
    batch's own image tokens; the final clicks and previous mask stay readable afterwards
    (``.clicks``, ``.prev``) for logging."""

    def __init__(self, gt: torch.Tensor, cfg: ClickConfig, rng: np.random.Generator):
        self.gt, self.cfg, self.rng = gt, cfg, rng
        self.clicks: torch.Tensor | None = None
        self.prev: torch.Tensor | None = None

    def __call__(self, model: SegNext, tokens: torch.Tensor, clicks: torch.Tensor,
                 prev: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        self.clicks, self.prev = simulate_prompts(model, tokens, self.gt, clicks, prev, self.cfg, self.rng)
        return self.clicks, self.prev


def prepare_prompts(model: SegNext, images: torch.Tensor, gt: torch.Tensor, clicks: torch.Tensor,
                    cfg: ClickConfig, rng: np.random.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """The simulation on its own (no training forward): encodes ``images`` (B, 3, T, T in [0, 1])
    only if a pass needs it; the same draws as inside the training step."""
    b, _, t, _ = images.shape
    prev = torch.zeros(b, 1, t, t, device=images.device)
    return simulate_prompts(model, lambda: model.encode_image(images), gt, clicks.to(images.device), prev, cfg, rng)
