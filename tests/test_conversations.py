from pathlib import Path

import pytest

from rar_lite.data.conversations import (
    Conversation,
    ConversationFormatError,
    Turn,
    read_jsonl,
    write_jsonl,
)


def _conversation(k: int = 0) -> Conversation:
    return Conversation(
        conversation_id=f"c{k}",
        turns=(Turn("recommender", "Hi! What do you like?"),
               Turn("seeker", "Amélie — and “quotes”, 日本語 too\nnew line")),
        history=(3, 1, 2), targets=(7,), source="test", user_id=k,
        meta={"slots": {"genres": ["Comedy"], "decade": None}},
    )


def test_turn_rejects_unknown_speaker() -> None:
    with pytest.raises(ValueError, match="speaker"):
        Turn("narrator", "once upon a time")


def test_jsonl_round_trip(tmp_path: Path) -> None:
    conversations = [_conversation(0), _conversation(1)]
    path = tmp_path / "c.jsonl"
    write_jsonl(conversations, path)
    back = read_jsonl(path)
    assert back == conversations
    assert [c.meta for c in back] == [c.meta for c in conversations]
    assert back[0].history == (3, 1, 2)  # order kept


def test_text_views() -> None:
    c = _conversation()
    assert c.text().splitlines()[0] == "Recommender: Hi! What do you like?"
    assert c.seeker_text().startswith("Amélie")


def test_read_jsonl_names_file_and_line(tmp_path: Path) -> None:
    path = tmp_path / "bad.jsonl"
    good = _conversation().to_dict()
    import json

    path.write_text(json.dumps(good) + "\n{not json\n")
    with pytest.raises(ConversationFormatError, match=r"bad\.jsonl, line 2"):
        read_jsonl(path)
    del good["targets"]
    path.write_text(json.dumps(good) + "\n")
    with pytest.raises(ConversationFormatError, match=r"line 1: missing field 'targets'"):
        read_jsonl(path)


def test_read_jsonl_rejects_non_utf8(tmp_path: Path) -> None:
    path = tmp_path / "latin1.jsonl"
    path.write_bytes(b'{"a": 1}\n{"title": "Am\xe9lie"}\n')
    with pytest.raises(ConversationFormatError, match=r"line 2: not UTF-8"):
        read_jsonl(path)
