"""The conversation type shared by every chapter, and its JSONL form.

A `Conversation` is what a recommender sees at the moment it must answer: the turns so far, the
corpus items mentioned so far (in order: the retriever's history) and the held-out target items.
Simulated dialogues (`rar_lite.data.simulate`) and real CRS datasets (`rar_lite.data.cikm`) both
produce it.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

SPEAKERS = ("seeker", "recommender")


class ConversationFormatError(ValueError):
    """A conversation file or record is malformed; the message names the file, line and field."""


@dataclass(frozen=True)
class Turn:
    """One utterance: who spoke (`seeker` or `recommender`) and what they said."""

    speaker: str
    text: str

    def __post_init__(self) -> None:
        if self.speaker not in SPEAKERS:
            raise ValueError(f"speaker must be one of {SPEAKERS}, got {self.speaker!r}")


@dataclass(frozen=True)
class Conversation:
    """A conversation up to the point where the recommender answers.

    `history`: corpus item ids mentioned so far, oldest first. `targets`: the held-out item ids
    the answer should contain. `source`: where it came from, e.g. "movielens-sim/test" or
    "inspired". `meta`: source-specific details (the simulator's stated slots, a dataset's line
    number) as JSON-serialisable values.
    """

    conversation_id: str
    turns: tuple[Turn, ...]
    history: tuple[int, ...]
    targets: tuple[int, ...]
    source: str
    user_id: int | None = None
    meta: dict[str, Any] = field(default_factory=dict, compare=False, hash=False)

    def text(self, with_speakers: bool = True) -> str:
        """The dialogue as text, one turn per line ("Seeker: ..."/"Recommender: ...")."""
        if not with_speakers:
            return "\n".join(turn.text for turn in self.turns)
        return "\n".join(f"{turn.speaker.capitalize()}: {turn.text}" for turn in self.turns)

    def seeker_text(self) -> str:
        """What the seeker said, turns joined by spaces (the words a reranker must read)."""
        return " ".join(t.text for t in self.turns if t.speaker == "seeker")

    def to_dict(self) -> dict[str, Any]:
        record = asdict(self)
        record["turns"] = [asdict(t) for t in self.turns]
        record["history"], record["targets"] = list(self.history), list(self.targets)
        return record

    @classmethod
    def from_dict(cls, record: dict[str, Any]) -> Conversation:
        """Inverse of `to_dict`; raises `ConversationFormatError` naming a missing or bad field."""
        try:
            if not isinstance(record, dict):
                raise TypeError("a record must be a JSON object")
            for key in ("turns", "history", "targets"):
                if not isinstance(record[key], list):
                    raise TypeError(f"field {key!r} must be a list")
            for key in ("conversation_id", "source"):
                if not isinstance(record[key], (str, int)) or isinstance(record[key], bool):
                    raise TypeError(f"field {key!r} must be a string")
            if not all(isinstance(t, dict) and isinstance(t.get("text"), str)
                       for t in record["turns"]):
                raise TypeError("field 'turns' must hold {speaker, text} objects")
            if not isinstance(record.get("meta") or {}, dict):
                raise TypeError("field 'meta' must be a JSON object")
            turns = tuple(Turn(t["speaker"], t["text"]) for t in record["turns"])
            user = record.get("user_id")
            return cls(
                conversation_id=str(record["conversation_id"]),
                turns=turns,
                history=tuple(entity_id(i, "each 'history' entry") for i in record["history"]),
                targets=tuple(entity_id(i, "each 'targets' entry") for i in record["targets"]),
                source=str(record["source"]),
                user_id=None if user is None else entity_id(user, "field 'user_id'"),
                meta=dict(record.get("meta") or {}),
            )
        except KeyError as error:
            raise ConversationFormatError(f"missing field {error.args[0]!r}") from error
        except (TypeError, ValueError) as error:
            raise ConversationFormatError(str(error)) from error


def _unique_keys(pairs: list[tuple[str, object]]) -> dict:
    """`object_pairs_hook` refusing a key given twice (JSON would keep the last silently)."""
    out: dict = {}
    for key, value in pairs:
        if key in out:
            raise ValueError(f"key {key!r} appears twice")
        out[key] = value
    return out


def parse_json(text: str) -> object:
    """`json.loads` for data files: duplicate keys, nesting too deep for the parser and numbers
    too long to convert all raise `ValueError` (a `json.JSONDecodeError` for bad syntax)."""
    try:
        return json.loads(text, object_pairs_hook=_unique_keys)
    except RecursionError:
        raise ValueError("nested too deeply") from None
    except json.JSONDecodeError:
        raise
    except ValueError as error:
        if "digits" in str(error):  # Python refuses to convert integers this long
            raise ValueError("a number is too long (over 4300 digits)") from None
        raise


def entity_id(value: object, what: str) -> int:
    """`value` as an item or entity id: a JSON integer >= 0 (a float is refused, never
    truncated; a string or a boolean too)."""
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise ValueError(f"{what} must be an integer id >= 0, got {value!r}")
    return value


def write_jsonl(conversations: Iterable[Conversation], path: Path) -> None:
    """Write one conversation per line, atomically."""
    from rar_lite import cache

    lines = [json.dumps(c.to_dict(), ensure_ascii=False) for c in conversations]
    cache.write_text_atomic(Path(path), "\n".join(lines) + ("\n" if lines else ""))


def read_jsonl(path: Path) -> list[Conversation]:
    """Read conversations written by `write_jsonl`; errors name the file and the line."""
    path = Path(path)
    out = []
    for number, line in enumerate(read_lines(path), start=1):
        if not line.strip():
            continue
        try:
            out.append(Conversation.from_dict(parse_json(line)))
        except (ValueError, ConversationFormatError) as error:
            raise ConversationFormatError(f"{path}, line {number}: {error}") from error
    return out


def read_lines(path: Path) -> list[str]:
    """The lines of a UTF-8 text file (a leading byte-order mark, as some editors write, is
    dropped); a non-UTF-8 byte is reported with its line number."""
    out = []
    data = Path(path).read_bytes().removeprefix(b"\xef\xbb\xbf")
    for number, raw in enumerate(data.split(b"\n"), start=1):
        try:
            out.append(raw.decode("utf-8"))
        except UnicodeDecodeError as error:
            raise ConversationFormatError(
                f"{path}, line {number}: not UTF-8 ({error.reason} at byte {error.start})"
            ) from error
    return out
