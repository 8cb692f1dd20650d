"""Mask regions and the pixels drawn from them, shared by training's clicks (``clickseg.data.clicks``)
and evaluation's clickers (``clickseg.eval.clickers``).

Two click rules use them, and they are different rules on purpose:

- training's correction click (SegNext's trainer): the error region whose
  deepest pixel is deeper (:func:`deeper_error`, 5x5 distance transform), then a pixel uniform in
  its inner half (:func:`uniform_pixels`);
- evaluation's ``random`` clicker (README: Evaluation protocols): a pixel uniform over
  both error regions together (:func:`error_regions`, :func:`pick_uniform`), so the region is
  chosen in proportion to its area, with no depth at all.

Evaluation's ``center`` clicker takes training's region choice with the exact transform and the
deepest pixel instead of a random one. Both draws are uniform; they consume random numbers
differently: evaluation draws one listed pixel with one ``rng.integers`` call (its seeded clicks
stay those of results already recorded), training draws many pixels at once by rejection in the
region's bounding box (faster on large regions).
"""
from __future__ import annotations

import cv2
import numpy as np


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


def error_regions(gt: np.ndarray, pred_mask: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(false negatives, false positives) of a binary prediction against ``gt`` (1 object, -1 ignore,
    anything else background); ignore pixels are in neither."""
    gt = np.asarray(gt)
    pred = as_binary_mask(pred_mask)
    if pred.shape != gt.shape:
        raise ValueError(f"shape mismatch: gt {gt.shape}, pred_mask {pred.shape}")
    valid = gt != -1
    obj = gt == 1
    return obj & ~pred & valid, ~obj & pred & valid


def padded_distance(region: np.ndarray, mask_size: int = 0) -> np.ndarray:
    """Euclidean distance of each region pixel to the nearest non-region pixel.

    The one-pixel zero padding makes the image border count as outside. OpenCV's ``DIST_L2``
    with ``mask_size`` 0 (``DIST_MASK_PRECISE``) is the exact transform; 5 is its 5x5
    approximation, which SegNext's training correction clicks use.
    """
    padded = np.pad(region.astype(np.uint8), 1)
    return cv2.distanceTransform(padded, cv2.DIST_L2, mask_size)[1:-1, 1:-1]


def deeper_error(fn: np.ndarray, fp: np.ndarray, mask_size: int = 0,
                 keep: np.ndarray | None = None) -> tuple[bool, np.ndarray]:
    """(positive, depth map of the chosen region): the false negatives when their deepest pixel is
    strictly deeper than the false positives' (equal depths, no error included, choose the false
    positives). Depths are :func:`padded_distance` with ``mask_size``, multiplied by ``keep``
    (float32, 0 on pixels that may not be chosen) when given."""
    fn_dt = padded_distance(fn, mask_size)
    fp_dt = padded_distance(fp, mask_size)
    if keep is not None:
        fn_dt, fp_dt = fn_dt * keep, fp_dt * keep
    positive = bool(fn_dt.max() > fp_dt.max())
    return positive, fn_dt if positive else fp_dt


def pick_uniform(flat_indices: np.ndarray, rng: np.random.Generator) -> int:
    """One of ``flat_indices`` (non-empty), uniform: a single ``rng.integers`` draw."""
    return int(flat_indices[rng.integers(flat_indices.size)])


def uniform_pixels(region: np.ndarray, k: int, rng: np.random.Generator) -> np.ndarray:
    """k pixels (y, x) drawn uniformly with replacement from a bool mask; none when it is empty.

    Candidates are drawn uniformly in the region's bounding box and kept when inside (each kept
    one is uniform over the region); a sparse region is listed instead.
    """
    if k <= 0:
        return np.zeros((0, 2), np.int64)
    u8 = np.ascontiguousarray(region).view(np.uint8)
    x0, y0, w, h = cv2.boundingRect(u8)
    if w == 0 or h == 0:
        return np.zeros((0, 2), np.int64)
    box = u8[y0:y0 + h, x0:x0 + w]
    count = cv2.countNonZero(box)
    if count * 4 < w * h:
        flat = np.flatnonzero(box)
        ys, xs = np.divmod(flat[rng.integers(0, len(flat), size=k)], w)
        return np.stack([ys + y0, xs + x0], axis=1)
    picked: list[np.ndarray] = []
    need = k
    while need > 0:
        m = 2 * need * w * h // count + 8
        ys, xs = rng.integers(0, h, size=m), rng.integers(0, w, size=m)
        inside = box[ys, xs] > 0
        got = np.stack([ys[inside], xs[inside]], axis=1)[:need]
        picked.append(got)
        need -= len(got)
    return np.concatenate(picked) + np.array([y0, x0])
