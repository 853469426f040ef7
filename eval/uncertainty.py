"""Uncertainty of retrieval metrics: paired-bootstrap confidence intervals and Holm correction.

Per-query scores are resampled over queries (scipy's ``bootstrap``, percentile intervals) so that a
reader sees how much a mean would move with another draw of queries of the same kind. Small sets show
wide intervals (PublicHealthQA has 172 judged queries). Differences between two runs are bootstrapped
*paired*: both runs are resampled with the same query indices, so per-query correlation is respected.

Multiple retrievers compared with one baseline on one dataset get Holm-corrected p-values
(``statsmodels.stats.multitest.multipletests``).

Example:
    >>> import numpy as np
    >>> a = np.array([0.0, 1.0] * 50)
    >>> low, high = bootstrap_ci(a, n_resamples=2000, seed=0)
    >>> low < 0.5 < high
    True
    >>> paired_bootstrap_ci(a + 0.1, a, n_resamples=200)   # a constant difference has no spread
    (0.1, 0.1)
    >>> holm([0.01, 0.04, 0.03])
    [0.03, 0.06, 0.06]
"""

from __future__ import annotations

from typing import Sequence

import numpy as np

CONFIDENCE = 0.95
N_RESAMPLES = 2000
CORRECTION = "Holm (statsmodels multipletests, method='holm') across the retrievers compared with the baseline"


def _degenerate(values: np.ndarray) -> bool:
    return values.size == 0 or bool(np.allclose(values, values.flat[0], rtol=0, atol=1e-12))


def bootstrap_ci(per_query: Sequence[float], confidence: float = CONFIDENCE, n_resamples: int = N_RESAMPLES,
                 seed: int = 0) -> tuple[float, float]:
    """Percentile bootstrap interval of the mean of ``per_query`` (resampling queries)."""
    from scipy.stats import bootstrap

    values = np.asarray(per_query, dtype=float)
    if _degenerate(values):  # every resample has the same mean; scipy would warn and return NaN
        v = float(values.flat[0]) if values.size else float("nan")
        return (v, v)
    res = bootstrap((values,), np.mean, confidence_level=confidence, n_resamples=n_resamples,
                    method="percentile", random_state=np.random.default_rng(seed), vectorized=True)
    return float(res.confidence_interval.low), float(res.confidence_interval.high)


def paired_bootstrap_ci(per_query_a: Sequence[float], per_query_b: Sequence[float],
                        confidence: float = CONFIDENCE, n_resamples: int = N_RESAMPLES,
                        seed: int = 0) -> tuple[float, float]:
    """Percentile interval of ``mean(a) - mean(b)`` resampling the same queries for both runs."""
    from scipy.stats import bootstrap

    a, b = np.asarray(per_query_a, dtype=float), np.asarray(per_query_b, dtype=float)
    if a.shape != b.shape:
        raise ValueError(f"paired scores must align query by query: {a.shape} vs {b.shape}")
    diff = a - b
    if _degenerate(diff):
        v = round(float(diff.flat[0]), 12) if diff.size else float("nan")
        return (v, v)
    res = bootstrap((a, b), lambda x, y, axis=-1: np.mean(x - y, axis=axis), paired=True,
                    confidence_level=confidence, n_resamples=n_resamples, method="percentile",
                    random_state=np.random.default_rng(seed), vectorized=True)
    return float(res.confidence_interval.low), float(res.confidence_interval.high)


def holm(p_values: Sequence[float], alpha: float = 0.05) -> list[float]:
    """Holm step-down adjusted p-values (family-wise error rate ``alpha``), in input order."""
    if len(p_values) == 0:
        return []
    from statsmodels.stats.multitest import multipletests

    _, adjusted, _, _ = multipletests(list(p_values), alpha=alpha, method="holm")
    # 12 significant digits drop float noise; an adjusted p is never below its raw p (Holm's definition).
    return [max(float(f"{a:.12g}"), float(p)) for a, p in zip(adjusted, p_values)]
