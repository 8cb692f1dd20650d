"""Training clicks as SegNext draws them: its MultiPointSampler and its correction-click rule.

Clicks are rows ``(y, x, label)`` in model pixels, label 1 positive, 0 negative; unused rows are
``(-1, -1, -1)``. In ``multi`` mode the array has ``max_positive + max_negative`` rows: the
positive clicks fill the first half from the top, the negative ones the second half, and the
correction clicks of training take the last rows of either half (as in SegNext's trainer).
"""
from __future__ import annotations

import math
from functools import lru_cache

import cv2
import numpy as np

from clickseg.config import ClickConfig
from clickseg.data.targets import Scene, Target
from clickseg.regions import deeper_error, uniform_pixels

PAD = -1.0
_KERNEL = np.ones((3, 3), np.uint8)


@lru_cache(maxsize=None)
def count_probs(n: int, gamma: float) -> np.ndarray:
    """P(i) proportional to gamma**i for i in 0..n-1."""
    p = gamma ** np.arange(n, dtype=np.float64)
    return p / p.sum()


def positive_region(mask: np.ndarray, cfg: ClickConfig, rng: np.random.Generator) -> np.ndarray:
    """The object, eroded (3x3 kernel, ``positive_erode_iters`` times; the image border does not
    erode) with probability ``positive_erode_prob`` when more than 10 pixels remain."""
    if rng.random() < cfg.positive_erode_prob and cfg.positive_erode_iters > 0:
        eroded = cv2.erode(np.ascontiguousarray(mask).view(np.uint8), _KERNEL, iterations=cfg.positive_erode_iters)
        if np.count_nonzero(eroded) > 10:
            return eroded.astype(bool)
    return mask


def border_region(mask: np.ndarray, expand_ratio: float) -> np.ndarray:
    """The ring of ceil(ratio * sqrt(area)) 3x3 dilations around the mask, the mask excluded."""
    r = int(math.ceil(expand_ratio * math.sqrt(np.count_nonzero(mask))))
    if r == 0:
        return np.zeros_like(mask)
    # A 3x3 dilation repeated r times is one (2r + 1) square dilation (OpenCV merges them so).
    return cv2.dilate(np.ascontiguousarray(mask).view(np.uint8), _KERNEL, iterations=r).astype(bool) & ~mask


def positive_clicks(scene: Scene, target: Target, cfg: ClickConfig, rng: np.random.Generator,
                    single: bool = False) -> np.ndarray:
    """(n, 2) positive pixels. One object: 1 + i clicks, P(i) ~ gamma^i, from its positive region.
    A merged target: the first click in each member, then i ~ the negative-count law further
    clicks, each in a member chosen uniformly, at most ``max_positive`` in all. ``single``: one
    click in the first member."""
    if not target.members:
        return np.zeros((0, 2), np.int64)
    members = target.members[:1] if single else target.members
    regions = [positive_region(scene.mask(m), cfg, rng) for m in members]
    if single:
        return uniform_pixels(regions[0], 1, rng)
    if len(regions) == 1:
        n = 1 + int(rng.choice(cfg.max_positive, p=count_probs(cfg.max_positive, cfg.prob_gamma)))
        return uniform_pixels(regions[0], n, rng)
    firsts = [uniform_pixels(r, 1, rng) for r in regions]
    extra = int(rng.choice(cfg.max_positive + 1, p=count_probs(cfg.max_positive + 1, cfg.prob_gamma)))
    extra = min(extra, max(0, cfg.max_positive - len(regions)))
    owners = rng.integers(0, len(regions), size=extra)
    rest = [uniform_pixels(regions[k], int((owners == k).sum()), rng) for k in range(len(regions))]
    out = np.concatenate(firsts + rest)
    return out[: cfg.max_positive]


def negative_clicks(scene: Scene, target: Target, cfg: ClickConfig, rng: np.random.Generator) -> np.ndarray:
    """(n, 2) negative pixels: i ~ gamma^i clicks (0..max_negative), each from the border ring
    (p ``negative_border_prob``), other objects (``negative_other_prob``) or anywhere outside the
    target (``negative_bg_prob``); a click whose region is empty is dropped. Without a target every
    region is the background (pixels of no object)."""
    n = int(rng.choice(cfg.max_negative + 1, p=count_probs(cfg.max_negative + 1, cfg.prob_gamma)))
    if n == 0:
        return np.zeros((0, 2), np.int64)
    probs = [cfg.negative_border_prob, cfg.negative_other_prob, cfg.negative_bg_prob]
    per_strategy = rng.multinomial(n, np.asarray(probs) / sum(probs))
    picks = []
    for strategy, k in zip(("border", "other", "bg"), per_strategy):
        if k:
            picks.append(uniform_pixels(_negative_region(strategy, scene, target, cfg), int(k), rng))
    return np.concatenate(picks) if picks else np.zeros((0, 2), np.int64)


def _negative_region(strategy: str, scene: Scene, target: Target, cfg: ClickConfig) -> np.ndarray:
    if not target.members:
        return ~scene.foreground()
    if strategy == "border":
        return border_region(target.mask, cfg.border_expand_ratio)
    if strategy == "other" and len(scene.kept) > len(target.members):
        return scene.foreground() & ~target.mask
    return ~target.mask  # "bg", and "other" when the target is every kept object


def initial_clicks(scene: Scene, target: Target, cfg: ClickConfig, rng: np.random.Generator) -> np.ndarray:
    """The click array of a sample: (max_positive + max_negative, 3) for ``multi``, else (1, 3)."""
    if cfg.mode != "multi":
        out = np.full((1, 3), PAD, np.float32)
        pos = positive_clicks(scene, target, cfg, rng, single=True)
        if len(pos):
            out[0] = (pos[0, 0], pos[0, 1], 1)
        return out
    out = np.full((cfg.max_positive + cfg.max_negative, 3), PAD, np.float32)
    pos = positive_clicks(scene, target, cfg, rng)
    neg = negative_clicks(scene, target, cfg, rng)[: cfg.max_negative]
    out[: len(pos), :2], out[: len(pos), 2] = pos, 1
    start = cfg.max_positive
    out[start:start + len(neg), :2], out[start:start + len(neg), 2] = neg, 0
    return out


def correction_click(gt: np.ndarray, prob: np.ndarray, threshold: float,
                     rng: np.random.Generator) -> tuple[int, int, int] | None:
    """SegNext's training correction click: in the false-negative region (gt and prob < threshold)
    when its deepest pixel is strictly deeper than the false-positive one's (not gt and
    prob > threshold), else in the false-positive region; the pixel uniform among those deeper
    than half the larger depth (5x5 distance transform). None when there is no error.

    Not evaluation's ``random`` clicker, which draws uniformly over both error regions
    (``clickseg.regions`` says how the two rules differ); a pixel exactly at the threshold is in
    neither region here, as in SegNext's trainer.
    """
    return draw_correction_click(*error_depth(gt & (prob < threshold), ~gt & (prob > threshold)), rng)


def error_depth(fn: np.ndarray, fp: np.ndarray) -> tuple[bool, np.ndarray]:
    """The deciding half of :func:`correction_click` (no random draw): whether the click is
    positive, and the depth map (5x5 distance transform) of the region it is drawn from."""
    return deeper_error(fn, fp, 5)


def draw_correction_click(positive: bool, dt: np.ndarray, rng: np.random.Generator) -> tuple[int, int, int] | None:
    """The drawing half of :func:`correction_click`: a pixel uniform among those deeper than half
    the largest depth (None when the depth map is all zero)."""
    picked = uniform_pixels(dt > float(dt.max()) / 2.0, 1, rng)
    if len(picked) == 0:
        return None
    return int(picked[0, 0]), int(picked[0, 1]), int(positive)
