"""INSPIRED's dev split in UniCRS's format: the reader, its errors, and its disjointness."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pandas as pd
import pytest

from rar_lite.data import cikm, unicrs
from rar_lite.data.conversations import ConversationFormatError

DEV = Path(os.environ.get("RAR_LITE_INSPIRED_DEV_DIR", "")) / "dev.jsonl"
TEST_DIR = Path(os.environ.get("RAR_LITE_INSPIRED_DIR", ""))
real = pytest.mark.skipif(not (DEV.is_file() and TEST_DIR.is_dir()),
                          reason="INSPIRED's dev/test splits are not beside the checkout")

HEAT = "<http://dbpedia.org/resource/Heat_(1995_film)>"
JAWS = "<http://dbpedia.org/resource/Jaws_(film)>"


def _utterance(role: str, text: str, movies: list[str] = (), entities: list[str] = ()) -> dict:
    return {"text": text, "role": role, "movie": [], "movie_name": [],
            "movie_link": list(movies), "entity_name": [], "entity_link": list(entities)}


@pytest.fixture()
def tiny(tmp_path: Path, corpus: pd.DataFrame) -> cikm.CikmDataset:
    directory = tmp_path / "ds"
    directory.mkdir()
    (directory / "entity2id.json").write_text(json.dumps({HEAT: 0, JAWS: 1, "<x/Drama>": 2}))
    (directory / "item_ids.json").write_text("[0, 1]")
    record = {"context": ["Hi"], "rec": [0], "prev_entity": [], "dialog_id": "t0",
              "turn_id": "0", "input": "User: Hi\nSystem: "}
    (directory / "test.jsonl").write_text(json.dumps(record) + "\n")
    return cikm.load_cikm(directory, corpus)


def test_reader_builds_recommendation_turns(tmp_path: Path, tiny: cikm.CikmDataset) -> None:
    dialogue = [_utterance("RECOMMENDER", "Hi! What do you like?"),
                _utterance("SEEKER", "I loved Jaws", entities=[JAWS, "<x/Drama>"]),
                _utterance("RECOMMENDER", "Then try Heat", movies=[HEAT]),
                _utterance("SEEKER", "Thanks")]
    path = tmp_path / "dev.jsonl"
    path.write_text(json.dumps(dialogue) + "\n\n" + json.dumps(dialogue[:1]) + "\n")
    conversations, report = unicrs.read_dev(path, tiny)
    assert report.dialogues == 2 and report.turns == 1
    (turn,) = conversations
    heat, jaws = tiny.entity_to_item[0], tiny.entity_to_item[1]
    assert turn.targets == (heat,) and turn.history == (jaws,)
    assert [t.speaker for t in turn.turns] == ["recommender", "seeker"]
    assert turn.meta["dialog_id"] == "dev_1" and turn.meta["new_targets"] == [heat]


@pytest.mark.parametrize("line, field", [
    ('{"text": "a dict, not a list"}', "JSON list"),
    ('[{"text": "hi", "role": "BOT"}]', "'role'"),
    ('[{"text": 3, "role": "SEEKER"}]', "'text'"),
    ('[{"text": "hi", "role": "SEEKER", "movie_link": "x"}]', "'movie_link'"),
    ('[{"text": "hi", "role": "SEEKER"', "malformed JSON"),
    ('[{"text": "hi", "text": "again", "role": "SEEKER"}]', "appears twice"),
    ("[" * 100_000 + "]" * 100_000, "nested too deeply"),
])
def test_malformed_lines_name_file_line_and_field(tmp_path: Path, tiny: cikm.CikmDataset,
                                                  line: str, field: str) -> None:
    path = tmp_path / "dev.jsonl"
    path.write_text(json.dumps([_utterance("SEEKER", "fine")]) + "\n" + line + "\n")
    with pytest.raises(ConversationFormatError, match=rf"dev\.jsonl, line 2: .*{field}"):
        unicrs.read_dev(path, tiny)


def test_an_empty_file_is_an_error(tmp_path: Path, tiny: cikm.CikmDataset) -> None:
    path = tmp_path / "dev.jsonl"
    path.write_text("\n")
    with pytest.raises(ConversationFormatError, match="no dialogue"):
        unicrs.read_dev(path, tiny)


def test_split_by_dialogue_is_disjoint_and_seeded(tmp_path: Path,
                                                  tiny: cikm.CikmDataset) -> None:
    dialogue = [_utterance("SEEKER", "hi"), _utterance("RECOMMENDER", "Heat", movies=[HEAT]),
                _utterance("RECOMMENDER", "or Jaws", movies=[JAWS])]
    path = tmp_path / "dev.jsonl"
    path.write_text("".join(json.dumps(dialogue) + "\n" for _ in range(10)))
    conversations, _ = unicrs.read_dev(path, tiny)
    train, selection = unicrs.split_by_dialogue(conversations, 0.3, seed=1)
    assert len(train) + len(selection) == 20
    assert not {c.meta["dialog_id"] for c in train} & {c.meta["dialog_id"] for c in selection}
    assert len({c.meta["dialog_id"] for c in selection}) == 3
    again, _ = unicrs.split_by_dialogue(conversations, 0.3, seed=1)
    assert [c.conversation_id for c in again] == [c.conversation_id for c in train]


@real
def test_real_dev_split_reads_and_is_disjoint_from_test(corpus: pd.DataFrame) -> None:
    data = cikm.load_cikm(TEST_DIR, corpus, skip_bad_lines=True, name="inspired")
    conversations, report = unicrs.read_dev(DEV, data)
    assert report.dialogues == 99 and report.turns == len(conversations) >= 240
    assert not report.unmapped_links
    catalogue = set(data.entity_to_item.values())
    assert all(set(c.targets) <= catalogue for c in conversations)
    # disjoint dialogues: no dev dialogue opens with the same three utterances as a test one
    def opening(turns) -> tuple[str, ...]:
        return tuple(t.text.strip().lower() for t in turns[:3])

    test_openings = {opening(c.turns) for c in data.conversations if len(c.turns) >= 3}
    dev_openings = {opening(c.turns) for c in conversations if len(c.turns) >= 3}
    assert dev_openings and test_openings and not dev_openings & test_openings
