"""What seekers talk about before a recommendation, measured on real dialogue, and simulated
requests that talk about the same things in the same proportions.

Chapter 4's reranker learns from `rar_lite.data.simulate`'s requests, which state slots (genres,
decade, runtime, rating). Real seekers (INSPIRED) speak of other things too: actors and
directors, films they liked, what a film should be about, how it should feel, what they dislike.
A reranker that has only read slots does not read them. This module

- measures, per recommendation turn, which *topics* the seeker's words touch (`topics`,
  `topic_shares`): genre, person (a cast, director or writer name of the corpus), film (a film
  they mention), era, mood, plot and dislike. The lexicons below are hand-written, small and
  documented; they are checked against INSPIRED's *dev* dialogues only;
- simulates short requests (`simulated_requests`) whose seeker mentions each topic with a given
  probability (the measured share), with facts drawn from the target's own card: its director,
  cast and writer (Wikidata), genres, decade, a mood and a plot element its genre implies (the
  cards carry no plot text), a liked film that shares a director or actor with it, and a
  disliked genre it does not have. Several phrasings per fact.

The simulator is separate from `rar_lite.data.simulate`, so the simulated sets of chapters 2-5 (and
their caches) do not change; it is opt-in.
"""

from __future__ import annotations

import re
import weakref
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import TypeVar, cast

import numpy as np
import pandas as pd

from rar_lite.data import normalize
from rar_lite.data.conversations import Conversation, Turn
from rar_lite.data.corpus import CARD_CAST, _listed
from rar_lite.data.simulate import GENRE_WORDS, OLDER_BEFORE, RECENT_FROM, reveals

#: The topics, in table order.
TOPICS: tuple[str, ...] = ("genre", "person", "film", "era", "mood", "plot", "dislike")

#: Hand-written. How a corpus genre is spoken in a request (before "movie"/"film"); the first
#: word of `simulate.GENRE_WORDS` except where that word reads as another topic ("romantic" is a
#: mood) or a companion ("family" watching). Genres not listed are never spoken.
SPOKEN_GENRE: dict[str, str] = {
    **{genre: plain for genre, (plain, _) in GENRE_WORDS.items()},
    "Romance": "romance", "Children": "kids", "Film-Noir": "film noir",
    "Biography": "biographical", "History": "historical", "Sport": "sports", "Family": "family",
}
#: Hand-written synonyms and plurals seekers use for genres (besides `SPOKEN_GENRE`).
GENRE_SYNONYMS: tuple[str, ...] = (
    "comedies", "dramas", "thrillers", "westerns", "musicals", "mysteries", "romances",
    "documentaries", "docs", "adventures", "fantasies", "horrors", "action movies", "scifi",
    "science fiction", "sci fi", "rom com", "rom coms", "romcom", "romcoms", "romantic comedy",
    "romantic comedies", "animation", "cartoon", "cartoons", "anime", "superhero", "superheroes",
    "superhero movie", "superhero movies", "comic book movies", "biopic", "biopics",
    "true crime", "noir", "film noirs", "christmas movie", "christmas movies", "holiday movies",
    "disney movies", "slasher", "zombie movies",
)
#: Genre words that are also everyday words ("my family", "a war"): a genre only before a noun.
_NEEDS_NOUN = frozenset({"war", "family", "kids", "sports", "historical"})
_NOUNS = ("movie", "movies", "film", "films", "flick", "flicks")
#: Hand-written mood lexicon: how a film should feel.
MOOD_WORDS: tuple[str, ...] = (
    "funny", "hilarious", "laugh", "laughs", "humor", "humour", "humorous", "witty", "fun",
    "silly", "goofy", "light", "lighthearted", "light hearted", "feel good", "uplifting",
    "heartwarming", "heartfelt", "cute", "wholesome", "gentle", "scary", "creepy", "spooky",
    "frightening", "terrifying", "sad", "tearjerker", "cry", "depressing", "emotional", "touching",
    "moving", "dark", "gritty", "intense", "tense", "suspense", "suspenseful", "thrilling",
    "exciting", "gory", "violent", "romantic", "mushy", "cheesy", "mindless", "serious", "deep",
    "thought provoking", "inspiring", "inspirational", "epic", "magical", "mysterious",
    "puzzling", "quirky", "weird", "eye opening", "joyful", "cerebral", "mind bending",
)
#: Hand-written era lexicon (decades and years are matched by `_ERA_RE`). "new" counts only
#: before a noun ("new movies", "new release"); "recently" (when they watched) does not count.
ERA_WORDS: tuple[str, ...] = (
    "old", "older", "oldies", "classic", "classics", "vintage", "recent", "newer", "newest",
    "latest", "modern", "eighties", "nineties", "seventies", "sixties", "fifties", "forties",
    "this year", "last year", "came out", "new release", "new releases", "new movie",
    "new movies", "new film", "new films", "new one", "new ones", "old school",
)
_ERA_RE = re.compile(r"(?<![\w$])(?:'?\d0'?s|(?:19|20)\d0'?s|19[2-9]\d|20[0-2]\d)(?![\w])",
                     re.IGNORECASE)
#: Hand-written plot lexicon: words that speak of what happens in a film. "about" counts by
#: `_about_is_plot` ("a movie about", "is it about", not "how about you").
PLOT_WORDS: tuple[str, ...] = (
    "story", "stories", "storyline", "story line", "plot", "plots", "premise", "twist",
    "twists", "ending", "based on", "set in", "takes place", "characters", "character",
    "protagonist", "villain", "movie where", "movies where", "film where", "films where",
    "one where", "ones where", "concept",
)
_ABOUT_BEFORE = frozenset({"is", "was", "its", "it", "movie", "movies", "film", "films", "one",
                           "ones", "story", "stories", "something", "anything", "whats"})
_ABOUT_AFTER = frozenset({"a", "an", "the", "how", "people", "someone", "somebody", "his", "her",
                          "their", "two", "family", "life", "love", "real", "world", "kids"})
#: Hand-written dislike cues. What follows a cue in the same clause is what is disliked, so
#: genre and mood words there count as the dislike, not as a wish.
DISLIKE_CUES: tuple[str, ...] = (
    "dont like", "do not like", "didnt like", "did not like", "dont really like", "dislike",
    "not a fan", "not a big fan", "not much of a fan", "not really a fan", "hate", "hated",
    "not into", "not really into", "cant stand", "can not stand", "cannot stand", "dont enjoy",
    "didnt enjoy", "dont care for", "not interested in", "stray away from", "steer clear",
    "avoid", "not my thing", "not my genre", "dont want", "dont love", "not too fond",
)
_CLAUSE_RE = re.compile(r"[.!?;,:]+|\b(?:but|though|however|although|except|yet)\b",
                        re.IGNORECASE)
_TOKEN_RE = re.compile(r"[a-z0-9]+(?:'[a-z]+)?")


def tokens(text: str) -> list[str]:
    """Lowercase ASCII word tokens: accents dropped, a possessive "'s" dropped ("Nolan's" is
    "nolan"), other apostrophes removed ("don't" is "dont", as seekers often type it), hyphens
    split ("sci-fi" is "sci fi"). Names and lexicon phrases go through the same function, so
    they meet on whole words."""
    text = normalize.strip_accents(text).lower().replace("’", "'").replace("`", "'")
    return [t.removesuffix("'s").replace("'", "") for t in _TOKEN_RE.findall(text)]


def _phrases(words: Iterable[str]) -> frozenset[tuple[str, ...]]:
    return frozenset(tuple(tokens(w)) for w in words if tokens(w))


def _genre_phrases() -> frozenset[tuple[str, ...]]:
    words = list(GENRE_SYNONYMS)
    for spoken in SPOKEN_GENRE.values():
        words += [f"{spoken} {noun}" for noun in _NOUNS] if spoken in _NEEDS_NOUN else [spoken]
    return _phrases(words)


GENRE_PHRASES = _genre_phrases()
MOOD_PHRASES = _phrases(MOOD_WORDS)
ERA_PHRASES = _phrases(ERA_WORDS)
PLOT_PHRASES = _phrases(PLOT_WORDS)
DISLIKE_PHRASES = _phrases(DISLIKE_CUES)


def find_phrases(words: Sequence[str], phrases: frozenset[tuple[str, ...]],
                 max_len: int = 5) -> list[tuple[int, int]]:
    """(start, end) token spans of `phrases` in `words`, longest first at each position and
    not overlapping: a set lookup per n-gram, so a 100k-name set costs no more than a 10-word
    lexicon."""
    found, start = [], 0
    while start < len(words):
        for n in range(min(max_len, len(words) - start), 0, -1):
            if tuple(words[start:start + n]) in phrases:
                found.append((start, start + n))
                start += n
                break
        else:
            start += 1
    return found


def _about_is_plot(words: Sequence[str]) -> bool:
    """Whether an "about" speaks of a film's content ("a movie about", "what is it about",
    "about a heist") rather than small talk ("how about you", "about to")."""
    for k, word in enumerate(words):
        if word != "about":
            continue
        before = words[k - 1] if k else ""
        after = words[k + 1] if k + 1 < len(words) else ""
        if before in ("how", "what") or after in ("you", "yourself", "to"):
            continue
        if before in _ABOUT_BEFORE or after in _ABOUT_AFTER:
            return True
    return False


def _is_full_name(key: tuple[str, ...]) -> bool:
    """Whether a name (as tokens) can be matched in free text: two words or more, a two-word
    name without a one-letter word ("Plan B"), not starting with an article (bands in casts,
    "The Who", read as ordinary words)."""
    return (len(key) >= 2 and key[0] not in ("the", "a", "an")
            and (len(key) > 2 or min(map(len, key)) > 1))


@dataclass(frozen=True)
class TopicDetector:
    """The corpus-dependent part of topic detection: every cast, director and writer name of
    two words or more (one-word names such as "Prince" are ordinary words too), as token
    tuples, and the corpus' titles for the films a conversation mentions."""

    names: frozenset[tuple[str, ...]]
    max_name_len: int
    titles: dict[int, str]

    @classmethod
    def from_corpus(cls, corpus: pd.DataFrame) -> TopicDetector:
        names = set()
        for column in ("director", "writer", "cast"):
            for listed in corpus[column]:
                for name in _listed(listed):
                    key = tuple(tokens(name))
                    if _is_full_name(key):
                        names.add(key)
        return cls(frozenset(names), max((len(n) for n in names), default=2),
                   dict(zip(corpus["item_id"].astype(int), corpus["title"].astype(str))))

    def names_in(self, text: str) -> list[str]:
        """The corpus person names in `text` (longest match first, as token strings)."""
        words = tokens(text)
        return [" ".join(words[a:b])
                for a, b in find_phrases(words, self.names, self.max_name_len)]

    def films_in(self, text: str, items: Iterable[int]) -> list[int]:
        """Which of `items` (corpus ids) `text` names by title. A one-word title of up to four
        letters ("Us", "Her", "Up") counts only where it is capitalised as a title."""
        found = []
        for item in items:
            title = self.titles.get(int(item), "")
            if not reveals(text, title):
                continue
            if len(title) <= 4 and " " not in title and not re.search(
                    rf"(?<!\w){re.escape(title[:1].upper() + title[1:])}(?!\w)", text):
                continue
            found.append(int(item))
        return found

    def text_topics(self, text: str, items: Iterable[int] = ()) -> set[str]:
        """The topics `text` touches; `items` are the films the conversation mentions."""
        found: set[str] = set()
        wished: list[str] = []
        for clause in _CLAUSE_RE.split(text):
            words = tokens(clause)
            cue = find_phrases(words, DISLIKE_PHRASES)
            if cue:
                found.add("dislike")
                words = words[:cue[0][0]]
            wished += [*words, "|"]
        if find_phrases(wished, GENRE_PHRASES):
            found.add("genre")
        if find_phrases(wished, MOOD_PHRASES):
            found.add("mood")
        words = tokens(text)
        if _ERA_RE.search(text) or any(
                words[a:b] != ["old"] or a == 0 or words[a - 1] not in ("year", "years", "how")
                for a, b in find_phrases(words, ERA_PHRASES)):  # not "five year old"
            found.add("era")
        if find_phrases(words, PLOT_PHRASES) or _about_is_plot(words):
            found.add("plot")
        if self.names_in(text):
            found.add("person")
        if self.films_in(text, items):
            found.add("film")
        return found


T = TypeVar("T")
_BUILT: dict[tuple, tuple[weakref.ref, object]] = {}


def _once(corpus: pd.DataFrame, key: tuple, build: Callable[[], T]) -> T:
    """`build()`, kept while `corpus` (the same object, unchanged in place) lives: the lookups
    cost seconds to build over ~68k cards and are asked for once per call."""
    cached = _BUILT.get((id(corpus), *key))
    if cached is not None and cached[0]() is corpus:
        return cast(T, cached[1])
    for stale in [k for k, (ref, _) in _BUILT.items() if ref() is None]:
        del _BUILT[stale]
    value = build()
    _BUILT[(id(corpus), *key)] = (weakref.ref(corpus), value)
    return value


def detector_for(corpus: pd.DataFrame) -> TopicDetector:
    """The `TopicDetector` of `corpus`, built once per corpus object (under a second)."""
    return _once(corpus, ("detector",), lambda: TopicDetector.from_corpus(corpus))


def topics(conversation: Conversation, corpus: pd.DataFrame,
           detector: TopicDetector | None = None) -> set[str]:
    """The topics (`TOPICS`) the seeker's words touch in `conversation`, all seeker turns so
    far. "film" is a mentioned film (`history`) the seeker names; item ids refer to `corpus`."""
    detector = detector or detector_for(corpus)
    return detector.text_topics(conversation.seeker_text(), conversation.history)


def topic_shares(conversations: Sequence[Conversation], corpus: pd.DataFrame) -> pd.DataFrame:
    """Per topic (index, `TOPICS` order): `share` of the recommendation turns whose seeker
    words touch it (float) and `turns` (int), over `conversations` (ids refer to `corpus`)."""
    detector = detector_for(corpus)
    found = [topics(c, corpus, detector) for c in conversations]
    counts = [sum(topic in f for f in found) for topic in TOPICS]
    return pd.DataFrame({"share": [c / len(found) if found else float("nan") for c in counts],
                         "turns": counts}, index=pd.Index(TOPICS, name="topic"))


#: Shares `simulated_requests` uses when no measurement is given (a fresh clone has no dev
#: data): what `topic_shares` measured on INSPIRED's dev split (246 recommendation turns over
#: its corpus) on 2026-12-02, rounded.
DEFAULT_SHARES: dict[str, float] = {
    "genre": 0.78, "person": 0.187, "film": 0.516, "era": 0.272, "mood": 0.431, "plot": 0.358,
    "dislike": 0.134,
}

#: Hand-written. A mood each genre implies, as a seeker would say it.
MOOD_OF_GENRE: dict[str, tuple[str, ...]] = {
    "Action": ("exciting", "thrilling"), "Adventure": ("epic", "exciting"),
    "Animation": ("fun", "cute"), "Children": ("wholesome", "gentle"),
    "Comedy": ("funny", "light", "silly"), "Crime": ("gritty", "dark"),
    "Documentary": ("eye-opening", "thought-provoking"), "Drama": ("moving", "emotional"),
    "Fantasy": ("magical", "epic"), "Film-Noir": ("dark", "mysterious"),
    "Horror": ("scary", "creepy"), "Musical": ("joyful", "uplifting"),
    "Mystery": ("mysterious", "puzzling"), "Romance": ("romantic", "heartfelt"),
    "Sci-Fi": ("mind-bending", "cerebral"), "Thriller": ("tense", "suspenseful"),
    "War": ("intense", "serious"), "Western": ("gritty", "epic"),
    "Biography": ("inspiring", "moving"), "History": ("serious", "moving"),
    "Family": ("heartwarming", "wholesome"), "Sport": ("inspiring", "uplifting"),
}
#: Hand-written. A plot element each genre implies: the cards carry no plot text, so the plot a
#: simulated seeker asks for is one the target's genre makes likely.
PLOT_OF_GENRE: dict[str, tuple[str, ...]] = {
    "Action": ("a cop chasing the bad guys", "a mission that goes wrong"),
    "Adventure": ("a treasure hunt", "a long journey"),
    "Animation": ("talking animals", "toys that come alive"),
    "Children": ("kids going on a trip", "a lost pet finding its way home"),
    "Comedy": ("friends getting into trouble", "a wedding that goes wrong"),
    "Crime": ("a heist", "gangsters", "a murder investigation"),
    "Documentary": ("real events", "a true case"),
    "Drama": ("people going through hard times", "a family falling apart"),
    "Fantasy": ("wizards and dragons", "a quest for a lost kingdom"),
    "Film-Noir": ("a detective and a femme fatale", "a private eye"),
    "Horror": ("a haunted house", "a killer stalking teenagers"),
    "Musical": ("performers putting on a show", "a singer's big break"),
    "Mystery": ("a detective solving a case", "a disappearance"),
    "Romance": ("two people falling in love", "a love triangle"),
    "Sci-Fi": ("space travel", "time travel", "an alien invasion"),
    "Thriller": ("a conspiracy", "someone being hunted"),
    "War": ("soldiers at the front", "a mission behind enemy lines"),
    "Western": ("gunslingers on the frontier", "outlaws and a sheriff"),
    "Biography": ("the life of a famous person", "a real person's rise"),
    "History": ("events from the past", "a kingdom at a turning point"),
    "Family": ("a family sticking together", "siblings on a road trip"),
    "Sport": ("an underdog team", "a boxer's comeback"),
}

GREETINGS = ("Hi! What are you in the mood for?", "Hello! What kind of movie can I find you?",
             "Hey there, what would you like to watch?", "Hi, how can I help you today?")
FOLLOW_UPS = ("Got it. Anything else?", "Okay! Tell me more.", "Nice. What else matters?",
              "I see. Anything else I should know?")
#: Seeker phrasings per fact; each places its fact word at {x} ({a}: "a"/"an" before it).
PHRASES: dict[str, tuple[str, ...]] = {
    "genre": ("I'm in the mood for {a} {x} movie.", "I usually watch {x} films.",
              "Do you know a good {x} movie?", "I love {x} movies."),
    "director": ("Something by {x} would be great.", "I like movies directed by {x}.",
                 "{x} is one of my favourite directors.", "Anything from {x}?"),
    "actor": ("Something with {x} in it.", "I'm a big fan of {x}.",
              "I'd like a movie starring {x}.", "{x} is great, anything with them?"),
    "writer": ("I like films written by {x}.", "Something from the writer {x}.",
               "{x} writes great scripts."),
    "film": ("I loved {x}.", "I recently watched {x} and really liked it.",
             "{x} is one of my favourites.", "Something like {x} would be nice."),
    "era": ("Something from the {x}.", "Preferably made in the {x}.", "I'd like {a} {x} movie."),
    "era_vague": ("I'd like {a} {x} movie.", "Something {x}, if possible.",
                  "Preferably {a} {x} one."),
    "mood": ("I want something {x}.", "I'm in the mood for something {x}.",
             "Ideally it should feel {x}.", "Something {x} would be perfect tonight."),
    "plot": ("Maybe a story about {x}.", "I'd like one about {x}.",
             "Something where the plot involves {x}.", "A movie about {x} would be cool."),
    "dislike": ("I don't like {x} movies.", "I'm not a fan of {x} films.",
                "I'm not into {x} movies.", "I can't stand {x} films."),
    "none": ("Can you recommend me something to watch?", "I'm looking for a good movie tonight.",
             "Any recommendation? I'm open to anything.", "What should I watch tonight?"),
}
#: Hand-set: how often a named person is the card's actor, director or writer (renormalised
#: over the roles a card has). Most names INSPIRED's dev seekers use are actors'.
ROLE_WEIGHTS: dict[str, float] = {"actor": 0.6, "director": 0.3, "writer": 0.1}


def _people(row: Mapping) -> dict[str, list[str]]:
    """The card's people by role (the actors the card shows), full names only."""
    listed = {"director": _listed(row.get("director")),
              "actor": _listed(row.get("cast"))[:CARD_CAST],
              "writer": _listed(row.get("writer"))}
    return {role: [n for n in names if _is_full_name(tuple(tokens(n)))]
            for role, names in listed.items()}


class _Pool:
    """The cards requests are drawn from, and the facts each offers: its people and the films
    that share a director or shown actor with it ("siblings"). Only names and titles that touch
    no other topic and do not reveal the target's title are offered, so that what
    `topics` detects in a request is what was drawn."""

    def __init__(self, corpus: pd.DataFrame, items: Iterable[int] | None,
                 detector: TopicDetector) -> None:
        self.detector = detector
        columns = ["item_id", "title", "alt_titles", "year", "genres", "director", "writer",
                   "cast"]
        self.rows = {int(r["item_id"]): r for r in corpus[columns].to_dict("records")}
        self.by_person: dict[str, list[int]] = {}
        for item, row in self.rows.items():
            for name in self._linking(item):
                self.by_person.setdefault(name, []).append(item)
        self._clean: dict[str, bool] = {}
        wanted = set(self.rows) if items is None else {int(i) for i in items} & set(self.rows)
        self.targets = [i for i in sorted(wanted) if self._usable(i)]

    def _linking(self, item: int) -> list[str]:
        people = _people(self.rows[item])
        return list(dict.fromkeys([*people["director"], *people["actor"]]))

    def _offered(self, text: str, topic: str, item: int) -> bool:
        if text not in self._clean:
            self._clean[text] = self.detector.text_topics(text) <= {topic}
        row = self.rows[item]
        return self._clean[text] and not any(
            reveals(text, t) for t in [row["title"], *_listed(row["alt_titles"])])

    def people(self, item: int) -> dict[str, list[str]]:
        """The card's names a request may state, by role."""
        return {role: [n for n in names if self._offered(n, "person", item)]
                for role, names in _people(self.rows[item]).items()}

    def siblings(self, item: int, first: bool = False) -> list[int]:
        """Other films sharing a director or shown actor (sorted; only one with `first`)."""
        out = []
        for other in sorted({i for n in self._linking(item) for i in self.by_person[n]} - {item}):
            title = str(self.rows[other]["title"])
            if self._offered(title, "film", item) and self.detector.films_in(title, [other]):
                out.append(other)
                if first:
                    break
        return out

    def _usable(self, item: int) -> bool:
        row = self.rows[item]
        return (not pd.isna(row["year"]) and any(g in SPOKEN_GENRE for g in row["genres"])
                and any(self.people(item).values()) and bool(self.siblings(item, first=True)))


def _article(word: str) -> str:
    """"an" before a vowel sound ("an action", "an 80s"), else "a"."""
    return "an" if word[:1].lower() in "aeiou" or re.match(r"(18|8)\d*s?\b", word) else "a"


def _era_word(year: int, rng: np.random.Generator) -> str:
    decade = year // 10 * 10
    options = [f"{decade % 100:02d}s", f"{decade}s"]
    if year < OLDER_BEFORE:
        options.append("older")
    elif year >= RECENT_FROM:
        options.append("recent")
    return str(options[int(rng.integers(len(options)))])


class _Request:
    """One simulated request being drawn: the facts and their sentences."""

    def __init__(self, pool: _Pool, item: int, rng: np.random.Generator) -> None:
        self.pool, self.item, self.rng = pool, item, rng
        self.row = pool.rows[item]
        self.sentences: list[str] = []
        self.facts: dict[str, str | int] = {}
        self.history: list[int] = []

    def pick(self, options: Sequence[str]) -> str:
        return str(options[int(self.rng.integers(len(options)))])

    def say(self, kind: str, fact: str, key: str | None = None) -> None:
        template = self.pick(PHRASES[kind])
        sentence = template.format(x=fact, a=_article(fact))
        self.sentences.append(sentence[:1].upper() + sentence[1:])
        self.facts[key or kind] = fact

    def add(self, topic: str) -> None:
        """Add a sentence on `topic` with a fact of the target's card (every card of the pool
        offers one for each topic)."""
        genres = [g for g in self.row["genres"] if g in SPOKEN_GENRE]
        if topic == "genre":
            chosen = [genres[k] for k in sorted(self.rng.choice(
                len(genres), size=min(len(genres), int(self.rng.integers(1, 3))), replace=False))]
            self.say("genre", " and ".join(SPOKEN_GENRE[g] for g in chosen))
        elif topic == "person":
            people = self.pool.people(self.item)
            roles = [r for r in ROLE_WEIGHTS if people[r]]
            weights = np.array([ROLE_WEIGHTS[r] for r in roles])
            role = roles[int(self.rng.choice(len(roles), p=weights / weights.sum()))]
            self.say(role, self.pick(people[role]))
        elif topic == "film":
            siblings = self.pool.siblings(self.item)
            film = siblings[int(self.rng.integers(len(siblings)))]
            self.history.append(film)
            self.say("film", str(self.pool.rows[film]["title"]))
            self.facts["film_id"] = film
        elif topic == "era":
            era = _era_word(int(self.row["year"]), self.rng)
            self.say("era" if era[0].isdigit() else "era_vague", era, key="era")
        elif topic in ("mood", "plot"):
            table = MOOD_OF_GENRE if topic == "mood" else PLOT_OF_GENRE
            self.say(topic, self.pick([x for g in genres for x in table[g]]))
        elif topic == "dislike":
            others = sorted(set(SPOKEN_GENRE) - set(self.row["genres"]))
            self.say("dislike", SPOKEN_GENRE[self.pick(others)])


def _shares(shares: Mapping[str, float] | pd.DataFrame | pd.Series | None) -> dict[str, float]:
    """Each topic's probability from a mapping, a Series or `topic_shares`' frame (a topic not
    given is never mentioned)."""
    if shares is None:
        shares = DEFAULT_SHARES
    if isinstance(shares, pd.DataFrame):
        shares = shares["share"]
    out = {t: float(shares.get(t, 0.0)) for t in TOPICS}
    bad = {t: p for t, p in out.items() if not 0.0 <= p <= 1.0}
    if bad:
        raise ValueError(f"shares must be probabilities in [0, 1], got {bad}")
    return out


def simulated_requests(corpus: pd.DataFrame, n: int,
                       shares: Mapping[str, float] | pd.DataFrame | pd.Series | None = None,
                       seed: int = 0, items: Iterable[int] | None = None) -> list[Conversation]:
    """`n` short requests (a recommender question, the seeker's answer, sometimes a second
    exchange) for targets drawn (seeded) from the cards of `items` (default: the corpus).

    The seeker mentions each topic independently with probability `shares[topic]` (a mapping,
    or `topic_shares`' frame; default `DEFAULT_SHARES`), each fact from the target's card: a
    director, shown actor or writer; one or two genres; its decade or era; a mood and a plot
    element its genre implies; a liked film sharing a director or actor (put into `history`); a
    genre it lacks as a dislike. Targets are the cards that offer all of these (a year, a genre,
    a nameable person, a film sharing one), so the drawn share is the said share; the target's
    title never appears. `meta`: `topics` said, `facts` stated. Same seed, same list.
    """
    probabilities = _shares(shares)
    wanted = None if items is None else tuple(sorted({int(i) for i in items}))
    pool = _once(corpus, ("pool", wanted), lambda: _Pool(corpus, wanted, detector_for(corpus)))
    if not pool.targets:
        raise ValueError("no card of `items` has a year, a genre, a nameable director or actor "
                         "and another film sharing one")
    chosen = np.random.default_rng([seed, 0]).choice(pool.targets, size=n,
                                                     replace=n > len(pool.targets))
    out = []
    for k, item in enumerate(chosen.tolist()):
        rng = np.random.default_rng([seed, 1, k])
        said = [t for t in TOPICS if rng.random() < probabilities[t]]
        request = _Request(pool, int(item), rng)
        for topic in said:
            request.add(topic)
        order = rng.permutation(len(request.sentences)).tolist()
        sentences = [request.sentences[i] for i in order] or [request.pick(PHRASES["none"])]
        turns = [Turn("recommender", request.pick(GREETINGS))]
        if len(sentences) >= 3:
            cut = int(rng.integers(1, len(sentences)))
            turns += [Turn("seeker", " ".join(sentences[:cut])),
                      Turn("recommender", request.pick(FOLLOW_UPS)),
                      Turn("seeker", " ".join(sentences[cut:]))]
        else:
            turns.append(Turn("seeker", " ".join(sentences)))
        out.append(Conversation(
            conversation_id=f"seeker-sim-{seed}-{k}", turns=tuple(turns),
            history=tuple(request.history), targets=(int(item),), source="seeker-sim",
            meta={"topics": said, "facts": request.facts}))
    return out
