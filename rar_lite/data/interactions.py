"""User histories from MovieLens ratings, split by the protocol of the sequential-recommendation
literature (LlamaRec, LRURec): every rating is an interaction, iterative 5-core filtering of
users and items, each user's interactions sorted by (timestamp, item id), leave-one-out (last
item = test target, second-to-last = validation target, the rest = training sequence).

Chapter 2's simulated conversations and chapter 3's retriever both use this one split, so no test
target ever reaches training.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from rar_lite.data import sources


def k_core(frame: pd.DataFrame, k: int = 5, user: str = "user_id",
           item: str = "item_id") -> pd.DataFrame:
    """Iteratively drop users and items with fewer than `k` interactions until none is left."""
    if k < 1:
        raise ValueError(f"k must be at least 1, got {k}")
    while True:
        item_counts = frame[item].map(frame[item].value_counts())
        user_counts = frame[user].map(frame[user].value_counts())
        keep = (item_counts >= k) & (user_counts >= k)
        if keep.all():
            return frame.reset_index(drop=True)
        frame = frame[keep]


def load_interactions(corpus: pd.DataFrame, k: int = 5) -> pd.DataFrame:
    """MovieLens ratings as corpus interactions after `k`-core filtering.

    Columns: `user_id` (int64), `item_id` (int64, corpus id), `rating` (float64), `timestamp`
    (int64); sorted by user, then (timestamp, item_id).
    """
    ratings = sources.load_ratings()
    id_of = corpus.dropna(subset=["movielens_id"]).set_index("movielens_id")["item_id"]
    missing = set(ratings["movielens_id"]) - set(id_of.index)
    if missing:
        raise ValueError(f"{len(missing)} rated MovieLens movies are not in the corpus "
                         f"(e.g. movielens_id {min(missing)}): rebuild the corpus")
    ratings = ratings.assign(item_id=ratings["movielens_id"].map(id_of).astype("int64"))
    frame = k_core(ratings[["user_id", "item_id", "rating", "timestamp"]], k=k)
    return frame.sort_values(["user_id", "timestamp", "item_id"], kind="stable").reset_index(
        drop=True)


@dataclass
class Split:
    """Leave-one-out split of user sequences (corpus item ids, oldest first).

    For user `u` with full sequence `s` (at least 3 items): training sequence `s[:-2]`,
    validation target `s[-2]` (history `s[:-2]`), test target `s[-1]` (history `s[:-1]`).
    """

    sequences: dict[int, list[int]]
    ratings: dict[int, list[float]]
    items: np.ndarray = field(repr=False)  # sorted item ids that survive filtering

    @property
    def users(self) -> list[int]:
        return sorted(self.sequences)

    def train_sequence(self, user: int) -> list[int]:
        return self.sequences[user][:-2]

    def valid_case(self, user: int) -> tuple[list[int], int]:
        """(history, target) of the validation case."""
        seq = self.sequences[user]
        return seq[:-2], seq[-2]

    def test_case(self, user: int) -> tuple[list[int], int]:
        """(history, target) of the test case."""
        seq = self.sequences[user]
        return seq[:-1], seq[-1]

    def item_counts(self) -> pd.Series:
        """Training interactions per item (validation and test targets excluded), indexed by id."""
        counts = pd.Series(0, index=self.items, dtype="int64")
        for user in self.sequences:
            values, n = np.unique(self.train_sequence(user), return_counts=True)
            counts.loc[values] += n
        return counts


def leave_one_out(frame: pd.DataFrame) -> Split:
    """Split interactions (as returned by `load_interactions`) per user, leave-one-out."""
    sequences: dict[int, list[int]] = {}
    ratings: dict[int, list[float]] = {}
    for user, group in frame.groupby("user_id", sort=True):
        if len(group) < 3:
            raise ValueError(f"user {user} has {len(group)} interactions; leave-one-out needs 3")
        sequences[int(user)] = group["item_id"].astype(int).tolist()
        ratings[int(user)] = group["rating"].astype(float).tolist()
    return Split(sequences, ratings, np.sort(frame["item_id"].unique()))
