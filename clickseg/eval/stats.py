"""Statistics for honest comparisons: bootstrap confidence intervals and a chi-square test (numpy only)."""
from __future__ import annotations

import math

import numpy as np

N_BOOT = 2000
BOOT_SEED = 0


def bootstrap_ci(values: np.ndarray, level: float = 0.95, n_boot: int = N_BOOT, seed: int = BOOT_SEED,
                 total: bool = False) -> tuple[float, float]:
    """Percentile bootstrap CI of the mean (or of the sum, ``total=True``) of per-instance ``values``.

    Instances are resampled with replacement; a fixed ``seed`` makes the interval reproducible.
    A single instance gives a zero-width interval.
    """
    v = np.asarray(values, dtype=np.float64)
    if v.ndim != 1 or v.size == 0:
        raise ValueError(f"expected a non-empty 1-d array of per-instance values, got shape {v.shape}")
    idx = np.random.default_rng(seed).integers(0, v.size, size=(n_boot, v.size))
    stats = v[idx].mean(axis=1) * (v.size if total else 1)
    lo, hi = np.percentile(stats, [50 * (1 - level), 50 * (1 + level)])
    return float(lo), float(hi)


def paired_bootstrap(values: np.ndarray, baseline: np.ndarray, level: float = 0.95, n_boot: int = N_BOOT,
                     seed: int = BOOT_SEED) -> dict[str, float | bool]:
    """Paired bootstrap of mean(values) - mean(baseline) over the same instances (same order).

    Returns ``delta``, its CI bounds ``lo``/``hi``, a two-sided bootstrap ``p`` and ``significant``
    (the CI excludes 0). Instances are resampled together in both arms, so the per-instance
    difficulty (and the shared click draws) cancel out.
    """
    a = np.asarray(values, dtype=np.float64)
    b = np.asarray(baseline, dtype=np.float64)
    if a.shape != b.shape or a.ndim != 1 or a.size == 0:
        raise ValueError(f"paired values need the same non-empty 1-d shape, got {a.shape} and {b.shape}")
    d = a - b
    idx = np.random.default_rng(seed).integers(0, d.size, size=(n_boot, d.size))
    boots = d[idx].mean(axis=1)
    lo, hi = np.percentile(boots, [50 * (1 - level), 50 * (1 + level)])
    p = min(1.0, 2 * min(np.mean(boots <= 0), np.mean(boots >= 0)))
    return {"delta": float(d.mean()), "lo": float(lo), "hi": float(hi), "p": float(p),
            "significant": bool(lo > 0 or hi < 0)}


def _upper_gamma_q(a: float, x: float) -> float:
    """Regularized upper incomplete gamma Q(a, x) (series below a + 1, continued fraction above)."""
    if x <= 0:
        return 1.0
    log_pre = a * math.log(x) - x - math.lgamma(a)
    if x < a + 1:
        term = total = 1.0 / a
        ap = a
        for _ in range(10000):
            ap += 1
            term *= x / ap
            total += term
            if abs(term) < abs(total) * 1e-15:
                break
        return max(0.0, 1.0 - total * math.exp(log_pre))
    tiny = 1e-300
    b = x + 1 - a
    c = 1 / tiny
    d = 1 / b
    h = d
    for i in range(1, 10000):
        an = -i * (i - a)
        b += 2
        d = an * d + b
        d = tiny if abs(d) < tiny else d
        c = b + an / c
        c = tiny if abs(c) < tiny else c
        d = 1 / d
        delta = d * c
        h *= delta
        if abs(delta - 1) < 1e-15:
            break
    return math.exp(log_pre) * h


def chi2_sf(stat: float, df: int) -> float:
    """P(X >= stat) for a chi-square variable X with ``df`` degrees of freedom."""
    if df < 1:
        raise ValueError(f"df must be >= 1, got {df}")
    return _upper_gamma_q(df / 2, stat / 2)


def chi_square_uniform(counts: np.ndarray) -> tuple[float, float]:
    """Pearson's test that ``counts`` (one per cell) come from a uniform distribution: (statistic, p)."""
    counts = np.asarray(counts, dtype=np.float64).ravel()
    if counts.size < 2 or counts.sum() == 0:
        raise ValueError("need at least 2 cells and some observations")
    expected = counts.sum() / counts.size
    stat = float(((counts - expected) ** 2).sum() / expected)
    return stat, chi2_sf(stat, counts.size - 1)
