"""Popularity of items: how concentrated interactions are (the long tail).

Later chapters measure popularity bias with the same helpers.
"""

from __future__ import annotations

import numpy as np
import pandas as pd


def head_share(counts: pd.Series | np.ndarray, fraction: float = 0.1) -> float:
    """Share of all interactions that go to the most popular `fraction` of items.

    >>> head_share(np.array([7, 1, 1, 1]), 0.25)
    0.7
    """
    if not 0 < fraction <= 1:
        raise ValueError(f"fraction must be in (0, 1], got {fraction}")
    values = np.sort(np.asarray(counts, dtype="float64"))[::-1]
    if values.size == 0 or values.sum() == 0:
        raise ValueError("head_share needs at least one item with a positive count")
    k = max(1, int(round(fraction * values.size)))
    return float(values[:k].sum() / values.sum())


def gini(counts: pd.Series | np.ndarray) -> float:
    """Gini coefficient of item counts: 0 when every item is equally popular, near 1 when one
    item has everything.

    >>> gini(np.array([1, 1, 1, 1]))
    0.0
    """
    values = np.sort(np.asarray(counts, dtype="float64"))
    n = values.size
    if n == 0 or values.sum() == 0:
        raise ValueError("gini needs at least one item with a positive count")
    ranks = np.arange(1, n + 1)
    return float((2 * ranks - n - 1).dot(values) / (n * values.sum()))
