"""Chapter 6: statistics helpers (against scipy and hand-computed values), popularity buckets,
the baselines, the summary tables, and `rar-lite evaluate` end to end on a tiny fixture."""

from __future__ import annotations

import json
import math
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest
from scipy import stats as scipy_stats

from rar_lite import cli, metrics, stats
from rar_lite.backends.llm import ResponseCache
from rar_lite.data import popularity
from rar_lite.data.conversations import Conversation, Turn
from rar_lite.evaluation import baselines, harness
from rar_lite.evaluation.baselines import (
    OpenRecommender,
    PopularityRecommender,
    ranking_from_open_answer,
)
from rar_lite.experiments import profiles
from rar_lite.reranking import rerank

# --- statistics ------------------------------------------------------------------------------


def test_mean_ci_matches_hand_values_and_scipy() -> None:
    out = stats.mean_ci([1, 2, 3, 4])
    se = math.sqrt(((1.5 ** 2 + 0.5 ** 2) * 2) / 3) / 2  # sample std / sqrt(n)
    assert out["mean"] == 2.5 and out["n"] == 4
    assert out["se"] == pytest.approx(se)
    low, high = scipy_stats.t.interval(0.95, df=3, loc=2.5, scale=se)
    assert (out["low"], out["high"]) == (pytest.approx(low), pytest.approx(high))
    assert out["high"] - 2.5 == pytest.approx(3.182446 * se, rel=1e-5)  # t(0.975, 3)
    single = stats.mean_ci([0.3])
    assert single["mean"] == 0.3 and math.isnan(single["se"]) and math.isnan(single["low"])


def test_paired_test_exact_small_case_and_degenerate_case() -> None:
    # three positive differences: of the 2^3 sign patterns only all-plus and all-minus reach
    # |mean| >= 2, so the exact two-sided p-value is 2/8
    out = stats.paired_test([1, 2, 3], [0, 0, 0])
    assert out["diff"] == 2.0 and out["p"] == pytest.approx(0.25) and out["n"] == 3
    assert out["low"] <= 2.0 <= out["high"]
    same = stats.paired_test([0.1, 0.5, 0.2], [0.1, 0.5, 0.2])
    assert same == {"diff": 0.0, "n": 3, "low": 0.0, "high": 0.0, "p": 1.0}


def test_paired_test_agrees_with_the_paired_t_test_on_large_samples() -> None:
    rng = np.random.default_rng(3)
    a = rng.normal(0.1, 1.0, 300)
    b = a - rng.normal(0.15, 1.0, 300)
    out = stats.paired_test(a, b, seed=1)
    reference = scipy_stats.ttest_rel(a, b)
    assert out["p"] == pytest.approx(reference.pvalue, abs=0.02)
    assert out["low"] < out["diff"] < out["high"]
    assert out["diff"] == pytest.approx(float(np.mean(a - b)))
    assert stats.paired_test(a, b, seed=1) == out  # seeded: reproducible


def test_statistics_reject_bad_input() -> None:
    with pytest.raises(ValueError, match="paired"):
        stats.paired_test([1, 2], [1, 2, 3])
    with pytest.raises(ValueError, match="non-empty"):
        stats.mean_ci([])
    with pytest.raises(ValueError, match="finite"):
        stats.mean_ci([1.0, float("nan")])
    with pytest.raises(ValueError, match="confidence"):
        stats.mean_ci([1.0, 2.0], confidence=1.5)


def test_describe_paired_states_the_verdict_from_p_and_sign() -> None:
    gain = {"diff": 0.0465, "low": 0.0226, "high": 0.0721, "p": 0.0004, "n": 200}
    assert stats.describe_paired(gain, "RAR", "retriever") == (
        "RAR − retriever, ndcg@10 +0.0465 (95% CI +0.0226 to +0.0721, paired p = 0.0004, "
        "200 pairs): a real gain.")
    loss = {**gain, "diff": -0.02, "low": -0.03, "high": -0.01, "p": 0.01}
    assert stats.describe_paired(loss, "A", "B", "recall@10").endswith("a real loss.")
    unclear = {**gain, "p": 0.05}  # at the level itself: not below it
    assert stats.describe_paired(unclear, "A", "B").endswith("not distinguishable.")
    assert stats.describe_paired(unclear, "A", "B", alpha=0.1).endswith("a real gain.")


# --- popularity buckets and baselines --------------------------------------------------------


def test_buckets_split_interactions_in_thirds() -> None:
    counts = pd.Series({10: 6, 11: 3, 12: 2, 13: 1, 14: 0})
    assert popularity.buckets(counts).to_dict() == {10: "head", 11: "torso", 12: "tail",
                                                    13: "tail", 14: "tail"}
    # ties go to the smaller id; each third of the 9 interactions: head, torso, tail
    even = pd.Series({5: 3, 3: 3, 4: 3})
    assert popularity.buckets(even).to_dict() == {5: "tail", 3: "head", 4: "torso"}
    with pytest.raises(ValueError, match="positive count"):
        popularity.buckets(pd.Series({1: 0}))


def test_popularity_recommender_skips_the_history_and_breaks_ties_by_id() -> None:
    popular = PopularityRecommender(pd.Series({7: 5, 3: 9, 4: 5, 9: 1}))
    ids, scores = popular.topk([[3], []], k=3)
    assert ids.tolist() == [[4, 7, 9], [3, 4, 7]]
    assert scores[0].tolist() == [0.0, -1.0, -2.0]
    with pytest.raises(ValueError, match="fewer than k"):
        popular.topk([[3, 4]], k=3)
    with pytest.raises(ValueError, match="k must be"):
        popular.topk([[]], k=5)


def _conversation(history: tuple[int, ...] = (), targets: tuple[int, ...] = (1,),
                  cid: str = "c0", text: str = "A heist movie, please.") -> Conversation:
    return Conversation(cid, (Turn("seeker", text),), history, targets, "test")


def test_open_answer_resolution_counts_hallucinations(matcher) -> None:
    heat = matcher.resolve("Heat (1995)").item_id
    fargo = matcher.resolve("Fargo (1996)").item_id
    raw = ("1. Heat (1995)\n2. The Galactic Pancake Odyssey (2031)\n3. Fargo (1996)\n"
           "4. Heat (1995)")
    ranking = ranking_from_open_answer(raw, _conversation(history=(fargo,)), matcher)
    assert ranking.items == [heat]  # repeats dropped, the mentioned Fargo not recommended
    assert ranking.listed == [heat, fargo, heat]
    assert ranking.hallucinated == ["The Galactic Pancake Odyssey (2031)"]
    assert ranking.failure is None
    assert ranking_from_open_answer("I can't help.", _conversation(), matcher).items == []


class _FakeBackend:
    name, model = "fake", "fake-1"

    def __init__(self) -> None:
        self.calls: list[list[str]] = []

    def generate(self, prompts, max_new_tokens=64, temperature=0.0):
        self.calls.append(list(prompts))
        return ["1. Heat (1995)\n2. Fargo (1996)" for _ in prompts]


def test_open_recommender_caches_answers(matcher, tmp_path: Path) -> None:
    backend = _FakeBackend()
    responses = ResponseCache(tmp_path / "r.sqlite")
    opener = OpenRecommender(backend, matcher, n=5, response_cache=responses, batch_size=2)
    conversations = [_conversation(cid=f"c{i}", targets=(i,), text=f"Movie night number {i}.")
                     for i in range(3)]
    first = opener.recommend(conversations)
    again = opener.recommend(conversations)
    assert [r.items for r in first] == [r.items for r in again]
    assert first[0].items == [matcher.resolve("Heat (1995)").item_id,
                              matcher.resolve("Fargo (1996)").item_id]
    assert [len(c) for c in backend.calls] == [2, 1]  # two batches; the second run is cached
    assert responses.hits == 3 and responses.misses == 3
    assert "Recommend 5 movies" in backend.calls[0][0]


# --- tables over per-pair results ------------------------------------------------------------


def _per_pair() -> pd.DataFrame:
    rows = []
    # two systems on three pairs; the retriever has two seeds
    for seed, values in ((0, [1.0, 0.0, 0.5]), (1, [0.0, 0.0, 0.5])):
        for (cid, target, new, bucket), v in zip([("a", 1, True, "head"), ("b", 2, True, "tail"),
                                                  ("c", 3, False, "tail")], values):
            rows.append({"dataset": "d", "system": "Retriever only (SFT)", "seed": seed,
                         "conversation_id": cid, "target": target, "new": new,
                         "bucket": bucket, "ndcg@10": v})
    for (cid, target, new, bucket), v in zip([("a", 1, True, "head"), ("b", 2, True, "tail"),
                                              ("c", 3, False, "tail")], [1.0, 1.0, 0.0]):
        rows.append({"dataset": "d", "system": "RAR, SFT retriever", "seed": 0,
                     "conversation_id": cid, "target": target, "new": new, "bucket": bucket,
                     "ndcg@10": v})
    return pd.DataFrame(rows)


def test_summary_averages_seeds_per_pair_then_pairs() -> None:
    table = harness.summary(_per_pair(), "d", "all", ["ndcg@10"])
    retriever = table.loc["Retriever only (SFT)"]
    assert retriever["ndcg@10"] == pytest.approx((0.5 + 0.0 + 0.5) / 3)
    assert retriever["seeds"] == 2 and retriever["pairs"] == 3
    assert retriever["ndcg@10 seed std"] == pytest.approx(np.std([0.5, 1 / 6], ddof=1))
    assert retriever["ndcg@10 se"] == pytest.approx(np.std([0.5, 0, 0.5], ddof=1) / np.sqrt(3))
    assert list(table.index) == ["Retriever only (SFT)", "RAR, SFT retriever"]  # SYSTEMS order
    new_only = harness.summary(_per_pair(), "d", "recommendation", ["ndcg@10"])
    assert new_only.loc["RAR, SFT retriever", "ndcg@10"] == 1.0
    assert new_only.loc["RAR, SFT retriever", "pairs"] == 2
    with pytest.raises(ValueError, match="condition"):
        harness.summary(_per_pair(), "d", "some", ["ndcg@10"])
    with pytest.raises(ValueError, match="no results"):
        harness.summary(_per_pair(), "elsewhere", "all", ["ndcg@10"])


def test_paired_comparison_uses_seed_averaged_pairs() -> None:
    out = harness.paired(_per_pair(), "d", "rar-sft", "retriever")
    assert out["diff"] == pytest.approx(np.mean([1 - 0.5, 1 - 0.0, 0 - 0.5]))
    assert out["n"] == 3


def test_bucket_table_means_and_sizes() -> None:
    table = harness.bucket_table(_per_pair(), "d")
    assert table.loc["RAR, SFT retriever", "head"] == 1.0
    assert table.loc["RAR, SFT retriever", "tail"] == 0.5
    assert table.loc["Retriever only (SFT)", "tail"] == pytest.approx(0.25)
    assert table.loc["pairs (targets)"].tolist() == [1, 2]


def _evaluation() -> harness.Evaluation:
    per_pair = _per_pair().assign(**{"candidate recall@20": 1.0})
    records = [
        {"dataset": "d", "system": "RAR, SFT retriever", "seed": 0, "conversation_id": "a",
         "items": [1, 2], "candidates": [2, 1], "named": None, "hallucinated": [],
         "outside": 0, "failure": None},
        {"dataset": "d", "system": "LLM without retrieval", "seed": 0, "conversation_id": "a",
         "items": [5], "candidates": None, "named": 4, "hallucinated": ["X", "Y", "Z"],
         "outside": 0, "failure": None},
        {"dataset": "d", "system": "Retriever only (SFT)", "seed": 0, "conversation_id": "a",
         "items": [1, 9], "candidates": [1, 3], "named": None, "hallucinated": [],
         "outside": 0, "failure": None},
    ]
    return harness.Evaluation(harness.EvalConfig(), per_pair, records, pd.DataFrame(),
                              pd.DataFrame(), pd.Series({1: 10.0, 2: 1.0}))


def test_grounding_reach_and_findings_from_measured_tables() -> None:
    result = _evaluation()
    grounding = harness.grounding_table(result)
    assert grounding.loc[("d", "LLM without retrieval"), "hallucination rate"] == 0.75
    assert math.isnan(grounding.loc[("d", "LLM without retrieval"), "outside-candidates rate"])
    assert grounding.loc[("d", "RAR, SFT retriever"), "outside-candidates rate"] == 0.0
    assert grounding.loc[("d", "Retriever only (SFT)"), "outside-candidates rate"] == 0.5
    reach = harness.reach_table(result)
    assert reach.loc["d", "pairs"] == 3
    assert reach.loc["d", "targets in the retriever's vocabulary"] == pytest.approx(2 / 3)
    assert reach.loc["d", "targets mentioned before"] == pytest.approx(1 / 3)
    text = harness.findings(result)
    assert "RAR, SFT retriever − retriever only, ndcg@10 +0.3333" in text
    assert "not distinguishable" in text  # three pairs cannot show a real gain
    assert "75.0% of 4 named titles" in text
    popularity_of = harness.recommended_popularity(result, "d", top=1)
    assert popularity_of.groupby("system")["interactions"].sum().to_dict() == {
        "LLM without retrieval": 0.0, "RAR, SFT retriever": 10.0, "Retriever only (SFT)": 10.0,
        "targets (ground truth)": 11.0}


def test_main_table_formats_means_with_interval_and_references() -> None:
    table = harness.main_table(_evaluation(), "d", metrics=("ndcg@10",), references=True)
    ci = stats.mean_ci([1.0, 1.0, 0.0])
    half = (ci["high"] - ci["low"]) / 2
    assert table.loc["RAR, SFT retriever", "ndcg@10"] == f"{ci['mean']:.4f} ± {half:.4f}"
    assert table.loc["RAR, SFT retriever", "pairs"] == 3
    assert table.loc["Retriever only (SFT)", "seeds"] == 2
    assert table.loc["GPT-4, zero-shot (He et al. 2023)", "ndcg@10"] == "0.1371"


def test_config_rejects_unknown_names() -> None:
    with pytest.raises(ValueError, match="unknown system 'gpt'"):
        harness.EvalConfig(systems=("gpt",))
    with pytest.raises(ValueError, match="unknown dataset"):
        harness.EvalConfig(datasets=("movielens-chat",))
    with pytest.raises(ValueError, match="k >= 20"):
        harness.EvalConfig(k=10)


def test_further_backbones_are_specs_named_once_with_rows_of_their_own() -> None:
    config = harness.EvalConfig(llm="openai:gpt-5-mini", more_llms=["smollm2", "hf:org/m"])
    assert config.more_llms == ("smollm2", "hf:org/m")
    with pytest.raises(ValueError, match="named twice"):
        harness.EvalConfig(more_llms=("smollm2",))  # the default backbone again
    with pytest.raises(ValueError, match="sequence of specs"):
        harness.EvalConfig(more_llms="hf:org/m")
    with pytest.raises(ValueError, match="openai:<model>"):
        harness.EvalConfig(more_llms=("gpt-5",))  # not a spec
    api, local, tuned = (SimpleNamespace(model=m) for m in ("org/api", "org/m", "org/t+a"))
    rows = harness.system_backbones(("popularity", "llm", "rar-sft"), tuned, api,
                                    {"hf:org/m": local})
    assert rows == {"Popularity": "—", "LLM without retrieval": "hf:org/api",
                    "LLM without retrieval (hf:org/m)": "hf:org/m",
                    "RAR, SFT retriever": "hf:org/t+a"}  # a tuned row is not repeated
    shuffled = ["Keyword reranker", "LLM without retrieval (z)", "Popularity", "mine",
                "LLM without retrieval (a)", "LLM without retrieval"]
    assert harness.row_order(shuffled) == [
        "Popularity", "LLM without retrieval", "LLM without retrieval (a)",
        "LLM without retrieval (z)", "Keyword reranker", "mine"]


def test_real_dataset_directories_come_from_config_or_environment(monkeypatch) -> None:
    config = harness.EvalConfig(datasets=("redial",), data_dirs={"redial": "/data/redial"})
    assert harness.data_dir(config, "redial") == "/data/redial"
    monkeypatch.setenv("RAR_LITE_REDDIT_MOVIE_DIR", "/data/reddit")
    assert harness.data_dir(harness.EvalConfig(), "reddit-movie") == "/data/reddit"
    monkeypatch.delenv("RAR_LITE_INSPIRED_DIR", raising=False)
    with pytest.raises(FileNotFoundError, match="set RAR_LITE_INSPIRED_DIR"):
        harness.data_dir(harness.EvalConfig(), "inspired")
    assert cli.main(["evaluate", "--data-dir", "inspired"]) == 2  # NAME=DIR expected


def test_cli_help_names_every_system() -> None:
    command = cli.build_parser()._subparsers._group_actions[0].choices["evaluate"]
    help_text = next(a.help for a in command._actions if a.dest == "systems")
    for key in harness.SYSTEMS:
        assert key in help_text


def test_rar_rows_sharing_a_judge_are_scored_once_per_set(corpus, tmp_path, monkeypatch) -> None:
    from rar_lite.backends.llm_local import TransformersBackend
    from rar_lite.loop import pipeline

    backend = TransformersBackend(dtype="float32")
    judge = rerank.PointwiseReranker(backend, corpus,
                                     response_cache=ResponseCache(tmp_path / "a.sqlite"))
    other = rerank.PointwiseReranker(backend, corpus,
                                     response_cache=ResponseCache(tmp_path / "b.sqlite"))
    ids = [int(i) for i in corpus["item_id"].iloc[:6]]
    cases = [Conversation("a", (Turn("seeker", "a funny animated movie"),), (), (ids[0],),
                          "test")]
    fewer = cases[:0]

    def run(name: str, chosen: object, pool: list[int] | None, conversations=cases):
        return harness._Run(name, 0, conversations, chosen,
                            None if pool is None else [pool], 0.5)

    runs = [run("rar-sft", judge, ids[:3]), run("rar-loop", judge, ids[2:5]),
            run("rar-fused", rerank.InterpolatedReranker(judge, 0.3), ids[4:6]),
            run("retriever", rerank.RetrieverOrder(), ids[:3]),
            run("never asked", rerank.InterpolatedReranker(judge, 0.0), ids[:2]),
            run("alone", other, ids[:2]), run("llm", judge, None),
            run("elsewhere", other, [], fewer)]
    seen = []
    monkeypatch.setattr(pipeline, "prescore", lambda reranker, conversations, pools, progress:
                        seen.append((reranker, pools)) or len(conversations))
    timing = harness._prescore(runs, "simulated", progress=False)
    # one pass over the three rows that read `judge`; `other`'s rows neither share it nor
    # the same conversations; the retriever's order, a zero weight and "llm" ask no judge
    assert seen == [(judge, [[ids[:3]], [ids[2:5]], [ids[4:6]]])]
    assert [(t["dataset"], t["system"], t["conversations"]) for t in timing] == [
        ("simulated", harness.SHARED_SCORING, 1)]
    assert timing[0]["s / conversation"] >= 0


# --- end to end ----------------------------------------------------------------------------------


def _fixture_dataset(directory: Path) -> Path:
    """A Reddit-Movie-style directory: three turns over well-known movies."""
    names = {"Heat (1995)": 0, "Fargo (1996)": 1, "Toy Story (1995)": 2, "The Matrix (1999)": 3,
             "Titanic (1997)": 4}
    lines = [
        {"context": ["", "I loved Heat. Something with a twist?"], "rec": [1],
         "prev_entity": [0], "dialog_id": "d1", "turn_id": "1"},
        {"context": ["", "Toy Story and The Matrix are my favourites"], "rec": [4, 3],
         "prev_entity": [2, 3], "dialog_id": "d2", "turn_id": "1"},
        {"context": ["", "Any good movie?"], "rec": [2], "prev_entity": [],
         "dialog_id": "d3", "turn_id": "1"},
    ]
    directory.mkdir(parents=True)
    (directory / "entity2id.json").write_text(json.dumps(names))
    (directory / "item_ids.json").write_text(json.dumps(list(names.values())))
    (directory / "test.jsonl").write_text("".join(json.dumps(line) + "\n" for line in lines))
    return directory


def test_evaluate_command_end_to_end(tmp_path: Path, corpus, matcher, capsys) -> None:
    data = _fixture_dataset(tmp_path / "tiny")
    out = tmp_path / "eval"
    code = cli.main(["evaluate", "--quick", "--no-progress", "--systems", "popularity",
                     "retriever", "keyword", "--seeds", "0", "--n-simulated", "4",
                     "--data-dir", f"inspired={data}", "--out", str(out)])
    assert code == 0
    captured = capsys.readouterr()
    printed = captured.out
    assert "GPT-4, zero-shot (He et al. 2023)" in printed and "cost (empty LLM cache)" in printed
    assert "it/s]" not in captured.err and "%|" not in captured.err  # --no-progress: no bar

    per_pair = pd.read_csv(out / "per_pair.csv")
    rankings = [json.loads(line) for line in (out / "rankings.jsonl").read_text().splitlines()]
    # 4 simulated pairs + 4 fixture pairs (one turn has two targets), for each of 3 systems
    assert len(per_pair) == (4 + 4) * 3 and len(rankings) == (4 + 3) * 3
    inspired = per_pair[per_pair["dataset"] == "inspired"]
    # the Matrix was mentioned before its turn: not a "recommendation" pair; Titanic is
    assert inspired.groupby("target")["new"].first().value_counts().to_dict() == {True: 3,
                                                                                  False: 1}
    # every stored metric is recomputed from the stored rankings
    targets = per_pair.groupby(["dataset", "system", "conversation_id"])["target"].apply(list)
    for record in rankings:
        mine = per_pair[(per_pair["dataset"] == record["dataset"])
                        & (per_pair["system"] == record["system"])
                        & (per_pair["conversation_id"] == record["conversation_id"])]
        wanted = targets[(record["dataset"], record["system"], record["conversation_id"])]
        ranks = metrics.ranks_in_list(record["items"], wanted)
        expected = metrics.per_pair_metrics(ranks, (10,))["ndcg@10"]
        assert mine["ndcg@10"].to_numpy() == pytest.approx(expected)
        # a real set ranks its own catalogue: here five movies, fewer than QUICK's K
        if record["dataset"] == "simulated":
            assert len(record["items"]) == profiles.QUICK.k
        else:
            assert 0 < len(record["items"]) <= 5
        assert set(record["items"]) <= set(record["candidates"])
    # popularity: the most-interacted items, never one already mentioned
    popular = {r["conversation_id"]: r["items"] for r in rankings
               if r["system"] == "Popularity" and r["dataset"] == "inspired"}
    heat = matcher.resolve("Heat (1995)").item_id
    no_history, after_heat = popular["inspired-d3-1"], popular["inspired-d1-1"]
    assert heat not in after_heat
    assert [i for i in no_history if i != heat] == after_heat[:len(no_history) - (heat in no_history)]
    result = json.loads((out / "results.json").read_text())
    assert result["config"]["seeds"] == [0] and "simulated/all" in result["summary"]
    summary = pd.read_csv(out / "summary.csv")
    assert set(summary["system"]) == {"Popularity", "Retriever only (SFT)", "Keyword reranker"}


def test_paired_relative_is_a_fraction_of_the_baseline_mean() -> None:
    rng = np.random.default_rng(0)
    a = rng.uniform(0.1, 0.3, 200)
    b = a * 1.1  # every pair 10% better
    out = stats.paired_relative(a, b)
    assert out["mean"] == pytest.approx(0.1)
    assert 0 < out["ci95"][0] <= 0.1 <= out["ci95"][1]
    assert out["absolute"] == pytest.approx(float(np.mean(b - a)))
    zero = stats.paired_relative(np.zeros(5), np.zeros(5))
    assert np.isnan(zero["mean"]) and zero["absolute"] == 0.0


def test_api_modes_through_a_real_server(local_llm, corpus, matcher) -> None:
    """Generation mode and the LLM without retrieval through `transformers serve`."""
    backend = local_llm.backend(concurrency=2)
    said = "I loved Heat (1995). Can you suggest another crime thriller?"
    conversation = Conversation("real-server", (Turn("seeker", said),), (), (), "u")
    candidates = [int(i) for i in corpus["item_id"].head(5)]
    ranking = rerank.GenerationReranker(backend, corpus, matcher, n=3,
                                        max_new_tokens=24).rank(conversation, candidates)
    assert sorted(ranking.items) == sorted(candidates) and ranking.failure is None
    opened = baselines.OpenRecommender(backend, matcher, n=3, max_new_tokens=24)
    assert len(opened.answers([conversation])[0]) > 0
    assert backend.usage.requests == 2
    assert backend.usage.prompt_tokens > 50 and 0 < backend.usage.completion_tokens <= 48


def test_evaluate_with_an_api_backbone_end_to_end(local_llm, tmp_path: Path, monkeypatch,
                                                  capsys) -> None:
    for name, value in local_llm.environment().items():
        monkeypatch.setenv(name, value)
    out = tmp_path / "api"
    # the API model is the backbone; the packaged SmolLM2 a further one, with rows of its own
    code = cli.main(["evaluate", "--quick", "--no-progress", "--systems", "popularity", "llm",
                     "rar-generate", "--datasets", "simulated", "--seeds", "0", "--n-simulated",
                     "2", "--n-generate", "2", "--llm", local_llm.spec, "smollm2",
                     "--llm-concurrency", "1", "--out", str(out)])
    assert code == 0, capsys.readouterr().err
    assert local_llm.spec in capsys.readouterr().out  # the table names the backbone
    record = json.loads((out / "results.json").read_text())
    assert record["config"]["llm"] == local_llm.spec
    assert record["config"]["more_llms"] == ["smollm2"]
    assert record["backbones"] == {
        "Popularity": "—", "LLM without retrieval": local_llm.spec,
        "LLM without retrieval (smollm2)": "smollm2",
        "RAR, generation mode (zero-shot)": local_llm.spec,
        "RAR, generation mode (zero-shot) (smollm2)": "smollm2"}
    assert list(pd.read_csv(out / "summary.csv")["system"].unique()) == list(record["backbones"])
    cost = pd.read_csv(out / "cost.csv", index_col="system")
    assert cost.loc["Popularity", "prompt tokens / conversation"] == 0
    for system in set(record["backbones"]) - {"Popularity"}:
        assert cost.loc[system, "prompt tokens / conversation"] > 0
        assert 0 < cost.loc[system, "completion tokens / conversation"] <= 32
    rankings = [json.loads(line) for line in (out / "rankings.jsonl").read_text().splitlines()]
    assert {r["system"] for r in rankings} == set(record["backbones"])
    per_pair = pd.read_csv(out / "per_pair.csv")  # each backbone ranked the same conversations
    asked = per_pair.groupby("system")["conversation_id"].apply(frozenset)
    assert asked["LLM without retrieval"] == asked["LLM without retrieval (smollm2)"]


def test_overhead_states_the_llm_cost_against_the_retriever() -> None:
    cost = pd.DataFrame({"conversations": [5, 5, 5], "s / conversation": [0.01, 0.5, 0.0],
                         "LLM prompts / conversation": [0.0, 20.0, 0.0],
                         "prompt tokens / conversation": [0.0, 1200.0, 0.0],
                         "completion tokens / conversation": [0.0, 0.0, 0.0]},
                        index=pd.Index(["Retriever only (SFT)", "RAR, SFT retriever",
                                        "Popularity"], name="system"))
    text = harness.overhead(cost)
    assert "incurs significant overhead" in text
    assert "- RAR, SFT retriever: 0.50 s, 20 prompts, 1200 prompt and 0 completion tokens, 50x " \
           "the retriever alone (0.010 s)." in text
    assert "Popularity" not in text and "Retriever only (SFT):" not in text
    assert harness.overhead(cost.drop(index="RAR, SFT retriever")) == (
        "No system in this run used an LLM.")
