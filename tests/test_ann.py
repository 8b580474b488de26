"""The index chooser (rar_lite.retrieval.ann) and its use by the retrievers, on small seeded
catalogues; speed is measured by scripts/bench_ann.py, never here."""

from __future__ import annotations

import faiss
import numpy as np
import pytest
import torch

from rar_lite.retrieval import ann, dense, retriever, seqrec


def clustered(n: int, dim: int, seed: int, unit: bool = True) -> np.ndarray:
    """Seeded Gaussian-mixture vectors (50 clusters), unit length unless `unit=False`."""
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((50, dim))
    out = centres[rng.integers(0, 50, n)] + 0.7 * rng.standard_normal((n, dim))
    if unit:
        out /= np.linalg.norm(out, axis=1, keepdims=True)
    return out.astype("float32")


def brute_force(items: np.ndarray, queries: np.ndarray, k: int) -> np.ndarray:
    return np.argsort(-(queries @ items.T), axis=1, kind="stable")[:, :k]


def recall(found: np.ndarray, truth: np.ndarray) -> float:
    return float(np.mean([len(set(f) & set(t)) / len(t) for f, t in zip(found, truth)]))


def test_below_the_threshold_the_index_is_exact() -> None:
    items, queries = clustered(3000, 24, 0), clustered(40, 24, 1)
    index = ann.build_index(items)
    assert type(index) is faiss.IndexFlatIP and index.ntotal == 3000
    scores, found = index.search(queries, 10)
    np.testing.assert_array_equal(found, brute_force(items, queries, 10))
    np.testing.assert_allclose(scores, np.take_along_axis(queries @ items.T, found, 1),
                               rtol=1e-5, atol=1e-5)
    _, nearest = ann.build_index(items, metric="l2").search(items[:5], 1)
    assert nearest.ravel().tolist() == [0, 1, 2, 3, 4]


@pytest.mark.parametrize("kind", ["hnsw", "ivf"])
@pytest.mark.parametrize("unit", [True, False])
def test_forced_approximate_indexes_find_the_exact_neighbours(kind: str, unit: bool) -> None:
    # unit=False: LRURec-like items [e, b] and queries [h, 1] (inner product, not normalised)
    items, queries = clustered(20_000, 32, 2, unit), clustered(200, 32, 3, unit)
    if not unit:
        items = np.hstack([items, np.random.default_rng(4).normal(0, 0.5, (20_000, 1))])
        queries = np.hstack([queries, np.ones((200, 1))])
        items, queries = items.astype("float32"), queries.astype("float32")
    index = ann.build_index(items, kind=kind)
    assert isinstance(index, faiss.IndexHNSWFlat if kind == "hnsw" else faiss.IndexIVFFlat)
    assert index.metric_type == faiss.METRIC_INNER_PRODUCT and index.ntotal == 20_000
    _, found = index.search(queries, 10)
    assert (found >= 0).all()
    assert recall(found, brute_force(items, queries, 10)) >= 0.9


def test_ivf_is_rebuilt_identically_from_its_seed() -> None:
    items, queries = clustered(5000, 16, 5), clustered(50, 16, 6)
    first = ann.build_index(items, kind="ivf", seed=3).search(queries, 10)
    again = ann.build_index(items, kind="ivf", seed=3).search(queries, 10)
    np.testing.assert_array_equal(first[1], again[1])
    np.testing.assert_array_equal(first[0], again[0])


def test_the_threshold_picks_the_kind(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(ann, "FLAT_MAX_ITEMS", 1000)
    assert ann.choose_kind(1000) == "flat" and ann.choose_kind(1001) == ann.AUTO_APPROXIMATE
    assert type(ann.build_index(clustered(1000, 8, 0))) is faiss.IndexFlatIP
    monkeypatch.setattr(ann, "AUTO_APPROXIMATE", "hnsw")
    assert isinstance(ann.build_index(clustered(1001, 8, 0)), faiss.IndexHNSWFlat)
    monkeypatch.setattr(ann, "AUTO_APPROXIMATE", "ivf")
    assert isinstance(ann.build_index(clustered(1001, 8, 0)), faiss.IndexIVFFlat)
    assert type(ann.build_index(clustered(1001, 8, 0), kind="flat")) is faiss.IndexFlatIP


def test_ivf_lists_grow_with_the_catalogue() -> None:
    assert ann.ivf_lists(300_000) == 2048 and ann.ivf_lists(3_000_000) == ann.IVF_MAX_LISTS
    assert ann.ivf_lists(60) == 1  # too few vectors to train more than one list


def test_bad_arguments_are_named() -> None:
    items = clustered(10, 4, 0)
    with pytest.raises(ValueError, match="kind must be one of"):
        ann.build_index(items, kind="annoy")
    with pytest.raises(ValueError, match="metric must be one of"):
        ann.build_index(items, metric="cosine")
    with pytest.raises(ValueError, match="non-empty"):
        ann.build_index(np.zeros((0, 4), dtype="float32"))


def _served() -> retriever.Retriever:
    vocab = seqrec.ItemVocab(np.arange(100, 160))
    torch.manual_seed(0)
    config = seqrec.ModelConfig("lrurec", n_items=len(vocab), dim=16, layers=1, heads=2,
                                dropout=0.0, max_len=16)
    return retriever.Retriever(seqrec.build_model(config), vocab, np.arange(60)[::-1])


def test_retriever_keeps_the_exact_index_and_its_ids(monkeypatch: pytest.MonkeyPatch) -> None:
    served = _served()
    assert type(served.index) is faiss.IndexFlatIP
    with torch.no_grad():
        vectors, bias = served.model.item_vectors()
        items = torch.cat([vectors, bias.unsqueeze(1)], dim=1).float().numpy()
    old = faiss.IndexFlatIP(items.shape[1])  # how Retriever built its index before
    old.add(np.ascontiguousarray(items))
    histories = [[100, 101, 102], [150], [120, 133, 101, 159]]
    queries = served.query_vectors(histories)
    np.testing.assert_array_equal(served.index.search(queries, 20)[1], old.search(queries, 20)[1])
    np.testing.assert_array_equal(served.index.search(queries, 20)[0], old.search(queries, 20)[0])
    ids, _ = served.topk(histories, k=10)
    monkeypatch.setattr(ann, "FLAT_MAX_ITEMS", 10)
    monkeypatch.setattr(ann, "AUTO_APPROXIMATE", "ivf")
    approximate = _served()
    assert isinstance(approximate.index, faiss.IndexIVFFlat)
    np.testing.assert_array_equal(approximate.topk(histories, k=10)[0], ids)  # one list: exact


def test_item_index_serves_exact_search_shared_by_its_retrievers() -> None:
    vectors = clustered(500, 16, 7)
    index = dense.ItemIndex(np.arange(1000, 1500), vectors)
    search = index.search_index()
    assert type(search) is faiss.IndexFlatIP and index.search_index() is search
    old = faiss.IndexFlatIP(16)
    old.add(vectors)
    queries = clustered(30, 16, 8)
    np.testing.assert_array_equal(search.search(queries, 15)[1], old.search(queries, 15)[1])
    served = dense.DenseRetriever(encoder=None, index=index)
    assert served.faiss is search and served.with_head(None).faiss is search


class PaddedIndex:
    """An index that, like an approximate one that found too few neighbours, pads with -1."""

    def __init__(self, index: faiss.Index) -> None:
        self.index = index

    def search(self, queries: np.ndarray, depth: int) -> tuple[np.ndarray, np.ndarray]:
        scores, columns = self.index.search(queries, depth)
        scores[:, 1], columns[:, 1] = -np.inf, -1
        return scores, columns


def test_missing_neighbours_are_skipped_not_read_as_the_last_item() -> None:
    served = _served()
    histories = [[100, 101, 102], [150]]
    _, raw = served.index.search(served.query_vectors(histories), 20)
    served.index = PaddedIndex(served.index)
    ids, scores = served.topk(histories, k=5)
    assert np.isfinite(scores).all()
    for row, history in enumerate(histories):
        found = [int(served.vocab.item_ids[c]) for j, c in enumerate(raw[row]) if j != 1]
        np.testing.assert_array_equal(ids[row], [i for i in found if i not in history][:5])
