"""Metrics of the click protocol: IoU, mIoU@k, NoC@t, NoF@t, 5-mIoU (``shared/spec/evaluation.md``)."""
from __future__ import annotations

from typing import Callable, Sequence

import numpy as np

from clickseg.eval.clickers import CenterClicker, Click, as_binary_mask

THRESHOLDS = (0.85, 0.90, 0.95)


def iou(pred_mask: np.ndarray, gt: np.ndarray) -> float:
    """IoU over non-ignored pixels (gt == -1 excluded); only gt == 1 is object.

    Both empty gives NaN (0/0, as the reference). A 0/255 ground truth is NOT
    binarised here: 255 counts as background (the dataset reader must binarise).
    """
    pred = as_binary_mask(pred_mask)
    gt = np.asarray(gt)
    if pred.shape != gt.shape:
        raise ValueError(f"shape mismatch: pred_mask {pred.shape}, gt {gt.shape}")
    valid = gt != -1
    obj = gt == 1
    inter = np.count_nonzero(pred & obj & valid)
    union = np.count_nonzero((pred | obj) & valid)
    return inter / union if union else float("nan")


def summarize(ious: np.ndarray, thresholds: Sequence[float] = THRESHOLDS) -> dict[str, float]:
    """Summary of an (instances x clicks) IoU array.

    Keys: ``instances``; ``mIoU@1`` .. ``mIoU@n``; ``NoC@85``, ``NoF@85`` etc. for each
    threshold (named by ``round(100 * t)``); ``5-mIoU`` when n >= 5.

    mIoU@k is the plain mean over instances, not a nanmean, as the reference: NaN
    needs an empty object, and empty objects are skipped before evaluation, so a NaN
    here is a caller's bug and shows as NaN instead of being hidden. NoC@t is the
    mean of the first 1-based click whose IoU >= t, counting n (the click budget) for
    an instance that never reaches t; NaN never reaches. NoF@t counts those instances.
    """
    ious = np.asarray(ious, dtype=np.float64)
    if ious.ndim != 2 or ious.shape[0] == 0 or ious.shape[1] == 0:
        raise ValueError(f"expected a non-empty (instances, clicks) array, got shape {ious.shape}")
    n_inst, n = ious.shape
    out: dict[str, float] = {"instances": n_inst}
    means = ious.mean(axis=0)
    for k in range(n):
        out[f"mIoU@{k + 1}"] = float(means[k])
    for t in thresholds:
        reached = np.nan_to_num(ious, nan=-np.inf) >= t
        ever = reached.any(axis=1)
        first = np.where(ever, reached.argmax(axis=1) + 1, n)
        name = f"{round(t * 100)}"
        out[f"NoC@{name}"] = float(first.mean())
        out[f"NoF@{name}"] = int((~ever).sum())
    if n >= 5:
        out["5-mIoU"] = float(means[:5].mean())
    return out


def evaluate_instance(predict_fn: Callable[[list[Click]], np.ndarray], gt: np.ndarray, n_clicks: int,
                      thr: float = 0.49) -> np.ndarray:
    """IoU after each of ``n_clicks`` center clicks (all of them are run, no early stop).

    ``predict_fn(clicks)`` gets every click so far, in order, and returns an H x W
    probability map; a pixel is object when its probability is strictly above ``thr``.
    The first click sees an all-False prediction. A predictor that feeds its previous
    mask back must be reset by the caller before the instance.
    """
    if n_clicks < 1:
        raise ValueError(f"n_clicks must be >= 1, got {n_clicks}")
    clicker = CenterClicker(gt)
    pred = np.zeros(clicker.gt.shape, dtype=bool)
    out = np.empty(n_clicks, dtype=np.float64)
    for k in range(n_clicks):
        clicker.next_click(pred)
        prob = np.asarray(predict_fn(list(clicker.clicks)))
        if prob.shape != pred.shape:
            raise ValueError(f"predict_fn returned shape {prob.shape}, expected the gt's {pred.shape}")
        pred = prob > thr
        out[k] = iou(pred, clicker.gt)
    return out
