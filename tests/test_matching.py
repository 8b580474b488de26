import numpy as np
import pandas as pd
import pytest

from rar_lite.data import matching


@pytest.mark.parametrize(("text", "first"), [
    ("Heat", ("Heat", None)),
    ("1. Heat", ("Heat", None)),
    ("2) Heat (1995)", ("Heat", 1995)),
    ("- Heat (1995 film)", ("Heat", 1995)),
    ("* **Heat** (1995)", ("Heat", 1995)),
    ("**3. Heat (1995)**", ("Heat", 1995)),
    ('"Heat" (1995) - a heist thriller.', ("Heat", 1995)),
    ("Heat 1995", ("Heat", 1995)),
    ("Heat, 1995.", ("Heat", 1995)),
    ("Heat!", ("Heat", None)),
    ("Star Wars: Episode II - Attack of the Clones",
     ("Star Wars: Episode II - Attack of the Clones", None)),
])
def test_parse_name_first_reading(text: str, first: tuple[str, int | None]) -> None:
    assert matching.parse_name(text)[0] == first


def test_parse_name_keeps_ambiguous_readings() -> None:
    readings = matching.parse_name("Fantasia 2000")
    assert ("Fantasia", 2000) in readings and ("Fantasia 2000", None) in readings
    assert matching.parse_name("Heat - a heist thriller")[-1] == ("Heat", None)
    # an explicit year in parentheses is never dropped
    assert all(year == 2019 for _, year in matching.parse_name("Joker (2019)"))


@pytest.mark.parametrize(("text", "title", "year"), [
    ("Heat", "Heat", 1995),
    ("1. Heat (1995)", "Heat", 1995),
    ("The Usual Suspects", "The Usual Suspects", 1995),
    ("usual suspects, the", "The Usual Suspects", 1995),
    ("Usual Suspects", "The Usual Suspects", 1995),
    ("Titanic", "Titanic", 1997),  # no year: the better-known film
    ("Titanic (1953)", "Titanic", 1953),  # a year picks the remake
    ("Les Miserables", "Les Misérables", 1995),
    ("Amélie", "Amelie", 2001),
    ("Se7en", "Seven", 1995),  # alternate title
    ("12 Monkeys", "Twelve Monkeys", 1995),
    ("Dumb and Dumber", "Dumb & Dumber", 1994),
    ("Shawshank Redemtion", "The Shawshank Redemption", 1994),  # typo
    ("Th Terminator", "The Terminator", 1984),  # typo in the article
    ("4. Fantasia 2000", "Fantasia 2000", 1999),  # a number in the title is not a year
    ("Star Wars: Episode II - Attack of the Clones", "Star Wars: Episode II - Attack of the Clones",
     2002),
    ("2. **Heat (1995)** - a heist thriller.", "Heat", 1995),
])
def test_resolve(matcher: matching.TitleMatcher, text: str, title: str, year: int) -> None:
    found = matcher.resolve(text)
    assert found is not None, text
    assert (found.title, found.year) == (title, year)


@pytest.mark.parametrize("text", [
    "The Galactic Pancake Odyssey",
    "Midnight Lemon Detectives (1994)",
    "Return of the Invisible Accountant",
    "Joker (2019)",  # real, but not in the corpus: the 2012 "Joker" must not stand in
    "Heat (1960)",  # real title, wrong decade
])
def test_unknown_titles_resolve_to_nothing(matcher: matching.TitleMatcher, text: str) -> None:
    assert matcher.resolve(text) is None


@pytest.mark.parametrize("bad", ["", "   ", None, 42, "x" * 10_000, "1.", "**"])
def test_bad_input_returns_none(matcher: matching.TitleMatcher, bad: object) -> None:
    assert matcher.resolve(bad) is None


def test_match_fields(matcher: matching.TitleMatcher, corpus: pd.DataFrame) -> None:
    exact = matcher.resolve("Heat (1995)")
    assert exact.method == "exact" and exact.score == 100.0
    assert corpus.loc[exact.item_id, "title"] == "Heat"
    fuzzy = matcher.resolve("Shawshank Redemtion")
    assert fuzzy.method == "fuzzy" and matching.FUZZY_CUTOFF <= fuzzy.score < 100


def test_round_trip_rate(matcher: matching.TitleMatcher, corpus: pd.DataFrame) -> None:
    trip = matching.round_trip(matcher, corpus, n=1000, seed=0)
    assert len(trip) == 1000 and trip["item_id"].is_unique
    assert (trip["name"] != trip["title"]).all()  # every name really is perturbed
    assert trip["ok"].mean() >= 0.98
    again = matching.round_trip(matcher, corpus, n=1000, seed=0)
    pd.testing.assert_frame_equal(trip, again)  # deterministic given the seed


def test_perturb_name_is_seeded() -> None:
    names = [matching.perturb_name("The Usual Suspects", 1995, np.random.default_rng(3))
             for _ in range(2)]
    assert names[0] == names[1]
    with_year = matching.perturb_name("Heat", 1995, np.random.default_rng(0), needs_year=True)
    assert "1995" in with_year


def test_ambiguity(matcher: matching.TitleMatcher) -> None:
    assert matcher.is_ambiguous("Titanic")
    assert not matcher.is_ambiguous("The Usual Suspects")


def test_explain_table(matcher: matching.TitleMatcher) -> None:
    table = matching.explain(matcher, ["Heat", "The Galactic Pancake Odyssey"])
    assert table.columns.tolist() == ["name", "item_id", "title", "year", "method", "score"]
    assert table.loc[0, "title"] == "Heat" and table.loc[0, "year"] == 1995
    assert pd.isna(table.loc[1, "item_id"])


def test_resolve_many_matches_resolve(matcher: matching.TitleMatcher) -> None:
    names = ["Heat", "nothing like a title at all 123", "Titanic"]
    assert matcher.resolve_many(names) == [matcher.resolve(n) for n in names]


def test_names_with_undecodable_bytes_do_not_crash(matcher: matching.TitleMatcher) -> None:
    # a non-UTF-8 command-line argument reaches Python as lone surrogates
    name = b"Heat \xff (1995)".decode("utf-8", "surrogateescape")
    table = matching.explain(matcher, [name, "\udc80", "Heat\ud800"])
    assert table.loc[0, "name"] == "Heat \ufffd (1995)" and table.loc[0, "title"] == "Heat"
    assert pd.isna(table.loc[1, "item_id"])
    table.to_string()  # printable
    assert matching.displayable("Amélie \udcff") == "Amélie \ufffd"


def test_key_index_is_cached_and_rebuilt_when_unreadable(corpus: pd.DataFrame,
                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    small = corpus.head(300).copy()
    built = matching.TitleMatcher(small, use_cache=False)
    path = matching._index_path(small)
    path.unlink(missing_ok=True)
    first = matching.TitleMatcher(small)  # builds and writes the index
    assert path.exists()

    def no_build(_: pd.DataFrame) -> None:
        raise AssertionError("the cached index should have been read")

    with monkeypatch.context() as patch:
        patch.setattr(matching, "_build_index", no_build)
        again = matching.TitleMatcher(small)
    for matcher in (first, again):
        assert matcher._by_key == built._by_key and matcher._fuzzy_keys == built._fuzzy_keys
        assert [matcher.resolve(t) for t in small["title"][:50]] == \
            [built.resolve(t) for t in small["title"][:50]]
    # another corpus has another index; a damaged file is rebuilt, not trusted
    renamed = small.assign(title=small["title"].where(small.index != small.index[0], "Zzyzx Road"))
    assert matching._index_path(renamed) != path
    path.write_text("[{}, ")
    assert matching.TitleMatcher(small)._by_key == built._by_key
