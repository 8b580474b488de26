import numpy as np
import pandas as pd
import pytest

from rar_lite.data import interactions, simulate
from rar_lite.data.conversations import Conversation


@pytest.fixture(scope="module")
def split(corpus: pd.DataFrame) -> interactions.Split:
    return interactions.leave_one_out(interactions.load_interactions(corpus))


@pytest.fixture(scope="module")
def full_sets(corpus: pd.DataFrame) -> simulate.SimulatedSets:
    return simulate.simulated_sets(corpus, seed=0, train_per_user=5, progress=False)


def test_split_protocol(split: interactions.Split) -> None:
    assert len(split.users) == 671 and len(split.items) == 3496
    assert sum(len(s) for s in split.sequences.values()) == 90072
    user = split.users[0]
    seq = split.sequences[user]
    assert split.test_case(user) == (seq[:-1], seq[-1])
    assert split.valid_case(user) == (seq[:-2], seq[-2])
    assert split.train_sequence(user) == seq[:-2]


def test_k_core_hand_example() -> None:
    frame = pd.DataFrame({"user_id": [1, 1, 1, 2, 2, 3], "item_id": [10, 11, 12, 10, 11, 10]})
    # k=2: item 12 (1 interaction) goes, then user 3 (1 interaction) goes; all else stays
    out = interactions.k_core(frame, k=2)
    assert sorted(zip(out["user_id"], out["item_id"])) == [(1, 10), (1, 11), (2, 10), (2, 11)]
    with pytest.raises(ValueError):
        interactions.k_core(frame, k=0)


def test_no_target_title_in_any_dialogue(full_sets: simulate.SimulatedSets,
                                         corpus: pd.DataFrame) -> None:
    everything = full_sets.train + full_sets.valid + full_sets.test
    assert len(everything) > 4000
    for c in everything:
        target = corpus.loc[c.targets[0]]
        for title in [target["title"], *target["alt_titles"]]:
            assert not simulate.reveals(c.text(with_speakers=False), title), c.conversation_id


def test_split_integrity(full_sets: simulate.SimulatedSets) -> None:
    split = full_sets.split
    train_by_user: dict[int, list[Conversation]] = {}
    for c in full_sets.train:
        train_by_user.setdefault(c.user_id, []).append(c)
    for c in full_sets.test:
        assert c.targets == (split.sequences[c.user_id][-1],)
        assert list(c.history) == split.sequences[c.user_id][:-1]
    for c in full_sets.valid:
        assert c.targets == (split.sequences[c.user_id][-2],)
    for user, convs in train_by_user.items():
        held_out = set(split.sequences[user][-2:])
        for c in convs:
            assert not held_out & set(c.history) and not held_out & set(c.targets)
            assert c.targets[0] in split.train_sequence(user)
            assert len(c.history) >= 1


def test_deterministic_and_seed_sensitive(corpus: pd.DataFrame,
                                          full_sets: simulate.SimulatedSets) -> None:
    again = simulate.simulated_sets(corpus, seed=0, n_users=30, train_per_user=5, progress=False)
    subset = {c.conversation_id: c for c in full_sets.test + full_sets.train}
    for c in again.test + again.train:  # a subset of users yields the very same dialogues
        assert c == subset[c.conversation_id] and c.meta == subset[c.conversation_id].meta
    other = simulate.simulated_sets(corpus, seed=1, n_users=30, train_per_user=5, progress=False)
    assert [c.turns for c in other.test] != [c.turns for c in again.test]


def test_mentions_are_recent_liked_movies(full_sets: simulate.SimulatedSets,
                                          corpus: pd.DataFrame) -> None:
    split = full_sets.split
    for c in full_sets.test:
        rating = dict(zip(split.sequences[c.user_id], split.ratings[c.user_id]))
        recent = set(c.history[-10:])
        liked = [i for i in recent if rating[i] >= 4]
        assert 1 <= len(c.meta["mentioned"]) <= 3
        assert set(c.meta["mentioned"]) <= recent
        if liked:
            assert all(rating[i] >= 4 for i in c.meta["mentioned"])
        for item in c.meta["mentioned"]:  # named as a person would, not "Usual Suspects, The"
            assert corpus.at[item, "title"] in c.text()


def test_noise_free_slots_are_consistent_with_target(corpus: pd.DataFrame,
                                                     full_sets: simulate.SimulatedSets) -> None:
    clean = simulate.simulated_sets(corpus, seed=0, n_users=80, train_per_user=1,
                                    progress=False, p_wrong=0.0, p_vague=0.0)
    narrow = simulate.narrowing(clean.test, corpus, clean.split.items)
    assert narrow["target_consistent"].all()
    assert all(not c.meta["noise"] for c in clean.test)
    noisy = simulate.narrowing(full_sets.test, corpus, full_sets.split.items)
    assert 0.8 < noisy["target_consistent"].mean() < 1.0  # noise sometimes rules it out
    assert (noisy["by_words"] <= noisy["by_history"]).all()
    assert noisy["by_words"].median() < noisy["by_history"].median() / 5


def test_template_variety() -> None:
    assert len(simulate.REQUESTS) >= 20
    assert len(set(simulate.REQUESTS)) == len(simulate.REQUESTS)


def test_consistent_mask_hand_cases() -> None:
    items = pd.DataFrame({
        "genres": [["Comedy", "Romance"], ["Comedy"], ["Drama"], ["Comedy"]],
        "year": pd.array([1994, 1999, 1995, 1975], dtype="Int64"),
        "runtime_min": pd.array([90, 140, pd.NA, 80], dtype="Int64"),
        "imdb_rating": [8.0, 6.0, np.nan, 7.9],
        "mpaa": ["PG", None, "R", None],
    })
    mask = lambda **slots: simulate.consistent_mask(slots, items).tolist()  # noqa: E731
    assert mask(genres=["Comedy"]) == [True, True, False, True]
    assert mask(genres=["Comedy", "Romance"]) == [True, False, False, False]
    assert mask(decade=1990) == [True, True, True, False]
    assert mask(era="older") == [False, False, False, True]
    assert mask(runtime="short") == [True, False, True, True]  # unknown runtime stays open
    assert mask(acclaim="high") == [True, False, True, True]
    assert mask(mpaa="PG") == [True, True, False, True]
    assert mask(genres=["Comedy"], decade=1990, runtime="short") == [True, False, False, False]
    assert mask(genres=["Western"]) == [False] * 4  # a genre no item has
    columns = simulate.SlotColumns.of(items)  # extracted once for many calls: the same answers
    for slots in ({"genres": ["Comedy"], "mpaa": "PG"}, {"era": "recent"}, {}):
        assert simulate.consistent_mask(slots, columns).tolist() == mask(**slots)


@pytest.mark.parametrize(("text", "title", "revealed"), [
    ("I loved the usual suspects!", "The Usual Suspects", True),
    ("I loved Usual Suspects", "The Usual Suspects", True),
    ("I want it to be funny", "It", True),  # a short title is revealed by a common word
    ("I want something funny", "It", False),
    ("heatwave movies", "Heat", False),  # whole words only
])
def test_reveals(text: str, title: str, revealed: bool) -> None:
    assert simulate.reveals(text, title) is revealed


def test_bad_probabilities_rejected(corpus: pd.DataFrame,
                                    full_sets: simulate.SimulatedSets) -> None:
    with pytest.raises(ValueError, match="p_wrong"):
        simulate.DialogueSimulator(corpus, full_sets.split, p_wrong=1.5)
    with pytest.raises(ValueError, match="split"):
        simulate.DialogueSimulator(corpus, full_sets.split).generate("dev")
