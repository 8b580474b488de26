"""The dense retriever (MiniLM over conversations and item cards), its query head and fusion."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from rar_lite.data.conversations import Conversation, Turn
from rar_lite.data.corpus import render_item
from rar_lite.retrieval import dense, fusion


def _card(item_id: int, title: str, year: int, genres: list[str], director: str,
          cast: list[str], votes: int) -> dict:
    row = {"item_id": item_id, "title": title, "year": year, "genres": genres,
           "director": [director], "cast": cast, "imdb_votes": votes, "n_ratings": 0}
    return {**row, "text": render_item(row)}


@pytest.fixture(scope="module")
def tiny() -> pd.DataFrame:
    rows = [
        _card(10, "Full Metal Jacket", 1987, ["Drama", "War"], "Stanley Kubrick",
              ["Matthew Modine", "R. Lee Ermey"], 400_000),
        _card(11, "Toy Story", 1995, ["Animation", "Comedy", "Family"], "John Lasseter",
              ["Tom Hanks", "Tim Allen"], 900_000),
        _card(12, "Notting Hill", 1999, ["Comedy", "Romance"], "Roger Michell",
              ["Julia Roberts", "Hugh Grant"], 300_000),
        _card(13, "Heat", 1995, ["Crime", "Thriller"], "Michael Mann",
              ["Al Pacino", "Robert De Niro"], 600_000),
        _card(14, "The Shining", 1980, ["Horror"], "Stanley Kubrick", ["Jack Nicholson"],
              800_000),
    ]
    frame = pd.DataFrame(rows)
    frame["imdb_votes"] = frame["imdb_votes"].astype("Int64")
    return frame


@pytest.fixture(scope="module")
def encoder() -> dense.TextEncoder:
    return dense.load_encoder("cpu")


def _conversation(*texts: str, history: tuple[int, ...] = (), target: int = 10) -> Conversation:
    speakers = ["seeker", "recommender"]
    turns = tuple(Turn(speakers[(len(texts) - 1 - n) % 2], t) for n, t in enumerate(texts))
    return Conversation("c", turns, history, (target,), "test")


def test_a_kubrick_war_film_finds_its_card(tiny: pd.DataFrame, encoder) -> None:
    index = dense.item_index(tiny, tiny["item_id"].tolist(), encoder, use_cache=False)
    retriever = dense.DenseRetriever(encoder, index, dense.QueryConfig(history_weight=0.0))
    ids, scores = retriever.topk_conversations(
        [_conversation("I want a Kubrick war film"),
         _conversation("Something funny and animated for my kids", target=11)], k=2)
    assert ids[0, 0] == 10 and ids[1, 0] == 11
    assert scores[0, 0] >= scores[0, 1]


def test_item_vectors_are_cached_and_reloaded(tiny: pd.DataFrame, encoder) -> None:
    first = dense.item_index(tiny, [10, 12], encoder)
    again = dense.item_index(tiny, [10, 12], encoder)
    np.testing.assert_array_equal(first.vectors, again.vectors)
    assert first.item_ids.tolist() == [10, 12]
    assert np.allclose(np.linalg.norm(first.vectors, axis=1), 1.0, atol=1e-5)


def test_query_weights_and_empty_conversation(tiny: pd.DataFrame, encoder) -> None:
    index = dense.item_index(tiny, tiny["item_id"].tolist(), encoder, use_cache=False)
    empty = Conversation("e", (), (), (10,), "test")
    queries = dense.query_vectors([empty], encoder, index, dense.QueryConfig(history_weight=0))
    assert not queries.any()  # nothing said, nothing mentioned: every item scores 0
    # the mentioned movie's card pulls the query towards it
    only_history = Conversation("h", (), (14,), (10,), "test")
    queries = dense.query_vectors([only_history], encoder, index, dense.QueryConfig())
    np.testing.assert_allclose(queries[0], index.vectors[index.position[14]], atol=1e-5)
    with pytest.raises(ValueError, match="decay"):
        dense.QueryConfig(decay=0.0)


def test_query_head_starts_as_identity_and_learns(tiny: pd.DataFrame, encoder) -> None:
    index = dense.item_index(tiny, tiny["item_id"].tolist(), encoder, use_cache=False)
    rng = np.random.default_rng(0)
    queries = rng.normal(size=(40, index.vectors.shape[1])).astype("float32")
    queries /= np.linalg.norm(queries, axis=1, keepdims=True)
    head = dense.QueryHead(index.vectors.shape[1])
    np.testing.assert_allclose(head.apply(queries), queries, atol=1e-6)
    targets = [[n % 2] for n in range(40)]  # random queries, labels 0/1 by parity: learnable
    trained, table = dense.train_head(queries, targets, index,
                                      dense.HeadConfig(epochs=20, lr=1e-2, temperature=0.1),
                                      selection=(queries, targets))
    assert table.loc[0, "selection ndcg@10"] < table["selection ndcg@10"].max()
    kept = dense.ndcg_at(trained.apply(queries) @ index.vectors.T, targets)
    assert kept == pytest.approx(table["selection ndcg@10"].max())


def test_head_saved_without_pickle(tmp_path, tiny: pd.DataFrame, encoder) -> None:
    head = dense.QueryHead(4)
    with __import__("torch").no_grad():
        head.delta.fill_(0.5)
    dense.save_head(head, tmp_path, {"a": 1})
    names = sorted(p.name for p in tmp_path.iterdir())
    assert names[-1] == "state.json" and all(n.endswith((".safetensors", ".json")) for n in names)
    loaded = dense.load_head(tmp_path, {"a": 1})
    assert loaded is not None and float(loaded.delta.detach()[0, 0]) == 0.5
    assert dense.load_head(tmp_path, {"a": 2}) is None  # another record: not this run's head
    for path in tmp_path.glob("*.safetensors"):
        path.write_bytes(b"truncated")
    with pytest.warns(UserWarning):
        assert dense.load_head(tmp_path, {"a": 1}) is None  # damaged: recomputed, not trusted


def test_fusion_equals_each_component_at_its_extreme(tiny: pd.DataFrame, encoder) -> None:
    index = dense.item_index(tiny, tiny["item_id"].tolist(), encoder, use_cache=False)
    retriever = dense.DenseRetriever(encoder, index, dense.QueryConfig(history_weight=0))
    conversations = [_conversation("a scary film please", history=(13,), target=14),
                     _conversation("I loved Julia Roberts in that romance", target=12)]
    parts = fusion.components(retriever, None, tiny, conversations)
    only_dense = fusion.FusedRetriever(retriever, None, tiny, fusion.FusionWeights(1, 0, 0, 0))
    ids, _ = only_dense.topk_conversations(conversations, k=5)
    expected, _ = retriever.topk_conversations(conversations, k=5)
    np.testing.assert_array_equal(ids, expected)
    only_prior = fusion.FusedRetriever(retriever, None, tiny, fusion.FusionWeights(0, 0, 1, 0))
    ids, _ = only_prior.topk_conversations(conversations, k=5)
    assert ids[0].tolist() == [11, 14, 13, 10, 12]  # by votes
    # the mentioned movie: first with a positive weight, gone when excluded
    ids, _ = fusion.FusedRetriever(retriever, None, tiny, fusion.FusionWeights(0, 0, 1, 10)
                                   ).topk_conversations(conversations, k=5)
    assert ids[0, 0] == 13
    ids, _ = fusion.FusedRetriever(retriever, None, tiny, fusion.FusionWeights(1, 0, 0, -10)
                                   ).topk_conversations(conversations, k=4, exclude_history=True)
    assert 13 not in ids[0]
    assert parts.mentioned[0, index.position[13]] == 1.0 and parts.mentioned.sum() == 1.0


def test_standardise_and_choose_weights() -> None:
    z = fusion.standardise(np.array([[1.0, 2.0, 3.0], [5.0, 5.0, 5.0]]),
                           known=np.array([[True, True, False], [True, True, True]]))
    np.testing.assert_allclose(z[0], [-1.0, 1.0, 0.0])  # unknown -> the mean (0)
    np.testing.assert_allclose(z[1], [0.0, 0.0, 0.0])  # constant row
    parts = fusion.Components(dense=np.array([[0.0, 1.0, 0.5]]),
                              history=np.array([[2.0, 0.0, 0.0]]),
                              popularity=np.zeros(3), mentioned=np.zeros((1, 3)),
                              dialogue=np.zeros(3))
    weights, table = fusion.choose_weights(parts, [[0]],
                                           grid={"history": (0.0, 0.35, 0.6, 1.0),
                                                 "popularity": (0.0,), "mentioned": (0.0,)})
    assert weights.history == 0.6  # the smallest weight that puts the target first
    assert len(table) == 4


def test_reach_counts_targets_in_the_top_k() -> None:
    conversations = [Conversation("a", (), (), (5, 6), "t"), Conversation("b", (), (), (7,), "t")]
    ids = np.array([[5, 1, 2, 6], [1, 2, 3, 4]])
    assert fusion.reach(ids, conversations, ks=(1, 4)) == {"reach@1": 1 / 3, "reach@4": 2 / 3}


def test_dialogue_prior_counts_dialogues_once() -> None:
    from rar_lite.dialogue import realdata

    turns = [Conversation("a1", (), (7,), (8,), "t", meta={"dialog_id": "a"}),
             Conversation("a2", (), (7, 8), (9,), "t", meta={"dialog_id": "a"}),
             Conversation("b1", (), (), (8,), "t", meta={"dialog_id": "b"})]
    counts = realdata.dialogue_counts(turns)
    assert counts == {7: 1, 8: 2, 9: 1}  # item 8 named twice in dialogue a counts once there
    index = dense.ItemIndex([7, 8, 9, 10], np.eye(4, dtype="float32"))
    prior = fusion.dialogue_prior(counts, index)
    assert prior[1] > prior[0] == prior[2] > prior[3]
    assert not fusion.dialogue_prior(None, index).any()


def test_small_catalogue_and_history_exclusion(tiny: pd.DataFrame, encoder) -> None:
    index = dense.item_index(tiny, tiny["item_id"].tolist(), encoder, use_cache=False)
    retriever = dense.DenseRetriever(encoder, index, dense.QueryConfig(history_weight=0))
    popular = fusion.FusedRetriever(retriever, None, tiny, fusion.FusionWeights(0, 0, 1, 0),
                                    exclude_history=True)
    ids, _ = popular.topk_conversations([_conversation("hi", history=(11,))], k=20)
    assert ids.shape == (1, 4) and 11 not in ids[0]  # five movies, one mentioned: four left
