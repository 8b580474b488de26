"""Chapter 8's demo, headless: the engine's logic, and the widgets driven like a reader would
(pick a persona, press the button, read the result)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from rar_lite.book import demo
from rar_lite.reranking import rerank


class _FixedRetriever:
    """Stands in for a trained retriever: always the same candidates, scores descending."""

    def __init__(self, items: list[int]) -> None:
        self.items = items
        self.histories: list[list[int]] = []

    def topk(self, histories, k=20):
        self.histories += histories
        return (np.array([self.items[:k]]), np.array([np.arange(k, 0, -1, dtype="float32")]))


@pytest.fixture(scope="module")
def engine(corpus: pd.DataFrame, matcher) -> demo.DemoEngine:
    titles = ["Toy Story", "Heat", "Casablanca", "Jumanji", "The Usual Suspects"]
    items = [int(corpus.index[corpus.title == t][0]) for t in titles]
    return demo.DemoEngine(corpus, matcher, {"fixed": _FixedRetriever(items)},
                           {"keyword rule": rerank.KeywordReranker(corpus),
                            "retriever order": rerank.RetrieverOrder()}, k=5)


def test_liked_titles_become_the_history(engine: demo.DemoEngine, matcher) -> None:
    conversation, unresolved = engine.conversation(
        "Heat (1995), The Galactic Pancake Odyssey", "Something animated and funny.")
    assert conversation.history == (matcher.resolve("Heat (1995)").item_id,)
    assert unresolved == ["The Galactic Pancake Odyssey"]
    assert conversation.seeker_text() == "I liked Heat. Something animated and funny."
    with pytest.raises(ValueError, match="type a request"):
        engine.conversation(" ", "")


def test_ranking_carries_reasons_from_the_metadata(engine: demo.DemoEngine) -> None:
    result = engine.recommend("", "A funny animated movie please", ranker="keyword rule", top=3)
    assert result.ranking["title"].iloc[0] == "Toy Story"  # the only animated comedy
    assert "genre Animation" in result.ranking.iloc[0, -1]
    assert list(result.candidates["title"]) == ["Toy Story", "Heat", "Casablanca", "Jumanji",
                                                "The Usual Suspects"]
    assert len(result.ranking) == 3 and list(result.ranking["rank"]) == [1, 2, 3]
    plain = engine.recommend("", "A funny animated movie please", ranker="retriever order")
    assert "score" not in plain.ranking.columns  # the retriever's order has no scores
    with pytest.raises(ValueError, match="unknown option 'gpt'"):
        engine.recommend("", "anything", ranker="gpt")


def test_widget_runs_headless(engine: demo.DemoEngine) -> None:
    widget = demo.build_demo(engine)
    widget.persona.value = "family night"  # fills both text boxes
    assert widget.liked.value == demo.PERSONAS["family night"].liked
    assert widget.request.value == demo.PERSONAS["family night"].request
    widget.ranker.value = "keyword rule"
    widget.button.click()
    shown = widget.result.value
    assert "Recommended" in shown and "Toy Story" in shown and "genre Animation" in shown
    assert "I liked Toy Story, Babe." in shown
    widget.liked.value, widget.request.value = "", ""
    widget.button.click()
    assert "type a request" in widget.result.value  # errors are shown, not raised
    assert widget.box.children[0] is widget.persona


def test_titles_in_free_text_are_found_and_unknown_ones_reported(matcher) -> None:
    from rar_lite.data.matching import find_titles

    heat, suspects = (matcher.resolve(t).item_id for t in ("Heat (1995)", "The Usual Suspects"))
    toy, matrix = (matcher.resolve(t).item_id for t in ("Toy Story", "The Matrix"))
    assert find_titles("I loved Heat and want another heist film", matcher).items == [heat]
    found = find_titles('Loved "The Usual Suspects" and Heat (1995). Not The Galactic Pancake '
                        'Odyssey though', matcher)
    assert found.items == [suspects, heat]
    assert found.unknown == ["The Galactic Pancake Odyssey"]
    assert find_titles("Something like Toy Story and The Matrix, please.", matcher).items == [
        toy, matrix]  # one capitalised run, split at "and" when it names no movie as a whole
    nothing = find_titles("I want a comedy. Something light!", matcher)
    assert nothing.items == [] and nothing.unknown == []  # openers are not titles
    assert find_titles('Like "Hte Matrix"', matcher).items == [matrix]  # quoted: typos allowed


def test_recommend_text_runs_the_pipeline_and_serialises(engine: demo.DemoEngine,
                                                         matcher) -> None:
    result = engine.recommend_text("I loved Heat. Something animated and funny like "
                                   "The Galactic Pancake Odyssey", ranker="keyword rule", top=2)
    heat = matcher.resolve("Heat (1995)").item_id
    assert result.conversation.history == (heat,) and engine.retrievers["fixed"].histories[
        -1] == [heat]
    assert result.unresolved == ["The Galactic Pancake Odyssey"]
    record = result.as_json()
    assert [r["title"] for r in record["recommendations"]] == list(result.ranking["title"])
    assert record["recommendations"][0]["item_id"] == result.items[0]
    assert "genre Animation" in record["recommendations"][0]["why"]
    assert record["history"] == [heat] and record["unresolved"] == result.unresolved
    with pytest.raises(ValueError, match="type a request"):
        engine.recommend_text("   ")


def test_recommend_command_prints_table_or_json(engine: demo.DemoEngine, monkeypatch,
                                                capsys) -> None:
    import json

    from rar_lite import cli

    asked = {}

    def fake_engine(**options):
        asked.update(options)
        return engine

    monkeypatch.setattr(demo, "serving_engine", fake_engine)
    assert cli.main(["recommend", "I loved Heat and want something animated", "--k", "2",
                     "--quick", "--no-progress"]) == 0
    printed = capsys.readouterr().out
    assert "movies you named: Heat (1995)" in printed and "rank" in printed
    assert asked == {"profile": "quick", "progress": False, "llm": None}
    assert cli.main(["recommend", "Heat", "--json", "--no-progress"]) == 0
    record = json.loads(capsys.readouterr().out)
    assert len(record["recommendations"]) == 5 and record["history"]
    assert cli.main(["recommend", "  ", "--no-progress"]) == 2
    assert "the request is empty" in capsys.readouterr().err
    assert cli.main(["recommend", "Heat", "--llm", "gpt"]) == 2


def test_a_retriever_that_reads_the_words_gets_the_conversation(corpus, matcher) -> None:
    class _WordsRetriever(_FixedRetriever):
        def topk_conversations(self, conversations, k=20):
            self.histories += [c.seeker_text() for c in conversations]
            return self.topk([[]], k)

    titles = ["Toy Story", "Heat", "Casablanca"]
    reader = _WordsRetriever([int(corpus.index[corpus.title == t][0]) for t in titles])
    engine = demo.DemoEngine(corpus, matcher, {"words": reader},
                             {"retriever order": rerank.RetrieverOrder()}, k=3)
    result = engine.recommend_text("A heist film like Heat")
    assert reader.histories[0] == "A heist film like Heat"  # the text, not only the history
    assert list(result.ranking["title"]) == titles


def test_serving_engine_writes_a_record_then_loads_from_it(corpus, monkeypatch) -> None:
    """`rar-lite recommend`'s engine: built the chapters' way once (the record of its parts
    written), then loaded from the record without rebuilding the data; a record whose parts
    fail to load is built again, with a warning."""
    import json
    from types import SimpleNamespace

    from rar_lite.backends import llm_local
    from rar_lite.experiments import artifacts, profiles

    built, loaded, assembled = [], [], []
    vocab = SimpleNamespace(item_ids=np.array([3, 5, 8]))
    served = SimpleNamespace(vocab=vocab, popularity=np.array([4.0, 2.0, 1.0]))
    setup = SimpleNamespace(corpus=corpus, sets="sets", served=served,
                            run_directory="/cache/retriever/lrurec-x")

    def fake_setup(seed, profile, progress=False):
        built.append(seed)
        return setup

    def fake_tuning(profile, sets, progress=False):
        assert sets == "sets"
        return "tuned", SimpleNamespace(adapter="/cache/adapters/pointwise-x")

    def fake_load(record):
        loaded.append(record)
        if record["lrurec"] == "gone":
            raise FileNotFoundError("gone/config.json")
        return "served from the record"

    monkeypatch.setattr(artifacts, "loop_setup", fake_setup)
    monkeypatch.setattr(artifacts, "chapter_tuning", fake_tuning)
    monkeypatch.setattr(demo, "_load_served", fake_load)
    monkeypatch.setattr(llm_local, "TransformersBackend", lambda adapter: f"backend of {adapter}")
    monkeypatch.setattr(demo, "_assemble", lambda corpus, served, tuned, model, dense, progress:
                        assembled.append((served, tuned, model, dense)) or "engine")
    path = demo.serving_record_path(7, profiles.QUICK)
    path.unlink(missing_ok=True)

    assert demo.serving_engine(7, "quick") == "engine" and built == [7] and not loaded
    record = json.loads(path.read_text())
    assert record == {"lrurec": "/cache/retriever/lrurec-x", "item_ids": [3, 5, 8],
                      "popularity": [4.0, 2.0, 1.0], "adapter": "/cache/adapters/pointwise-x"}
    assert demo.serving_engine(7, "quick", llm="hf:x") == "engine" and built == [7]
    assert loaded == [record]
    assert assembled == [(served, "tuned", None, True),
                         ("served from the record", "backend of /cache/adapters/pointwise-x",
                          "hf:x", True)]
    path.write_text(json.dumps({**record, "lrurec": "gone"}))
    with pytest.warns(UserWarning, match="unusable .*gone/config.json.*building the engine"):
        demo.serving_engine(7, "quick")
    assert built == [7, 7] and json.loads(path.read_text()) == record
    assert demo.serving_record_path(8, profiles.QUICK) != path  # another seed, another record
    assert demo.serving_record_path(7, profiles.FULL) != path
