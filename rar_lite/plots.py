"""Figures of the book (seaborn/matplotlib). Each function draws one labelled figure and returns
its axes, so a notebook cell is a single call."""

from __future__ import annotations

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import seaborn as sns

from rar_lite import popularity


def plot_years(corpus: pd.DataFrame, ax: plt.Axes | None = None) -> plt.Axes:
    """Release years of the corpus, stacked by source."""
    ax = ax or plt.subplots(figsize=(8, 3.5))[1]
    data = corpus[corpus["year"].notna()].assign(year=lambda f: f["year"].astype(int))
    sns.histplot(data=data, x="year", hue="sources", multiple="stack", binwidth=2, ax=ax)
    ax.set(xlabel="release year", ylabel="movies", title="Movies per release year, by source")
    return ax


def plot_genres(corpus: pd.DataFrame, ax: plt.Axes | None = None) -> plt.Axes:
    """How many corpus movies carry each genre."""
    ax = ax or plt.subplots(figsize=(8, 4))[1]
    counts = corpus["genres"].explode().dropna().value_counts()
    sns.barplot(x=counts.values, y=counts.index, color="tab:blue", ax=ax)
    ax.set(xlabel="movies", ylabel="genre", title="Genres in the corpus (a movie has several)")
    return ax


def plot_long_tail(n_ratings: pd.Series, ax: plt.Axes | None = None) -> plt.Axes:
    """Ratings per movie, most rated first, on a log scale: the long tail of popularity."""
    ax = ax or plt.subplots(figsize=(8, 3.5))[1]
    values = np.sort(n_ratings[n_ratings > 0].to_numpy())[::-1]
    ax.plot(np.arange(1, values.size + 1), values, color="tab:red")
    ax.set(xscale="log", yscale="log", xlabel="movie rank by number of ratings",
           ylabel="ratings", title="The long tail: ratings per MovieLens movie")
    share = popularity.head_share(values, 0.1)
    ax.text(0.55, 0.85, f"top 10% of movies get {share:.0%} of ratings",
            transform=ax.transAxes)
    return ax


def plot_narrowing(narrowing: pd.DataFrame, ax: plt.Axes | None = None) -> plt.Axes:
    """Candidates left open per test conversation: by the history alone vs. by the words."""
    ax = ax or plt.subplots(figsize=(8, 3.5))[1]
    long = pd.DataFrame({
        "items left open": np.concatenate([narrowing["by_history"], narrowing["by_words"]]),
        "what is known": ["history only"] * len(narrowing) + ["history + stated slots"]
        * len(narrowing),
    })
    long["items left open"] = long["items left open"].clip(lower=1)  # log scale: 0 shown as 1
    sns.histplot(data=long, x="items left open", hue="what is known", log_scale=True,
                 bins=40, ax=ax)
    ax.set(xlabel="catalogue items consistent with what the seeker said (log scale)",
           ylabel="test conversations", title="How much the seeker's words narrow the search")
    return ax
