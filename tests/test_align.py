"""Chapter 7: mining DPO pairs from the reranker's own mistakes, and a tiny TRL DPO run whose
adapter loads back through the chapter-4 backend and moves the margins the right way."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from rar_lite import align, llm, rerank, tune
from rar_lite.conversations import Conversation, Turn


def _conversation(cid: str, target: int, text: str) -> Conversation:
    return Conversation(cid, (Turn("seeker", text),), (), (target,), "test")


class _FakeReranker:
    """Ranks by a fixed order and writes "prompt(item)" prompts."""

    def __init__(self, order: list[int]) -> None:
        self.order = order

    def rank(self, conversation, candidates):
        return rerank.Ranking(sorted(candidates, key=self.order.index))

    def prompt_texts(self, conversation, candidates):
        return [f"{conversation.conversation_id}: prompt({c})" for c in candidates]


def test_pairs_come_from_the_models_own_mistake() -> None:
    reranker = _FakeReranker([7, 3, 5, 9])
    conversations = [_conversation("a", 5, "x"), _conversation("b", 7, "y"),
                     _conversation("c", 4, "z")]
    pairs = align.preference_pairs(reranker, conversations, [[3, 5, 9], [9, 7, 3], [3, 9]])
    assert [(p["conversation_id"], p["kind"], p["prompt"], p["chosen"], p["rejected"])
            for p in pairs] == [
        ("a", "target", "a: prompt(5)", "yes", "no"),
        ("a", "mistake", "a: prompt(3)", "no", "yes"),  # 3 is ranked above the target 5
        ("b", "target", "b: prompt(7)", "yes", "no"),
        ("b", "mistake", "b: prompt(3)", "no", "yes"),  # the best wrong one, even if below
    ]  # "c": its target is not among the candidates, no pair


@pytest.fixture(scope="module")
def items(corpus: pd.DataFrame) -> list[int]:
    titles = ["Heat", "Toy Story", "Casablanca", "Jumanji"]
    return [int(corpus.index[corpus.title == t][0]) for t in titles]


def test_tiny_dpo_run_moves_margins_and_loads_back(corpus, items, tmp_path: Path) -> None:
    texts = corpus.set_index("item_id")["text"]
    sft = tune.tune_pointwise(
        [tune.Example("a funny animated movie for kids", texts[items[1]], 1, 0),
         tune.Example("a funny animated movie for kids", texts[items[0]], 0, 0)],
        tune.TuneConfig(steps=1, batch_size=2), tmp_path / "sft", progress=False)
    reranker = rerank.PointwiseReranker(llm.TransformersBackend(adapter=sft.adapter), corpus)
    conversations = [_conversation("kids", items[1], "A funny animated movie for my kids."),
                     _conversation("heist", items[0], "A tense crime thriller with a heist.")]
    pairs = align.preference_pairs(reranker, conversations, [items, items])
    assert len(pairs) == 4
    config = align.AlignConfig(lr=2e-4, batch_size=4, max_steps=4, beta=0.1)
    result = align.align_dpo(pairs, sft.adapter, config, tmp_path / "dpo", progress=False)
    assert (result.adapter / "adapter_model.safetensors").exists()
    assert (result.base / "model.safetensors").exists()
    assert len(result.history) == 4 and {"loss", "rewards/margins"} <= set(result.history)
    assert result.history["loss"].iloc[0] == pytest.approx(np.log(2), abs=1e-3)  # π = π_ref

    aligned = rerank.PointwiseReranker(llm.TransformersBackend(model=result.base,
                                                               adapter=result.adapter), corpus)
    before, after = align.margins(reranker, pairs), align.margins(aligned, pairs)
    wanted = np.array([1 if p["chosen"] == "yes" else -1 for p in pairs])
    # DPO raised the log-ratio of chosen over rejected answers on its pairs...
    assert result.history["rewards/margins"].iloc[-1] > 0
    assert result.history["loss"].iloc[-1] < np.log(2)
    # ...so on average the yes/no margin moved the asked way: up on targets, down on mistakes
    assert float(np.mean((after - before) * wanted)) > 0
    again = align.align_dpo(pairs, sft.adapter, config, tmp_path / "dpo", progress=False)
    assert again.seconds == result.seconds  # a finished run is loaded, not retrained
    other = align.AlignConfig(lr=1e-4, batch_size=4, max_steps=4, beta=0.1)
    with pytest.raises(ValueError, match="holds a different DPO run"):  # never overwritten
        align.align_dpo(pairs, sft.adapter, other, tmp_path / "dpo", progress=False)


def test_training_order_keeps_a_conversations_pairs_in_one_step() -> None:
    pairs = [{"conversation_id": c, "kind": k} for c in "abcde" for k in ("target", "mistake")]
    order = align.training_order(pairs, epochs=2, seed=0)
    assert len(order) == 2 * len(pairs)
    for epoch in (order[:10], order[10:]):
        assert sorted(map(id, epoch)) == sorted(map(id, pairs))  # every pair once per epoch
        for step in range(0, 10, 2):  # batch size 2: each step is one whole conversation
            first, second = epoch[step], epoch[step + 1]
            assert first["conversation_id"] == second["conversation_id"]
            assert (first["kind"], second["kind"]) == ("target", "mistake")
    epochs = [[p["conversation_id"] for p in e[::2]] for e in (order[:10], order[10:])]
    assert epochs[0] != epochs[1]  # reshuffled per epoch (seed 0 gives different orders)
    assert align.training_order(pairs, 2, seed=0) == order  # seeded
    shuffled = align.training_order(pairs, 1, seed=0, order="random")
    assert sorted(map(id, shuffled)) == sorted(map(id, pairs)) and shuffled != pairs


@pytest.mark.parametrize(("field", "value", "message"), [
    ("batch_size", 3, "batch_size must be even"), ("batch_size", 0, "batch_size must be even"),
    ("epochs", 0, "epochs must be at least 1"), ("order", "sorted", "order must be one of")])
def test_align_config_rejects_bad_values(field: str, value: object, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        align.AlignConfig(**{field: value})
