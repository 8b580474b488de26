"""The CIKM-2023-format loader on small fixture directories (all three name formats and the
bad-input cases), plus an integration test on the real INSPIRED data."""

import json
import math
import os
from pathlib import Path

import pandas as pd
import pytest

from rar_lite.data import cikm
from rar_lite.data.conversations import ConversationFormatError

DBPEDIA = "<http://dbpedia.org/resource/{}>"


def _line(context: list[str], rec: list[int], prev: list[int], turn: int = 0) -> dict:
    text = "".join(f"\n{'User' if (len(context) - 1 - k) % 2 == 0 else 'System'}: {u}"
                   for k, u in enumerate(context) if u)
    return {"context": context, "resp": "...", "rec": rec, "entity": rec, "prev_entity": prev,
            "dialog_id": "d0", "turn_id": f"t{turn}", "is_user": 0, "input": text + "\nSystem: "}


def _write(directory: Path, names: dict[str, int], movies: list[int], lines: list) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "entity2id.json").write_text(json.dumps(names))
    (directory / "item_ids.json").write_text(json.dumps(movies))
    (directory / "test.jsonl").write_text(
        "".join((line if isinstance(line, str) else json.dumps(line)) + "\n" for line in lines))
    return directory


@pytest.fixture()
def dbpedia_dir(tmp_path: Path) -> Path:
    names = {DBPEDIA.format("Heat_(1995_film)"): 0, DBPEDIA.format("The_Usual_Suspects"): 1,
             DBPEDIA.format("Titanic_(1953_film)"): 2, DBPEDIA.format("Knives_Out"): 3,
             DBPEDIA.format("Drama"): 4, DBPEDIA.format("Upgrade_(film)"): 5}
    lines = [
        _line(["", "Hi! What do you like?", "I loved Heat and The Usual Suspects"], [3], [0, 1, 4]),
        _line(["", "Hi!", "I liked Heat", "Great, and?", "Something British"], [2, 0], [0], 1),
    ]
    return _write(tmp_path / "redial", names, [0, 1, 2, 3, 5], lines)


def test_dbpedia_names_map_and_new_items_are_added(dbpedia_dir: Path,
                                                   corpus: pd.DataFrame, matcher) -> None:
    data = cikm.load_cikm(dbpedia_dir, corpus, matcher)
    titles = {e: data.corpus.at[i, "title"] for e, i in data.entity_to_item.items()}
    years = {e: data.corpus.at[i, "year"] for e, i in data.entity_to_item.items()}
    assert (titles[0], years[0]) == ("Heat", 1995)
    assert (titles[1], years[1]) == ("The Usual Suspects", 1995)  # title only, well known
    assert (titles[2], years[2]) == ("Titanic", 1953)  # the year hint picks the remake
    assert data.corpus.at[data.entity_to_item[3], "sources"] == "redial"  # 2019: not in corpus
    assert data.corpus.at[data.entity_to_item[5], "sources"] == "redial"  # obscure namesake refused
    assert len(data.corpus) == len(corpus) + 2
    assert data.corpus["item_id"].is_unique
    assert data.corpus.iloc[-1]["text"] in ("Knives Out", "Upgrade")
    report = data.report
    assert (report.movies, report.matched_with_year, report.matched_title_only, report.added,
            report.rejected_obscure) == (5, 2, 1, 2, 1)
    first, second = data.conversations
    assert first.history == (data.entity_to_item[0], data.entity_to_item[1])  # "Drama" dropped
    assert first.targets == (data.entity_to_item[3],)
    assert [t.speaker for t in first.turns] == ["recommender", "seeker"]
    assert first.turns[-1].text == "I loved Heat and The Usual Suspects"
    assert second.meta["new_targets"] == [data.entity_to_item[2]]  # Heat was mentioned before
    assert report.recommendation_turns == 2


def test_reddit_title_year_names(tmp_path: Path, corpus: pd.DataFrame, matcher) -> None:
    names = {"Heat (1995)": 0, "Titanic (1953)": 1, "Titanic (1997)": 2}
    lines = [_line(["I want a disaster movie like Heat"], [1, 2], [0])]
    data = cikm.load_cikm(_write(tmp_path / "reddit_movie", names, [0, 1, 2], lines), corpus,
                         matcher)
    years = [data.corpus.at[data.entity_to_item[e], "year"] for e in (0, 1, 2)]
    assert years == [1995, 1953, 1997]
    assert data.report.added == 0 and data.report.matched_with_year == 3


@pytest.mark.parametrize(("name", "parsed"), [
    (DBPEDIA.format("Water_(1985_film)"), ("Water", 1985)),
    (DBPEDIA.format("Hoffa_(film)"), ("Hoffa", None)),
    (DBPEDIA.format("Emma_(1996_TV_film)"), ("Emma", 1996)),
    (DBPEDIA.format("The_Office_(American_TV_series)"), ("The Office", None)),
    (DBPEDIA.format("Monty_Python%27s_Life_of_Brian"), ("Monty Python's Life of Brian", None)),
    (DBPEDIA.format("Crouching_Tiger,_Hidden_Dragon"), ("Crouching Tiger, Hidden Dragon", None)),
    ("Heat (1995)", ("Heat", 1995)),
    ("Seven (a.k.a. Se7en) (1995)", ("Seven (a.k.a. Se7en)", 1995)),
])
def test_parse_entity_name(name: str, parsed: tuple) -> None:
    assert cikm.parse_entity_name(name) == parsed


NAMES = {DBPEDIA.format("Heat_(1995_film)"): 0, DBPEDIA.format("Drama"): 1}
GOOD = _line(["", "Hi", "I like Heat"], [0], [])


@pytest.mark.parametrize(("bad_line", "message"), [
    ('{"context": ["x"], "rec": [0', r"line 2: malformed JSON"),
    ({k: v for k, v in GOOD.items() if k != "rec"}, r"line 2: missing field 'rec'"),
    ({**GOOD, "rec": [99]}, r"line 2: field 'rec': entity id 99 is absent from entity2id"),
    ({**GOOD, "rec": [1]}, r"line 2: rec id 1 is not a movie"),
    ({**GOOD, "rec": []}, r"line 2: field 'rec' is empty"),
    # ids are JSON integers: never truncated (0.9 -> 0), never parsed from other types
    ({**GOOD, "rec": [0.9]}, r"line 2: field 'rec': each entry must be an integer id >= 0, "
                             r"got 0.9"),
    ({**GOOD, "rec": [True]}, r"line 2: field 'rec': each entry must be an integer id"),
    ({**GOOD, "rec": ["0"]}, r"line 2: field 'rec': each entry must be an integer id"),
    ({**GOOD, "rec": [-1]}, r"line 2: field 'rec': each entry must be an integer id >= 0"),
    ('{"rec": [Infinity], "prev_entity": [], "context": ["x"]}', r"line 2: .*got inf"),
    ('{"rec": [NaN], "prev_entity": [], "context": ["x"]}', r"line 2: .*got nan"),
    ({**GOOD, "prev_entity": [1.5]}, r"line 2: field 'prev_entity': each entry must be"),
    ({**GOOD, "prev_entity": 0}, r"line 2: field 'prev_entity' must be a list"),
    ('{"rec": [0], "rec": [0], "prev_entity": [], "context": ["x"]}',
     r"line 2: key 'rec' appears twice"),
    ("[" * 50_000 + "]" * 50_000, r"line 2: nested too deeply"),
    ('{"rec": [' + "9" * 5000 + '], "prev_entity": [], "context": ["x"]}',
     r"line 2: a number is too long"),
    ('["a list"]', r"line 2: a line must be a JSON object"),
    ({**GOOD, "context": [{"text": "hi"}], "input": None}, r"line 2: field 'context' must be"),
    ({**GOOD, "context": "I like Heat", "input": None}, r"line 2: field 'context' must be"),
    ({**GOOD, "input": 42}, r"line 2: field 'input' must be a string"),
    ({**GOOD, "dialog_id": {"a": 1}}, r"line 2: field 'dialog_id' must be"),
])
def test_bad_lines_name_file_and_line(tmp_path: Path, corpus: pd.DataFrame, matcher, bad_line,
                                      message: str) -> None:
    directory = _write(tmp_path / "d", NAMES, [0], [GOOD, bad_line, GOOD])
    with pytest.raises(ConversationFormatError, match=r"test\.jsonl, " + message):
        cikm.load_cikm(directory, corpus, matcher)
    skipped = cikm.load_cikm(directory, corpus, matcher, skip_bad_lines=True)
    assert skipped.report.skipped_lines == 1 and len(skipped.conversations) == 2
    assert skipped.report.skipped_reasons[0].startswith("line 2:")


def test_cold_start_turn_is_kept_and_counted(tmp_path: Path, corpus: pd.DataFrame,
                                             matcher) -> None:
    # INSPIRED test line 11: the recommender speaks first, nothing has been said yet
    cold = {"context": [""], "resp": "Hello, I hear that you are seeking a movie recommendation.",
            "rec": [0], "entity": [0], "prev_entity": [], "dialog_id": "test_5",
            "turn_id": "test_0", "is_user": 0, "entity_name": ["Tell"], "input": "\nSystem: "}
    no_input = {k: v for k, v in cold.items() if k != "input"} | {"turn_id": "t9"}
    directory = _write(tmp_path / "d", NAMES, [0], [GOOD, cold, no_input])
    data = cikm.load_cikm(directory, corpus, matcher)
    assert data.report.empty_context_turns == 2 and data.report.skipped_lines == 0
    first, second, third = data.conversations
    assert first.turns and second.turns == () and third.turns == ()
    assert second.targets == (data.entity_to_item[0],) and second.history == ()
    assert second.meta["line"] == 2
    from rar_lite.reranking import prompts

    assert prompts.conversation_text(second) == "" and prompts.request_text(second) == ""
    assert "Candidate movies:" in prompts.listwise_prompt(second, ["Heat (1995)"])
    assert prompts.pointwise_prompt(prompts.request_text(second), "Heat").startswith("Request:")
    table = data.report.as_frame().set_index("figure")["value"]
    assert table["cold-start turns (empty context)"] == 2


def test_repeated_turn_ids_are_made_unique(tmp_path: Path, corpus: pd.DataFrame,
                                           matcher) -> None:
    directory = _write(tmp_path / "d", NAMES, [0], [GOOD, GOOD])
    data = cikm.load_cikm(directory, corpus, matcher)
    ids = [c.conversation_id for c in data.conversations]
    assert len(set(ids)) == 2 and ids[1] == f"{ids[0]}@line2"
    assert data.report.renamed_duplicate_ids == 1


@pytest.mark.parametrize(("entity2id", "items", "message"), [
    ('{"a": 0, "a": 1}', "[0]", r"entity2id\.json: key 'a' appears twice"),
    (json.dumps({"Heat (1995)": 0, "Heat": 0}), "[0]",
     r"entity2id\.json: id 0 is given to both 'Heat \(1995\)' and 'Heat'"),
    (json.dumps({"Heat (1995)": 0.7}), "[0]", r"entity2id\.json: the id of 'Heat \(1995\)' "
     r"must be an integer id >= 0, got 0.7"),
    (json.dumps({"Heat (1995)": "0"}), "[0]", r"entity2id\.json: .*got '0'"),
    ('{"Heat (1995)": Infinity}', "[0]", r"entity2id\.json: .*got inf"),
    ('{"Heat (1995)": 0, "x": ' + "9" * 5000 + "}", "[0]",
     r"entity2id\.json: a number is too long"),
    ("[" * 50_000 + "]" * 50_000, "[0]", r"entity2id\.json: nested too deeply"),
    (json.dumps(["Heat (1995)"]), "[0]", r"entity2id\.json: expected a JSON object"),
    (json.dumps({"Heat (1995)": 0}), "[0.0]", r"item_ids\.json: entry 0 must be an integer id"),
    (json.dumps({"Heat (1995)": 0}), '{"0": 0}', r"item_ids\.json: expected a JSON list"),
    (json.dumps({"Heat (1995)": 0}), "[" * 50_000 + "]" * 50_000,
     r"item_ids\.json: nested too deeply"),
    (json.dumps({"   ": 0}), "[0]", r"entity2id\.json: movie id 0 has an empty name"),
])
def test_bad_side_file_records(tmp_path: Path, corpus: pd.DataFrame, matcher, entity2id: str,
                               items: str, message: str) -> None:
    directory = _write(tmp_path / "d", {}, [], [GOOD])
    (directory / "entity2id.json").write_text(entity2id)
    (directory / "item_ids.json").write_text(items)
    with pytest.raises(ConversationFormatError, match=message):
        cikm.load_cikm(directory, corpus, matcher)


def test_non_utf8_file(tmp_path: Path, corpus: pd.DataFrame, matcher) -> None:
    directory = _write(tmp_path / "d", NAMES, [0], [GOOD])
    with open(directory / "test.jsonl", "ab") as handle:
        handle.write(b'{"context": ["Am\xe9lie"]}\n')
    with pytest.raises(ConversationFormatError, match=r"test\.jsonl, line 2: not UTF-8"):
        cikm.load_cikm(directory, corpus, matcher, skip_bad_lines=True)


def test_bad_side_files(tmp_path: Path, corpus: pd.DataFrame, matcher) -> None:
    directory = _write(tmp_path / "d", NAMES, [0, 7], [GOOD])
    with pytest.raises(ConversationFormatError, match=r"item_ids\.json: id 7 is absent"):
        cikm.load_cikm(directory, corpus, matcher)
    (directory / "entity2id.json").write_text('{"a": 1,')
    with pytest.raises(ConversationFormatError, match=r"entity2id\.json, line 1: malformed"):
        cikm.load_cikm(directory, corpus, matcher)
    with pytest.raises(FileNotFoundError, match="not a directory"):
        cikm.load_cikm(tmp_path / "nowhere", corpus, matcher)
    (directory / "test.jsonl").unlink()
    (directory / "entity2id.json").write_text(json.dumps(NAMES))
    (directory / "item_ids.json").write_text("[0]")
    with pytest.raises(ConversationFormatError, match=r"test\.jsonl: file not found"):
        cikm.load_cikm(directory, corpus, matcher)


INSPIRED = os.environ.get("RAR_LITE_INSPIRED_DIR")


@pytest.mark.skipif(not INSPIRED, reason="set RAR_LITE_INSPIRED_DIR to the INSPIRED directory")
def test_real_inspired(corpus: pd.DataFrame, matcher) -> None:
    data = cikm.load_cikm(INSPIRED, corpus, matcher)
    report = data.report
    assert report.lines == 228 and report.movies == 1123
    assert report.skipped_lines == 0 and report.conversations == 228
    assert report.empty_context_turns == 1  # line 11: the system speaks first, nothing said yet
    assert [c.meta["line"] for c in data.conversations if not c.turns] == [11]
    assert report.matched + report.added == report.movies
    assert report.matched > 500 and report.added > 300
    assert all(c.targets for c in data.conversations)
    assert all(t in data.corpus.index for c in data.conversations for t in c.targets)
    assert data.corpus["item_id"].is_unique


def test_cikm23_entity_names() -> None:
    assert cikm.cikm23_entity_name(DBPEDIA.format("Water_(1985_film)")) == "water"
    assert cikm.cikm23_entity_name(DBPEDIA.format("Spider-Man_(2002_film)")) == "spider man"
    assert cikm.cikm23_entity_name("Heat (1995)") == "heat"


def test_score_generations_hand_computed(tmp_path: Path) -> None:
    names = {DBPEDIA.format("Heat_(1995_film)"): 0, DBPEDIA.format("Casino_(1995_film)"): 1,
             DBPEDIA.format("Toy_Story"): 2, DBPEDIA.format("Drama"): 3}
    lines = [_line(["", "Hi", "Crime please"], [0], []),
             _line(["", "Hi", "Something else"], [1, 2], [])]
    directory = _write(tmp_path / "d", names, [0, 1, 2], lines)
    generations = tmp_path / "gen.jsonl"
    completion = {"choices": [{"message": {"role": "assistant", "content": "Toy Story, Heat"}}]}
    generations.write_text(
        json.dumps({"index": 0, "text": "Sure! 1. Heat (1995) 2. Casno"}) + "\n"
        + json.dumps({"index": 1, "resp": completion}) + "\n")
    scores = cikm.score_generations(directory, generations)
    # turn 0: [Heat, Casino(typo)] -> Heat at rank 0; turn 1: [Toy Story, Heat] -> Casino
    # missing, Toy Story at rank 0: ranks [0, inf, 0]
    assert (scores["n_turns"], scores["n_pairs"]) == (2, 3)
    assert scores["recall@1"] == pytest.approx(2 / 3)
    assert scores["ndcg@20"] == pytest.approx(2 / 3)
    assert scores["mrr@5"] == pytest.approx(2 / 3)
    generations.write_text(json.dumps({"index": 9, "text": "Heat"}) + "\n")
    with pytest.raises(ConversationFormatError, match=r"gen\.jsonl, line 1: index 9 is outside"):
        cikm.score_generations(directory, generations)
    generations.write_text(json.dumps({"index": 0, "resp": {"choices": []}}) + "\n")
    with pytest.raises(ConversationFormatError, match="needs 'text' or an OpenAI chat completion"):
        cikm.score_generations(directory, generations)


def test_score_generations_cli(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from rar_lite import cli

    names = {"Heat (1995)": 0, "Casino (1995)": 1}
    directory = _write(tmp_path / "d", names, [0, 1], [_line(["", "Hi", "Crime"], [1], [])])
    generations = tmp_path / "g.jsonl"
    generations.write_text(json.dumps({"index": 0, "text": "1. Heat\n2. Casino"}) + "\n")
    assert cli.main(["score-generations", "--dataset-dir", str(directory), "--generations",
                     str(generations)]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["n_pairs"] == 1 and out["recall@1"] == 0.0 and out["recall@5"] == 1.0
    assert out["ndcg@5"] == pytest.approx(1 / math.log2(3))


def _scoring_dir(tmp_path: Path) -> Path:
    names = {DBPEDIA.format("Heat_(1995_film)"): 0, DBPEDIA.format("Casino_(1995_film)"): 1}
    lines = [_line(["", "Hi", "Crime please"], [0], []), _line(["", "More"], [1], [])]
    return _write(tmp_path / "d", names, [0, 1], lines)


@pytest.mark.parametrize(("line", "message"), [
    ('{"index": 1.9, "text": "Heat"}', r"field 'index' must be an integer id >= 0, got 1.9"),
    ('{"index": 1.0, "text": "Heat"}', r"field 'index' must be an integer id >= 0, got 1.0"),
    ('{"index": true, "text": "Heat"}', r"field 'index' must be an integer id >= 0, got True"),
    ('{"index": "1", "text": "Heat"}', r"field 'index' must be an integer id >= 0, got '1'"),
    ('{"index": -1, "text": "Heat"}', r"field 'index' must be an integer id >= 0, got -1"),
    ('{"index": Infinity, "text": "Heat"}', r"field 'index' .* got inf"),
    ('{"index": NaN, "text": "Heat"}', r"field 'index' .* got nan"),
    ('{"index": 1e999, "text": "Heat"}', r"field 'index' .* got inf"),
    ('{"index": ' + "9" * 5000 + ', "text": "Heat"}', r"a number is too long"),
    ('{"text": "Heat"}', r"missing field 'index'"),
    ('{"index": 0, "index": 1, "text": "Heat"}', r"key 'index' appears twice"),
    ('[0, "Heat"]', r"a line must be a JSON object"),
    ("[" * 50_000 + "]" * 50_000, r"nested too deeply"),
    ('{"index": 0, "resp": {"choices": [{"message": {"content": 5}}]}}', r"needs 'text'"),
    ('{"index": 0, "text": null}', r"needs 'text'"),
    ('{"index": 2, "text": "Heat"}', r"index 2 is outside test.jsonl \(0..1\)"),
])
def test_score_generations_bad_lines(tmp_path: Path, line: str, message: str) -> None:
    directory = _scoring_dir(tmp_path)
    generations = tmp_path / "gen.jsonl"
    generations.write_text('{"index": 1, "text": "Casino"}\n' + line + "\n")
    with pytest.raises(ConversationFormatError, match=r"gen\.jsonl, line 2: " + message):
        cikm.score_generations(directory, generations)


def test_score_generations_refuses_a_turn_answered_twice(tmp_path: Path) -> None:
    directory = _scoring_dir(tmp_path)
    generations = tmp_path / "gen.jsonl"
    answer = json.dumps({"index": 0, "text": "1. Heat"}) + "\n"
    generations.write_text(answer + json.dumps({"index": 1, "text": "1. Heat"}) + "\n" + answer)
    with pytest.raises(ConversationFormatError,
                       match=r"gen\.jsonl, line 3: index 0 was already answered on line 1"):
        cikm.score_generations(directory, generations)


@pytest.mark.parametrize(("test_line", "message"), [
    ('{"rec": [0.5]}', r"field 'rec': each entry must be an integer id"),
    ('{"rec": [7]}', r"field 'rec': entity id 7 is absent from entity2id"),
    ('{"context": []}', r"missing field 'rec'"),
    ("{not json", r"malformed JSON"),
])
def test_score_generations_bad_test_file(tmp_path: Path, test_line: str, message: str) -> None:
    directory = _scoring_dir(tmp_path)
    with open(directory / "test.jsonl", "a") as handle:
        handle.write(test_line + "\n")
    generations = tmp_path / "gen.jsonl"
    generations.write_text('{"index": 0, "text": "Heat"}\n')
    with pytest.raises(ConversationFormatError, match=r"test\.jsonl, line 3: " + message):
        cikm.score_generations(directory, generations)


def test_score_generations_long_answer_scores_like_its_top_names(tmp_path: Path) -> None:
    directory = _scoring_dir(tmp_path)
    generations = tmp_path / "gen.jsonl"
    long_answer = "1. Casino\n2. Heat\n" + "".join(f"{k}. Movie {k}\n" for k in range(3, 5000))
    generations.write_text(json.dumps({"index": 0, "text": long_answer}) + "\n")
    scores = cikm.score_generations(directory, generations, ks=(1, 5))
    assert scores["recall@1"] == 0.0 and scores["recall@5"] == 1.0
    assert scores["mrr@5"] == 0.5
    with pytest.raises(ValueError, match="ks must be positive"):
        cikm.score_generations(directory, generations, ks=(0,))


def test_empty_test_file_is_an_error(tmp_path: Path, corpus: pd.DataFrame, matcher) -> None:
    directory = _write(tmp_path / "d", NAMES, [0], ["", ""])
    with pytest.raises(ConversationFormatError, match=r"test\.jsonl: no lines"):
        cikm.load_cikm(directory, corpus, matcher)
