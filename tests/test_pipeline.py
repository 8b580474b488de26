"""The retrieve-then-rerank pipeline's metrics, against hand-computed values."""

import math

import numpy as np
import pytest

from rar_lite.data.conversations import Conversation, Turn
from rar_lite.loop import pipeline
from rar_lite.reranking import rerank


class FixedRetriever:
    """Returns the same top-k list for every history."""

    def __init__(self, ids: list[int]) -> None:
        self.ids = ids

    def topk(self, histories, k):
        return np.array([self.ids[:k]] * len(histories)), np.zeros((len(histories), k))


class TargetFirst:
    name = "target first"

    def rank(self, conversation, candidates):
        return rerank.Ranking(sorted(candidates, key=lambda c: c != conversation.targets[0]))


def case(i: int, target: int) -> Conversation:
    return Conversation(f"c{i}", (Turn("seeker", "hi"),), (1,), (target,), "test")


def test_pipeline_metrics_by_hand() -> None:
    served = FixedRetriever([10, 11, 12, 13, 14, 15, 16])
    cases = [case(0, 12), case(1, 16), case(2, 99)]  # ranks 2, 6 and missing
    alone = pipeline.run_pipeline(served, rerank.RetrieverOrder(), cases, k=7, ks=(5,))
    table = alone.per_pair
    assert table["recall@5"].tolist() == [1.0, 0.0, 0.0]
    assert table["ndcg@5"].tolist() == pytest.approx([1 / math.log2(4), 0.0, 0.0])
    assert table["candidate recall@7"].tolist() == [1.0, 1.0, 0.0]
    reranked = pipeline.run_pipeline(served, TargetFirst(), cases, k=7, ks=(5,))
    assert reranked.per_pair["ndcg@5"].tolist() == [1.0, 1.0, 0.0]
    summary = reranked.summary()
    assert summary["recall@5"] == pytest.approx(2 / 3) and summary["s / conversation"] >= 0
    with pytest.raises(ValueError, match="no conversations"):
        pipeline.run_pipeline(served, TargetFirst(), [], k=7)


def test_mean_std_over_seeds() -> None:
    table = pipeline.mean_std({"a": [{"ndcg@10": 0.1}, {"ndcg@10": 0.3}], "b": [{"ndcg@10": 0.2}]})
    assert table.loc["a", "ndcg@10"] == pytest.approx(0.2)
    assert table.loc["a", "ndcg@10 ±"] == pytest.approx(np.std([0.1, 0.3], ddof=1))
    assert np.isnan(table.loc["b", "ndcg@10 ±"])


def test_loop_verdict_is_written_from_the_table() -> None:
    import pandas as pd

    from rar_lite.experiments import loop_study

    table = pd.DataFrame({"ndcg@10": [0.07, 0.20, 0.22], "candidate recall@20": [0.12, 0.12, 0.15]},
                         index=["retriever only (SFT)", "RAR, SFT retriever",
                                "RAR after the feedback loop"])
    text = loop_study.verdict(table)
    assert "+10.0% relative to RAR-SFT" in text
    assert "candidate recall@20 (the target among the candidates): 0.120 before the loop, " \
           "0.150 after." in text


def test_pair_sources_split_by_the_rejected_set() -> None:
    from rar_lite.experiments import loop_study
    from rar_lite.loop import feedback

    conversation = case(0, 7)
    records = [feedback.Feedback(conversation, [1], [[7, 8], [9, 10]], [[7, 8], [9, 10]],
                                 [1.0, 0.0], [(0, 1)]),
               feedback.Feedback(conversation, [1], [[7, 8], [8, 7]], [[7, 8], [8, 7]],
                                 [1.0, 0.63], [(0, 1)]),
               feedback.Feedback(conversation, [1], [[8, 9], [9, 10]], [[8, 9], [9, 10]],
                                 [0.0, 0.0], [])]
    sources = loop_study.pair_sources(records)
    assert sources["rejected set missed the target"] == 1
    assert sources["both sets held it, LLM ranked it differently"] == 1


def test_run_pipeline_takes_the_retrieval_already_done() -> None:
    served = FixedRetriever([10, 11, 12, 13, 14, 15, 16])
    cases = [case(0, 12), case(1, 16)]
    retrieved = pipeline.run_pipeline(served, TargetFirst(), cases, k=7, ks=(5,))
    given = pipeline.run_pipeline(served, TargetFirst(), cases, k=7, ks=(5,),
                                  candidates=pipeline.retrieve(served, cases, 7))
    assert given.candidates == retrieved.candidates
    assert given.per_pair.equals(retrieved.per_pair)
    with pytest.raises(ValueError, match="align"):
        pipeline.run_pipeline(served, TargetFirst(), cases, k=7, candidates=[[10, 11]])


def test_prescore_scores_each_conversation_once_for_every_system(corpus, tmp_path) -> None:
    from rar_lite.backends.llm import ResponseCache
    from rar_lite.backends.llm_local import TransformersBackend

    backend = TransformersBackend(dtype="float32")
    judge = rerank.PointwiseReranker(backend, corpus, response_cache=ResponseCache(
        tmp_path / "answers.sqlite"))
    ids = [int(i) for i in corpus["item_id"].iloc[:6]]
    cases = [Conversation("a", (Turn("seeker", "a funny animated movie"),), (), (ids[0],),
                          "test"),
             Conversation("b", (Turn("seeker", "a tense thriller"),), (), (ids[4],), "test")]
    pools = [[ids[:3], ids[3:5]], [ids[1:4], ids[2:6]]]  # two systems' candidates per case
    calls = []
    original = backend.prefix_last_logits
    backend.prefix_last_logits = lambda prefix, suffixes, **kw: (
        calls.append(len(suffixes)) or original(prefix, suffixes, **kw))
    blended = rerank.InterpolatedReranker(judge, 0.5)
    assert pipeline.prescore(blended, cases, pools) == 2
    assert calls == [4, 4]  # one pass per conversation: the union of the systems' candidates
    for pool in pools:  # every system's ranking now reads the cache only
        ran = pipeline.run_pipeline(None, blended, cases, candidates=pool, ks=(5,))
        assert len(calls) == 2
        fresh = rerank.PointwiseReranker(TransformersBackend(dtype="float32"), corpus)
        for ranking, conversation, candidates in zip(ran.rankings, cases, pool):
            alone = rerank.InterpolatedReranker(fresh, 0.5).rank(conversation, candidates)
            assert ranking.items == alone.items
            assert ranking.scores == pytest.approx(alone.scores, abs=1e-4)
    # nothing to share: no pointwise judge, or a blend that never asks it
    assert pipeline.prescore(rerank.RetrieverOrder(), cases, pools) == 0
    assert pipeline.prescore(rerank.InterpolatedReranker(judge, 0.0), cases, pools) == 0
    with pytest.raises(ValueError, match="one candidate list per conversation"):
        pipeline.prescore(judge, cases, [[ids[:3]]])
