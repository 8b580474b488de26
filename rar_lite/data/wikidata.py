"""Film metadata from Wikidata, shipped in the `bokeh-sampledata` wheel (version 2026.1).

The wheel's SQLite file `bokeh_sampledata/_data/movies.db` holds 17,472 films from 1940 to 2014
(table `omdb`): title, year, MPAA rating, runtime, genres, director, writer, cast, language,
country. Its licence, recorded in the wheel's `licenses/datasets.json`, is CC0-1.0 ("Wikidata
contributors"). Version 2025.0 of the same wheel held an OMDb table under CC BY-NC instead, so the
file is checked against the SHA-256 that the CC0 release records before it is read.

`load_films()` returns one row per film:

========== ============ ===========================================================
column     dtype        meaning
========== ============ ===========================================================
imdb_id    str          IMDb identifier ("tt0113277")
title      str          English label
year       Int64        publication year
genres     list[str]    Wikidata genres
director   list[str]    directors
writer     list[str]    writers
cast       list[str]    cast as Wikidata lists it (alphabetically: it has no billing order)
country    str | None   countries of origin, comma-separated
runtime    Int64        minutes
========== ============ ===========================================================
"""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pandas as pd

from rar_lite import cache
from rar_lite.data.sources import MissingSourceError

PIP_HINT = "pip install bokeh-sampledata==2026.1"
#: SHA-256 of the CC0 Wikidata `movies.db` of bokeh-sampledata 2026.1 (its datasets.json).
MOVIES_DB_SHA256 = "1d9c6a02e488d0354b2309e16130c58820a91ac2ce417e814c5964f9579a65ac"
#: Cast members kept per film once ordered by `order_cast`.
MAX_CAST = 8
ATTRIBUTION = "Film metadata: Wikidata contributors (CC0-1.0), via bokeh-sampledata 2026.1."


def movies_db() -> Path:
    """The packaged SQLite file, checked to be the CC0 release; `MissingSourceError` otherwise."""
    try:
        import bokeh_sampledata
    except ImportError as error:
        raise MissingSourceError(
            f"Wikidata film metadata is unavailable: bokeh-sampledata is not installed "
            f"({PIP_HINT})") from error
    path = Path(bokeh_sampledata.__file__).parent / "_data" / "movies.db"
    if not path.exists():
        raise MissingSourceError(f"Wikidata film metadata is missing: expected {path} ({PIP_HINT})")
    digest = cache.sha256_file(path)
    if digest != MOVIES_DB_SHA256:
        raise MissingSourceError(
            f"{path} is not the CC0 Wikidata release of bokeh-sampledata 2026.1 (SHA-256 "
            f"{digest[:12]}…, expected {MOVIES_DB_SHA256[:12]}…); reinstall it ({PIP_HINT})")
    return path


def _names(text: object) -> list[str]:
    """A comma-separated list as names, blanks dropped."""
    if not isinstance(text, str):
        return []
    return [name.strip() for name in text.split(",") if name.strip()]


def order_cast(casts: list[list[str]], weights: list[float] | None = None,
               keep: int = MAX_CAST) -> list[list[str]]:
    """Each film's cast, best known first, at most `keep`: an actor's prominence is the summed
    `weights` (e.g. log fame) of the films they appear in (1 per film by default), ties by name.
    Wikidata has no billing order, so prominence across the catalogue stands in for "top cast"
    (Heat: Robert De Niro, Al Pacino, ... before its extras)."""
    weights = weights if weights is not None else [1.0] * len(casts)
    score: dict[str, float] = {}
    for cast, weight in zip(casts, weights):
        for name in set(cast):
            score[name] = score.get(name, 0.0) + weight
    return [sorted(cast, key=lambda name: (-score[name], name))[:keep] for cast in casts]


def load_films(path: Path | None = None) -> pd.DataFrame:
    """The Wikidata films (schema in the module docstring), in the table's row order."""
    path = path or movies_db()
    with sqlite3.connect(f"file:{path}?mode=ro", uri=True) as connection:
        frame = pd.read_sql_query(
            'SELECT imdbID, Title, Year, Runtime, Genre, Director, Writer, "Cast", Country '
            "FROM omdb ORDER BY ID", connection)
    return pd.DataFrame({
        "imdb_id": frame["imdbID"].astype(str),
        "title": frame["Title"].astype(str),
        "year": frame["Year"].astype("Int64"),
        "genres": [_names(g) for g in frame["Genre"]],
        "director": [_names(d) for d in frame["Director"]],
        "writer": [_names(w) for w in frame["Writer"]],
        "cast": [_names(c) for c in frame["Cast"]],
        "country": [c if isinstance(c, str) and c.strip() else None for c in frame["Country"]],
        "runtime": frame["Runtime"].round().astype("Int64"),
    })
