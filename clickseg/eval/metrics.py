"""Metrics of the click protocol: IoU, mIoU@k, NoC@t, NoF@t, 5-mIoU (README: Evaluation protocols)."""
from __future__ import annotations

from typing import Callable, Sequence

import numpy as np

from clickseg.eval.clickers import CenterClicker, Click
from clickseg.regions import as_binary_mask

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


def first_reaching(ious: np.ndarray, t: float) -> tuple[np.ndarray, np.ndarray]:
    """(reached, first) along the last (clicks) axis: whether some IoU >= t, and the 1-based index
    of the first such click, the click budget (the axis length) where none is. NaN never reaches."""
    hits = np.nan_to_num(np.asarray(ious, dtype=np.float64), nan=-np.inf) >= t
    reached = hits.any(axis=-1)
    return reached, np.where(reached, hits.argmax(axis=-1) + 1, hits.shape[-1])


def per_instance(ious: np.ndarray, thresholds: Sequence[float] = THRESHOLDS) -> dict[str, np.ndarray]:
    """Per-instance values of every summary metric from an (instances, draws, clicks) array.

    Draws are averaged within an instance: ``mIoU@k`` is the mean IoU after k clicks,
    ``NoC@t`` the mean over draws of the first click reaching t (the budget n when never;
    NaN never reaches), ``NoF@t`` the fraction of draws that never reach t, ``5-mIoU`` the
    mean of ``mIoU@1..5`` (when n >= 5). Thresholds are named by ``round(100 * t)``.
    """
    ious = np.asarray(ious, dtype=np.float64)
    if ious.ndim != 3 or 0 in ious.shape:
        raise ValueError(f"expected a non-empty (instances, draws, clicks) array, got shape {ious.shape}")
    n = ious.shape[2]
    mean_iou = ious.mean(axis=1)
    out = {f"mIoU@{k + 1}": mean_iou[:, k] for k in range(n)}
    for t in thresholds:
        reached, first = first_reaching(ious, t)
        name = f"{round(t * 100)}"
        out[f"NoC@{name}"] = first.mean(axis=1)
        out[f"NoF@{name}"] = (~reached).mean(axis=1)
    if n >= 5:
        out["5-mIoU"] = mean_iou[:, :5].mean(axis=1)
    return out


def over_instances(values: dict[str, np.ndarray], draws: int) -> dict[str, float]:
    """Each :func:`per_instance` value over the instances: the mean, for ``NoF@t`` the sum (an
    expected number of failures; an int with one draw)."""
    out: dict[str, float] = {}
    for name, v in values.items():
        if name.startswith("NoF"):
            total = float(v.sum())
            out[name] = int(round(total)) if draws == 1 else total
        else:
            out[name] = float(v.mean())
    return out


def summarize(ious: np.ndarray, thresholds: Sequence[float] = THRESHOLDS) -> dict[str, float]:
    """Summary of an (instances x clicks) IoU array: ``instances`` and :func:`per_instance`'s
    metrics over the instances (``mIoU@1`` .. ``mIoU@n``, ``NoC@85``, ``NoF@85`` ... ``5-mIoU``).

    mIoU@k is the plain mean over instances, not a nanmean, as the reference: NaN
    needs an empty object, and empty objects are skipped before evaluation, so a NaN
    here is a caller's bug and shows as NaN instead of being hidden. NoC@t is the
    mean of the first 1-based click whose IoU >= t, counting n (the click budget) for
    an instance that never reaches t; NaN never reaches. NoF@t counts those instances.
    """
    ious = np.asarray(ious, dtype=np.float64)
    if ious.ndim != 2 or ious.shape[0] == 0 or ious.shape[1] == 0:
        raise ValueError(f"expected a non-empty (instances, clicks) array, got shape {ious.shape}")
    return {"instances": ious.shape[0], **over_instances(per_instance(ious[:, None, :], thresholds), 1)}


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
