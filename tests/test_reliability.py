"""Reliability (issue 19): a truncated or corrupt checkpoint is reported and recomputed, and the
result is the one an uninterrupted run gives."""

import json
from pathlib import Path

import pytest
import torch

from rar_lite.loop import feedback
from rar_lite.retrieval import retriever, seqrec


def _truncate(directory: Path) -> None:
    (tensors,) = directory.glob("state-*.safetensors")
    tensors.write_bytes(tensors.read_bytes()[:100])


def test_truncated_round_falls_back_to_the_previous_one(tmp_path: Path) -> None:
    from test_feedback import TargetFirst, conversations, tiny_model

    model, vocab = tiny_model()
    config = feedback.LoopConfig(rounds=3, sets=3, k=6, lr=0.02)
    straight = feedback.run_loop(model, vocab, conversations(), TargetFirst(), config,
                                 tmp_path / "straight", progress=False)
    _truncate(tmp_path / "straight" / "round-03")
    _truncate(tmp_path / "straight" / "round-02")
    with pytest.warns(UserWarning, match=r"round-03.*state\.json is unusable"):
        resumed = feedback.run_loop(model, vocab, conversations(), TargetFirst(), config,
                                    tmp_path / "straight", progress=False)
    columns = ["reward", "pairs", "loss", "log_ratio"]
    assert resumed.history[columns].equals(straight.history[columns])
    for a, b in zip(straight.model.state_dict().values(), resumed.model.state_dict().values()):
        assert torch.equal(a, b)


def test_truncated_retriever_checkpoint_retrains_to_the_same_model(tmp_path: Path) -> None:
    from test_retriever import _train, tiny_split

    split = tiny_split()
    vocab = seqrec.ItemVocab(split.items)
    straight = _train(tmp_path / "straight", split, vocab, epochs=3)
    _train(tmp_path / "broken", split, vocab, epochs=3, max_epochs_this_call=2)
    _truncate(tmp_path / "broken")
    with pytest.warns(UserWarning, match="unusable"):
        again = _train(tmp_path / "broken", split, vocab, epochs=3)
    assert again.history.drop(columns="seconds").equals(straight.history.drop(columns="seconds"))
    best = tmp_path / "broken" / "best.safetensors"
    best.write_bytes(best.read_bytes()[:50])
    with pytest.raises(retriever.CheckpointMismatchError,
                       match=r"best\.safetensors is unusable .*delete .* and train again"):
        retriever.load_model(tmp_path / "broken", vocab)


GOOD = {"conversation_id": "a", "turns": [{"speaker": "seeker", "text": "hi"}], "history": [1],
        "targets": [2], "source": "sim"}


@pytest.mark.parametrize(("line", "message"), [
    ({**GOOD, "history": [1.9]}, r"each 'history' entry must be an integer id >= 0, got 1.9"),
    ({**GOOD, "targets": [True]}, r"each 'targets' entry must be an integer id >= 0, got True"),
    ({**GOOD, "user_id": 1.5}, r"field 'user_id' must be an integer id >= 0, got 1.5"),
    ({**GOOD, "turns": "hi"}, r"field 'turns' must be a list"),
    ({**GOOD, "turns": [{"speaker": "seeker", "text": 5}]}, r"field 'turns' must hold"),
    ({**GOOD, "meta": [1]}, r"field 'meta' must be a JSON object"),
    ({**GOOD, "source": None}, r"field 'source' must be a string"),
    ([GOOD], r"a record must be a JSON object"),
    ("[" * 100_000, r"nested too deeply"),
    ('{"conversation_id": "a", "conversation_id": "b"}', r"key 'conversation_id' appears twice"),
])
def test_read_jsonl_refuses_bad_records(tmp_path: Path, line: object, message: str) -> None:
    from rar_lite.data.conversations import ConversationFormatError, read_jsonl

    path = tmp_path / "c.jsonl"
    path.write_text(json.dumps(GOOD) + "\n" + (line if isinstance(line, str) else json.dumps(line)))
    with pytest.raises(ConversationFormatError, match=r"c\.jsonl, line 2: " + message):
        read_jsonl(path)


def test_read_jsonl_accepts_a_byte_order_mark_and_crlf(tmp_path: Path) -> None:
    from rar_lite.data.conversations import read_jsonl

    path = tmp_path / "c.jsonl"
    path.write_bytes(b"\xef\xbb\xbf" + (json.dumps(GOOD) + "\r\n").encode() * 2)
    assert [c.history for c in read_jsonl(path)] == [(1,), (1,)]
