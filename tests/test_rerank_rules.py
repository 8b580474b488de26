"""Rerankers that need no LLM: retriever order, keyword rule, answer handling, position bias."""

import numpy as np
import pandas as pd
import pytest

from rar_lite.data.conversations import Conversation, Turn
from rar_lite.reranking import rerank


def conv(text: str, target: int = 0) -> Conversation:
    return Conversation("c", (Turn("recommender", "Hi"), Turn("seeker", text)), (), (target,), "t")


def test_retriever_order_and_bad_candidates() -> None:
    assert rerank.RetrieverOrder().rank(conv("x"), [3, 1, 2]).items == [3, 1, 2]
    assert rerank.RetrieverOrder().rank(conv("x"), []).failure == "no candidates"
    with pytest.raises(ValueError, match="duplicates"):
        rerank.RetrieverOrder().rank(conv("x"), [1, 1])


def test_keyword_rule(corpus: pd.DataFrame) -> None:
    rule = rerank.KeywordReranker(corpus)
    heat = int(corpus.index[(corpus.title == "Heat") & (corpus.year == 1995)][0])
    toy = int(corpus.index[(corpus.title == "Toy Story")][0])
    casablanca = int(corpus.index[(corpus.title == "Casablanca") & (corpus.year == 1942)][0])
    wants = rule.wants(conv("I'd love a funny animated movie from the 90s, not too long"))
    assert wants["genres"] == {"Comedy", "Animation"} and wants["decades"] == {1990}
    assert wants["short"]
    ranking = rule.rank(conv("I'd love a funny animated movie from the 90s, not too long"),
                        [casablanca, heat, toy])
    assert ranking.items[0] == toy
    assert ranking.scores[0] == 4.0  # comedy + animated + 1990s + 81 min
    # no attribute words: every score 0, the retriever's order is kept
    assert rule.rank(conv("hello there"), [casablanca, heat, toy]).items == [casablanca, heat,
                                                                              toy]
    assert rule.wants(conv("a crime movie rated R from the nineties"))["mpaa"] == {"r"}


def test_rank_from_answer(matcher, corpus: pd.DataFrame) -> None:
    heat = matcher.resolve("Heat (1995)").item_id
    casino = matcher.resolve("Casino (1995)").item_id
    toy = matcher.resolve("Toy Story").item_id
    titanic = matcher.resolve("Titanic").item_id
    answer = ("Here you go:\n1. Casino (1995)\n2. The Galactic Pancake Odyssey\n3. Titanic\n"
              "4. casino\n5. Heat")
    ranking = rerank.rank_from_answer(answer, [heat, casino, toy], matcher)
    assert ranking.items == [casino, heat, toy]  # named first, the rest in retriever order
    assert ranking.listed == [casino, heat]
    assert ranking.hallucinated == ["The Galactic Pancake Odyssey"]
    assert ranking.outside == [titanic]
    assert ranking.failure is None
    empty = rerank.rank_from_answer("", [heat, casino], matcher)
    assert empty.items == [heat, casino] and empty.failure == "no parsable list in the answer"


def test_evaluate_rankings_hand_computed() -> None:
    conversations = [conv("x", target=5), conv("y", target=9)]
    rankings = [rerank.Ranking([5, 1, 2]), rerank.Ranking([1, 2, 9], failure="oops",
                                                           listed=[1], hallucinated=["Foo"])]
    out = rerank.evaluate_rankings(rankings, conversations, ks=(1, 5))
    assert out["recall@1"] == 0.5 and out["recall@5"] == 1.0
    assert out["ndcg@5"] == pytest.approx((1 + 1 / np.log2(4)) / 2)
    assert out["failures"] == 0.5 and out["hallucination_rate"] == 0.5


def test_position_bias() -> None:
    shown = [[1, 2, 3], [4, 5, 6], [7, 8, 9], [1, 2, 3]]
    rankings = [rerank.Ranking([1, 2, 3]), rerank.Ranking([4, 6, 5]), rerank.Ranking([8, 7, 9]),
                rerank.Ranking([3, 1, 2])]
    np.testing.assert_allclose(rerank.position_bias(rankings, shown), [0.5, 0.25, 0.25])


def test_candidate_sets_insert_missed_target() -> None:
    conversations = [Conversation(f"c{k}", (Turn("seeker", "x"),), (), (7,), "t")
                     for k in range(200)] + [conv("y", target=2)]

    def topk(histories, k):
        return np.array([[1, 2, 3]] * len(histories)), None

    sets = rerank.candidate_sets(conversations, topk, k=3)
    assert sets[-1] == [1, 2, 3]  # a retrieved target stays where the retriever put it
    for pool in sets[:-1]:  # the target replaced one candidate; the others keep their order
        others = [i for i in pool if i != 7]
        assert len(pool) == 3 and 7 in pool and others == sorted(others)
    positions = np.bincount([pool.index(7) for pool in sets[:-1]], minlength=3)
    assert positions.min() > 40  # every position is used (random, not a fixed slot)
    assert sets == rerank.candidate_sets(conversations, topk, k=3)  # seeded
    assert rerank.candidate_sets(conversations, topk, k=3, include_target=False)[0] == [1, 2, 3]


def test_describe_reads_the_table() -> None:
    from rar_lite.experiments import reranker_study

    table = pd.DataFrame({"ndcg@10": [0.227, 0.30, 0.40, 0.21]},
                         index=["random order", "retriever order", "pointwise (tuned)",
                                "pointwise (tuned) (words removed)"])
    text = reranker_study.describe(table)
    assert text.splitlines()[0] == "ndcg@10: random order 0.227, retriever order 0.300."
    assert text.splitlines()[1] == ("pointwise (tuned): 0.400 (+0.100 vs the retriever's order; "
                                    "0.210 with the seeker's words removed).")


class _Fixed:
    """A reranker with fixed scores (the reverse of the retriever's order)."""

    def rank(self, conversation: Conversation, candidates: list[int]) -> rerank.Ranking:
        scores = np.arange(len(candidates), dtype=float)
        return rerank._by_scores(list(candidates), scores)


def test_interpolation_equals_each_component_at_its_extremes() -> None:
    candidates = [4, 3, 2, 1]
    assert rerank.InterpolatedReranker(_Fixed(), 0.0).rank(conv("x"), candidates).items == \
        candidates
    assert rerank.InterpolatedReranker(_Fixed(), 1.0).rank(conv("x"), candidates).items == \
        [1, 2, 3, 4]
    middle = rerank.InterpolatedReranker(_Fixed(), 0.5).rank(conv("x"), candidates).items
    assert sorted(middle) == sorted(candidates)
    with pytest.raises(ValueError, match="weight"):
        rerank.InterpolatedReranker(_Fixed(), 1.5)


def test_mentioned_candidates_keep_the_retrievers_places() -> None:
    candidates = [5, 4, 3, 2, 1]
    said = Conversation("c", (Turn("seeker", "like 4 or 9"),), (4, 9), (), "u")
    kept = rerank.InterpolatedReranker(_Fixed(), 1.0, keep_mentioned=True)
    ranking = kept.rank(said, candidates)
    assert ranking.items == [1, 4, 2, 3, 5]  # 4 stays second; the rest in the reranker's order
    assert ranking.scores == sorted(ranking.scores, reverse=True)
    assert "mentioned kept in place" in kept.name
    plain = rerank.InterpolatedReranker(_Fixed(), 1.0).rank(said, candidates)
    assert plain.items == [1, 2, 3, 4, 5]
    assert kept.rank(conv("x"), candidates).items == plain.items  # nothing mentioned
    assert rerank.InterpolatedReranker(_Fixed(), 0.0, keep_mentioned=True).rank(
        said, candidates).items == candidates


def test_random_order_is_a_seeded_permutation_per_conversation() -> None:
    first, second = (Conversation(cid, (Turn("seeker", "anything"),), (), (), "u")
                     for cid in ("c1", "c2"))
    candidates = list(range(100, 120))
    ranker = rerank.RandomOrder(seed=3)
    ranking = ranker.rank(first, candidates)
    assert sorted(ranking.items) == candidates and ranking.items != candidates
    assert ranker.rank(first, candidates).items == ranking.items  # same seed, same order
    assert rerank.RandomOrder(seed=4).rank(first, candidates).items != ranking.items
    assert ranker.rank(second, candidates).items != ranking.items  # per conversation
