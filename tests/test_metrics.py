import math

import numpy as np
import pytest
import torch

from rar_lite import metrics


def test_single_target_hand_computed() -> None:
    # ranks 0, 2, 9, missing
    m = metrics.metrics_from_ranks([0, 2, 9, math.inf], ks=(1, 5, 10))
    assert m["recall@1"] == pytest.approx(1 / 4)
    assert m["recall@5"] == pytest.approx(2 / 4)
    assert m["recall@10"] == pytest.approx(3 / 4)
    assert m["ndcg@1"] == pytest.approx(1 / 4)
    assert m["ndcg@5"] == pytest.approx((1 + 1 / math.log2(4)) / 4)  # 1 + 0.5
    assert m["ndcg@10"] == pytest.approx((1 + 0.5 + 1 / math.log2(11)) / 4)
    assert m["mrr@5"] == pytest.approx((1 + 1 / 3) / 4)
    assert m["mrr@10"] == pytest.approx((1 + 1 / 3 + 1 / 10) / 4)


def test_ranks_in_list_several_targets_and_missing() -> None:
    ranked = [5, 3, 9, 3, 1]  # a duplicate counts at its first position
    assert metrics.ranks_in_list(ranked, [3, 1, 42]) == [1.0, 4.0, math.inf]
    # He et al.: each target of a turn is scored separately, means over (turn, target) pairs
    m = metrics.metrics_from_ranks(metrics.ranks_in_list(ranked, [3, 1, 42]), ks=(5,))
    assert m["recall@5"] == pytest.approx(2 / 3)
    assert m["ndcg@5"] == pytest.approx((1 / math.log2(3) + 1 / math.log2(6)) / 3)


def test_rank_from_scores_ties_count_against_target() -> None:
    scores = torch.tensor([[0.9, 0.5, 0.5, 0.1],
                           [1.0, 1.0, 1.0, 1.0],
                           [0.2, float("-inf"), 0.3, 0.1]])
    ranks = metrics.rank_from_scores(scores, torch.tensor([1, 0, 1]))
    assert ranks[0] == 2  # 0.9 above, the tied 0.5 counts against it
    assert ranks[1] == 3  # a constant scorer puts the target last
    assert math.isinf(ranks[2])  # a masked target cannot be retrieved
    assert metrics.metrics_from_ranks(ranks, ks=(1, 5))["recall@5"] == pytest.approx(2 / 3)


def test_per_pair_means_equal_metrics() -> None:
    ranks = np.array([0, 3, 7, np.inf, 15])
    pairs = metrics.per_pair_metrics(ranks)
    means = metrics.metrics_from_ranks(ranks)
    assert {k: float(v.mean()) for k, v in pairs.items()} == means


@pytest.mark.parametrize("bad", [[], [-1.0], [float("nan")]])
def test_bad_ranks(bad: list[float]) -> None:
    with pytest.raises(ValueError):
        metrics.metrics_from_ranks(bad)


def test_stable_ranks_are_the_places_in_a_stable_descending_sort() -> None:
    rng = np.random.default_rng(0)
    scores = rng.integers(0, 5, size=(7, 40)).astype("float64")  # many ties
    scores[2, :10] = -np.inf  # masked items tie among themselves too
    targets = [list(rng.choice(40, size=n, replace=False)) for n in (1, 3, 0, 2, 1, 4, 1)]
    targets[2] = [3, 30]  # one masked target, one not
    expected = []
    for row, wanted in zip(scores, targets):
        order = list(np.argsort(-row, kind="stable"))
        expected += [order.index(t) for t in wanted]
    for chunk in (1, 3, 256):  # pairs taken a few at a time, or all at once
        assert metrics.stable_ranks(scores, targets, chunk=chunk).tolist() == expected
    assert metrics.stable_ranks(scores, [[]] * 7).shape == (0,)
