"""Chapter 8's demo, headless: the engine's logic, and the widgets driven like a reader would
(pick a persona, press the button, read the result)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from rar_lite import demo, rerank


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
