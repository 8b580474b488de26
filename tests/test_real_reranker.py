"""The reranker tuned on real dialogue: hard negatives, the dialogue context, snapshots, and the
choice of steps and weight on selection turns (a tiny run on the real packaged SmolLM2)."""

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from rar_lite.backends.llm import ResponseCache
from rar_lite.backends.llm_local import TransformersBackend
from rar_lite.data.conversations import Conversation, Turn
from rar_lite.dialogue import real_reranker, realdata
from rar_lite.experiments import artifacts
from rar_lite.reranking import prompts, rerank, tune


class _Listed:
    """A conversation-reading retriever that proposes a fixed list (first = best)."""

    def __init__(self, order: list[int]) -> None:
        self.order = order

    def topk_conversations(self, conversations, k=20):
        ids = np.array([self.order[:k]] * len(conversations))
        return ids, np.zeros(ids.shape)


@pytest.fixture(scope="module")
def items(corpus: pd.DataFrame) -> list[int]:
    titles = ["Heat", "Toy Story", "Casablanca", "The Usual Suspects", "Titanic", "Jumanji"]
    return [int(corpus.index[corpus.title == t][0]) for t in titles]


def _turn(cid: str, seeker: str, targets: tuple[int, ...]) -> Conversation:
    return Conversation(cid, (Turn("recommender", "What kind of movie do you like?"),
                              Turn("seeker", seeker)), (), targets, "test",
                        meta={"dialog_id": cid})


def test_hard_negatives_never_include_a_target(corpus, items) -> None:
    conversations = [_turn("a", "a heist movie", (items[0], items[3])),
                     _turn("b", "cartoons for kids", (items[1],))]
    retriever = _Listed(items)
    pools = real_reranker.hard_pools(retriever, conversations, k=5)
    assert pools == [[items[1], items[2], items[4]], [items[0], items[2], items[3], items[4]]]
    config = real_reranker.DialogueTuning(tune=tune.TuneConfig(negatives=2), k=5)
    examples = real_reranker.dialogue_examples(retriever, conversations, corpus, config)
    texts = corpus.set_index("item_id")["text"]
    by_group: dict[int, list[tune.Example]] = {}
    for e in examples:
        by_group.setdefault(e.group, []).append(e)
    assert len(by_group) == 3  # every target of a turn is a group of its own
    for group in by_group.values():
        assert [e.label for e in group].count(1) == 1 and len(group) == 3
        turn = next(c for c in conversations if prompts.context_text(c, "dialogue")
                    == group[0].request)
        target_texts = {texts[t] for t in turn.targets}
        assert all(e.movie not in target_texts for e in group if e.label == 0)
        assert all(e.context == "dialogue" and e.prompt().startswith("Conversation:")
                   for e in group)


def test_dialogue_context_carries_both_speakers() -> None:
    turn = _turn("a", "something like Heat but lighter", (1,))
    text = prompts.context_text(turn, "dialogue")
    assert text.splitlines() == ["Recommender: What kind of movie do you like?",
                                 "Seeker: something like Heat but lighter"]
    assert prompts.context_text(turn, "request") == "something like Heat but lighter"
    prompt = prompts.pointwise_prompt(text, "Heat (1995)", "dialogue")
    assert prompt.startswith("Conversation:\nRecommender:") and prompt.endswith(
        "Movie: Heat (1995)")
    with pytest.raises(ValueError, match="context"):
        prompts.context_text(turn, "everything")
    with pytest.raises(ValueError, match="context"):
        real_reranker.DialogueTuning(context="everything")
    assert real_reranker.DialogueTuning(
        tune=tune.TuneConfig(steps=10), snapshots=(5, 10, 20)).steps() == [0, 5, 10]


def test_snapshot_equals_a_run_stopped_there(corpus, items, tmp_path: Path) -> None:
    from safetensors.torch import load_file

    texts = corpus.set_index("item_id")["text"]
    examples = [tune.Example("a funny animated movie", texts[items[1]], 1, 0),
                tune.Example("a funny animated movie", texts[items[0]], 0, 0),
                tune.Example("a heist thriller", texts[items[0]], 1, 1),
                tune.Example("a heist thriller", texts[items[1]], 0, 1)]
    small = dict(batch_size=2, lr=1e-3, lora_r=4, lora_alpha=8)
    long = tune.tune_pointwise(examples, tune.TuneConfig(steps=3, **small), tmp_path / "long",
                               progress=False, snapshots=(2, 7))
    short = tune.tune_pointwise(examples, tune.TuneConfig(steps=2, **small), tmp_path / "short",
                                progress=False)
    snapshot = tune.snapshot_dir(long.adapter, 2)
    assert snapshot.name == "long-step2" and not tune.snapshot_dir(long.adapter, 7).exists()
    a = load_file(snapshot / "adapter_model.safetensors")
    b = load_file(short.adapter / "adapter_model.safetensors")
    assert a.keys() == b.keys() and all(torch.allclose(a[k], b[k], atol=1e-6) for k in a)
    # a finished run with its snapshots is loaded; a missing snapshot means training again
    again = tune.tune_pointwise(examples, tune.TuneConfig(steps=3, **small), tmp_path / "long",
                                progress=False, snapshots=(2,))
    assert again.seconds == long.seconds
    import shutil

    shutil.rmtree(snapshot)
    tune.tune_pointwise(examples, tune.TuneConfig(steps=3, **small), tmp_path / "long",
                        progress=False, snapshots=(2,))
    assert (snapshot / "adapter_model.safetensors").exists()


def test_step_adapters_name_each_steps_model() -> None:
    assert tune.curve_steps((5, 10, 20, 0, 5), 10) == [0, 5, 10]
    assert tune.step_adapters(Path("cache/run"), (5, 10, 20), 10) == {
        0: None, 5: Path("cache/run-step5"), 10: Path("cache/run")}
    assert tune.step_adapters(Path("cache/run"), (), 3) == {0: None, 3: Path("cache/run")}


def test_tuning_curve_scores_each_step_like_its_own_reranker(corpus, items,
                                                             tmp_path: Path) -> None:
    from rar_lite.experiments import reranker_study

    texts = corpus.set_index("item_id")["text"]
    examples = [tune.Example("a funny animated movie", texts[items[1]], 1, 0),
                tune.Example("a funny animated movie", texts[items[0]], 0, 0),
                tune.Example("a heist thriller", texts[items[0]], 1, 1),
                tune.Example("a heist thriller", texts[items[2]], 0, 1)]
    run = tune.tune_pointwise(examples, tune.TuneConfig(steps=2, batch_size=2, lr=1e-3,
                                                        lora_r=4, lora_alpha=8),
                              tmp_path / "run", progress=False, snapshots=(1,))
    adapters = tune.step_adapters(run.adapter, (1,), 2)
    cases = [_turn("a", "a heist thriller", (items[0],)),
             _turn("b", "a funny animated movie", (items[1],))]
    candidates = [[items[2], items[1], items[0]], [items[0], items[2], items[1]]]
    responses = ResponseCache(tmp_path / "r.sqlite")
    curve, per_pair = reranker_study.tuning_curve(adapters, corpus, cases, candidates,
                                                  responses)
    assert curve.index.tolist() == [0, 1, 2] and sorted(per_pair) == [0, 1, 2]
    for step, adapter in adapters.items():  # each row is that adapter's own evaluation
        alone = rerank.PointwiseReranker(TransformersBackend(adapter=adapter), corpus)
        scores = rerank.evaluate_rankings([alone.rank(c, p) for c, p in zip(cases, candidates)],
                                          cases)
        assert curve.loc[step, "ndcg@10"] == pytest.approx(scores["ndcg@10"])
        assert curve.loc[step, "recall@10"] == pytest.approx(scores["recall@10"])
        assert per_pair[step].mean() == pytest.approx(scores["ndcg@10"])
    text = reranker_study.describe_curve(curve, per_pair)
    assert text.startswith(f"NDCG@10 {curve.loc[0, 'ndcg@10']:.3f} at step 0, ")
    assert "step 2 − step 1" in text


def test_tune_on_dialogue_chooses_steps_and_weight_on_selection(corpus, items,
                                                                tmp_path: Path) -> None:
    train = [_turn("t1", "a heist thriller with De Niro", (items[0],)),
             _turn("t2", "an animated movie about toys", (items[1],))]
    selection = [_turn("s1", "a crime movie with a twist", (items[3],))]
    config = real_reranker.DialogueTuning(
        k=4, snapshots=(1,), n_simulated=0, tune=tune.TuneConfig(steps=2, batch_size=4, lr=1e-3, lora_r=4,
                                                  lora_alpha=8, negatives=2))
    retriever = _Listed(items)
    chosen = real_reranker.tune_on_dialogue(retriever, corpus, train, selection, config,
                                            response_cache=ResponseCache(tmp_path / "r.sqlite"))
    assert chosen.steps_table.index.tolist() == [0, 1, 2]
    best = chosen.steps_table["ndcg@10"].max()
    assert chosen.steps_table.loc[chosen.step, "ndcg@10"] == best
    assert chosen.step == min(chosen.steps_table.index[chosen.steps_table["ndcg@10"] == best])
    assert (chosen.adapter is None) == (chosen.step == 0)
    assert chosen.weight in chosen.weight_table.index
    assert chosen.weight_table.loc[chosen.weight, "ndcg@10"] == chosen.weight_table[
        "ndcg@10"].max()
    # the weight table's extremes: weight 0 is the retriever's order (target 4th), 1 the judge
    assert chosen.weight_table.loc[0.0, "ndcg@10"] == pytest.approx(1 / np.log2(5))
    assert chosen.weight_table.loc[1.0, "ndcg@10"] == pytest.approx(
        chosen.steps_table.loc[chosen.step, "ndcg@10"])
    judge = chosen.reranker(corpus)
    assert isinstance(judge, rerank.PointwiseReranker) and judge.context == "dialogue"
    assert isinstance(judge.backend, TransformersBackend)
    assert len(chosen.history) == 2
    # nothing was mentioned: both ways score alike, and the tie goes to not keeping
    kept = chosen.weight_table[f"ndcg@10, {realdata.KEPT}"]
    assert kept.tolist() == chosen.weight_table["ndcg@10"].tolist()
    assert chosen.keep_mentioned is False
    blended = chosen.blended(corpus)
    assert (blended.weight, blended.keep_mentioned) == (chosen.weight, False)
    assert blended.reranker.backend is judge.backend  # the model is loaded once


def test_simulated_examples_target_the_catalogue(corpus, items) -> None:
    class _Indexed(_Listed):
        class index:  # noqa: N801 - what the fused retriever exposes
            item_ids = np.array(items)

    train = [_turn("t1", "something with Al Pacino, a crime movie", (items[0],))]
    config = real_reranker.DialogueTuning(n_simulated=12, k=6,
                                          tune=tune.TuneConfig(negatives=2))
    examples = real_reranker.simulated_examples(_Indexed(items), corpus, train, config, seed=3)
    texts = corpus.set_index("item_id")["text"]
    catalogue = {texts[i] for i in items}
    positives = [e for e in examples if e.label == 1]
    assert len(positives) == 12 and {e.movie for e in positives} <= catalogue
    for e in positives:  # the negatives of a group are never its target
        assert all(n.movie != e.movie for n in examples if n.group == e.group and not n.label)
    assert examples == real_reranker.simulated_examples(_Indexed(items), corpus, train, config,
                                                        seed=3)


def test_chapter_judge_without_real_data_says_where_to_get_it(corpus, monkeypatch,
                                                              capsys) -> None:
    from rar_lite.dialogue import realdata

    monkeypatch.delenv("RAR_LITE_INSPIRED_DIR", raising=False)
    monkeypatch.delenv(realdata.DEV_ENV, raising=False)
    assert artifacts.chapter_judge(None, "quick") is None
    assert capsys.readouterr().out.strip() == realdata.MISSING_DATA


def test_chapter_inspired_follows_the_datasets_parameter(corpus, monkeypatch, capsys) -> None:
    from rar_lite.dialogue import realdata

    assert realdata.chapter_inspired(corpus, ["simulated"]) == (None, None)
    assert capsys.readouterr().out.strip() == realdata.NOT_ASKED
    # asked for but absent: where to get it, and nothing said twice by the chapter's next step
    monkeypatch.delenv("RAR_LITE_INSPIRED_DIR", raising=False)
    monkeypatch.delenv(realdata.DEV_ENV, raising=False)
    data = realdata.chapter_inspired(corpus, ("simulated", "inspired"))
    assert data == (None, None)
    assert capsys.readouterr().out.strip() == realdata.MISSING_DATA
    assert artifacts.chapter_judge(None, "quick", data=data) is None
    assert capsys.readouterr().out == ""
    with pytest.raises(ValueError, match="DATASETS: unknown dataset 'inspird'"):
        realdata.chapter_inspired(corpus, ["inspird"])
    with pytest.raises(ValueError, match="a list of names"):
        realdata.chapter_inspired(corpus, "inspired")


def test_title_check_extremes_are_the_retriever_and_the_title_likelihood(corpus, items,
                                                                         tmp_path: Path) -> None:
    named = _turn("s3", "more like the one I said", (items[0],))
    named = Conversation(named.conversation_id, named.turns, (items[0],), named.targets, "test",
                         meta=named.meta)  # the target was mentioned; the retriever has it 1st
    selection = [_turn("s1", "a crime movie with a twist, like Heat", (items[3],)),
                 _turn("s2", "an animated movie about toys", (items[1],)), named]
    retriever = _Listed(items)
    backend = TransformersBackend()
    check = real_reranker.title_check(retriever, corpus, selection, k=5, backend=backend,
                                      response_cache=ResponseCache(tmp_path / "r.sqlite"))
    table, kept = check.table["ndcg@10"], check.table[f"ndcg@10, {realdata.KEPT}"]
    chosen = kept if check.keep_mentioned else table
    assert chosen.loc[check.weight] == max(table.max(), kept.max())
    # weight 0: the retriever's order (targets 4th, 2nd and 1st of the list), either way
    order = (1 / np.log2(5) + 1 / np.log2(3) + 1) / 3
    assert table.loc[0.0] == pytest.approx(order) and kept.loc[0.0] == pytest.approx(order)
    alone = rerank.TitleReranker(backend, corpus)  # weight 1: the title likelihood's own order
    gains = [1 / np.log2(alone.rank(c, items[:5]).items.index(c.targets[0]) + 2)
             for c in selection]
    assert table.loc[1.0] == pytest.approx(np.mean(gains))
    assert kept.loc[1.0] == pytest.approx(np.mean(gains[:2] + [1.0]))  # s3's target stays 1st
    assert check.keep_mentioned == (kept.max() > table.max() and check.weight > 0)
    assert check.paired["n"] == 3
    assert check.paired["diff"] == pytest.approx(chosen.loc[check.weight] - order)
    text = check.describe(len(selection))
    assert text.startswith("On 3 dev selection turns") and f"{table.loc[1.0]:.3f}" in text
    assert f"places, {kept.loc[1.0]:.3f}" in text
    assert ("95% CI" in text) == (check.weight > 0)


def _table(plain: list[float], kept: list[float]) -> pd.DataFrame:
    weights = [0.0, 0.5, 1.0]
    return pd.DataFrame({"ndcg@10": plain, "recall@10": plain,
                         f"ndcg@10, {realdata.KEPT}": kept,
                         f"recall@10, {realdata.KEPT}": kept}, index=pd.Index(weights,
                                                                               name="weight"))


def test_choose_stage_takes_the_better_blend_on_selection(corpus) -> None:
    judge = real_reranker.DialogueReranker(
        None, 0, "dialogue", 0.5, pd.DataFrame(), _table([0.25, 0.27, 0.12], [0.25, 0.26, 0.2]),
        pd.DataFrame(), 0.0)
    titles = real_reranker.TitleCheck(1.0, _table([0.25, 0.26, 0.2], [0.25, 0.27, 0.28]),
                                      {}, keep_mentioned=True)
    stage = real_reranker.choose_stage(judge, titles)  # 0.28 (kept, weight 1) beats 0.27
    assert stage.name == "title likelihood" and stage.chosen is titles
    assert stage.ndcg == pytest.approx({"tuned judge": 0.27, "title likelihood": 0.28,
                                        "retriever's order": 0.25})
    assert stage.table is titles.table
    backend = TransformersBackend()
    titles._backend = backend  # the model title_check loaded is reused
    blend = stage.reranker(corpus)
    assert isinstance(blend.reranker, rerank.TitleReranker) and blend.reranker.backend is backend
    assert (blend.weight, blend.keep_mentioned) == (1.0, True)
    assert "title likelihood's blend" in stage.describe(67) and "0.280" in stage.describe(67)
    # a tie, or no title check, keeps the judge (the paper's kind of reader)
    tied = real_reranker.TitleCheck(0.5, _table([0.25, 0.27, 0.2], [0.25, 0.25, 0.2]), {})
    for other in (tied, None):
        stage = real_reranker.choose_stage(judge, other)
        assert stage.name == "tuned judge" and stage.chosen is judge
        assert stage.table is judge.weight_table
    alone = real_reranker.choose_stage(judge, None)
    assert set(alone.ndcg) == {"tuned judge", "retriever's order"}
