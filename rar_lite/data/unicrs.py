"""INSPIRED's dev split in UniCRS's format (Wang et al., KDD 2022; MIT licence), read into the
item space of a CIKM-format dataset (`rar_lite.data.cikm`).

The file holds one dialogue per line: a JSON list of utterances
`{"text", "role": "SEEKER"|"RECOMMENDER", "movie", "movie_name", "movie_link", "entity_name",
"entity_link"}`, where the links are DBpedia URIs like the keys of the dataset's
`entity2id.json`. As in He et al.'s test files, every recommender utterance that names movies is
one recommendation turn: the dialogue before it is the context, its movies are the targets, and
the movies linked in earlier utterances are the history. These dialogues are for tuning and model
selection only: they are disjoint from the test split.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from rar_lite.data.cikm import CikmDataset
from rar_lite.data.conversations import (
    Conversation,
    ConversationFormatError,
    Turn,
    parse_json,
    read_lines,
)

ROLES = {"SEEKER": "seeker", "RECOMMENDER": "recommender"}


@dataclass
class DevReport:
    """What `read_dev` found: dialogues, recommendation turns, and links it could not map."""

    dialogues: int = 0
    turns: int = 0
    unmapped_links: list[str] = field(default_factory=list)
    turns_without_target: int = 0  # every movie of the turn was unmapped


def _utterance(value: object, where: str) -> tuple[str, str, list[str]]:
    """(speaker, text, linked URIs) of one utterance, or a `ValueError` naming the field."""
    if not isinstance(value, dict):
        raise ValueError(f"{where}: an utterance must be a JSON object")
    role = value.get("role")
    if role not in ROLES:
        raise ValueError(f"{where}: field 'role' must be SEEKER or RECOMMENDER, got {role!r}")
    text = value.get("text")
    if not isinstance(text, str):
        raise ValueError(f"{where}: field 'text' must be a string")
    links = []
    for key in ("movie_link", "entity_link"):
        found = value.get(key, [])
        if not isinstance(found, list) or not all(isinstance(x, str) for x in found):
            raise ValueError(f"{where}: field {key!r} must be a list of strings")
        links += found
    movies = value.get("movie_link", [])
    return ROLES[role], text.strip(), [*movies, *[x for x in links if x not in movies]]


def read_dev(path: Path | str, dataset: CikmDataset,
             name: str = "inspired-dev") -> tuple[list[Conversation], DevReport]:
    """Recommendation turns of a UniCRS-format file as `Conversation`s over `dataset`'s items.

    Targets are the recommender utterance's `movie_link`s that `dataset` knows as movies; the
    history is every earlier movie link it knows, in order. Bad input raises
    `ConversationFormatError` naming the file, the line and the field.
    """
    path = Path(path)
    entity_of = {uri: entity for entity, uri in dataset.entity_names.items()}
    report = DevReport()
    out = []
    for number, line in enumerate(read_lines(path), start=1):
        if not line.strip():
            continue
        try:
            dialogue = parse_json(line)
            if not isinstance(dialogue, list):
                raise ValueError("a line must be a JSON list of utterances")
            utterances = [_utterance(u, f"utterance {k}") for k, u in enumerate(dialogue)]
        except (json.JSONDecodeError, ValueError) as error:
            problem = (f"malformed JSON ({error.msg} at column {error.colno})"
                       if isinstance(error, json.JSONDecodeError) else str(error))
            raise ConversationFormatError(f"{path}, line {number}: {problem}") from error
        report.dialogues += 1
        history: list[int] = []
        for k, (speaker, _, links) in enumerate(utterances):
            items = []
            for uri in links:
                entity = entity_of.get(uri)
                item = dataset.entity_to_item.get(entity) if entity is not None else None
                if item is not None:
                    items.append(item)
                elif speaker == "recommender" and uri in dialogue[k].get("movie_link", []):
                    report.unmapped_links.append(uri)
            movies = dialogue[k].get("movie_link", [])
            if speaker == "recommender" and movies:
                targets = list(dict.fromkeys(
                    dataset.entity_to_item[entity_of[uri]] for uri in movies
                    if uri in entity_of and entity_of[uri] in dataset.entity_to_item))
                if not targets:
                    report.turns_without_target += 1
                else:
                    turns = tuple(Turn(s, t) for s, t, _ in utterances[:k] if t)
                    out.append(Conversation(
                        conversation_id=f"{name}-{number}-{k}", turns=turns,
                        history=tuple(dict.fromkeys(history)), targets=tuple(targets),
                        source=name,
                        meta={"line": number, "dialog_id": f"dev_{number}", "turn_id": str(k),
                              "new_targets": [t for t in targets if t not in history]}))
                    report.turns += 1
            history += items
    if not report.dialogues:
        raise ConversationFormatError(f"{path}: no dialogue in the file")
    return out, report


def split_by_dialogue(conversations: list[Conversation], selection_share: float = 0.3,
                      seed: int = 0) -> tuple[list[Conversation], list[Conversation]]:
    """(train, selection): whole dialogues to one side or the other (seeded), so no turn of a
    selection dialogue was seen in training. A conversation without a `dialog_id` in its meta
    (a simulated one) is a dialogue of its own."""
    if not 0.0 < selection_share < 1.0:
        raise ValueError(f"selection_share must be in (0, 1), got {selection_share}")
    dialogue = {c.conversation_id: str(c.meta.get("dialog_id", c.conversation_id))
                for c in conversations}
    dialogues = sorted(set(dialogue.values()))
    rng = np.random.default_rng(seed)
    chosen = set(rng.permutation(dialogues)[: max(1, round(selection_share * len(dialogues)))])
    return ([c for c in conversations if dialogue[c.conversation_id] not in chosen],
            [c for c in conversations if dialogue[c.conversation_id] in chosen])
