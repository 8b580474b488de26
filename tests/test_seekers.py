"""Seeker topics (`rar_lite.data.seekers`): detection on hand-written turns, and simulated requests
that say what they were drawn to say, with facts from the right card."""

import pandas as pd
import pytest

from rar_lite.data import seekers
from rar_lite.data.conversations import Conversation, Turn
from rar_lite.data.corpus import CARD_CAST, _listed


def _said(*texts: str, history: tuple[int, ...] = ()) -> Conversation:
    turns = [Turn("recommender", "Hi! What are you looking for? Something funny, from the 90s?")]
    turns += [Turn("seeker", t) for t in texts]
    return Conversation("hand", tuple(turns), history, (0,), "test")


def _item(corpus: pd.DataFrame, title: str, year: int) -> int:
    rows = corpus[(corpus["title"] == title) & (corpus["year"] == year)]
    assert len(rows) == 1, (title, year)
    return int(rows["item_id"].iloc[0])


def _names(row: pd.Series, *columns: str) -> set[str]:
    return {" ".join(seekers.tokens(n)) for c in columns for n in _listed(row[c])}


@pytest.mark.parametrize("text, expected", [
    ("I like horror movies and comedies.", {"genre"}),
    ("Sci-fi or a rom-com, maybe.", {"genre"}),
    ("I'm going with my family.", set()),
    ("A family movie for the kids.", {"genre"}),
    ("I don't like horror.", {"dislike"}),
    ("I'm not a fan of musicals, but I love westerns.", {"dislike", "genre"}),
    ("I hate sad movies.", {"dislike"}),
    ("Something funny and light.", {"mood"}),
    ("It should be scary, really intense.", {"mood"}),
    ("Something from the 90s.", {"era"}),
    ("I prefer older films, or made in 1994.", {"era"}),
    ("Any new releases?", {"era"}),
    ("My five year old is with me. I recently watched one.", set()),
    ("What is it about?", {"plot"}),
    ("A movie about two brothers.", {"plot"}),
    ("I want one where the hero dies, with a twist.", {"plot"}),
    ("Good, how about you? Tell me what you think about it.", set()),
    ("I love Al Pacino.", {"person"}),
    ("al pacino's early films", {"person"}),
    ("I always watch Pacino.", set()),
    ("Hal Pacino and Al Pacinos are not names.", set()),
    ("Hello! Not sure, anything good.", set()),
])
def test_topics_on_hand_written_turns(corpus: pd.DataFrame, text: str,
                                      expected: set[str]) -> None:
    assert seekers.topics(_said(text), corpus) == expected


def test_film_is_a_mentioned_film_the_seeker_names(corpus: pd.DataFrame) -> None:
    heat = _item(corpus, "Heat", 1995)
    assert seekers.topics(_said("I loved Heat!", history=(heat,)), corpus) == {"film"}
    assert seekers.topics(_said("Nothing in mind.", history=(heat,)), corpus) == set()
    # words the recommender said do not count: only the seeker's
    assert seekers.topics(Conversation("r", (Turn("recommender", "Heat is scary"),), (heat,),
                                       (0,), "test"), corpus) == set()


def test_topic_shares_count_turns(corpus: pd.DataFrame) -> None:
    table = seekers.topic_shares([_said("I like comedies."), _said("Something scary."),
                                  _said("A comedy from the 80s."), _said("Hi.")], corpus)
    assert list(table.index) == list(seekers.TOPICS)
    assert table.loc["genre", "share"] == 0.5 and table.loc["genre", "turns"] == 2
    assert table.loc["mood", "share"] == 0.25 and table.loc["era", "share"] == 0.25
    assert table.loc["person", "turns"] == 0


@pytest.fixture(scope="module")
def mixed(corpus: pd.DataFrame) -> list[Conversation]:
    return seekers.simulated_requests(corpus, 300, {t: 0.5 for t in seekers.TOPICS}, seed=3)


def test_requests_naming_people_name_the_targets_people(corpus: pd.DataFrame,
                                                        mixed: list[Conversation]) -> None:
    rows = corpus.set_index("item_id")
    detector = seekers.detector_for(corpus)
    checked = 0
    for c in mixed:
        card = rows.loc[c.targets[0]]
        facts, text = c.meta["facts"], c.seeker_text()
        if "director" in facts:
            assert facts["director"] in _listed(card["director"]) and facts["director"] in text
        if "actor" in facts:
            assert facts["actor"] in _listed(card["cast"])[:CARD_CAST] and facts["actor"] in text
        if "writer" in facts:
            assert facts["writer"] in _listed(card["writer"]) and facts["writer"] in text
        # every person name in the seeker's words is one of the target's people
        named = set(detector.names_in(text))
        assert named <= _names(card, "director", "cast", "writer"), (named, c.targets)
        checked += bool(named)
    assert checked > 100


def test_detected_topics_are_the_drawn_ones(corpus: pd.DataFrame,
                                            mixed: list[Conversation]) -> None:
    rows = corpus.set_index("item_id")
    for c in mixed:
        assert seekers.topics(c, corpus) == set(c.meta["topics"]), c.text()
        title = rows.loc[c.targets[0], "title"]
        assert title not in c.text()
        if "film" in c.meta["topics"]:  # the liked film shares a director or an actor
            (film,) = c.history
            assert film != c.targets[0]
            assert _names(rows.loc[film], "director", "cast") & _names(
                rows.loc[c.targets[0]], "director", "cast")
        else:
            assert c.history == ()
    assert len({c.seeker_text() for c in mixed}) > 0.9 * len(mixed)  # varied, not templated


@pytest.mark.parametrize("topic", seekers.TOPICS)
def test_share_one_always_and_zero_never(corpus: pd.DataFrame, topic: str) -> None:
    requests = seekers.simulated_requests(corpus, 40, {topic: 1.0}, seed=1)
    assert all(seekers.topics(c, corpus) == {topic} for c in requests)
    phrasings = {c.seeker_text().replace(str(v), "") for c in requests
                 for v in c.meta["facts"].values()}
    assert len(phrasings) >= 3  # varied phrasings, not one template


def test_all_or_nothing(corpus: pd.DataFrame) -> None:
    every = seekers.simulated_requests(corpus, 30, {t: 1.0 for t in seekers.TOPICS}, seed=2)
    assert all(seekers.topics(c, corpus) == set(seekers.TOPICS) for c in every)
    assert all(len(c.turns) == 4 for c in every)  # a second exchange for a long request
    none = seekers.simulated_requests(corpus, 30, {t: 0.0 for t in seekers.TOPICS}, seed=2)
    assert all(seekers.topics(c, corpus) == set() and c.meta["topics"] == [] for c in none)
    table = seekers.topic_shares(none, corpus)
    assert (table["share"] == 0).all()


def test_same_seed_same_requests(corpus: pd.DataFrame) -> None:
    shares = seekers.DEFAULT_SHARES
    first = [c.to_dict() for c in seekers.simulated_requests(corpus, 25, shares, seed=7)]
    again = [c.to_dict() for c in seekers.simulated_requests(corpus, 25, shares, seed=7)]
    other = [c.to_dict() for c in seekers.simulated_requests(corpus, 25, shares, seed=8)]
    assert first == again
    assert first != other


def test_items_restrict_targets_and_shares_are_checked(corpus: pd.DataFrame,
                                                       mixed: list[Conversation]) -> None:
    allowed = sorted({c.targets[0] for c in mixed})[:10]
    requests = seekers.simulated_requests(corpus, 20, seekers.DEFAULT_SHARES, items=allowed)
    assert {c.targets[0] for c in requests} <= set(allowed)
    with pytest.raises(ValueError, match="probabilities"):
        seekers.simulated_requests(corpus, 5, {"genre": 1.5})
    with pytest.raises(ValueError, match="no card"):
        seekers.simulated_requests(corpus, 5, items=[])
