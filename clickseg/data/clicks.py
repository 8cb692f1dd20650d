"""Click simulation for training (the model's inputs, in crop pixels)."""
from __future__ import annotations

import cv2
import numpy as np

from clickseg.config import ClickConfig

PAD = (-1, -1, -1)


def _distance_inside(mask: np.ndarray) -> np.ndarray:
    """Euclidean distance of each mask pixel to the nearest non-mask pixel (image border counts as outside)."""
    padded = np.pad(mask.astype(np.uint8), 1)
    return cv2.distanceTransform(padded, cv2.DIST_L2, 0)[1:-1, 1:-1]


def _pick(candidates: np.ndarray, k: int, rng: np.random.Generator) -> list[tuple[int, int]]:
    ys, xs = np.nonzero(candidates)
    if len(ys) == 0 or k <= 0:
        return []
    idx = rng.choice(len(ys), size=min(k, len(ys)), replace=False)
    return [(int(ys[i]), int(xs[i])) for i in idx]


def _count(max_count: int, rng: np.random.Generator, at_least: int) -> int:
    """at_least + a geometric number of extra clicks (mean about 1), capped at ``max_count``."""
    return min(max_count, at_least + int(rng.geometric(0.5)) - 1)


def initial_clicks(mask: np.ndarray, cfg: ClickConfig, rng: np.random.Generator) -> list[tuple[int, int, int]]:
    """Clicks drawn from the ground-truth mask before any prediction: (y, x, label), label 1 or 0.

    ``multi``: 1 + geometric positives inside the object (away from its edge when
    possible) and geometric negatives in a background band around it;
    ``single_pos`` and ``single_any``: one positive click (``single_any`` may later
    replace it with a click in the error region of the model's own prediction).
    """
    inside = _distance_inside(mask)
    interior = inside > 2.0
    pos_region = interior if interior.any() else mask
    if cfg.mode != "multi":
        return [(y, x, 1) for y, x in _pick(pos_region, 1, rng)]
    clicks = [(y, x, 1) for y, x in _pick(pos_region, _count(cfg.max_positive, rng, 1), rng)]
    outside = _distance_inside(~mask)
    band = (outside > 2.0) & (outside <= cfg.negative_band)
    clicks += [(y, x, 0) for y, x in _pick(band, _count(cfg.max_negative, rng, 0), rng)]
    return clicks


def random_error_click(gt: np.ndarray, pred: np.ndarray, rng: np.random.Generator) -> tuple[int, int, int] | None:
    """A click uniform over the false-negative or false-positive region, the region chosen
    with probability proportional to its area (positive in FN, negative in FP)."""
    fn = gt & ~pred
    fp = ~gt & pred
    n_fn, n_fp = int(fn.sum()), int(fp.sum())
    if n_fn + n_fp == 0:
        return None
    region, label = (fn, 1) if rng.random() * (n_fn + n_fp) < n_fn else (fp, 0)
    ((y, x),) = _pick(region, 1, rng)
    return (y, x, label)


def pad_clicks(clicks: list[tuple[int, int, int]], length: int) -> np.ndarray:
    """(length, 3) float32 array of clicks followed by (-1, -1, -1) padding."""
    out = np.full((length, 3), -1, dtype=np.float32)
    if clicks:
        out[: len(clicks)] = np.asarray(clicks[:length], dtype=np.float32)
    return out


def max_initial_clicks(cfg: ClickConfig) -> int:
    return cfg.max_positive + cfg.max_negative if cfg.mode == "multi" else 1
