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


BUCKETS: tuple[str, ...] = ("head", "torso", "tail")


def buckets(counts: pd.Series) -> pd.Series:
    """Head / torso / tail label of each item (index: item id), by equal shares of interactions:
    items sorted by count (ties: smaller id first), the head holds the first third of all
    interactions, the torso the second, the tail the rest (items with no interaction included).

    >>> buckets(pd.Series({1: 6, 2: 3, 3: 2, 4: 1})).tolist()
    ['head', 'torso', 'tail', 'tail']
    """
    if counts.empty or counts.sum() <= 0:
        raise ValueError("buckets need at least one item with a positive count")
    if (counts < 0).any():
        raise ValueError("interaction counts must be non-negative")
    frame = pd.DataFrame({"item": counts.index, "count": counts.to_numpy(dtype="float64")})
    frame = frame.sort_values(["count", "item"], ascending=[False, True], kind="stable")
    before = (frame["count"].cumsum() - frame["count"]) / frame["count"].sum()  # share ahead
    labels = np.where(before < 1 / 3, BUCKETS[0], np.where(before < 2 / 3, BUCKETS[1],
                                                            BUCKETS[2]))
    labels = np.where(frame["count"] > 0, labels, BUCKETS[2])
    return pd.Series(labels, index=frame["item"].to_numpy(), name="bucket").reindex(counts.index)
