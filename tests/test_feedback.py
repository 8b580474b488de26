"""The feedback loop on a tiny LRURec and a rule-based "LLM" (no language model needed)."""

from pathlib import Path

import pytest
import torch

from rar_lite.data.conversations import Conversation, Turn
from rar_lite.loop import feedback
from rar_lite.reranking import rerank
from rar_lite.retrieval.seqrec import ItemVocab, LRURec, ModelConfig

ITEMS = list(range(100, 140))  # corpus ids of a 40-item vocabulary


class TargetFirst:
    """A perfect reader: the target first when it is in the set, else the given order."""

    name = "target first"

    def rank(self, conversation: Conversation, candidates: list[int]) -> rerank.Ranking:
        target = conversation.targets[0]
        return rerank.Ranking(sorted(candidates, key=lambda c: c != target))


def conversations() -> list[Conversation]:
    turns = (Turn("seeker", "something good"),)
    return [Conversation(f"c{i}", turns, (ITEMS[i], ITEMS[i + 1], ITEMS[i + 2]),
                         (ITEMS[30 + i % 10],), "test") for i in range(12)]


def tiny_model(seed: int = 0) -> tuple[LRURec, ItemVocab]:
    torch.manual_seed(seed)
    model = LRURec(ModelConfig(n_items=len(ITEMS), dim=16, layers=1, dropout=0.0, max_len=8))
    return model.eval(), ItemVocab(ITEMS)


def target_log_prob(model: LRURec, vocab: ItemVocab, cases: list[Conversation]) -> float:
    histories = [vocab.encode(list(c.history)) for c in cases]
    with torch.no_grad():
        scores = feedback._scores(model, histories)
    targets = torch.tensor([vocab.index(c.targets[0]) - 1 for c in cases])
    return scores.log_softmax(1).gather(1, targets[:, None]).mean().item()


def test_feedback_sets_rewards_and_pairs() -> None:
    model, vocab = tiny_model()
    config = feedback.LoopConfig(sets=3, k=5, seed=1)
    out = feedback.collect_feedback(model, vocab, conversations(), TargetFirst(), config)
    assert len(out) == 12
    for f in out:
        assert len(f.sets) == 3 and all(len(s) == 5 and len(set(s)) == 5 for s in f.sets)
        assert not set(f.conversation.history) & {i for s in f.sets for i in s}
        for s, r, reward in zip(f.sets, f.rankings, f.rewards):
            assert sorted(s) == sorted(r)
            assert reward == (1.0 if f.conversation.targets[0] in s else 0.0)
        assert all(f.rewards[c] > f.rewards[r] for c, r in f.pairs)
    again = feedback.collect_feedback(model, vocab, conversations(), TargetFirst(), config)
    assert [f.sets for f in out] == [f.sets for f in again]  # seeded



def test_inclusion_by_rank_excludes_the_history_and_follows_the_scores() -> None:
    model, vocab = tiny_model()
    history = (ITEMS[0], ITEMS[1], ITEMS[2])
    with torch.no_grad():
        scores = feedback._scores(model, [vocab.encode(list(history))])[0]
    scores[[0, 1, 2]] = float("-inf")
    best = int(scores.argmax())
    inclusion, rank = feedback.inclusion_by_rank(model, vocab, history, 5, (1e-4, 5.0),
                                                 target=vocab.item(best + 1))
    assert rank == 1
    for shares in inclusion.values():
        assert shares.shape == (len(ITEMS) - 3,) and shares.sum() == pytest.approx(5.0)
    assert inclusion[1e-4][:5].tolist() == pytest.approx([1.0] * 5, abs=1e-2)  # cold: the top 5
    assert inclusion[5.0][-1] > inclusion[1e-4][-1]  # hot: the tail gets drawn
    assert feedback.inclusion_by_rank(model, vocab, history, 5, (1.0,), target=ITEMS[0])[1] is None

def test_missing_targets_are_inserted_or_skipped() -> None:
    model, vocab = tiny_model()
    insert = feedback.LoopConfig(k=2, missing="insert", temperature=0.05)
    out = feedback.collect_feedback(model, vocab, conversations(), TargetFirst(), insert)
    inserted = [f for f in out if f.inserted]
    assert inserted, "with 2 of 37 items per set, some conversations miss their target"
    for f in inserted:
        assert f.sets[0][-1] == f.conversation.targets[0] and f.pairs == [(0, 1)]
    skip = feedback.collect_feedback(model, vocab, conversations(), TargetFirst(),
                                     feedback.LoopConfig(k=2, temperature=0.05))
    assert all(not f.pairs for f in skip if all(r == 0 for r in f.rewards))
    with pytest.raises(ValueError, match="missing must be"):
        feedback.LoopConfig(missing="drop")
    with pytest.raises(ValueError, match="at least 2 sets"):
        feedback.LoopConfig(sets=1)


def test_loop_teaches_the_retriever_what_the_reader_rewards(tmp_path: Path) -> None:
    model, vocab = tiny_model()
    cases = conversations()
    before = target_log_prob(model, vocab, cases)
    config = feedback.LoopConfig(rounds=4, sets=4, k=8, lr=0.02, beta=0.1, batch_size=8)
    result = feedback.run_loop(model, vocab, cases, TargetFirst(), config, tmp_path / "loop",
                               validate=lambda m: {"target log-prob":
                                                   target_log_prob(m, vocab, cases)},
                               progress=False)
    assert list(result.history["round"]) == [1, 2, 3, 4]
    assert (result.history["pairs"] > 0).all()
    assert target_log_prob(result.model, vocab, cases) > before + 0.3
    assert target_log_prob(model, vocab, cases) == before  # the input model is left untouched
    assert result.history["log_ratio"].iloc[0] == pytest.approx(0.0, abs=1e-6)
    assert result.history["reward"].iloc[-1] > result.history["reward"].iloc[0]


def test_interrupted_loop_resumes_with_identical_results(tmp_path: Path, monkeypatch) -> None:
    model, vocab = tiny_model()
    cases = conversations()
    config = feedback.LoopConfig(rounds=3, sets=3, k=6, lr=0.02)
    straight = feedback.run_loop(model, vocab, cases, TargetFirst(), config,
                                 tmp_path / "straight", progress=False)
    real, calls = feedback.collect_feedback, []

    def dies_in_round_3(*args, **kwargs):
        calls.append(1)
        if len(calls) == 3:
            raise KeyboardInterrupt
        return real(*args, **kwargs)

    monkeypatch.setattr(feedback, "collect_feedback", dies_in_round_3)
    with pytest.raises(KeyboardInterrupt):
        feedback.run_loop(model, vocab, cases, TargetFirst(), config, tmp_path / "resumed",
                          progress=False)
    assert (tmp_path / "resumed" / "round-02").exists()
    assert not (tmp_path / "resumed" / "round-03").exists()
    monkeypatch.setattr(feedback, "collect_feedback", real)
    resumed = feedback.run_loop(model, vocab, cases, TargetFirst(), config,
                                tmp_path / "resumed", progress=False)
    columns = ["reward", "pairs", "loss", "log_ratio"]
    assert resumed.history[columns].equals(straight.history[columns])
    for a, b in zip(straight.model.state_dict().values(), resumed.model.state_dict().values()):
        assert torch.equal(a, b)
    # a finished loop is loaded, not rerun
    monkeypatch.setattr(feedback, "collect_feedback", dies_in_round_3)
    loaded = feedback.run_loop(model, vocab, cases, TargetFirst(), config,
                               tmp_path / "resumed", progress=False)
    assert loaded.history[columns].equals(straight.history[columns])


def test_loop_histories_puts_readers_side_by_side() -> None:
    import pandas as pd

    from rar_lite.experiments import loop_study

    def result(rewards: list[float], ndcg: list[float]) -> feedback.LoopResult:
        history = pd.DataFrame({"round": [1, 2], "reward": rewards, "valid ndcg@10": ndcg,
                                "pairs": [5, 6]})
        return feedback.LoopResult(model=None, history=history, seconds=0.0)

    table = loop_study.loop_histories({"SFT": result([0.1, 0.2], [0.5, 0.6]),
                                       "DPO": result([0.3, 0.4], [0.7, 0.8])})
    assert list(table.columns) == [("reward", "SFT"), ("reward", "DPO"),
                                   ("valid ndcg@10", "SFT"), ("valid ndcg@10", "DPO")]
    assert list(table.index) == [1, 2]
    assert table.at[2, ("reward", "DPO")] == 0.4 and table.at[1, ("valid ndcg@10", "SFT")] == 0.5
