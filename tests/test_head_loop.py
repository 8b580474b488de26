"""The feedback loop on the conversation-aware retriever's query head
(`rar_lite.loop.head_loop`)."""

from __future__ import annotations

import hashlib
from dataclasses import replace

import numpy as np
import pandas as pd
import pytest
import torch

from rar_lite.data.conversations import Conversation, Turn
from rar_lite.loop import head_loop
from rar_lite.retrieval import dense, fusion

N_ITEMS, DIM = 80, 16


class HashEncoder:
    """A deterministic stand-in for MiniLM: each text's vector comes from its hash."""

    dim = DIM

    def encode(self, texts, batch_size: int = 64, progress: bool = False,
               desc: str = "") -> np.ndarray:
        out = np.zeros((len(texts), DIM), dtype="float32")
        for n, text in enumerate(texts):
            if text.strip():
                seed = int(hashlib.sha256(text.encode()).hexdigest()[:8], 16)
                v = np.random.default_rng(seed).normal(size=DIM)
                out[n] = v / np.linalg.norm(v)
        return out


@pytest.fixture(scope="module")
def world() -> dict:
    rng = np.random.default_rng(0)
    vectors = rng.normal(size=(N_ITEMS, DIM)).astype("float32")
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    ids = np.arange(100, 100 + N_ITEMS)
    index = dense.ItemIndex(ids, vectors)
    corpus = pd.DataFrame({"item_id": ids, "imdb_votes": pd.array(rng.integers(0, 1000, N_ITEMS),
                                                                  dtype="Int64"),
                           "n_ratings": rng.integers(0, 50, N_ITEMS), "text": "card"})
    retriever = fusion.FusedRetriever(
        dense.DenseRetriever(HashEncoder(), index, dense.QueryConfig(history_weight=0.5)), None,
        corpus, fusion.FusionWeights(1.0, 0.0, 0.2, 1.0, 0.0))
    conversations = [
        Conversation(f"c{n}", (Turn("seeker", f"request number {n}"),),
                     (int(ids[(n * 7) % N_ITEMS]),), (int(ids[(n * 3 + 1) % N_ITEMS]),), "test",
                     user_id=n)
        for n in range(40)]
    return {"retriever": retriever, "conversations": conversations, "index": index}


def oracle(conversation: Conversation, items: list[int]) -> np.ndarray:
    """A judge that puts the target first and scores the rest by id."""
    return np.array([10.0 if i == conversation.targets[0] else -i / 1000 for i in items],
                    dtype="float32")


def _data(world: dict, judge=oracle, pool: int = 30) -> head_loop.LoopData:
    return head_loop.loop_data(world["retriever"], world["conversations"], judge, pool)


def _select(world: dict, data: head_loop.LoopData):
    return head_loop.selection_objective(data.scorer,
                                         dense.targets_in(data.conversations, world["index"]))


def test_scorer_equals_the_fused_retriever_at_its_head(world: dict) -> None:
    retriever, conversations = world["retriever"], world["conversations"]
    scorer = head_loop.HeadScorer(retriever, conversations)
    expected = retriever.scores(conversations)
    assert np.allclose(scorer(None).numpy(), expected, atol=1e-4)
    head = dense.QueryHead(DIM)
    with torch.no_grad():
        head.delta.normal_(0, 0.3)
    moved = fusion.FusedRetriever(retriever.dense.with_head(head), None, retriever.corpus,
                                  retriever.weights)
    with torch.no_grad():
        assert np.allclose(scorer(head).numpy(), moved.scores(conversations), atol=1e-4)


def test_pools_and_targets(world: dict) -> None:
    data = _data(world, pool=30)
    assert data.pools.shape == data.judge.shape == (40, 30)
    for n, c in enumerate(data.conversations):
        row = world["index"].item_ids[data.pools[n]]
        assert (data.targets[n] >= 0) == (c.targets[0] in row)
        if data.targets[n] >= 0:
            assert row[data.targets[n]] == c.targets[0]
            assert data.judge[n, data.targets[n]] == 10.0


def test_one_case_per_target() -> None:
    c = Conversation("x", (Turn("seeker", "hi"),), (), (1, 2), "test")
    assert [s.targets for s in head_loop.single_targets([c])] == [(1,), (2,)]


def test_rewards_follow_the_llm_ranking_and_pairs_need_the_margin() -> None:
    judge = np.array([0.0, 5.0, 1.0, 2.0])  # the LLM prefers column 1, then 3, 2, 0
    orders = np.array([[0, 2], [1, 0], [3, 2]])  # target column 0
    rewards = head_loop.set_rewards(judge, orders, target=0, reward_k=10)
    assert rewards == pytest.approx([1 / np.log2(3), 1 / np.log2(3), 0.0])
    rewards = head_loop.set_rewards(judge, np.array([[0, 3], [1, 3]]), 0, 10)
    assert rewards == pytest.approx([1 / np.log2(3), 0.0])
    assert head_loop.best_worst_pair([0.2, 0.5, 0.1], 0.3) == (1, 2)
    assert head_loop.best_worst_pair([0.2, 0.5, 0.1], 0.4) is None  # gap 0.4 is not above 0.4
    assert head_loop.best_worst_pair([0.3, 0.3], 0.0) is None


def test_shuffled_control_really_shuffles(world: dict) -> None:
    data = _data(world)
    config = head_loop.HeadLoopConfig(sets=6, k=8, temperature=2.0)
    head = dense.QueryHead(DIM)
    plain = head_loop.collect(data, head, config, 0)
    shuffled = head_loop.collect(data, head,
                                 head_loop.HeadLoopConfig(**{**config.__dict__,
                                                             "shuffle_rewards": True}), 0)
    assert np.array_equal(plain.orders, shuffled.orders)  # the same sets were sampled
    assert np.array_equal(np.sort(plain.rewards, axis=1), np.sort(shuffled.rewards, axis=1))
    varied = [n for n in range(len(data)) if len(set(plain.rewards[n])) > 1]
    assert varied, "some conversation must have sets with different rewards"
    assert any(not np.array_equal(plain.rewards[n], shuffled.rewards[n]) for n in varied)
    for n, chosen, rejected in plain.pairs:
        assert plain.rewards[n, chosen] - plain.rewards[n, rejected] > config.margin


def test_the_loop_learns_from_an_oracle_and_keeps_the_best_round(world: dict, tmp_path) -> None:
    data = _data(world)
    select = _select(world, data)
    config = head_loop.HeadLoopConfig(rounds=3, sets=6, k=8, temperature=2.0, lr=0.05,
                                      beta=1.0, epochs=3, batch_size=8)
    start = dense.QueryHead(DIM)
    result = head_loop.run(start, data, config, tmp_path / "loop", select)
    history = result.history
    assert list(history.index) == [0, 1, 2, 3]
    assert history.loc[1, "pair share"] > 0.2
    assert history.loc[1, "chosen holds target"] == 1.0  # the oracle prefers the target's sets
    assert history["selection"].max() > history.loc[0, "selection"]
    assert result.best_round == int(history["selection"].idxmax())
    assert torch.count_nonzero(start.delta) == 0  # the start is left untouched
    assert select(result.head) == pytest.approx(history["selection"].max())


def test_best_round_is_restored_from_its_checkpoint(world: dict, tmp_path) -> None:
    data = _data(world)
    config = head_loop.HeadLoopConfig(rounds=3, sets=6, k=8, temperature=2.0, lr=0.05,
                                      beta=1.0, batch_size=8)
    calls = iter([0.0, 0.5, 0.9, 0.1])  # round 2 is the best on "selection"
    result = head_loop.run(dense.QueryHead(DIM), data, config, tmp_path / "loop",
                           lambda head: next(calls))
    assert result.best_round == 2
    from rar_lite import cache

    tensors, _ = cache.load_checkpoint(tmp_path / "loop" / "round-02")
    last, _ = cache.load_checkpoint(tmp_path / "loop" / "round-03")
    assert torch.equal(result.head.delta, tensors["head.delta"])
    assert not torch.equal(result.head.delta, last["head.delta"])


def test_a_resumed_loop_gives_identical_numbers(world: dict, tmp_path) -> None:
    data = _data(world)
    select = _select(world, data)
    config = head_loop.HeadLoopConfig(rounds=3, sets=6, k=8, temperature=2.0, lr=0.05,
                                      batch_size=8)
    whole = head_loop.run(dense.QueryHead(DIM), data, config, tmp_path / "whole", select)
    first = head_loop.run(dense.QueryHead(DIM), data,
                          head_loop.HeadLoopConfig(**{**config.__dict__, "rounds": 3}),
                          tmp_path / "part", select)
    import shutil

    shutil.rmtree(tmp_path / "part" / "round-03")  # killed before round 3 was saved
    resumed = head_loop.run(dense.QueryHead(DIM), data, config, tmp_path / "part", select)
    pd.testing.assert_frame_equal(whole.history.drop(columns="seconds"),
                                  resumed.history.drop(columns="seconds"))
    assert torch.equal(whole.head.delta, resumed.head.delta)
    assert first.best_round == whole.best_round


def test_beta_to_zero_leaves_the_head_unchanged(world: dict, tmp_path) -> None:
    data = _data(world)
    moved = []
    for beta in (1.0, 1e-12):
        config = head_loop.HeadLoopConfig(rounds=1, sets=6, k=8, temperature=2.0, lr=0.05,
                                          beta=beta, batch_size=8)
        head = dense.QueryHead(DIM)
        found = head_loop.collect(data, head, config, 0)
        assert found.pairs
        optimizer = torch.optim.Adam(head.parameters(), lr=config.lr)
        head_loop.update(data, head, dense.QueryHead(DIM), found, optimizer, config, 0)
        moved.append(float(head.delta.detach().abs().max()))
    assert moved[0] > 1e-2
    assert moved[1] < 1e-6


def test_distillation_targets_follow_the_llm_and_the_control_shuffles_them(world: dict) -> None:
    data = _data(world)
    config = head_loop.HeadLoopConfig(objective="distill", judge_temperature=0.5)
    soft = head_loop.judge_targets(data, config).numpy()
    assert soft.shape == data.pools.shape
    np.testing.assert_allclose(soft.sum(axis=1), 1.0, rtol=1e-5)
    for n in range(len(data)):  # the same order as the LLM's scores
        assert np.array_equal(np.argsort(-soft[n], kind="stable"),
                              np.argsort(-data.judge[n], kind="stable"))
    z = fusion.standardise(data.judge.astype("float64"))[0]
    expected = np.exp(z / 0.5) / np.exp(z / 0.5).sum()
    np.testing.assert_allclose(soft[0], expected, rtol=1e-5)
    shuffled = head_loop.judge_targets(data, head_loop.HeadLoopConfig(
        objective="distill", shuffle_rewards=True)).numpy()
    np.testing.assert_allclose(np.sort(shuffled, axis=1), np.sort(soft, axis=1), rtol=1e-6)
    assert not np.allclose(shuffled, soft)


def test_agreement_is_one_when_the_retriever_ranks_the_pool_as_the_llm(world: dict) -> None:
    data = _data(world)
    with torch.no_grad():
        mine = data.scorer(None, columns=torch.from_numpy(data.pools)).numpy()
    same = replace(data, judge=mine * 2.0 + 1.0)
    assert head_loop.agreement(same, None) == pytest.approx(1.0)
    reverse = replace(data, judge=-mine)
    assert head_loop.agreement(reverse, None) == pytest.approx(-1.0)
    flat = replace(data, judge=np.ones_like(mine))  # the LLM cannot tell the pool apart
    assert head_loop.agreement(flat, None) == 0.0


def test_distillation_teaches_the_llm_ranking_and_keeps_the_best_round(
        world: dict, tmp_path) -> None:
    data = _data(world)  # the oracle judge: the target first
    select = _select(world, data)
    config = head_loop.HeadLoopConfig(rounds=3, objective="distill", lr=0.05, epochs=3,
                                      batch_size=8)
    start = dense.QueryHead(DIM)
    result = head_loop.run(start, data, config, tmp_path / "distill", select)
    history = result.history
    assert list(history.index) == [0, 1, 2, 3]
    assert {"distill loss", "agreement", "selection"} <= set(history.columns)
    assert "pair share" not in history.columns  # no sets are drawn
    assert history.loc[3, "distill loss"] < history.loc[1, "distill loss"]
    assert history.loc[3, "agreement"] > history.loc[0, "agreement"]
    assert history["selection"].max() > history.loc[0, "selection"]
    assert result.best_round == int(history["selection"].idxmax())
    assert torch.count_nonzero(start.delta) == 0
    again = head_loop.run(dense.QueryHead(DIM), data, config, tmp_path / "again", select)
    pd.testing.assert_frame_equal(history.drop(columns="seconds"),
                                  again.history.drop(columns="seconds"))  # seeded


def test_disjoint_splits_share_no_group() -> None:
    conversations = [Conversation(f"u{u}-{j}", (Turn("seeker", "x"),), (), (1,), "test",
                                  user_id=u) for u in range(50) for j in range(2)]
    parts = head_loop.disjoint_splits(conversations, {"loop": 30, "selection": 20},
                                      exclude={0, 1, 2}, seed=3)
    users = {name: {c.user_id for c in part} for name, part in parts.items()}
    assert not users["loop"] & users["selection"]
    assert not (users["loop"] | users["selection"]) & {0, 1, 2}
    assert len(parts["loop"]) == 30 and len(parts["selection"]) == 20
    again = head_loop.disjoint_splits(conversations, {"loop": 30, "selection": 20},
                                      exclude={0, 1, 2}, seed=3)
    assert [c.conversation_id for c in again["loop"]] == [c.conversation_id for c in parts["loop"]]


def test_config_rejects_bad_values() -> None:
    with pytest.raises(ValueError, match="sets"):
        head_loop.HeadLoopConfig(sets=1)
    with pytest.raises(ValueError, match="positive"):
        head_loop.HeadLoopConfig(temperature=0)
    with pytest.raises(ValueError, match="margin"):
        head_loop.HeadLoopConfig(margin=-1)


def test_cross_entropy_arm_starts_from_the_given_head(world: dict) -> None:
    """Arm (b): `dense.train_head` continues from `init`, and `select` chooses its epoch."""
    index = world["index"]
    conversations = world["conversations"]
    raw = world["retriever"].dense.raw_queries(conversations)
    init = dense.QueryHead(DIM)
    with torch.no_grad():
        init.delta.normal_(0, 0.2)
    config = dense.HeadConfig(epochs=3, lr=0.05, seed=0)
    kept, table = dense.train_head(raw, dense.targets_in(conversations, index), index, config,
                                   init=init, select=lambda head: 0.0)
    assert torch.equal(kept.delta, init.delta)  # no epoch beat the start on "selection"
    assert list(table.index) == [0, 1, 2, 3]
    scores = iter([0.0, 0.1, 0.3, 0.2])
    moved, _ = dense.train_head(raw, dense.targets_in(conversations, index), index, config,
                                init=init, select=lambda head: next(scores))
    assert not torch.equal(moved.delta, init.delta)
    assert torch.count_nonzero(init.delta) > 0  # the given head is not trained in place


def test_simulated_loop_selection_and_test_are_disjoint() -> None:
    from rar_lite.experiments import loop_arms

    def conv(split: str, user: int, target: int) -> Conversation:
        return Conversation(f"{split}-{user}", (Turn("seeker", "x"),), (), (target,), split,
                            user_id=user)

    valid = [conv("valid", u, 1000 + u) for u in range(60)]
    test = [conv("test", u, 2000 + u) for u in range(60)]
    head = valid[:20]
    tuning = [conv("train", u, 3000 + u) for u in range(0, 60, 2)] + [conv("train", 21, 1021)]
    parts = loop_arms.simulated_parts(valid, test, head, tuning,
                                      loop_arms.Sizes(loop=20, selection=30, test=50))
    users = {name: {c.user_id for c in part} for name, part in parts.items()}
    assert not users["loop"] & users["selection"]
    assert not (users["loop"] | users["selection"]) & users["test"]
    assert not (users["loop"] | users["selection"]) & set(range(20))  # the head's users
    assert 21 not in users["loop"] | users["selection"]  # its target was a tuning label
    assert len(parts["loop"]) == 20 and len(parts["selection"]) == 19
    assert users["test"] == set(range(20)) | {21}  # the rest of the users


def test_unordered_set_probability_ignores_order_and_shared_items(world: dict) -> None:
    data = _data(world)
    head, rows = dense.QueryHead(DIM), torch.tensor([0])
    forward, backward = torch.tensor([[0, 1, 2, 3]]), torch.tensor([[3, 2, 1, 0]])
    with torch.no_grad():
        ordered = [head_loop._log_probs(data, head, rows, o, 1.0) for o in (forward, backward)]
        loose = [head_loop._log_probs(data, head, rows, o, 1.0, "unordered")
                 for o in (forward, backward)]
        assert not torch.allclose(*ordered)
        assert torch.allclose(*loose)
        other = head_loop._log_probs(data, head, rows, torch.tensor([[0, 1, 4, 5]]), 1.0,
                                     "unordered")
        scores = data.scorer(head, rows, torch.from_numpy(data.pools)[rows])[0]
        expected = (scores[2] + scores[3] - scores[4] - scores[5]) / 4
    assert float(loose[0] - other) == pytest.approx(float(expected), abs=1e-5)
    with pytest.raises(ValueError, match="set_prob"):
        head_loop.HeadLoopConfig(set_prob="bag")
    with pytest.raises(ValueError, match="objective"):
        head_loop.HeadLoopConfig(objective="ppo")
    with pytest.raises(ValueError, match="judge_temperature"):
        head_loop.HeadLoopConfig(judge_temperature=0)


def test_arms_table_compares_the_arms_that_ran_and_names_unknown_ones() -> None:
    from rar_lite.experiments import loop_arms

    with pytest.raises(ValueError, match="unknown arms"):
        loop_arms.run_arms(None, arms=("a", "z"))  # checked before any work
    rng = np.random.default_rng(0)
    base = rng.uniform(0, 0.3, size=60)
    values = {"a": base, "f": base + 0.03, "g": base.copy()}
    seeds = (0, 1)
    ndcg = {(arm, s): pd.Series(v) for arm, v in values.items() for s in seeds}
    result = loop_arms.ArmsResult(None, seeds, {}, {}, ndcg, ndcg, {("f", 0): 2, ("f", 1): 3},
                                  ("a", "f", "g"))
    table, diffs = loop_arms.arms_table(result)
    assert list(table.index) == ["a", "f", "g"]
    assert set(diffs) == {"f-a", "g-a", "retriever"}  # c-a, d-b, e-a need arms that did not run
    assert diffs["f-a"]["mean"] == pytest.approx(0.03 / base.mean())
    assert diffs["f-a"]["ci95"][0] > 0  # a constant gain: the interval excludes 0
    assert diffs["g-a"]["mean"] == 0.0
    assert table.loc["f", "kept round or epoch, per seed"] == "2, 3"
    text = loop_arms.describe(table, diffs, "toy")
    assert "distillation loop against RAR-SFT" in text and "a gain" in text
    assert "within noise" in text and "shuffled-reward control" not in text
