"""The movie corpus: MovieLens movies resolved onto the IMDb table and Wikidata, one row per movie.

`build_corpus()` links each MovieLens movie to at most one IMDb row by normalised title and year
(within one year), tries alternate titles and a subtitle-free form next, then a fuzzy fallback for
near-misses; remakes (same title, years further apart) stay separate. Linked pairs become one
row; unlinked movies of either source keep their own row. Then each Wikidata film
(`rar_lite.data.wikidata`: director, writer, cast for ~17,000 films 1940-2014) is resolved onto that
corpus by title and year with the project's matcher (one-to-one) and lends it those fields;
films it does not find become rows of their own. `load_corpus()` caches the result.

Corpus frame (one row per movie):

=============== ============ ==============================================================
column          dtype        meaning
=============== ============ ==============================================================
item_id         int64        stable id: MovieLens movies first (by MovieLens id), then IMDb
title           str          display form ("The Usual Suspects")
catalogue_title str          the source's own form ("Usual Suspects, The")
alt_titles      list[str]    alternate titles (from parentheses / a.k.a.)
year            Int64        release year (MovieLens' when linked)
genres          list[str]    union of both sources' genres
runtime_min     Int64        IMDb length in minutes
imdb_rating     float64      IMDb mean rating (NaN when unlinked)
imdb_votes      Int64        IMDb vote count
mpaa            str | None   MPAA rating
budget          float64      budget in USD (NaN when unknown)
movielens_id    Int64        MovieLens id, <NA> for IMDb-only rows
imdb_row        Int64        row name in ggplot2movies, <NA> for MovieLens-only rows
n_ratings       int64        MovieLens ratings of the movie (0 for IMDb-only rows)
sources         str          the sources joined by "+": movielens, imdb, wikidata (a dataset's
                             own name for movies `rar_lite.data.cikm` adds)
link_method     str | None   how the MovieLens-IMDb link was made: exact, alternate, subtitle,
                             fuzzy
director        list[str]    directors (Wikidata; empty when unknown)
writer          list[str]    writers (Wikidata)
cast            list[str]    cast, best known first (Wikidata, at most `wikidata.MAX_CAST`)
country         str | None   countries of origin (Wikidata)
imdb_id         str | None   IMDb identifier (Wikidata)
text            str          the item card: one line for prompts and the dense retriever
                             (`render_item`)
=============== ============ ==============================================================
"""

from __future__ import annotations

import logging
import math
from collections import defaultdict
from collections.abc import Iterator, Mapping
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import pandas as pd
from rapidfuzz import fuzz, process

from rar_lite import cache
from rar_lite.data import matching, normalize, sources, wikidata

log = logging.getLogger(__name__)

#: Link stages, best first; a link found at an earlier stage wins over a later one.
LINK_STAGES: tuple[str, ...] = ("exact", "alternate", "subtitle", "fuzzy")
#: Minimum rapidfuzz `ratio` (0-100) between keys for a fuzzy link. At 90 one-letter swaps of
#: short titles slip through ("metropolis"/"petropolis", "hostel"/"hotel"); at 91.5 the accepted
#: near-misses are spelling variants ("beetlejuice"/"beetle juice", "jeepers creepers 2"/"ii").
FUZZY_CUTOFF = 91.5
#: Genres that both sources use; link precision is measured on them.
SHARED_GENRES: frozenset[str] = frozenset(sources.IMDB_GENRES) - {"Short"}

CORPUS_COLUMNS: tuple[str, ...] = (
    "item_id", "title", "catalogue_title", "alt_titles", "year", "genres", "runtime_min",
    "imdb_rating", "imdb_votes", "mpaa", "budget", "movielens_id", "imdb_row", "n_ratings",
    "sources", "link_method", "director", "writer", "cast", "country", "imdb_id", "text",
)
#: Cast members an item card names.
CARD_CAST = 3


@dataclass(frozen=True)
class Link:
    """One MovieLens movie resolved to one IMDb row."""

    movielens_id: int
    imdb_index: int  # positional index into the IMDb frame
    method: str
    year_gap: int


def _key_index(titles: pd.Series, years: pd.Series) -> dict[str, list[tuple[int, int]]]:
    """Map each title key to the (position, year) pairs of the rows that have it."""
    index: dict[str, list[tuple[int, int]]] = defaultdict(list)
    for position, (title, year) in enumerate(zip(titles, years)):
        if pd.isna(year):
            continue
        for key in normalize.title_keys(title):
            index[key].append((position, int(year)))
    return index


def _candidates(keys: list[str], year: int, index: dict[str, list[tuple[int, int]]],
                max_gap: int = 1) -> list[tuple[int, int]]:
    """(position, year gap) of the rows sharing any of `keys` within `max_gap` years."""
    found = {}
    for key in keys:
        for position, other_year in index.get(key, ()):
            gap = abs(other_year - year)
            if gap <= max_gap:
                found[position] = min(gap, found.get(position, gap))
    return list(found.items())


def link_movies(movielens: pd.DataFrame, imdb: pd.DataFrame) -> list[Link]:
    """Resolve MovieLens movies to IMDb rows (one-to-one).

    Every candidate pair is ranked by (stage, year gap, -IMDb votes) and pairs are accepted
    greedily, so when two MovieLens movies claim one IMDb row the better-supported claim wins.
    """
    index = _key_index(imdb["title"], imdb["year"])
    votes = imdb["imdb_votes"].fillna(0).to_numpy()
    proposals: list[tuple[int, int, float, int, int]] = []  # stage, gap, -votes, ml row, imdb pos
    unresolved: list[int] = []
    for row, (title, year) in enumerate(zip(movielens["title"], movielens["year"])):
        if not isinstance(title, str) or pd.isna(year):
            continue
        main, alternates = normalize.split_alternates(title)
        stage_keys = [
            [normalize.normalize_title(main)],
            [normalize.normalize_title(a) for a in alternates],
            [k for k in [normalize.colon_prefix_key(title)] if k],
        ]
        found_any = False
        for stage, keys in enumerate(stage_keys):
            for position, gap in _candidates([k for k in keys if k], int(year), index):
                proposals.append((stage, gap, -float(votes[position]), row, position))
                found_any = True
            if found_any:
                break
        if not found_any:
            unresolved.append(row)
    proposals.extend(_fuzzy_proposals(movielens, imdb, unresolved, votes))

    proposals.sort()
    taken_ml: set[int] = set()
    taken_imdb: set[int] = set()
    links = []
    for stage, gap, _, row, position in proposals:
        if row in taken_ml or position in taken_imdb:
            continue
        taken_ml.add(row)
        taken_imdb.add(position)
        links.append(Link(int(movielens["movielens_id"].iat[row]), position, LINK_STAGES[stage],
                          gap))
    return links


def _fuzzy_proposals(movielens: pd.DataFrame, imdb: pd.DataFrame, rows: list[int],
                     votes: np.ndarray) -> list[tuple[int, int, float, int, int]]:
    """Near-miss links for `rows`: best fuzzy key match among IMDb rows within one year."""
    by_year: dict[int, list[tuple[str, int]]] = defaultdict(list)
    for position, (title, year) in enumerate(zip(imdb["title"], imdb["year"])):
        if pd.notna(year):
            by_year[int(year)].extend((key, position) for key in normalize.title_keys(title))
    stage = LINK_STAGES.index("fuzzy")
    proposals = []
    for row in rows:
        title, year = movielens["title"].iat[row], int(movielens["year"].iat[row])
        pool = [entry for y in (year - 1, year, year + 1) for entry in by_year.get(y, ())]
        if not pool:
            continue
        keys = [entry[0] for entry in pool]
        for query in normalize.title_keys(title):
            best = process.extractOne(query, keys, scorer=fuzz.ratio, score_cutoff=FUZZY_CUTOFF)
            if best is not None:
                position = pool[best[2]][1]
                gap = abs(int(imdb["year"].iat[position]) - year)
                proposals.append((stage, gap, -float(votes[position]), row, position))
                break
    return proposals


def render_item(row: dict | pd.Series, n_cast: int = CARD_CAST, votes: bool = True) -> str:
    """The item card, one line: "Heat (1995) — Action, Crime, Thriller; directed by Michael Mann;
    starring Al Pacino, Robert De Niro, Val Kilmer; 170 min; IMDb 8.2 (…); R". Unknown fields are
    left out; so are the cast with `n_cast=0` and the vote count with `votes=False`."""
    title = row["title"]
    year = row.get("year")
    head = f"{title} ({int(year)})" if _known(year) else str(title)
    parts = []
    genres, directors, cast = (_listed(row.get(f)) for f in ("genres", "director", "cast"))
    if genres:
        parts.append(", ".join(genres))
    if directors:
        parts.append("directed by " + ", ".join(directors))
    if n_cast and cast:
        parts.append("starring " + ", ".join(cast[:n_cast]))
    if _known(row.get("runtime_min")):
        parts.append(f"{int(row['runtime_min'])} min")
    if _known(row.get("imdb_rating")):
        count = row.get("imdb_votes") if votes else None
        votes_text = f" ({int(count):,} votes)" if _known(count) else ""
        parts.append(f"IMDb {float(row['imdb_rating']):.1f}{votes_text}")
    if isinstance(row.get("mpaa"), str) and row["mpaa"]:
        parts.append(row["mpaa"])
    return f"{head} — {'; '.join(parts)}" if parts else head


def brief_card(row: dict | pd.Series) -> str:
    """The card the pointwise reranker reads: the item card without its cast and vote count
    ("Heat (1995) — Action, Crime, Thriller; directed by Michael Mann; 170 min; IMDb 8.2; R"),
    about 40 tokens for a retrieved movie instead of about 60: the reranker's cost is its
    candidates' tokens, and neither field is a slot of chapter 2's simulated requests
    (`simulate.draw_slots`)."""
    return render_item(row, n_cast=0, votes=False)


class BriefCards(Mapping):
    """`brief_card` of each item of `corpus`, by item id, rendered on first use (a reranker
    reads a few thousand of a corpus's 68k movies)."""

    def __init__(self, corpus: pd.DataFrame) -> None:
        self._rows = corpus.set_index("item_id")
        self._done: dict[int, str] = {}

    def __getitem__(self, item_id: int) -> str:
        if item_id not in self._done:
            self._done[item_id] = brief_card(self._rows.loc[item_id])
        return self._done[item_id]

    def __iter__(self) -> Iterator[int]:
        return iter(self._rows.index)

    def __len__(self) -> int:
        return len(self._rows)


def _listed(value: object) -> list[str]:
    """A list-valued field as a list (a missing value, NaN from a frame join, as empty)."""
    return [str(v) for v in value] if isinstance(value, (list, tuple, np.ndarray)) else []


def _known(value: object) -> bool:
    if value is None or value is pd.NA:
        return False
    try:
        return not math.isnan(float(value))  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return False


def merge_genres(first: list[str], second: list[str]) -> list[str]:
    """Union of two genre lists, order of first appearance kept."""
    return list(dict.fromkeys([*first, *second]))


def assemble(movielens: pd.DataFrame, imdb: pd.DataFrame, links: list[Link]) -> pd.DataFrame:
    """Merge both sources into the corpus frame (schema in the module docstring)."""
    link_of = {link.movielens_id: link for link in links}
    linked_imdb = {link.imdb_index for link in links}
    rows: list[dict] = []
    for ml in movielens.itertuples(index=False):
        link = link_of.get(int(ml.movielens_id))
        catalogue = ml.title if isinstance(ml.title, str) else f"MovieLens movie {ml.movielens_id}"
        main, alternates = normalize.split_alternates(catalogue)
        row = {
            "title": normalize.move_article_front(main),
            "catalogue_title": catalogue,
            "alt_titles": [normalize.move_article_front(a) for a in alternates],
            "year": ml.year, "genres": list(ml.genres), "runtime_min": pd.NA,
            "imdb_rating": np.nan, "imdb_votes": pd.NA, "mpaa": None, "budget": np.nan,
            "movielens_id": int(ml.movielens_id), "imdb_row": pd.NA,
            "n_ratings": int(ml.n_ratings), "sources": "movielens", "link_method": None,
        }
        if link is not None:
            other = imdb.iloc[link.imdb_index]
            imdb_alts = [normalize.display_title(other["title"])]
            row.update({
                "alt_titles": [a for a in dict.fromkeys(row["alt_titles"] + imdb_alts)
                               if a != row["title"]],
                "genres": merge_genres(row["genres"], other["genres"]),
                "runtime_min": other["runtime_min"], "imdb_rating": other["imdb_rating"],
                "imdb_votes": other["imdb_votes"], "mpaa": other["mpaa"],
                "budget": other["budget"], "imdb_row": int(other["imdb_row"]),
                "sources": "movielens+imdb", "link_method": link.method,
            })
        rows.append(row)
    for position, other in enumerate(imdb.itertuples(index=False)):
        if position in linked_imdb:
            continue
        main, alternates = normalize.split_alternates(other.title)
        rows.append({
            "title": normalize.move_article_front(main), "catalogue_title": other.title,
            "alt_titles": [normalize.move_article_front(a) for a in alternates],
            "year": other.year, "genres": list(other.genres), "runtime_min": other.runtime_min,
            "imdb_rating": other.imdb_rating, "imdb_votes": other.imdb_votes,
            "mpaa": other.mpaa, "budget": other.budget, "movielens_id": pd.NA,
            "imdb_row": int(other.imdb_row), "n_ratings": 0, "sources": "imdb",
            "link_method": None,
        })
    corpus = pd.DataFrame(rows)
    corpus.insert(0, "item_id", np.arange(len(corpus), dtype="int64"))
    for column in ("director", "writer", "cast"):
        corpus[column] = [[] for _ in range(len(corpus))]
    corpus["country"] = corpus["imdb_id"] = None
    return _typed(corpus)


def link_films(corpus: pd.DataFrame, films: pd.DataFrame) -> dict[int, int]:
    """Wikidata film position -> corpus row position, one-to-one: each film is resolved by its
    title and year (within one year, no typo fallback) with `matching.TitleMatcher`; when two
    films claim one row, the nearer year wins, then the earlier film."""
    matcher = matching.TitleMatcher(corpus, use_cache=False)  # a corpus being built
    position_of = {int(i): p for p, i in enumerate(corpus["item_id"])}
    proposals = []
    for position, (title, year) in enumerate(zip(films["title"], films["year"])):
        if pd.isna(year) or not title:
            continue
        found = matcher.resolve(f"{title} ({int(year)})", fuzzy=False)
        if found is not None and found.year is not None:
            proposals.append((abs(found.year - int(year)), position, position_of[found.item_id]))
    links: dict[int, int] = {}
    taken: set[int] = set()
    for _, film, row in sorted(proposals):
        if film not in links and row not in taken:
            links[film] = row
            taken.add(row)
    return links


def add_films(corpus: pd.DataFrame, films: pd.DataFrame) -> pd.DataFrame:
    """The corpus with Wikidata's fields on the rows `link_films` finds and the other films
    appended as rows of their own (new item ids after the existing ones). Cast is ordered by
    `wikidata.order_cast`, each film weighted by 1 + log(1 + its corpus fame)."""
    corpus = corpus.copy()
    links = link_films(corpus, films)
    n = len(corpus)
    corpus["director"] = [[] for _ in range(n)]
    corpus["writer"] = [[] for _ in range(n)]
    corpus["cast"] = [[] for _ in range(n)]
    corpus["country"] = pd.Series([None] * n, dtype=object)
    corpus["imdb_id"] = pd.Series([None] * n, dtype=object)
    columns = {c: corpus.columns.get_loc(c) for c in corpus.columns}
    fame = (corpus["imdb_votes"].astype("float64").fillna(0).to_numpy()
            + matching.VOTES_PER_RATING * corpus["n_ratings"].to_numpy())
    row_of = {film: row for film, row in links.items()}
    weights = [1.0 + math.log1p(fame[row_of[f]]) if f in row_of else 1.0
               for f in range(len(films))]
    films = films.assign(cast=wikidata.order_cast(list(films["cast"]), weights))
    for film, row in links.items():
        other = films.iloc[film]
        for field in ("director", "writer", "cast", "country", "imdb_id"):
            corpus.iat[row, columns[field]] = other[field]
        corpus.iat[row, columns["genres"]] = merge_genres(corpus.iat[row, columns["genres"]],
                                                          other["genres"])
        if pd.isna(corpus.iat[row, columns["runtime_min"]]):
            corpus.iat[row, columns["runtime_min"]] = other["runtime"]
        corpus.iat[row, columns["sources"]] += "+wikidata"
    linked = set(links)
    rows = []
    for film, other in enumerate(films.itertuples(index=False)):
        if film in linked:
            continue
        rows.append({
            "title": other.title, "catalogue_title": other.title, "alt_titles": [],
            "year": other.year, "genres": list(other.genres), "runtime_min": other.runtime,
            "imdb_rating": np.nan, "imdb_votes": pd.NA, "mpaa": None, "budget": np.nan,
            "movielens_id": pd.NA, "imdb_row": pd.NA, "n_ratings": 0, "sources": "wikidata",
            "link_method": None, "director": list(other.director), "writer": list(other.writer),
            "cast": list(other.cast), "country": other.country, "imdb_id": other.imdb_id,
        })
    added = pd.DataFrame(rows)
    added.insert(0, "item_id", np.arange(n, n + len(added), dtype="int64"))
    out = pd.concat([corpus, added], ignore_index=True)
    return _typed(out)


def _typed(corpus: pd.DataFrame) -> pd.DataFrame:
    """The corpus' dtypes (module docstring) and its card text, columns in order."""
    for column in ("year", "runtime_min", "imdb_votes", "movielens_id", "imdb_row"):
        corpus[column] = corpus[column].astype("Int64")
    for column in ("imdb_rating", "budget"):
        corpus[column] = corpus[column].astype("float64")
    corpus["n_ratings"] = corpus["n_ratings"].astype("int64")
    corpus["text"] = [render_item(row) for row in corpus.to_dict("records")]
    return corpus[list(CORPUS_COLUMNS)]


def build_corpus() -> pd.DataFrame:
    """Build the corpus from the three packaged sources (about 30 s on 2 cores)."""
    movielens = sources.load_movielens_movies()
    imdb = sources.load_imdb_movies()
    links = link_movies(movielens, imdb)
    log.info("linked %d of %d MovieLens movies", len(links), len(movielens))
    return add_films(assemble(movielens, imdb, links), wikidata.load_films())


def corpus_cache_key() -> str:
    """Fingerprint of the corpus' inputs (source files) and of the code that builds it."""
    return cache.fingerprint(
        [cache.sha256_file(src.path()) for src in (sources.MOVIELENS, sources.IMDB)],
        wikidata.MOVIES_DB_SHA256,
        cache.code_version(normalize, sources, wikidata, matching),
        cache.code_version(__import__(__name__, fromlist=["_"])),
    )


def corpus_path() -> Path:
    """Where the cached corpus lives."""
    return cache.cache_dir() / "corpus.parquet"


def load_corpus(rebuild: bool = False) -> pd.DataFrame:
    """The corpus, from the cache when it is current and intact, else built and cached."""
    key = corpus_cache_key()
    if not rebuild:
        frame = cache.load_frame(corpus_path(), key)
        if frame is not None:
            for column in ("alt_titles", "genres", "director", "writer", "cast"):
                frame[column] = [names.tolist() for names in frame[column]]  # 2x `map(list)`
            return frame
    frame = build_corpus()
    cache.save_frame(frame, corpus_path(), key)
    return frame


@dataclass(frozen=True)
class CorpusCard:
    """Summary figures of a corpus and of its MovieLens-IMDb links."""

    n_items: int
    by_source: dict[str, int]
    n_movielens: int
    n_linked: int
    link_rate: float  # linked / MovieLens movies
    link_rate_to_2005: float  # the same over MovieLens movies from 2005 or earlier (IMDb's span)
    links_by_method: dict[str, int]
    precision_pairs: int  # linked rows where both sources give at least one shared-vocab genre
    link_precision: float  # share of those pairs whose genres agree (share at least one)
    random_pair_agreement: float  # the same for random MovieLens/IMDb pairs: the check's floor

    def as_frame(self) -> pd.DataFrame:
        """Two-column table for display: counts with thousands separators, shares in percent."""
        def shown(value: float) -> str:
            return f"{value:,}" if isinstance(value, int) else f"{value:.1%}"

        rows = [(k.replace("_", " "), shown(v)) for k, v in asdict(self).items()
                if not isinstance(v, dict)]
        rows += [(f"rows from {k}", shown(v)) for k, v in self.by_source.items()]
        rows += [(f"links made by {k} match", shown(v)) for k, v in self.links_by_method.items()]
        return pd.DataFrame(rows, columns=["figure", "value"])


def genre_agreement(pairs: list[tuple[list[str], list[str]]]) -> tuple[int, float]:
    """(pairs judged, share agreeing): a pair is judged when both sides name a shared-vocabulary
    genre, and agrees when they name a common one."""
    judged = agreed = 0
    for first, second in pairs:
        a, b = set(first) & SHARED_GENRES, set(second) & SHARED_GENRES
        if a and b:
            judged += 1
            agreed += bool(a & b)
    return judged, (agreed / judged if judged else float("nan"))


def corpus_card(corpus: pd.DataFrame, seed: int = 0) -> CorpusCard:
    """Counts by source, link rates and link precision by genre agreement.

    Precision compares the MovieLens genres of each linked movie with the IMDb genre flags of the
    row it was linked to (re-read from the source, since the corpus stores the union).
    """
    movielens = sources.load_movielens_movies().set_index("movielens_id")
    imdb = sources.load_imdb_movies().set_index("imdb_row")
    ml_rows = corpus[corpus["movielens_id"].notna()]
    linked = ml_rows[ml_rows["imdb_row"].notna()]
    pairs = [(movielens.at[int(m), "genres"], imdb.at[int(i), "genres"])
             for m, i in zip(linked["movielens_id"], linked["imdb_row"])]
    judged, precision = genre_agreement(pairs)
    rng = np.random.default_rng(seed)
    shuffled = rng.permutation(len(pairs))
    _, floor = genre_agreement([(pairs[a][0], pairs[b][1]) for a, b in enumerate(shuffled)])
    to_2005 = ml_rows[ml_rows["year"].fillna(9999) <= 2005]
    return CorpusCard(
        n_items=len(corpus),
        by_source={str(k): int(v) for k, v in corpus["sources"].value_counts().items()},
        n_movielens=len(ml_rows),
        n_linked=len(linked),
        link_rate=len(linked) / len(ml_rows),
        link_rate_to_2005=float(to_2005["imdb_row"].notna().mean()),
        links_by_method={str(k): int(v) for k, v in linked["link_method"].value_counts().items()},
        precision_pairs=judged,
        link_precision=precision,
        random_pair_agreement=floor,
    )
