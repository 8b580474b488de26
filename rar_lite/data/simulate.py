"""Simulated recommendation dialogues from MovieLens histories (the book's embedded default).

Each dialogue is generated from one user's sequence at one point of the leave-one-out split
(`rar_lite.data.interactions`): test dialogues end before the user's last item, validation dialogues
before the second-to-last, training dialogues before items of the training sequence. The seeker

- mentions one to three movies they rated highly among their ten most recent, by the titles a
  person uses ("The Usual Suspects", sometimes with the year);
- states what they want from the *target's* own metadata, as slots: genres, decade, runtime, how
  acclaimed, MPAA rating; each slot is omitted with some probability, sometimes said vaguely
  ("something funny", "an older one") and sometimes mildly wrong (a related genre, the
  neighbouring decade);
- answers one or two questions of the recommender.

The target's title never appears in the dialogue: a draw that would reveal it is redrawn, and a
target whose title cannot be avoided is skipped (counted in `SimulationReport`). Every random
choice comes from a generator seeded by (seed, user, split, position), so a dialogue does not
change when the number of users or dialogues asked for changes.

`Conversation.history` is the user's whole sequence before the target (the retriever's input);
`meta["mentioned"]` holds the movies named in the text, `meta["slots"]` what was stated (after
noise) and `meta["noise"]` which slots were vague or wrong.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

import numpy as np
import pandas as pd
from tqdm.auto import tqdm

from rar_lite.data import normalize
from rar_lite.data.conversations import Conversation, Turn
from rar_lite.data.interactions import Split

SPLITS = ("train", "valid", "test")

#: How a genre is said plainly, and vaguely. Genres not listed are never stated.
GENRE_WORDS: dict[str, tuple[str, str]] = {
    "Action": ("action", "exciting"), "Adventure": ("adventure", "epic"),
    "Animation": ("animated", "cartoon"), "Children": ("family", "kid-friendly"),
    "Comedy": ("comedy", "funny"), "Crime": ("crime", "gritty"),
    "Documentary": ("documentary", "true-story"), "Drama": ("drama", "moving"),
    "Fantasy": ("fantasy", "magical"), "Film-Noir": ("film-noir", "dark old-school"),
    "Horror": ("horror", "scary"), "Musical": ("musical", "sing-along"),
    "Mystery": ("mystery", "puzzling"), "Romance": ("romantic", "sweet"),
    "Sci-Fi": ("sci-fi", "futuristic"), "Thriller": ("thriller", "tense"),
    "War": ("war", "wartime"), "Western": ("western", "cowboy"),
}
#: The "mildly wrong" genre said instead of the true one.
RELATED_GENRE: dict[str, str] = {
    "Action": "Adventure", "Adventure": "Action", "Animation": "Children",
    "Children": "Animation", "Comedy": "Romance", "Crime": "Thriller", "Documentary": "Drama",
    "Drama": "Romance", "Fantasy": "Sci-Fi", "Film-Noir": "Crime", "Horror": "Thriller",
    "Musical": "Comedy", "Mystery": "Thriller", "Romance": "Drama", "Sci-Fi": "Fantasy",
    "Thriller": "Mystery", "War": "Drama", "Western": "Action",
}
SHORT_MAX_MIN, LONG_MIN_MIN = 95, 130  # runtime slots: "short" <= 95 min, "long" >= 130 min
ACCLAIMED_MIN, LOWBROW_MAX = 7.5, 5.5  # IMDb rating slots
OLDER_BEFORE, RECENT_FROM = 1980, 2005  # vague eras
PRAISE = ("highly rated", "critically acclaimed", "really well reviewed")

GREETINGS = (
    "Hi! What kind of movie are you looking for today?",
    "Hello there! Tell me a bit about what you like to watch.",
    "Hey! I can help you find a movie. What have you enjoyed lately?",
    "Welcome! What movies do you usually like?",
    "Hi, I'm your movie assistant. What are you in the mood for?",
    "Good evening! Looking for something to watch?",
)
OPENERS = (
    "I recently watched {m} and loved it.",
    "I'm a big fan of {m}.",
    "Lately I really enjoyed {m}.",
    "My recent favourites: {m}.",
    "I just saw {m} and thought it was great.",
    "I've been rewatching {m}, so good.",
    "{m}: that's the kind of thing I like.",
    "Hi! I really liked {m}.",
    "I loved {m}.",
    "Last week I watched {m}, really good.",
)
ASKS = (
    "Great! What are you in the mood for now?",
    "Nice. What would you like to watch tonight?",
    "Good taste! Anything particular you want this time?",
    "I see. What kind of movie do you want now?",
    "Interesting. Tell me what you're looking for today.",
    "Cool! What should the next one be like?",
)
REQUESTS = (
    "Can you recommend {w}?", "I'm in the mood for {w}.", "I'd love to watch {w} tonight.",
    "Looking for {w}, any ideas?", "Something like {w} would be great.",
    "What I want now is {w}.", "Could you suggest {w}?", "I feel like watching {w}.",
    "Tonight I'm after {w}.", "Do you know {w} I might like?", "Give me {w}, please.",
    "My friends and I want {w}.", "Hmm, maybe {w}?", "I think I'd enjoy {w}.",
    "Honestly, {w} sounds perfect right now.", "Any chance you have {w}?",
    "I'm hoping to find {w}.", "Please find me {w}.", "It's movie night and I want {w}.",
    "How about {w}?", "Ideally {w}.", "Recommend me {w}!",
)
FOLLOW_UPS = (
    "Any preference on length or rating?", "Anything else I should know?",
    "Should it be long or short? Any age rating?", "Got it. Any other wishes?",
    "Okay! Is there anything else that matters to you?",
)
NOTHING_MORE = ("No, that's all.", "Not really, surprise me.", "That's it, thanks!",
                "No other wishes.")
MORE_QUESTIONS = ("Do you want something in the spirit of {m}?", "Did you like {m} a lot?",
                  "So {m} worked for you?")
MORE_ANSWERS = ("Yes, something in that spirit.", "Yes, a lot!", "Sure, it did.",
                "Kind of, yes.")


@dataclass
class SimulationReport:
    """Sizes of a simulated set and what was skipped."""

    by_split: dict[str, int] = field(default_factory=dict)
    skipped_title_leak: int = 0  # targets whose title could not be kept out of the dialogue


@dataclass(frozen=True)
class Slots:
    """What the seeker states about the target (after noise)."""

    genres: tuple[str, ...] = ()
    decade: int | None = None
    era: str | None = None  # "older" / "recent", the vague form of a decade
    runtime: str | None = None  # "short" / "long"
    acclaim: str | None = None  # "high" / "low"
    mpaa: str | None = None

    def as_dict(self) -> dict:
        return {"genres": list(self.genres), "decade": self.decade, "era": self.era,
                "runtime": self.runtime, "acclaim": self.acclaim, "mpaa": self.mpaa}


def _known(value: object) -> bool:
    return value is not None and value is not pd.NA and not (isinstance(value, float)
                                                             and np.isnan(value))


def draw_slots(item: dict, rng: np.random.Generator, p_omit: float, p_vague: float,
               p_wrong: float) -> tuple[Slots, dict[str, str], dict[str, str]]:
    """Slots for a target `item` (a corpus row as a dict), with noise.

    Returns (slots, phrases, noise): `phrases` maps each stated slot to its words, `noise` maps a
    slot to "vague" or "wrong" where the draw made it so.
    """
    phrases: dict[str, str] = {}
    noise: dict[str, str] = {}
    values: dict = {}
    genres = [g for g in item["genres"] if g in GENRE_WORDS]
    if genres and rng.random() >= p_omit:
        chosen = [genres[i] for i in sorted(rng.choice(len(genres), size=min(len(genres),
                                                       int(rng.integers(1, 3))), replace=False))]
        u = rng.random()
        if u < p_wrong:
            k = int(rng.integers(len(chosen)))
            chosen[k] = RELATED_GENRE[chosen[k]]
            chosen = list(dict.fromkeys(chosen))
            noise["genres"] = "wrong"
        vague = p_wrong <= u < p_wrong + p_vague
        if vague:
            noise["genres"] = "vague"
        words = [GENRE_WORDS[g][1 if vague else 0] for g in chosen]
        values["genres"] = tuple(chosen)
        phrases["genres"] = " and ".join(words)
    year = item.get("year")
    if _known(year) and rng.random() >= p_omit:
        year = int(year)
        u = rng.random()
        if u < p_vague and (year < OLDER_BEFORE or year >= RECENT_FROM):
            era = "older" if year < OLDER_BEFORE else "recent"
            values["era"], noise["decade"] = era, "vague"
            phrases["decade"] = ("from back in the day" if era == "older"
                                 else "from the last few years")
        else:
            decade = year // 10 * 10
            if u >= 1 - p_wrong:
                decade += int(rng.choice([-10, 10]))
                noise["decade"] = "wrong"
            values["decade"] = decade
            short = f"{decade % 100:02d}s"
            phrases["decade"] = str(rng.choice([f"from the {short}", f"from the {decade}s",
                                                f"made in the {short}"]))
    runtime = item.get("runtime_min")
    if _known(runtime) and rng.random() >= p_omit:
        if int(runtime) <= SHORT_MAX_MIN:
            values["runtime"] = "short"
            phrases["runtime"] = str(rng.choice(["not too long", "under 100 minutes",
                                                 "on the short side"]))
        elif int(runtime) >= LONG_MIN_MIN:
            values["runtime"] = "long"
            phrases["runtime"] = str(rng.choice(["a long one is fine", "over two hours is ok",
                                                 "an epic length"]))
    rating = item.get("imdb_rating")
    if _known(rating) and rng.random() >= p_omit:
        if float(rating) >= ACCLAIMED_MIN:
            values["acclaim"] = "high"
            phrases["acclaim"] = str(rng.choice(PRAISE))
        elif float(rating) <= LOWBROW_MAX:
            values["acclaim"] = "low"
            phrases["acclaim"] = str(rng.choice(["a guilty pleasure", "so bad it's good",
                                                 "doesn't need great reviews"]))
    mpaa = item.get("mpaa")
    if isinstance(mpaa, str) and mpaa and rng.random() >= p_omit:
        values["mpaa"] = mpaa
        phrases["mpaa"] = f"rated {mpaa}"
    return Slots(**values), phrases, noise


def _want(phrases: dict[str, str]) -> str:
    """The request's noun phrase: "a highly rated crime and thriller movie from the 90s".

    Praise ("highly rated") goes before the genres; the low-brow forms ("a guilty pleasure")
    and the decade follow the noun.
    """
    acclaim = phrases.get("acclaim", "")
    praise = acclaim if acclaim in PRAISE else ""
    head = " ".join(x for x in (praise, phrases.get("genres", "")) if x)
    noun = (("an " if head[0] in "aeiou" else "a ") + f"{head} movie") if head else "a good movie"
    tail = [phrases["decade"]] if "decade" in phrases else []
    if acclaim and not praise:
        tail.append(f"- {acclaim}")
    return " ".join([noun, *tail])


def _join_titles(titles: list[str]) -> str:
    return titles[0] if len(titles) == 1 else ", ".join(titles[:-1]) + " and " + titles[-1]


def _mention_form(row: dict, rng: np.random.Generator) -> str:
    title = str(row["title"])
    if _known(row.get("year")) and rng.random() < 0.25:
        return f"{title} ({int(row['year'])})"
    return title


def reveals(text: str, title: str) -> bool:
    """Whether `title` (normalised, as whole words) appears in `text` (normalised)."""
    key = normalize.normalize_title(title, keep_article=True)
    if not key:
        return False
    haystack = f" {normalize.normalize_title(text, keep_article=True)} "
    return f" {key} " in haystack or f" {normalize.normalize_title(title)} " in haystack


class DialogueSimulator:
    """Generates `Conversation`s from a leave-one-out `Split` and the corpus."""

    def __init__(self, corpus: pd.DataFrame, split: Split, seed: int = 0, p_omit: float = 0.25,
                 p_vague: float = 0.15, p_wrong: float = 0.08, max_tries: int = 8) -> None:
        for name, p in (("p_omit", p_omit), ("p_vague", p_vague), ("p_wrong", p_wrong)):
            if not 0 <= p <= 1:
                raise ValueError(f"{name} must be a probability, got {p}")
        self.items = corpus.set_index("item_id", drop=False)
        self.split, self.seed = split, seed
        self.p_omit, self.p_vague, self.p_wrong, self.max_tries = p_omit, p_vague, p_wrong, \
            max_tries
        self.report = SimulationReport()
        self._rows: dict[int, dict] = {}

    def _row(self, item_id: int) -> dict:
        if item_id not in self._rows:
            self._rows[item_id] = self.items.loc[item_id].to_dict()
        return self._rows[item_id]

    def dialogue(self, user: int, split_name: str, history: list[int], target: int,
                 position: int) -> Conversation | None:
        """One dialogue ending before `target`; None when its title cannot be kept out."""
        code = SPLITS.index(split_name)
        target_row = self._row(target)
        ratings = dict(zip(self.split.sequences[user], self.split.ratings[user]))
        for attempt in range(self.max_tries):
            rng = np.random.default_rng([self.seed, user, code, position, attempt])
            recent = [i for i in history[-10:] if not reveals(str(self._row(i)["title"]),
                                                                str(target_row["title"]))]
            if not recent:
                return None
            liked = sorted(recent, key=lambda i: (-ratings.get(i, 0), -history.index(i)))
            top = [i for i in liked if ratings.get(i, 0) >= 4] or liked[:1]
            n = min(len(top), int(rng.integers(1, 4)))
            mentioned = [top[k] for k in sorted(rng.choice(len(top), size=n, replace=False))]
            slots, phrases, noise = draw_slots(target_row, rng, self.p_omit, self.p_vague,
                                               self.p_wrong)
            names = [_mention_form(self._row(i), rng) for i in mentioned]
            turns = self._turns(names, phrases, rng)
            text = " ".join(t.text for t in turns)
            if not any(reveals(text, t) for t in [target_row["title"],
                                                   *list(target_row["alt_titles"])]):
                return Conversation(
                    conversation_id=f"ml-{split_name}-u{user}-p{position}",
                    turns=tuple(turns), history=tuple(history), targets=(target,),
                    source=f"movielens-sim/{split_name}", user_id=user,
                    meta={"mentioned": mentioned, "slots": slots.as_dict(), "noise": noise},
                )
        return None

    def _turns(self, names: list[str], phrases: dict[str, str],
               rng: np.random.Generator) -> list[Turn]:
        pick = lambda options: str(options[int(rng.integers(len(options)))])  # noqa: E731
        opener = pick(OPENERS).format(m=_join_titles(names))
        first = {k: v for k, v in phrases.items() if k in ("genres", "decade", "acclaim")}
        later = {k: v for k, v in phrases.items() if k not in first}
        turns = [Turn("recommender", pick(GREETINGS)), Turn("seeker", opener),
                 Turn("recommender", pick(ASKS)),
                 Turn("seeker", pick(REQUESTS).format(w=_want(first)))]
        if later:
            turns += [Turn("recommender", pick(FOLLOW_UPS)),
                      Turn("seeker", _sentence(", and ".join(later.values())))]
        elif rng.random() < 0.5:
            turns += [Turn("recommender", pick(FOLLOW_UPS)), Turn("seeker", pick(NOTHING_MORE))]
        else:
            turns += [Turn("recommender", pick(MORE_QUESTIONS).format(m=names[0])),
                      Turn("seeker", pick(MORE_ANSWERS))]
        return turns

    def generate(self, split_name: str, users: list[int] | None = None,
                 per_user: int = 1, progress: bool = True) -> list[Conversation]:
        """Dialogues of one split. `per_user` applies to "train" (targets drawn from the
        user's training sequence, history at least one item); valid/test have one per user."""
        if split_name not in SPLITS:
            raise ValueError(f"split must be one of {SPLITS}, got {split_name!r}")
        out = []
        for user in tqdm(users or self.split.users, desc=f"simulating {split_name}",
                         disable=not progress):
            for history, target, position in self._cases(user, split_name, per_user):
                conversation = self.dialogue(user, split_name, history, target, position)
                if conversation is None:
                    self.report.skipped_title_leak += 1
                else:
                    out.append(conversation)
        self.report.by_split[split_name] = len(out)
        return out

    def _cases(self, user: int, split_name: str, per_user: int):
        seq = self.split.sequences[user]
        if split_name == "test":
            return [(seq[:-1], seq[-1], len(seq) - 1)]
        if split_name == "valid":
            return [(seq[:-2], seq[-2], len(seq) - 2)]
        train = self.split.train_sequence(user)
        rng = np.random.default_rng([self.seed, user, SPLITS.index("train")])
        positions = np.arange(1, len(train))
        chosen = np.sort(rng.choice(positions, size=min(per_user, positions.size),
                                    replace=False))
        return [(train[:p], train[p], int(p)) for p in chosen]


def _sentence(text: str) -> str:
    text = text.strip()
    return (text[0].upper() + text[1:] + ".") if text else text


@dataclass(frozen=True)
class SlotColumns:
    """The columns `consistent_mask` reads, extracted once for many calls: a multi-hot genre
    matrix (items x genres) and the year, runtime, rating and MPAA arrays."""

    genre_index: dict[str, int]
    genres: np.ndarray  # bool (n_items, n_genres)
    years: np.ndarray
    runtime: np.ndarray
    rating: np.ndarray
    mpaa: np.ndarray  # str ("" when unknown)
    mpaa_known: np.ndarray  # bool

    @classmethod
    def of(cls, items: pd.DataFrame) -> SlotColumns:
        genre_lists = [list(g) for g in items["genres"]]
        index = {g: n for n, g in enumerate(sorted({g for gs in genre_lists for g in gs}))}
        genres = np.zeros((len(genre_lists), len(index)), dtype=bool)
        for row, gs in enumerate(genre_lists):
            genres[row, [index[g] for g in gs]] = True
        mpaa = items["mpaa"].astype(object).to_numpy()
        known = np.array([isinstance(m, str) for m in mpaa], dtype=bool)
        return cls(index, genres, items["year"].astype("float64").to_numpy(),
                   items["runtime_min"].astype("float64").to_numpy(),
                   items["imdb_rating"].astype("float64").to_numpy(),
                   np.where(known, mpaa, "").astype(str), known)


def consistent_mask(slots: dict, items: pd.DataFrame | SlotColumns) -> np.ndarray:
    """Which `items` (corpus rows, or their `SlotColumns`) are consistent with stated `slots`
    (a `Slots.as_dict()`).

    A slot an item has no data for (unknown runtime, rating or MPAA) does not rule it out.
    """
    columns = items if isinstance(items, SlotColumns) else SlotColumns.of(items)
    mask = np.ones(len(columns.years), dtype=bool)
    if slots.get("genres"):
        wanted = [columns.genre_index.get(g) for g in set(slots["genres"])]
        if any(w is None for w in wanted):  # a genre no item has
            return np.zeros(len(columns.years), dtype=bool)
        mask &= columns.genres[:, wanted].all(axis=1)
    years = columns.years
    if slots.get("decade") is not None:
        mask &= (years >= slots["decade"]) & (years < slots["decade"] + 10)
    if slots.get("era") == "older":
        mask &= years < OLDER_BEFORE
    if slots.get("era") == "recent":
        mask &= years >= RECENT_FROM
    if slots.get("runtime") == "short":
        mask &= ~(columns.runtime > SHORT_MAX_MIN)
    if slots.get("runtime") == "long":
        mask &= ~(columns.runtime < LONG_MIN_MIN)
    if slots.get("acclaim") == "high":
        mask &= ~(columns.rating < ACCLAIMED_MIN)
    if slots.get("acclaim") == "low":
        mask &= ~(columns.rating > LOWBROW_MAX)
    if slots.get("mpaa"):
        mask &= ~columns.mpaa_known | (columns.mpaa == slots["mpaa"])
    return mask


def narrowing(conversations: list[Conversation], corpus: pd.DataFrame,
              catalogue: np.ndarray) -> pd.DataFrame:
    """How much the seeker's words narrow the search, per conversation.

    Columns: `conversation_id`; `by_history` (catalogue items not yet in the history: all the
    history alone leaves open); `by_words` (of those, how many are consistent with the stated
    slots); `by_words_corpus` (consistent items in the whole corpus); `target_consistent` (False
    when noise made a slot exclude the target); `n_slots` stated.
    """
    items = corpus.set_index("item_id", drop=False).loc[catalogue]
    in_catalogue, in_corpus = SlotColumns.of(items), SlotColumns.of(corpus)
    rows = []
    for c in conversations:
        slots = c.meta["slots"]
        open_items = ~np.isin(items["item_id"].to_numpy(), list(c.history))
        mask = consistent_mask(slots, in_catalogue)
        target_pos = np.searchsorted(catalogue, c.targets[0])
        rows.append({
            "conversation_id": c.conversation_id,
            "by_history": int(open_items.sum()),
            "by_words": int((open_items & mask).sum()),
            "by_words_corpus": int(consistent_mask(slots, in_corpus).sum()),
            "target_consistent": bool(mask[target_pos]),
            "n_slots": sum(bool(v) for v in slots.values()),
        })
    return pd.DataFrame(rows)


_WORD = re.compile(r"[a-z0-9']+")


def slot_coverage(conversations: list[Conversation]) -> pd.Series:
    """Share of conversations that state each slot."""
    keys = ("genres", "decade", "era", "runtime", "acclaim", "mpaa")
    return pd.Series({k: float(np.mean([bool(c.meta["slots"].get(k)) for c in conversations]))
                      for k in keys})


def dialogue_stats(conversations: list[Conversation]) -> pd.DataFrame:
    """Per conversation: `turns`, `seeker_words`, `words`, `mentioned` movies."""
    return pd.DataFrame({
        "turns": [len(c.turns) for c in conversations],
        "seeker_words": [len(_WORD.findall(c.seeker_text().lower())) for c in conversations],
        "words": [len(_WORD.findall(c.text(False).lower())) for c in conversations],
        "mentioned": [len(c.meta.get("mentioned", c.history)) for c in conversations],
    })


@dataclass
class SimulatedSets:
    """The simulated train/valid/test conversations and the split they were drawn from."""

    train: list[Conversation]
    valid: list[Conversation]
    test: list[Conversation]
    split: Split
    report: SimulationReport


def simulated_sets(corpus: pd.DataFrame, seed: int = 0, n_users: int | None = None,
                   train_per_user: int = 5, progress: bool = True,
                   **noise: float) -> SimulatedSets:
    """Simulate every split for the first `n_users` users (all when None) of the 5-core
    MovieLens split. `noise` passes `p_omit`, `p_vague`, `p_wrong` to `DialogueSimulator`."""
    from rar_lite.data.interactions import leave_one_out, load_interactions

    split = leave_one_out(load_interactions(corpus))
    users = split.users[:n_users] if n_users else split.users
    simulator = DialogueSimulator(corpus, split, seed=seed, **noise)
    sets = {name: simulator.generate(name, users, per_user=train_per_user, progress=progress)
            for name in ("train", "valid", "test")}
    return SimulatedSets(**sets, split=split, report=simulator.report)
