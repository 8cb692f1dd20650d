"""Summaries of per-instance, per-draw IoUs with bootstrap confidence intervals over instances."""
from __future__ import annotations

from typing import Sequence

import numpy as np

from clickseg.eval.metrics import THRESHOLDS
from clickseg.eval.stats import bootstrap_ci


def per_instance(ious: np.ndarray, thresholds: Sequence[float] = THRESHOLDS) -> dict[str, np.ndarray]:
    """Per-instance values of every summary metric from an (instances, draws, clicks) array.

    Draws are averaged within an instance: ``mIoU@k`` is the mean IoU after k clicks,
    ``NoC@t`` the mean over draws of the first click reaching t (the budget n when never;
    NaN never reaches), ``NoF@t`` the fraction of draws that never reach t, ``5-mIoU`` the
    mean of ``mIoU@1..5``. With one draw these are exactly the terms of ``metrics.summarize``.
    """
    ious = np.asarray(ious, dtype=np.float64)
    if ious.ndim != 3 or 0 in ious.shape:
        raise ValueError(f"expected a non-empty (instances, draws, clicks) array, got shape {ious.shape}")
    n = ious.shape[2]
    mean_iou = ious.mean(axis=1)
    out = {f"mIoU@{k + 1}": mean_iou[:, k] for k in range(n)}
    for t in thresholds:
        reached = np.nan_to_num(ious, nan=-np.inf) >= t
        ever = reached.any(axis=2)
        first = np.where(ever, reached.argmax(axis=2) + 1, n)
        name = f"{round(t * 100)}"
        out[f"NoC@{name}"] = first.mean(axis=1)
        out[f"NoF@{name}"] = (~ever).mean(axis=1)
    if n >= 5:
        out["5-mIoU"] = mean_iou[:, :5].mean(axis=1)
    return out


def summarize_draws(ious: np.ndarray, thresholds: Sequence[float] = THRESHOLDS,
                    level: float = 0.95) -> tuple[dict[str, float], dict[str, list[float]]]:
    """(metrics, ci) of an (instances, draws, clicks) array.

    ``metrics`` holds ``instances``, ``draws`` and the mean over instances of each per-instance
    value (``NoF@t``: the sum, an expected number of failures); ``ci`` the percentile bootstrap
    interval of each over instances (``level``, fixed seed).
    """
    values = per_instance(ious, thresholds)
    metrics: dict[str, float] = {"instances": int(ious.shape[0]), "draws": int(ious.shape[1])}
    ci: dict[str, list[float]] = {}
    for name, v in values.items():
        total = name.startswith("NoF")
        value = float(v.sum() if total else v.mean())
        metrics[name] = int(round(value)) if total and ious.shape[1] == 1 else value
        ci[name] = [round(x, 6) for x in bootstrap_ci(v, level, total=total)]
    return metrics, ci
