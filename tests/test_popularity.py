import numpy as np
import pytest

from rar_lite.data import popularity


def test_head_share_hand_computed() -> None:
    counts = np.array([1, 7, 1, 1])
    assert popularity.head_share(counts, 0.25) == pytest.approx(0.7)
    assert popularity.head_share(counts, 0.5) == pytest.approx(0.8)
    assert popularity.head_share(counts, 1.0) == pytest.approx(1.0)


def test_gini_hand_computed() -> None:
    assert popularity.gini(np.array([5, 5, 5, 5])) == pytest.approx(0.0)
    # one item holds everything among n: G = (n - 1) / n
    assert popularity.gini(np.array([0, 0, 0, 8])) == pytest.approx(0.75)
    # [1, 3]: mean abs difference / (2 * mean) = (2*|1-3| / 4) / (2 * 2) = 0.25
    assert popularity.gini(np.array([3, 1])) == pytest.approx(0.25)


@pytest.mark.parametrize("bad", [np.array([]), np.array([0, 0])])
def test_empty_counts_raise(bad: np.ndarray) -> None:
    with pytest.raises(ValueError):
        popularity.gini(bad)
    with pytest.raises(ValueError):
        popularity.head_share(bad)


def test_head_share_rejects_bad_fraction() -> None:
    with pytest.raises(ValueError, match="fraction"):
        popularity.head_share(np.array([1, 2]), 0)
