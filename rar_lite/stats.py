"""Statistics for the evaluation chapter: how sure can we be of a mean, and of a difference?

- `mean_ci`: mean, standard error and a Student-t confidence interval of per-pair values;
- `paired_test`: a paired comparison of two systems on the same (conversation, target) pairs:
  the mean difference, its bootstrap confidence interval (`scipy.stats.bootstrap`, resampling
  pairs) and a two-sided p-value from a sign-flip permutation test
  (`scipy.stats.permutation_test`, exact when there are few pairs). Pairing matters: two systems
  see the same conversations, so most of the spread between conversations cancels.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np


def _values(values: Sequence[float] | np.ndarray, name: str = "values") -> np.ndarray:
    array = np.asarray(values, dtype="float64")
    if array.ndim != 1 or array.size == 0:
        raise ValueError(f"{name} must be a non-empty 1-D sequence")
    if not np.all(np.isfinite(array)):
        raise ValueError(f"{name} must be finite")
    return array



def _scipy_stats():
    """`scipy.stats`, imported on first use: it takes ~0.7 s, which a command that compares no
    systems (`rar-lite recommend`) should not pay."""
    from scipy import stats

    return stats

def mean_ci(values: Sequence[float] | np.ndarray, confidence: float = 0.95) -> dict[str, float]:
    """{"mean", "se", "low", "high", "n"}: the mean, its standard error (sample std / √n) and a
    t-interval (a single value has SE and interval NaN)."""
    if not 0 < confidence < 1:
        raise ValueError(f"confidence must be in (0, 1), got {confidence}")
    array = _values(values)
    n = array.size
    mean = float(array.mean())
    if n < 2:
        return {"mean": mean, "se": np.nan, "low": np.nan, "high": np.nan, "n": n}
    se = float(array.std(ddof=1) / np.sqrt(n))
    half = float(_scipy_stats().t.ppf(0.5 + confidence / 2, df=n - 1)) * se
    return {"mean": mean, "se": se, "low": mean - half, "high": mean + half, "n": n}


def paired_test(a: Sequence[float] | np.ndarray, b: Sequence[float] | np.ndarray,
                n_resamples: int = 10_000, confidence: float = 0.95,
                seed: int = 0) -> dict[str, float]:
    """Is system A better than B on the same pairs? {"diff": mean(a - b), "low", "high": its
    bootstrap interval (percentile), "p": two-sided sign-flip permutation p-value, "n"}."""
    a, b = _values(a, "a"), _values(b, "b")
    if a.size != b.size:
        raise ValueError(f"a and b must be paired: {a.size} values against {b.size}")
    diff = a - b
    out = {"diff": float(diff.mean()), "n": int(diff.size)}
    if not np.any(diff):
        return {**out, "low": 0.0, "high": 0.0, "p": 1.0}
    stats = _scipy_stats()
    interval = stats.bootstrap((diff,), np.mean, n_resamples=n_resamples,
                               confidence_level=confidence, method="percentile",
                               rng=np.random.default_rng(seed)).confidence_interval
    # the sign-flip test: under "no difference", each pair's difference is as likely negated
    test = stats.permutation_test((a, b), lambda x, y, axis: np.mean(x - y, axis=axis),
                                  vectorized=True,
                                  permutation_type="samples", n_resamples=n_resamples,
                                  alternative="two-sided", rng=np.random.default_rng(seed))
    return {**out, "low": float(interval.low), "high": float(interval.high),
            "p": float(test.pvalue)}


def describe_paired(test: dict[str, float], a: str, b: str, metric: str = "ndcg@10",
                    alpha: float = 0.05) -> str:
    """One sentence on a `paired_test` result: the difference a − b with its 95% interval and
    p-value, and the verdict at level `alpha` ("a real gain", "a real loss" or "not
    distinguishable")."""
    if test["p"] < alpha:
        verdict = "a real gain" if test["diff"] > 0 else "a real loss"
    else:
        verdict = "not distinguishable"
    return (f"{a} − {b}, {metric} {test['diff']:+.4f} (95% CI {test['low']:+.4f} to "
            f"{test['high']:+.4f}, paired p = {test['p']:.3g}, {test['n']} pairs): {verdict}.")


def paired_relative(a: np.ndarray, b: np.ndarray, seed: int = 0) -> dict[str, object]:
    """mean(b − a) / mean(a) and its paired bootstrap 95% interval, as fractions of `a`'s mean."""
    test = paired_test(b, a, seed=seed)
    base = float(np.mean(a))
    scale = 1.0 / base if base else float("nan")
    return {"mean": test["diff"] * scale, "ci95": [test["low"] * scale, test["high"] * scale],
            "p": test["p"], "absolute": test["diff"]}
