"""Sequential recommenders, their training loop, checkpoints and FAISS serving, on a tiny
synthetic split (fast) — the real benchmark is scripts/bench_retriever.py."""

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from rar_lite.data.interactions import Split
from rar_lite.retrieval import retriever, seqrec


def tiny_split(n_users: int = 40, n_items: int = 60, seed: int = 0) -> Split:
    """Users walk through items in a noisy cycle, so the next item is learnable."""
    rng = np.random.default_rng(seed)
    sequences, ratings = {}, {}
    for user in range(n_users):
        start, length = int(rng.integers(n_items)), int(rng.integers(6, 25))
        seq = list(dict.fromkeys(100 + (start + t) % n_items for t in range(length)))
        sequences[user], ratings[user] = seq, [4.0] * len(seq)
    items = np.array(sorted({i for s in sequences.values() for i in s}))
    return Split(sequences, ratings, items)


@pytest.fixture(scope="module")
def split() -> Split:
    return tiny_split()


@pytest.fixture(scope="module")
def vocab(split: Split) -> seqrec.ItemVocab:
    return seqrec.ItemVocab(split.items)


SMALL = dict(dim=16, layers=1, heads=2, dropout=0.1, max_len=16)


@pytest.mark.parametrize("length", [1, 2, 7, 16, 37])
def test_parallel_scan_equals_sequential(length: int) -> None:
    torch.manual_seed(length)
    u = torch.randn(3, length, 5, dtype=torch.complex64)
    lam = torch.polar(torch.rand(5) * 0.19 + 0.8, torch.rand(5) * 6.28)
    torch.testing.assert_close(seqrec.parallel_scan(u, lam), seqrec.sequential_scan(u, lam),
                               rtol=1e-5, atol=1e-5)


def test_lru_model_parallel_equals_sequential(vocab: seqrec.ItemVocab) -> None:
    torch.manual_seed(0)
    model = seqrec.build_model(seqrec.ModelConfig("lrurec", n_items=len(vocab), **SMALL)).eval()
    seq = seqrec.pad_right([[1, 2, 3, 4, 5], [7, 8]], 16)
    torch.testing.assert_close(model.encode(seq), model.encode(seq, parallel=False),
                               rtol=1e-4, atol=1e-5)


def test_lru_initialisation_on_the_ring() -> None:
    layer = seqrec.LRULayer(8, 0.0, r_min=0.8, r_max=0.99)
    modulus = layer.eigenvalues().abs()
    assert modulus.min() >= 0.8 - 1e-5 and modulus.max() <= 0.99 + 1e-5
    gamma = torch.exp(layer.params_log[2])
    torch.testing.assert_close(gamma, torch.sqrt(1 - modulus**2))


@pytest.mark.parametrize("model", seqrec.MODELS)
def test_padding_does_not_change_the_last_state(model: str, vocab: seqrec.ItemVocab) -> None:
    torch.manual_seed(0)
    net = seqrec.build_model(seqrec.ModelConfig(model, n_items=len(vocab), **SMALL)).eval()
    alone = net.last_hidden(seqrec.pad_right([[3, 4, 5]], 16))
    batched = net.last_hidden(seqrec.pad_right([[3, 4, 5], list(range(1, 15))], 16))[:1]
    torch.testing.assert_close(alone, batched, rtol=1e-4, atol=1e-5)


def test_causality(vocab: seqrec.ItemVocab) -> None:
    """A position's state never depends on later items."""
    torch.manual_seed(0)
    for model in seqrec.MODELS:
        net = seqrec.build_model(seqrec.ModelConfig(model, n_items=len(vocab), **SMALL)).eval()
        a = net.encode(seqrec.pad_right([[1, 2, 3, 4]], 16))
        b = net.encode(seqrec.pad_right([[1, 2, 3, 9]], 16))
        torch.testing.assert_close(a[:, :3], b[:, :3], rtol=1e-4, atol=1e-5)


def test_training_windows_cover_the_training_sequences(split: Split,
                                                       vocab: seqrec.ItemVocab) -> None:
    windows = retriever.training_windows(split, vocab, max_len=5)
    assert all(2 <= len(w) <= 6 for w in windows)
    # every training transition (a -> b) appears exactly once
    pairs = sorted((w[k], w[k + 1]) for w in windows for k in range(len(w) - 1))
    expected = sorted((a, b) for u in split.users for seq in [vocab.encode(split.train_sequence(u))]
                      for a, b in zip(seq, seq[1:]))
    assert pairs == expected


def _train(tmp: Path, split: Split, vocab: seqrec.ItemVocab, epochs: int, model: str = "lrurec",
           **kwargs) -> retriever.TrainResult:
    mc = seqrec.ModelConfig(model, n_items=len(vocab), **SMALL)
    tc = retriever.TrainConfig(epochs=epochs, batch_size=8, lr=5e-3, patience=100, seed=3)
    return retriever.train_retriever(split, vocab, mc, tc, tmp, progress=False, **kwargs)


@pytest.mark.parametrize("model", seqrec.MODELS)
def test_training_learns_and_is_deterministic(tmp_path: Path, split: Split,
                                              vocab: seqrec.ItemVocab, model: str) -> None:
    first = _train(tmp_path / "a", split, vocab, epochs=20, model=model)
    second = _train(tmp_path / "b", split, vocab, epochs=20, model=model)
    assert first.history["loss"].iloc[-1] < first.history["loss"].iloc[0] * 0.8
    # chance Recall@10 is about 10/45 here (60 items, ~15 masked); the next item is learnable
    assert first.history["valid_recall@10"].max() >= 0.35
    assert first.history.drop(columns="seconds").equals(second.history.drop(columns="seconds"))


def test_resume_after_interruption_gives_identical_results(tmp_path: Path, split: Split,
                                                           vocab: seqrec.ItemVocab) -> None:
    straight = _train(tmp_path / "straight", split, vocab, epochs=6)
    _train(tmp_path / "resumed", split, vocab, epochs=6, max_epochs_this_call=3)
    state = json.loads((tmp_path / "resumed" / "state.json").read_text())
    assert state["epoch"] == 3
    resumed = _train(tmp_path / "resumed", split, vocab, epochs=6)
    assert resumed.history.drop(columns="seconds").equals(
        straight.history.drop(columns="seconds"))
    for (name, a), (_, b) in zip(straight.model.state_dict().items(),
                                 resumed.model.state_dict().items()):
        torch.testing.assert_close(a, b, rtol=0, atol=0, msg=name)


def test_checkpoint_round_trip_and_mismatch(tmp_path: Path, split: Split,
                                            vocab: seqrec.ItemVocab) -> None:
    result = _train(tmp_path / "run", split, vocab, epochs=2)
    loaded = retriever.load_model(tmp_path / "run", vocab)
    seq = seqrec.pad_right([[1, 2, 3]], 16)
    torch.testing.assert_close(loaded.last_hidden(seq), result.model.last_hidden(seq))
    other = seqrec.ItemVocab([*split.items.tolist(), 999])
    with pytest.raises(retriever.CheckpointMismatchError, match="retrain it for this corpus"):
        retriever.load_model(tmp_path / "run", other)
    with pytest.raises(retriever.CheckpointMismatchError, match="other settings"):
        _train(tmp_path / "run", split, vocab, epochs=3)  # different settings, same directory


def test_evaluate_masks_history_and_matches_hand_ranks(tmp_path: Path, split: Split,
                                                       vocab: seqrec.ItemVocab) -> None:
    model = _train(tmp_path / "run", split, vocab, epochs=2).model
    result, ranks = retriever.evaluate_split(model, split, vocab, "test", return_ranks=True)
    user = split.users[0]
    history, target = split.test_case(user)
    scores = retriever.score_histories(model, [vocab.encode(history)])[0]
    scores[[vocab.index(i) - 1 for i in history]] = float("-inf")
    hand = int((scores > scores[vocab.index(target) - 1]).sum())
    assert ranks[0] == hand  # no ties with float scores
    assert 0 <= result["ndcg@10"] <= result["recall@10"] <= 1


@pytest.fixture(scope="module")
def served(tmp_path_factory, split: Split, vocab: seqrec.ItemVocab) -> retriever.Retriever:
    model = _train(tmp_path_factory.mktemp("serve"), split, vocab, epochs=3).model
    popularity = np.arange(len(vocab))[::-1]  # item 1 most popular
    return retriever.Retriever(model, vocab, popularity)


def test_faiss_topk_equals_model_scores(served: retriever.Retriever, split: Split,
                                        vocab: seqrec.ItemVocab) -> None:
    histories = [split.test_case(u)[0] for u in split.users]
    ids, scores = served.topk(histories, k=10)
    model_scores = retriever.score_histories(served.model, [vocab.encode(h) for h in histories])
    for row, history in enumerate(histories):
        masked = model_scores[row].clone()
        masked[[vocab.index(i) - 1 for i in history]] = float("-inf")
        top = torch.topk(masked, 10)
        assert [vocab.item(j + 1) for j in top.indices.tolist()] == ids[row].tolist()
        np.testing.assert_allclose(scores[row], top.values.numpy(), rtol=1e-4, atol=1e-4)
        assert not set(ids[row]) & set(history)
    assert served.recommend(histories[0], 10) == ids[0].tolist()


def test_serving_bad_histories(served: retriever.Retriever, vocab: seqrec.ItemVocab) -> None:
    with pytest.warns(UserWarning, match="popularity"):
        ids, scores = served.topk([[]], k=3)
    assert ids[0].tolist() == vocab.item_ids[:3].tolist() and np.isnan(scores).all()
    with pytest.warns(UserWarning, match="not in the retriever's vocabulary"):
        with_unknown = served.recommend([100, 102, 424242], 5)
    assert with_unknown == served.recommend([100, 102], 5)
    long = [int(i) for i in np.resize(vocab.item_ids[:40], 200)]  # longer than the window
    assert len(set(served.recommend(long, 5)) - set(long)) == 5
    with pytest.raises(ValueError, match="fewer than k=5 remain"):
        served.recommend([int(i) for i in vocab.item_ids[:58]], 5)
    with pytest.raises(ValueError, match="k must be"):
        served.topk([[100]], k=0)


def test_serving_times(served: retriever.Retriever, split: Split) -> None:
    times = retriever.serving_times(served, [split.test_case(u)[0] for u in split.users], k=5)
    assert set(times) == {"encode_s", "search_s", "end_to_end_s"}
    assert all(value > 0 for value in times.values())


def test_published_gaps_compare_ours_with_the_paper() -> None:
    gaps = retriever.published_gaps({"lrurec": {"ndcg@10": 0.0705, "recall@10": 0.1267},
                                     "gru": {"ndcg@10": 0.5}})
    assert list(gaps.index) == [("lrurec", "ndcg@10"), ("lrurec", "recall@10")]
    assert gaps.loc[("lrurec", "ndcg@10"), "relative gap"] == pytest.approx(0.0)
    assert gaps.loc[("lrurec", "recall@10"), "relative gap"] == pytest.approx(0.1267 / 0.1426 - 1)
    with pytest.raises(ValueError, match="no model with published numbers"):
        retriever.published_gaps({"gru": {"ndcg@10": 0.5}})
