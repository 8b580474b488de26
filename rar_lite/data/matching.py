"""Resolve a free-text movie name, as an LLM or a person writes it, to a corpus item or to nothing.

`TitleMatcher(corpus).resolve("1. The Usual Suspects (1995).")` returns a `Match` with the item id;
an invented title returns None, so that it counts as a hallucination rather than as the nearest
string. Resolution order:

1. clean the text: list numbering and bullets, quotes and markdown emphasis, trailing
   punctuation, a description after the title ("Heat (1995) - a heist thriller");
2. read a year if one is given ("(1995)", "(1995 film)", a trailing "1995");
3. exact lookup of the normalised title (`rar_lite.data.normalize`) among every item's title and
   alternate titles; with a year, only items within one year of it qualify (so "Joker (2019)"
   never resolves to an older "Joker"); without one, the better-known movie wins ("Titanic" is
   the 1997 film);
4. else a fuzzy lookup (rapidfuzz `ratio` >= `FUZZY_CUTOFF` on keys of 5+ characters) for typos.
"""

from __future__ import annotations

import bisect
import hashlib
import json
import math
import re
import sys
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
from rapidfuzz import fuzz, process
from tqdm.auto import tqdm

from rar_lite.data import normalize

#: Names longer than this are not titles (an LLM's paragraph): they resolve to nothing.
MAX_NAME_CHARS = 300
_SURROGATE = re.compile("[\ud800-\udfff]")
#: Minimum rapidfuzz ratio (0-100) for a typo-tolerant match.
FUZZY_CUTOFF = 90.0
#: Keys shorter than this are never fuzzy-matched: one letter changes a short title into another.
FUZZY_MIN_CHARS = 5
#: How many IMDb votes one MovieLens rating is worth when ranking same-titled movies by fame.
VOTES_PER_RATING = 300

_LIST_MARKER = re.compile(r"^\s*(?:\(?\d{1,3}[.)\]:]|#\d{1,3}|[-*•·>]+)\s+")
_EMPHASIS = re.compile(r"^[\s\"'“”‘’*_`]+|[\s\"'“”‘’*_`]+$")
_YEAR_PAREN = re.compile(r"^(?P<title>.*?)\s*[(\[](?P<year>(?:18|19|20)\d\d)(?:\s*film)?[)\]]")
_YEAR_TRAILING = re.compile(r"^(?P<title>.+?)[\s,]+(?P<year>(?:19|20)\d\d)$")
_DESCRIPTION = re.compile(r"\s+(?:[-–—]|:)\s+.*$")
_TRAILING_PUNCT = re.compile(r"[\s.,;:!?]+$")
_DIGITS = re.compile(r"\d+")


@dataclass(frozen=True)
class Match:
    """A resolved name: the item, how sure (0-100) and how it was found (exact or fuzzy)."""

    item_id: int
    title: str
    year: int | None
    score: float
    method: str


def _clean(text: str) -> str:
    """Remove list markers, quotes and emphasis (in any nesting order) and collapse spaces."""
    text = " ".join(text.split())
    previous = None
    while text != previous:
        previous = text
        text = _EMPHASIS.sub("", _LIST_MARKER.sub("", text))
    return text


def parse_name(text: str) -> list[tuple[str, int | None]]:
    """Readings of a written name as (title, year or None), most likely first.

    Numbers and dashes are ambiguous ("Fantasia 2000" is a title, "Heat 1995" a title and a year;
    "Star Wars: Episode II - Attack of the Clones" has a dash, "Heat - a heist thriller" a
    description), so every plausible reading is returned and the matcher tries them in order.

    >>> parse_name('2. **Heat (1995)** - a heist thriller.')[0]
    ('Heat', 1995)
    """
    text = _clean(text)
    readings: list[tuple[str, int | None]] = []
    match = _YEAR_PAREN.match(text)
    if match and match.group("title").strip():
        # A year in parentheses is explicit: no reading ignores it ("Joker (2019)" must not
        # become an older "Joker").
        title, year = match.group("title"), int(match.group("year"))
        readings += [(title, year), (_DESCRIPTION.sub("", title), year)]
    else:
        text = _TRAILING_PUNCT.sub("", text)
        match = _YEAR_TRAILING.match(text)
        if match:
            readings.append((match.group("title"), int(match.group("year"))))
        readings += [(text, None), (_DESCRIPTION.sub("", text), None)]
    cleaned = [(_TRAILING_PUNCT.sub("", _clean(title)).strip(), year) for title, year in readings]
    return [reading for reading in dict.fromkeys(cleaned) if reading[0]]


def _numbers(key: str) -> list[str]:
    """The numbers in a key, in order (sequel numbers, years in titles)."""
    return _DIGITS.findall(key)


Index = dict[str, list[int]]  # normalised key -> row positions


def _build_index(corpus: pd.DataFrame) -> tuple[Index, Index]:
    """(exact keys, fuzzy keys) -> row positions over every title and alternate title."""
    by_key: Index = defaultdict(list)
    fuzzy_index: Index = defaultdict(list)
    for position, (catalogue, title, alternates) in enumerate(
        zip(corpus["catalogue_title"], corpus["title"], corpus["alt_titles"])
    ):
        names = [catalogue, title, *list(alternates)]
        for key in dict.fromkeys(k for name in names for k in normalize.title_keys(name)):
            by_key[key].append(position)
        # Typos can hit the article ("Th Terminator"): fuzzy search also sees the title with its
        # article kept.
        for key in {*normalize.title_keys(title), normalize.normalize_title(title, True)}:
            fuzzy_index[key].append(position)
    return dict(by_key), dict(fuzzy_index)


def _index_path(corpus: pd.DataFrame) -> Path:
    """Where the key index of `corpus` is cached (JSON, keyed by its names and by this code:
    building it normalises ~150k names, ~3 s; reading it back ~0.2 s)."""
    from rar_lite import cache

    digest = hashlib.sha256()
    for column in ("catalogue_title", "title"):
        digest.update(pd.util.hash_pandas_object(corpus[column].astype(str), index=False)
                      .to_numpy().tobytes())
    digest.update("\x1e".join("\x1f".join(map(str, a)) for a in corpus["alt_titles"]).encode())
    key = cache.fingerprint(len(corpus), digest.hexdigest(),
                            cache.code_version(normalize, sys.modules[__name__]))
    return cache.cache_dir() / "titles" / f"index-{key}.json"


def _read_index(path: Path) -> tuple[Index, Index] | None:
    """The cached index at `path`, or None when missing or unreadable (then it is rebuilt)."""
    try:
        by_key, fuzzy_index = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError, TypeError):
        return None
    if not (isinstance(by_key, dict) and isinstance(fuzzy_index, dict)):
        return None
    return by_key, fuzzy_index


class TitleMatcher:
    """Name -> corpus item resolver over every title and alternate title of a corpus.

    `corpus` needs the columns `item_id`, `title`, `catalogue_title`, `alt_titles`, `year`,
    `imdb_votes` and `n_ratings` (see `rar_lite.data.corpus`).
    """

    def __init__(self, corpus: pd.DataFrame, use_cache: bool = True) -> None:
        self._ids = corpus["item_id"].to_numpy()
        self._titles = corpus["title"].astype(str).to_numpy()
        self._years = corpus["year"].astype("float64").to_numpy()  # NaN where unknown
        self._position = {int(i): p for p, i in enumerate(self._ids)}
        self._fame = (corpus["imdb_votes"].astype("float64").fillna(0).to_numpy()
                      + VOTES_PER_RATING * corpus["n_ratings"].to_numpy())
        path = _index_path(corpus) if use_cache else None
        found = _read_index(path) if path is not None else None
        self._by_key, self._fuzzy_index = found or _build_index(corpus)
        if path is not None and found is None:
            from rar_lite import cache

            cache.write_text_atomic(path, json.dumps([self._by_key, self._fuzzy_index]))
        # Fuzzy keys sorted by length: a ratio >= FUZZY_CUTOFF bounds the length ratio of the
        # two strings, so each query only scans a narrow length window (~10x fewer keys).
        self._fuzzy_keys = sorted((k for k in self._fuzzy_index if len(k) >= FUZZY_MIN_CHARS),
                                  key=len)
        self._fuzzy_lengths = [len(k) for k in self._fuzzy_keys]

    def __len__(self) -> int:
        return len(self._ids)

    def resolve(self, text: object, fuzzy: bool = True) -> Match | None:
        """The corpus item `text` names, or None (empty, not a string, too long, or unknown).

        `fuzzy=False` turns the typo fallback off (for canonical names, e.g. a dataset's).
        """
        if not isinstance(text, str) or not text.strip() or len(text) > MAX_NAME_CHARS:
            return None
        text = displayable(text)
        parsed = parse_name(text)
        readings = [(normalize.title_keys(title), year) for title, year in parsed]
        for keys, year in readings:
            positions = {p for key in keys for p in self._by_key.get(key, ())}
            best = self._choose(positions, year)
            if best is not None:
                return self._match(best, year, 100.0, "exact")
        if not fuzzy:
            return None
        for (keys, year), (title, _) in zip(readings, parsed):
            for key in dict.fromkeys([*keys, normalize.normalize_title(title, True)]):
                if len(key) < FUZZY_MIN_CHARS:
                    continue
                found = process.extractOne(key, self._length_window(len(key)),
                                           scorer=fuzz.ratio, score_cutoff=FUZZY_CUTOFF)
                if found is None or _numbers(found[0]) != _numbers(key):
                    continue  # "Jeepers Creepers 3" is not a typo of "Jeepers Creepers 2"
                best = self._choose(set(self._fuzzy_index[found[0]]), year)
                if best is not None:
                    return self._match(best, year, float(found[1]), "fuzzy")
        return None

    def resolve_many(self, texts: Iterable[object], progress: bool = False) -> list[Match | None]:
        """`resolve` for each text, with an optional progress bar."""
        texts = list(texts)
        return [self.resolve(t) for t in tqdm(texts, disable=not progress, desc="resolving")]

    def fame(self, item_id: int) -> float:
        """How well known an item is: IMDb votes + VOTES_PER_RATING x MovieLens ratings."""
        return float(self._fame[self._position[item_id]])

    def is_ambiguous(self, title: str) -> bool:
        """Whether several corpus items share `title`'s main key (a year is then needed)."""
        keys = normalize.title_keys(title)
        return bool(keys) and len(self._by_key.get(keys[0], ())) > 1

    def _length_window(self, length: int) -> list[str]:
        """Fuzzy keys whose length allows ratio >= FUZZY_CUTOFF against a key of `length`.

        ratio = 2 * matches / (len_a + len_b) and matches <= min(len_a, len_b), so the shorter
        string must be at least f / (2 - f) of the longer one, with f = FUZZY_CUTOFF / 100.
        """
        factor = (FUZZY_CUTOFF / 100) / (2 - FUZZY_CUTOFF / 100)
        low = bisect.bisect_left(self._fuzzy_lengths, math.ceil(length * factor - 1e-9))
        high = bisect.bisect_right(self._fuzzy_lengths, math.floor(length / factor + 1e-9))
        return self._fuzzy_keys[low:high]

    def _choose(self, positions: set[int], year: int | None) -> int | None:
        """Best row among `positions`: nearest year (within one) when a year is given, then fame."""
        if not positions:
            return None
        ranked = []
        for p in positions:
            gap = 0.0 if year is None else abs(self._years[p] - year)
            if year is not None and not gap <= 1:  # NaN (unknown year) fails too
                continue
            ranked.append((gap, -self._fame[p], int(self._ids[p]), p))
        return min(ranked)[3] if ranked else None

    def _match(self, position: int, year: int | None, score: float, method: str) -> Match:
        item_year = self._years[position]
        gap = 0.0 if year is None or np.isnan(item_year) else abs(item_year - year)
        return Match(
            item_id=int(self._ids[position]),
            title=str(self._titles[position]),
            year=None if np.isnan(item_year) else int(item_year),
            score=float(score - 5.0 * gap),
            method=method,
        )


#: Capitalised words that start requests rather than name movies ("I loved Heat...").
_NOT_TITLES = frozenset("""i i'm im i've i'd hi hello hey thanks thank please something
    anything maybe also but and so my me we you yes no ok okay can could would what any some
    like love loved it this that not too really very recommend looking want need
    movie movies film films watch""".split())
_CONNECTOR = r"(?:of|the|a|an|and|in|on|to|for|at|by|with|from|&|-)"
_WORD = r"[A-Z0-9][\w'’:-]*"  # no "." "!" "?": a sentence's end is a title's end
_SPAN = re.compile(rf"\b{_WORD}(?:\s+(?:{_CONNECTOR}\s+)*{_WORD})*(?:\s*\((?:18|19|20)\d\d\))?")
_QUOTED = re.compile(r"\"([^\"]{1,120})\"|“([^”]{1,120})”")
_SPLIT = re.compile(r"\s*(?:,|\band\b|\bwith\b|&)\s*")


@dataclass(frozen=True)
class Mentions:
    """The movies a free text names: resolved items in order of mention, and the title-like
    phrases that resolved to no corpus movie (reported, never guessed)."""

    items: list[int]
    unknown: list[str]


def find_titles(text: str, matcher: TitleMatcher) -> Mentions:
    """The corpus movies `text` names. Candidates are quoted phrases (resolved with the typo
    fallback) and runs of capitalised words, optionally with a "(year)" (resolved exactly, the
    whole run first, then its parts split at commas, "and" and "with"). A phrase that resolves to
    nothing is reported in `unknown` when it is quoted, carries a year or stands inside a
    sentence; capitalised words that open a sentence or a request ("I", "Something") are not."""
    items: list[int] = []
    unknown: list[str] = []
    taken: list[tuple[int, int]] = []

    def add(found: Match | None) -> bool:
        if found is not None and found.item_id not in items:
            items.append(found.item_id)
        return found is not None

    for match in _QUOTED.finditer(text):
        phrase = (match.group(1) or match.group(2)).strip()
        taken.append(match.span())
        if phrase and not add(matcher.resolve(phrase)):
            unknown.append(phrase)
    for match in _SPAN.finditer(text):
        start, end = match.span()
        if any(a <= start < b for a, b in taken):
            continue
        phrase = match.group(0).strip(" .,!?;:")
        words = phrase.split()
        opens = not text[:start].strip() or text[:start].rstrip()[-1] in ".!?"
        while words and words[0].lower().strip(".,!?") in _NOT_TITLES:
            words, opens = words[1:], False  # "I", "Something"... then a phrase inside it
        phrase = " ".join(words)
        if not phrase or add(matcher.resolve(phrase, fuzzy=False)):
            continue
        parts = [part for part in _SPLIT.split(phrase) if part] or [phrase]
        missed = [part for part in parts if len(parts) == 1
                  or not add(matcher.resolve(part, fuzzy=False))]
        if phrase.endswith(")") or not opens:  # a year, or inside a sentence: say so
            unknown += missed
    return Mentions(items, list(dict.fromkeys(unknown)))


def perturb_name(title: str, year: int | None, rng: np.random.Generator,
                 needs_year: bool = False) -> str:
    """A name as a person or an LLM might write `title`: one or two random perturbations among
    case, article moved to the end or dropped, accents stripped, one typo (long titles only),
    list numbering, emphasis, trailing punctuation; plus the year in one of its written forms when
    `needs_year` (the title is shared by several movies) or by chance.
    """
    def article_moved(t: str) -> str:
        head, _, rest = t.partition(" ")
        return f"{rest}, {head}" if rest and head.lower() in {"the", "a", "an"} else t

    def article_dropped(t: str) -> str:
        head, _, rest = t.partition(" ")
        return rest if rest and head.lower() in {"the", "a", "an"} else t

    def typo(t: str) -> str:
        if sum(ch.isalnum() for ch in t) < 12:  # one typo in a short title makes another title
            return t
        i = int(rng.integers(2, len(t) - 2))
        if rng.random() < 0.5:
            return t[:i] + t[i + 1:]  # deletion
        return t[:i] + t[i + 1] + t[i] + t[i + 2:]  # transposition

    edits = [str.lower, article_moved, article_dropped, normalize.strip_accents, typo,
             lambda t: f"{int(rng.integers(1, 11))}. {t}", lambda t: f"**{t}**",
             lambda t: f"{t}."]
    name = title
    for k in rng.choice(len(edits), size=int(rng.integers(1, 3)), replace=False):
        name = edits[int(k)](name)
    if name == title:  # the drawn edits did not apply (no article, no accent, short title)
        name = str.lower(name) if name != name.lower() else f"{name}."
    if year is not None and (needs_year or rng.random() < 0.3):
        form = int(rng.integers(0, 3))
        name = (f"{name} ({year})", f"{name} {year}", f"{name} ({year} film)")[form]
    return name


def round_trip(matcher: TitleMatcher, corpus: pd.DataFrame, n: int = 1000,
               seed: int = 0) -> pd.DataFrame:
    """Perturb the titles of `n` random linked items and resolve them back.

    Returns one row per item: `item_id`, `title`, `name` (the perturbed form), `resolved_id`
    (Int64, <NA> when unresolved) and `ok` (resolved to the same item).
    """
    rng = np.random.default_rng(seed)
    linked = corpus[corpus["sources"].str.contains("imdb") & corpus["movielens_id"].notna()]
    sample = linked.iloc[rng.choice(len(linked), size=min(n, len(linked)), replace=False)]
    rows = []
    for item in sample.itertuples(index=False):
        year = None if pd.isna(item.year) else int(item.year)
        name = perturb_name(item.title, year, rng, needs_year=matcher.is_ambiguous(item.title))
        found = matcher.resolve(name)
        resolved = pd.NA if found is None else found.item_id
        rows.append({"item_id": int(item.item_id), "title": item.title, "name": name,
                     "resolved_id": resolved, "ok": found is not None
                     and found.item_id == item.item_id})
    frame = pd.DataFrame(rows)
    frame["resolved_id"] = frame["resolved_id"].astype("Int64")
    return frame


def displayable(text: str) -> str:
    """`text` with lone surrogates (the undecodable bytes of a non-UTF-8 command-line argument
    or file name) replaced by U+FFFD, so that it can be printed, stored and compared."""
    return _SURROGATE.sub("\ufffd", text)


def explain(matcher: TitleMatcher, names: Iterable[object]) -> pd.DataFrame:
    """A table of names and what they resolve to (for the book): `name`, `item_id`, `title`,
    `year`, `method`, `score`; unresolved names have empty fields."""
    rows = []
    for name in names:
        found = matcher.resolve(name)
        shown = displayable(name) if isinstance(name, str) else name
        rows.append({"name": shown, **({} if found is None else {
            "item_id": found.item_id, "title": found.title, "year": found.year,
            "method": found.method, "score": round(found.score, 1)})})
    frame = pd.DataFrame(rows, columns=["name", "item_id", "title", "year", "method", "score"])
    return frame.astype({"item_id": "Int64", "year": "Int64"})
