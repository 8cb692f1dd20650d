"""Clickers: where a simulated user clicks next, given the ground truth and the current prediction.

The "center" clicker is the deterministic reference protocol of RITM / SimpleClick /
SegNext (``shared/spec/evaluation.md``). Clicks are ``(y, x, is_positive)``, i.e.
(row, column) in the original image.
"""
from __future__ import annotations

from typing import NamedTuple, Sequence

import cv2
import numpy as np


class Click(NamedTuple):
    y: int
    x: int
    is_positive: bool


def as_binary_mask(mask: np.ndarray, name: str = "pred_mask") -> np.ndarray:
    """``mask`` as a bool array; accepts bool, or integers that are all 0/1.

    Float arrays are refused: a probability map must be thresholded by the caller
    (``prob > thr``), never silently cast (0.3 would become True).
    """
    mask = np.asarray(mask)
    if mask.dtype == bool:
        return mask
    if np.issubdtype(mask.dtype, np.integer) and np.isin(mask, (0, 1)).all():
        return mask.astype(bool)
    raise TypeError(f"{name} must be a boolean mask (threshold probabilities first), "
                    f"got dtype {mask.dtype}")


def padded_distance(region: np.ndarray, mask_size: int = 0) -> np.ndarray:
    """Euclidean distance of each region pixel to the nearest non-region pixel.

    The one-pixel zero padding makes the image border count as outside. OpenCV's ``DIST_L2``
    with ``mask_size`` 0 (``DIST_MASK_PRECISE``) is the exact transform; 5 is its 5x5
    approximation, which SegNext's training correction clicks use.
    """
    padded = np.pad(region.astype(np.uint8), 1)
    return cv2.distanceTransform(padded, cv2.DIST_L2, mask_size)[1:-1, 1:-1]


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
    valid = gt != -1
    obj = gt == 1
    keep = not_clicked.astype(np.float32)
    fn_dt = padded_distance(obj & ~pred & valid) * keep
    fp_dt = padded_distance(~obj & pred & valid) * keep
    positive = bool(fn_dt.max() > fp_dt.max())
    dt = fn_dt if positive else fp_dt
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


def error_regions(gt: np.ndarray, pred_mask: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(false negatives, false positives) of a binary prediction; ignore pixels are in neither."""
    gt = np.asarray(gt)
    pred = as_binary_mask(pred_mask)
    if pred.shape != gt.shape:
        raise ValueError(f"shape mismatch: gt {gt.shape}, pred_mask {pred.shape}")
    valid = gt != -1
    obj = gt == 1
    return obj & ~pred & valid, ~obj & pred & valid


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
        if not self.clicks:
            as_binary_mask(pred_mask)  # same checks as later clicks
            click = self._pixel(self.object_pixels[self.rng.integers(self.object_pixels.size)], True)
        else:
            fn, fp = error_regions(self.gt, pred_mask)
            fn_idx, fp_idx = np.flatnonzero(fn), np.flatnonzero(fp)
            n = fn_idx.size + fp_idx.size
            if n == 0:
                click = self._pixel(self.object_pixels[self.rng.integers(self.object_pixels.size)], True)
            else:
                u = int(self.rng.integers(n))
                click = (self._pixel(fn_idx[u], True) if u < fn_idx.size
                         else self._pixel(fp_idx[u - fn_idx.size], False))
        self.clicks.append(click)
        return click
