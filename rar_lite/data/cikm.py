"""Real conversational recommendation datasets in the format of He et al. (CIKM 2023).

ReDial, INSPIRED and Reddit-Movie are published as a directory with

- `test.jsonl`: one line per recommendation turn: `context` (utterances), `input` (the dialogue as
  "System: ..."/"User: ..." lines), `rec` (ground-truth entity ids), `prev_entity` (entity ids
  mentioned before), `dialog_id`, `turn_id`, ...;
- `entity2id.json`: entity name -> id; names are DBpedia URIs
  (`<http://dbpedia.org/resource/Water_(1985_film)>`, with or without a year hint) or, for
  Reddit-Movie, "Title (Year)";
- `item_ids.json`: the ids that are movies.

`load_cikm(directory, corpus)` turns every line into a `Conversation` and maps the dataset's movies
onto the corpus with `rar_lite.data.matching`; movies the corpus lacks are added to it as new items
carrying what the dataset knows (title, year when given) — RAR's point is that new items become
recommendable through retrieval. Bad input raises `ConversationFormatError` naming the file, the
line and the problem, or, with `skip_bad_lines=True`, is skipped and counted in the report.
Entity ids must be JSON integers (a float id is an error, never truncated), names and ids unique.
A turn with an empty dialogue (`"context": [""]`: the recommender speaks first) is a valid
cold-start turn: a `Conversation` without turns, counted in the report.

pandas, numpy and the corpus modules are imported by the functions that need them, so that
`score_generations` (the `rar-lite score-generations` command, which needs no corpus) starts fast.
"""

from __future__ import annotations

import dataclasses
import json
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING
from urllib.parse import unquote

from rar_lite.data.conversations import (
    Conversation,
    ConversationFormatError,
    Turn,
    entity_id,
    parse_json,
    read_lines,
)

if TYPE_CHECKING:
    import pandas as pd

    from rar_lite.data.matching import TitleMatcher

FILES = ("test.jsonl", "entity2id.json", "item_ids.json")
#: A name without a year is matched only to a movie at least this well known (IMDb votes, a
#: MovieLens rating counting as `matching.VOTES_PER_RATING` votes): "Upgrade (film)" (2018) must
#: not become a 17-vote short called "The Upgrade" (2000).
MIN_FAME_WITHOUT_YEAR = 500.0
_DBPEDIA = re.compile(r"^<?https?://dbpedia\.org/resource/(?P<tail>[^>]+)>?$")
_DISAMBIGUATION = re.compile(r"\s*\((?P<inside>[^()]*)\)\s*$")
_YEAR = re.compile(r"\b(?P<year>(?:18|19|20)\d\d)\b")
_SPEAKER_LINE = re.compile(r"^(User|System|Seeker|Recommender):\s?(.*)$")


def parse_entity_name(name: str) -> tuple[str, int | None]:
    """(title, year or None) of an entity name in any of the three formats.

    >>> parse_entity_name("<http://dbpedia.org/resource/Water_(1985_film)>")
    ('Water', 1985)
    >>> parse_entity_name("<http://dbpedia.org/resource/Hoffa_(film)>")
    ('Hoffa', None)
    >>> parse_entity_name("Heat (1995)")
    ('Heat', 1995)
    """
    match = _DBPEDIA.match(name.strip())
    text = unquote(match.group("tail")).replace("_", " ") if match else name.strip()
    paren = _DISAMBIGUATION.search(text)
    year = None
    if paren:
        inside = paren.group("inside")
        found = _YEAR.search(inside)
        # "(1985 film)", "(2019)", "(film)", "(American TV series)": a disambiguator, not a title
        if found or match:
            year = int(found.group("year")) if found else None
            text = text[: paren.start()]
    return " ".join(text.split()), year


@dataclass
class MappingReport:
    """How a dataset's movies and lines were mapped onto the corpus."""

    dataset: str
    lines: int = 0
    conversations: int = 0
    skipped_lines: int = 0
    skipped_reasons: list[str] = field(default_factory=list)
    movies: int = 0
    matched_with_year: int = 0
    matched_title_only: int = 0
    added: int = 0
    rejected_obscure: int = 0  # title-only matches refused: the corpus' movie is too obscure
    recommendation_turns: int = 0  # turns with a target not mentioned before
    empty_context_turns: int = 0  # cold-start turns: nothing said yet (kept, no turns)
    renamed_duplicate_ids: int = 0  # lines repeating a (dialog_id, turn_id): id made unique

    @property
    def matched(self) -> int:
        return self.matched_with_year + self.matched_title_only

    def as_frame(self) -> pd.DataFrame:
        """Two-column table for display."""
        import pandas as pd

        rows = [("dataset", self.dataset), ("lines read", self.lines),
                ("conversations", self.conversations), ("lines skipped", self.skipped_lines),
                ("movies in the dataset", self.movies),
                ("matched to the corpus (title + year)", self.matched_with_year),
                ("matched to the corpus (title only: no year in the name)",
                 self.matched_title_only),
                ("title-only matches refused as too obscure (added instead)",
                 self.rejected_obscure),
                ("added to the corpus as new items", self.added),
                ("turns whose target was not mentioned before", self.recommendation_turns),
                ("cold-start turns (empty context)", self.empty_context_turns),
                ("repeated turn ids made unique", self.renamed_duplicate_ids)]
        return pd.DataFrame(rows, columns=["figure", "value"])


@dataclass
class CikmDataset:
    """A loaded dataset: its conversations, the corpus extended with its new movies, and the
    entity id -> corpus item id map of its movies."""

    name: str
    conversations: list[Conversation]
    corpus: pd.DataFrame
    entity_to_item: dict[int, int]
    entity_names: dict[int, str]
    report: MappingReport


def _read_json(path: Path) -> object:
    try:
        lines = read_lines(path)
        return parse_json("\n".join(lines))
    except FileNotFoundError as error:
        raise ConversationFormatError(f"{path}: file not found") from error
    except json.JSONDecodeError as error:
        raise ConversationFormatError(
            f"{path}, line {error.lineno}: malformed JSON ({error.msg})") from error
    except ValueError as error:
        raise ConversationFormatError(f"{path}: {error}") from error


def read_entities(directory: Path) -> dict[int, str]:
    """id -> name from `entity2id.json`, in file order; a name or an id given twice, or an id
    that is not a non-negative integer, is an error naming the file and the entry."""
    path = directory / "entity2id.json"
    entity2id = _read_json(path)
    if not isinstance(entity2id, dict):
        raise ConversationFormatError(f"{path}: expected a JSON object (name -> id)")
    names: dict[int, str] = {}
    for name, value in entity2id.items():
        try:
            entity = entity_id(value, f"the id of {name!r}")
        except ValueError as error:
            raise ConversationFormatError(f"{path}: {error}") from None
        if entity in names:
            raise ConversationFormatError(
                f"{path}: id {entity} is given to both {names[entity]!r} and {name!r}")
        names[entity] = name
    return names


def _turns(record: dict) -> list[Turn]:
    """The dialogue so far, from `input` when it carries speakers, else from `context`."""
    turns = []
    text = record.get("input")
    if text is not None and not isinstance(text, str):
        raise ValueError("field 'input' must be a string")
    if isinstance(text, str) and _SPEAKER_LINE.search(text.strip().split("\n")[0] or ""):
        current: list[str] | None = None
        speaker = ""
        for line in text.strip("\n").split("\n"):
            match = _SPEAKER_LINE.match(line)
            if match:
                if current is not None and " ".join(current).strip():
                    turns.append(Turn(speaker, " ".join(current).strip()))
                speaker = "seeker" if match.group(1) in ("User", "Seeker") else "recommender"
                current = [match.group(2)]
            elif current is not None:
                current.append(line)
        if current is not None and " ".join(current).strip():
            turns.append(Turn(speaker, " ".join(current).strip()))
        return turns
    context = record["context"]
    if not isinstance(context, list) or not all(isinstance(u, str) for u in context):
        raise ValueError("field 'context' must be a list of utterances (strings)")
    utterances = context
    # the recommender answers next, so the last utterance is the seeker's; speakers alternate
    for k, utterance in enumerate(utterances):
        if utterance.strip():
            back = len(utterances) - 1 - k
            turns.append(Turn("seeker" if back % 2 == 0 else "recommender", utterance.strip()))
    return turns


def _movie_rows(entity_ids: list[int], names: dict[int, str], corpus: pd.DataFrame,
                matcher: TitleMatcher, dataset: str,
                report: MappingReport) -> tuple[dict[int, int], pd.DataFrame]:
    """Resolve each movie entity; unresolved ones become new corpus rows."""
    import numpy as np
    import pandas as pd

    from rar_lite.data.corpus import render_item

    mapping: dict[int, int] = {}
    new_rows = []
    next_id = int(corpus["item_id"].max()) + 1
    for entity in sorted(entity_ids):
        title, year = parse_entity_name(names[entity])
        found = matcher.resolve(f"{title} ({year})" if year else title, fuzzy=False) \
            if title else None
        if found is not None and not year and matcher.fame(found.item_id) < MIN_FAME_WITHOUT_YEAR:
            report.rejected_obscure += 1
            found = None
        if found is not None:
            mapping[entity] = found.item_id
            if year:
                report.matched_with_year += 1
            else:
                report.matched_title_only += 1
            continue
        row = {"item_id": next_id, "title": title or names[entity],
               "catalogue_title": names[entity], "alt_titles": [],
               "year": year if year else pd.NA, "genres": [], "runtime_min": pd.NA,
               "imdb_rating": np.nan, "imdb_votes": pd.NA, "mpaa": None, "budget": np.nan,
               "movielens_id": pd.NA, "imdb_row": pd.NA, "n_ratings": 0, "sources": dataset,
               "link_method": None}
        row["text"] = render_item(row)
        new_rows.append(row)
        mapping[entity] = next_id
        next_id += 1
        report.added += 1
    if not new_rows:
        return mapping, corpus
    added = pd.DataFrame(new_rows, columns=corpus.columns).astype(corpus.dtypes.to_dict())
    return mapping, pd.concat([corpus, added], ignore_index=True)


def load_cikm(directory: Path | str, corpus: pd.DataFrame, matcher: TitleMatcher | None = None,
              name: str | None = None, skip_bad_lines: bool = False) -> CikmDataset:
    """Load a ReDial / INSPIRED / Reddit-Movie directory (see the module docstring).

    `skip_bad_lines` skips malformed lines (counted, with reasons, in the report) instead of
    raising. Nothing half-loaded is returned: either the whole dataset or an error.
    """
    directory = Path(directory)
    if not directory.is_dir():
        raise FileNotFoundError(f"{directory}: not a directory (expected {', '.join(FILES)})")
    name = name or directory.name.lower()
    names = read_entities(directory)
    item_path = directory / "item_ids.json"
    item_ids = _read_json(item_path)
    if not isinstance(item_ids, list):
        raise ConversationFormatError(f"{item_path}: expected a JSON list of ids")
    try:
        movies = {entity_id(i, f"entry {k}") for k, i in enumerate(item_ids)}
    except ValueError as error:
        raise ConversationFormatError(f"{item_path}: {error}") from None
    unknown = sorted(movies - names.keys())
    if unknown:
        raise ConversationFormatError(f"{item_path}: id {unknown[0]} is absent from entity2id.json")
    unnamed = [e for e in sorted(movies) if not parse_entity_name(names[e])[0]]
    if unnamed:
        raise ConversationFormatError(
            f"{directory / 'entity2id.json'}: movie id {unnamed[0]} has an empty name "
            f"({names[unnamed[0]]!r})")
    report = MappingReport(dataset=name, movies=len(movies))
    if not matcher:  # as `matcher or TitleMatcher(corpus)`: an empty matcher is rebuilt too
        from rar_lite.data.matching import TitleMatcher

        matcher = TitleMatcher(corpus)
    mapping, extended = _movie_rows(sorted(movies), names, corpus, matcher, name, report)

    path = directory / "test.jsonl"
    try:
        lines = read_lines(path)
    except FileNotFoundError as error:
        raise ConversationFormatError(f"{path}: file not found") from error
    conversations: list[Conversation] = []
    seen: set[str] = set()
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        report.lines += 1
        try:
            conversation = _conversation(parse_json(line), number, names, movies, mapping, name)
            if conversation.conversation_id in seen:  # ids key results downstream: keep unique
                conversation = dataclasses.replace(
                    conversation, conversation_id=f"{conversation.conversation_id}@line{number}")
                report.renamed_duplicate_ids += 1
            seen.add(conversation.conversation_id)
            report.empty_context_turns += not conversation.turns
            conversations.append(conversation)
        except (KeyError, TypeError, ValueError) as error:
            problem = _describe(error)
            if not skip_bad_lines:
                raise ConversationFormatError(f"{path}, line {number}: {problem}") from error
            report.skipped_lines += 1
            report.skipped_reasons.append(f"line {number}: {problem}")
    if not report.lines:
        raise ConversationFormatError(f"{path}: no lines (an empty test file)")
    report.conversations = len(conversations)
    report.recommendation_turns = sum(bool(c.meta["new_targets"]) for c in conversations)
    return CikmDataset(name, conversations, extended, mapping, names, report)


def _describe(error: Exception) -> str:
    """A parsing error in words, for a message that already names the file and line."""
    if isinstance(error, json.JSONDecodeError):
        return f"malformed JSON ({error.msg} at column {error.colno})"
    if isinstance(error, KeyError):
        return f"missing field {error.args[0]!r}"
    return str(error)


def _entity_list(record: dict, key: str, names: dict[int, str]) -> list[int]:
    """Field `key` of a line: a list of known entity ids."""
    if not isinstance(record[key], list):
        raise ValueError(f"field {key!r} must be a list of entity ids")
    ids = [entity_id(e, f"field {key!r}: each entry") for e in record[key]]
    unknown = [e for e in ids if e not in names]
    if unknown:
        raise ValueError(f"field {key!r}: entity id {unknown[0]} is absent from entity2id.json")
    return ids


def _conversation(record: object, number: int, names: dict[int, str], movies: set[int],
                  mapping: dict[int, int], dataset: str) -> Conversation:
    if not isinstance(record, dict):
        raise ValueError("a line must be a JSON object")
    rec = _entity_list(record, "rec", names)
    previous = _entity_list(record, "prev_entity", names)
    if not rec:
        raise ValueError("field 'rec' is empty: no target to evaluate")
    not_movies = [e for e in rec if e not in movies]
    if not_movies:
        raise ValueError(f"rec id {not_movies[0]} is not a movie (absent from item_ids.json)")
    turns = _turns(record)  # may be empty: a cold-start turn
    history = list(dict.fromkeys(mapping[e] for e in previous if e in movies))
    targets = list(dict.fromkeys(mapping[e] for e in rec))
    for key in ("dialog_id", "turn_id"):
        if isinstance(record.get(key), (bool, dict, list, float)):
            raise ValueError(f"field {key!r} must be a string or an integer")
    dialog = str(record.get("dialog_id", f"line{number}"))
    turn_id = str(record.get("turn_id", number))
    return Conversation(
        conversation_id=f"{dataset}-{dialog}-{turn_id}", turns=tuple(turns),
        history=tuple(history), targets=tuple(targets), source=dataset,
        meta={"line": number, "dialog_id": dialog, "turn_id": turn_id, "rec_entities": rec,
              "new_targets": [t for t in targets if t not in history]},
    )


# --- He et al. (CIKM 2023) scoring protocol ----------------------------------------------------

_CIKM_PARENS = re.compile(r"\([^()]*\)")


def cikm23_entity_name(name: str) -> str:
    """An entity's name as He et al. compare it: the URI tail with "_" and "-" as spaces and
    parentheses removed, lowercase ("<.../Water_(1985_film)>" -> "water")."""
    match = _DBPEDIA.match(name.strip())
    text = unquote(match.group("tail")) if match else name.strip()
    text = _CIKM_PARENS.sub("", text.replace("_", " ").replace("-", " "))
    return " ".join(text.split()).lower()


def _answer_text(record: dict, path: Path, number: int) -> str:
    if isinstance(record.get("text"), str):
        return record["text"]
    try:
        content = record["resp"]["choices"][0]["message"]["content"]
        if content is not None and not isinstance(content, str):
            raise TypeError
        return content or ""
    except (KeyError, IndexError, TypeError):
        raise ConversationFormatError(
            f"{path}, line {number}: needs 'text' or an OpenAI chat completion under 'resp'"
        ) from None


def _nearest_entity(names: list[str], ids: list[int]) -> Callable[[str], int | None]:
    """A function: a lowercase name -> the id of the entity with the nearest name (Levenshtein
    distance, the first such entity on ties; None when there is no entity), remembered per name.
    A name equal to an entity's is answered without a search: `process.extractOne` would find
    that entity's first occurrence at distance 0."""
    from rapidfuzz import process
    from rapidfuzz.distance import Levenshtein

    found: dict[str, int | None] = {}
    for name, entity in zip(names, ids):
        found.setdefault(name, entity)

    def nearest(name: str) -> int | None:
        if name not in found:
            best = process.extractOne(name, names, scorer=Levenshtein.distance)
            found[name] = None if best is None else ids[best[2]]
        return found[name]

    return nearest


def score_generations(directory: Path | str, generations: Path | str,
                      ks: tuple[int, ...] = (1, 5, 10, 20)) -> dict:
    """Score raw LLM answers for a dataset's `test.jsonl` by the protocol of He et al. (2023).

    Each line of `generations` has `index` (0-based line of `test.jsonl`) and the answer as
    `text` or as an OpenAI chat completion under `resp`. Names are split by
    `parsing.parse_cikm23`, each mapped to the entity with the nearest name (lowercase
    Levenshtein distance, rapidfuzz), and every ground-truth item of a turn is scored separately;
    metrics are means over (turn, item) pairs of answered turns.
    """
    from rar_lite import metrics
    from rar_lite.data import parsing

    directory, generations = Path(directory), Path(generations)
    if not ks or any(isinstance(k, bool) or not isinstance(k, int) or k < 1 for k in ks):
        raise ValueError(f"ks must be positive integers, got {ks!r}")
    entities = read_entities(directory)
    nearest = _nearest_entity([cikm23_entity_name(name) for name in entities.values()],
                              list(entities))
    tests = _test_targets(directory / "test.jsonl", entities)
    ranks: list[float] = []
    answered: dict[int, int] = {}  # test index -> the generations line that answered it
    for number, line in enumerate(read_lines(generations), start=1):
        if not line.strip():
            continue
        where = f"{generations}, line {number}"
        try:
            record = parse_json(line)
            if not isinstance(record, dict):
                raise ValueError("a line must be a JSON object")
            index = entity_id(record["index"], "field 'index'")
        except (KeyError, TypeError, ValueError) as error:
            raise ConversationFormatError(f"{where}: {_describe(error)}") from error
        if index >= len(tests):
            raise ConversationFormatError(
                f"{where}: index {index} is outside test.jsonl (0..{len(tests) - 1})")
        if index in answered:  # counted twice, it would weigh twice in the means
            raise ConversationFormatError(
                f"{where}: index {index} was already answered on line {answered[index]}")
        answered[index] = number
        ranked = []
        # only the first max(ks) names can reach a top-k: the rest cannot change a metric
        for name in parsing.parse_cikm23(_answer_text(record, generations, number))[:max(ks)]:
            entity = nearest(name.lower())
            if entity is not None:
                ranked.append(entity)
        ranks += metrics.ranks_in_list(ranked, tests[index])
    if not ranks:
        raise ConversationFormatError(f"{generations}: no answered turn to score")
    scores = metrics.metrics_from_ranks(ranks, ks)
    return {"n_turns": len(answered), "n_pairs": len(ranks), **scores}


def _test_targets(path: Path, entities: dict[int, str]) -> list[list[int]]:
    """The `rec` ids of each non-empty line of a `test.jsonl`, checked like `load_cikm` does."""
    targets = []
    try:
        lines = read_lines(path)
    except FileNotFoundError as error:
        raise ConversationFormatError(f"{path}: file not found") from error
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            record = parse_json(line)
            if not isinstance(record, dict):
                raise ValueError("a line must be a JSON object")
            targets.append(_entity_list(record, "rec", entities))
        except (KeyError, TypeError, ValueError) as error:
            raise ConversationFormatError(f"{path}, line {number}: {_describe(error)}") from error
    return targets
