import pytest

from rar_lite.data import parsing
from rar_lite.data.conversations import Conversation, Turn
from rar_lite.reranking import prompts


@pytest.mark.parametrize(("answer", "names"), [
    ("1. Heat (1995)\n2. Se7en\n3. The Usual Suspects", ["Heat (1995)", "Se7en",
                                                         "The Usual Suspects"]),
    ("1) Heat\n2) Casino", ["Heat", "Casino"]),
    ("- Heat\n- Casino\n* Ronin", ["Heat", "Casino", "Ronin"]),
    ("• Heat\n• Casino", ["Heat", "Casino"]),
    ("Heat, Casino, Ronin", ["Heat", "Casino", "Ronin"]),
    ("Heat; Casino and Ronin.", ["Heat", "Casino", "Ronin"]),
    ("Sure! Here are some movies you might like:\n1. Heat (1995) - a heist thriller\n"
     "2. Casino\nEnjoy your movie night!", ["Heat (1995) - a heist thriller", "Casino"]),
    ("Here are my picks:\nHeat\nCasino\nI hope you enjoy these wonderful films tonight, really.",
     ["Heat", "Casino"]),
    ("Heat", ["Heat"]),
    ("", []),
    ("   \n  ", []),
    (None, []),
])
def test_parse_list(answer, names) -> None:
    assert parsing.parse_list(answer) == names


@pytest.mark.parametrize(("answer", "names"), [
    ("Sure, I recommend: 1. Heat (1995) 2. Casino (1995)", ["Heat", "Casino"]),
    ("1. Heat (1995)\n2. The Usual Suspects (1995)", ["Heat", "The Usual Suspects"]),
    ("Heat (1995), Casino", ["Heat", "Casino"]),
    ("", []),
])
def test_parse_cikm23(answer, names) -> None:
    assert parsing.parse_cikm23(answer) == names


def _conversation(n_turns: int) -> Conversation:
    turns = tuple(Turn("seeker" if k % 2 else "recommender", f"turn {k} " + "word " * 30)
                  for k in range(n_turns))
    return Conversation("c", turns, (1,), (2,), "test")


def test_conversation_truncated_oldest_first() -> None:
    text = prompts.conversation_text(_conversation(12), max_words=100)
    assert len(text.split()) <= 100 + 2
    assert "turn 11" in text and "turn 0 " not in text
    assert prompts.conversation_text(_conversation(2), max_words=1000).startswith("Recommender:")


def test_candidates_are_never_dropped() -> None:
    candidates = [f"Movie {k} (1990) — Drama" for k in range(20)]
    prompt = prompts.listwise_prompt(_conversation(30), candidates, max_words=50)
    for k, text in enumerate(candidates):
        assert f"({prompts.LABELS[k]}) {text}" in prompt
    assert prompt.rstrip().endswith(prompts.VERBALIZER_TASK)
    generation = prompts.listwise_prompt(_conversation(3), candidates, generation=True, n=5)
    assert "Rank the 5 best candidates" in generation
    with pytest.raises(ValueError, match="at most 26"):
        prompts.candidate_lines(["x"] * 27)


def test_pointwise_and_open_prompts() -> None:
    text = prompts.pointwise_prompt("a funny movie", "Heat (1995) — Crime")
    assert text.splitlines() == ["Request: a funny movie",
                                 "Does the movie below fit the request? Answer yes or no.",
                                 "Movie: Heat (1995) — Crime"]  # the movie last: shared prefix
    assert prompts.request_text(_conversation(4)).startswith("turn 1")
    assert "Recommend 7 movies" in prompts.open_prompt(_conversation(2), n=7)
