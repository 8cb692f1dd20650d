"""Summaries of per-instance, per-draw IoUs with bootstrap confidence intervals over instances."""
from __future__ import annotations

from typing import Sequence

import numpy as np

from clickseg.eval.metrics import THRESHOLDS, over_instances, per_instance
from clickseg.eval.stats import bootstrap_ci

__all__ = ["per_instance", "summarize_draws"]


def summarize_draws(ious: np.ndarray, thresholds: Sequence[float] = THRESHOLDS,
                    level: float = 0.95) -> tuple[dict[str, float], dict[str, list[float]]]:
    """(metrics, ci) of an (instances, draws, clicks) array.

    ``metrics`` holds ``instances``, ``draws`` and the mean over instances of each per-instance
    value (``NoF@t``: the sum, an expected number of failures); ``ci`` the percentile bootstrap
    interval of each over instances (``level``, fixed seed).
    """
    values = per_instance(ious, thresholds)
    metrics: dict[str, float] = {"instances": int(ious.shape[0]), "draws": int(ious.shape[1]),
                                 **over_instances(values, int(ious.shape[1]))}
    ci = {name: [round(x, 6) for x in bootstrap_ci(v, level, total=name.startswith("NoF"))]
          for name, v in values.items()}
    return metrics, ci
