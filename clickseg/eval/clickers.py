"""Clickers: where a simulated user clicks next, given the ground truth and the current prediction,
and the jittered copies of a click that inference-time scaling adds.

The "center" clicker is the deterministic reference protocol of RITM / SimpleClick /
SegNext (``isegm/inference/clicker.py``). Clicks are ``(y, x, is_positive)``, i.e.
(row, column) in the original image. The regions and draws they share with training's
correction clicks are in ``clickseg.regions``.
"""
from __future__ import annotations

from typing import NamedTuple, Sequence

import numpy as np

from clickseg.regions import as_binary_mask, deeper_error, error_regions, pick_uniform


class Click(NamedTuple):
    y: int
    x: int
    is_positive: bool


def center_click(gt: np.ndarray, pred_mask: np.ndarray, not_clicked: np.ndarray) -> Click:
    """The reference ("center") click: the interior-most pixel of the larger error region.

    Args:
        gt: H x W ints; 1 object, 0 background, -1 ignore (any other value is background).
        pred_mask: H x W bool, the current binary prediction.
        not_clicked: H x W, 0 (or False) where an earlier click was placed, 1 elsewhere.

    The click is positive at the false-negative maximum when that maximum is strictly
    larger than the false-positive one, else negative at the false-positive maximum.
    Equal pixels go to the first in row-major order, so a perfect prediction gives a
    negative click at (0, 0), whatever that pixel is (a reference quirk kept on purpose).
    """
    gt = np.asarray(gt)
    pred = as_binary_mask(pred_mask)
    not_clicked = np.asarray(not_clicked)
    if gt.ndim != 2 or gt.size == 0:
        raise ValueError(f"gt must be a non-empty H x W array, got shape {gt.shape}")
    if pred.shape != gt.shape or not_clicked.shape != gt.shape:
        raise ValueError(f"shape mismatch: gt {gt.shape}, pred_mask {pred.shape}, "
                         f"not_clicked {not_clicked.shape}")
    fn, fp = error_regions(gt, pred)
    positive, dt = deeper_error(fn, fp, keep=not_clicked.astype(np.float32))
    y, x = np.unravel_index(int(np.argmax(dt)), dt.shape)  # argmax: first maximum, row-major
    return Click(int(y), int(x), positive)


class CenterClicker:
    """The deterministic NoC clicker for one instance.

    ``clicks`` (earlier clicks of this instance, ``(y, x, is_positive)``) start the
    record; every click returned by :meth:`next_click` is appended to ``self.clicks``
    and its pixel is never clicked again (only that pixel, not a neighbourhood).
    """

    def __init__(self, gt: np.ndarray, clicks: Sequence[Sequence] = ()):
        gt = np.asarray(gt)
        if gt.ndim != 2 or gt.size == 0:
            raise ValueError(f"gt must be a non-empty H x W array, got shape {gt.shape}")
        self.gt = gt
        self.not_clicked = np.ones(gt.shape, dtype=np.float32)
        self.clicks: list[Click] = []
        for c in clicks:
            y, x, positive = c
            if not (0 <= y < gt.shape[0] and 0 <= x < gt.shape[1]):
                raise ValueError(f"click {tuple(c)} lies outside the {gt.shape} ground truth")
            self._record(Click(int(y), int(x), bool(positive)))

    def _record(self, click: Click) -> None:
        self.clicks.append(click)
        self.not_clicked[click.y, click.x] = 0.0

    def next_click(self, pred_mask: np.ndarray) -> Click:
        """The next click for the current binary prediction (all False before the first click)."""
        click = center_click(self.gt, pred_mask, self.not_clicked)
        self._record(click)
        return click


class RandomClicker:
    """The random clicker of the research notes for one instance, fully determined by ``seed``.

    The first click is positive, drawn uniformly from the object pixels (gt == 1). Each later
    click is drawn uniformly from the union of the false-negative and false-positive regions
    (ignore pixels are in neither), which picks a region with probability proportional to its
    area: positive in FN, negative in FP. A perfect prediction (no error pixel) gets a positive
    confirming click drawn uniformly from the object.

    Args:
        gt: H x W ints; 1 object, 0 background, -1 ignore. Must contain an object pixel.
        seed: an int or a sequence of ints (e.g. ``(run_seed, dataset_hash, instance, draw)``),
            passed to ``numpy.random.default_rng``.
        clicks: earlier clicks ``(y, x, is_positive)`` of this instance; when given, the next
            click is drawn from the error region (the first-click rule applies only to an empty
            record).
    """

    def __init__(self, gt: np.ndarray, seed, clicks: Sequence[Sequence] = ()):
        gt = np.asarray(gt)
        if gt.ndim != 2 or gt.size == 0:
            raise ValueError(f"gt must be a non-empty H x W array, got shape {gt.shape}")
        self.gt = gt
        self.object_pixels = np.flatnonzero(gt == 1)
        if self.object_pixels.size == 0:
            raise ValueError("gt has no object pixel (value 1): an empty object cannot be clicked")
        self.rng = np.random.default_rng(seed)
        self.clicks: list[Click] = []
        for c in clicks:
            y, x, positive = c
            if not (0 <= y < gt.shape[0] and 0 <= x < gt.shape[1]):
                raise ValueError(f"click {tuple(c)} lies outside the {gt.shape} ground truth")
            self.clicks.append(Click(int(y), int(x), bool(positive)))

    def _pixel(self, flat_index: int, positive: bool) -> Click:
        y, x = divmod(int(flat_index), self.gt.shape[1])
        return Click(y, x, positive)

    def next_click(self, pred_mask: np.ndarray) -> Click:
        """The next click for the current binary prediction (all False before the first click)."""
        if self.clicks:
            fn, fp = error_regions(self.gt, pred_mask)
            # FN pixels, then FP ones: one draw over both picks a region in proportion to its area.
            errors = np.concatenate([np.flatnonzero(fn), np.flatnonzero(fp)])
        else:
            as_binary_mask(pred_mask)  # same checks as later clicks
            errors = np.zeros(0, np.int64)
        if errors.size:
            flat = pick_uniform(errors, self.rng)
            click = self._pixel(flat, bool(fn.flat[flat]))
        else:  # the first click, or a perfect prediction: a positive click on the object
            click = self._pixel(pick_uniform(self.object_pixels, self.rng), True)
        self.clicks.append(click)
        return click


def click_region(gt: np.ndarray, pred: np.ndarray, click: Click) -> np.ndarray:
    """The region a click lies in: the error region it corrects (FN for a positive click, FP for
    a negative one) at the time it was placed; the object / background when that region does
    not contain the click (a confirming click on a perfect prediction, or the center clicker's
    (0, 0) quirk)."""
    fn, fp = error_regions(gt, pred)
    region = fn if click.is_positive else fp
    if not region[click.y, click.x]:
        region = (gt == 1) if click.is_positive else (gt == 0)
    return region


def jitter_click(click: Click, region: np.ndarray, radius: int, rng: np.random.Generator) -> Click:
    """A copy of ``click`` moved to a pixel drawn uniformly among the pixels of ``region`` within
    Euclidean distance ``radius``; the click itself when there is none."""
    if radius <= 0:
        return click
    h, w = region.shape
    y0, y1 = max(0, click.y - radius), min(h, click.y + radius + 1)
    x0, x1 = max(0, click.x - radius), min(w, click.x + radius + 1)
    yy, xx = np.mgrid[y0:y1, x0:x1]
    ok = region[y0:y1, x0:x1] & ((yy - click.y) ** 2 + (xx - click.x) ** 2 <= radius * radius)
    flat = np.flatnonzero(ok)
    if flat.size == 0:
        return click
    y, x = divmod(pick_uniform(flat, rng), x1 - x0)
    return Click(int(y0 + y), int(x0 + x), click.is_positive)
