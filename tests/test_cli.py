import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

from rar_lite import cli
from rar_lite.data.conversations import ConversationFormatError


def test_resolve_command(capsys: pytest.CaptureFixture[str], corpus) -> None:
    assert cli.main(["resolve", "Heat (1995)", "The Galactic Pancake Odyssey"]) == 0
    out = capsys.readouterr().out
    assert "Heat (1995)" in out and "exact" in out
    assert "The Galactic Pancake Odyssey" in out


def test_corpus_command(capsys: pytest.CaptureFixture[str], corpus) -> None:
    assert cli.main(["corpus"]) == 0
    out = capsys.readouterr().out
    assert "link precision" in out and "n items" in out


def test_unknown_command_exits_with_usage() -> None:
    with pytest.raises(SystemExit) as error:
        cli.main(["nonsense"])
    assert error.value.code == 2


# --- bad arguments fail at once, with one line and the right exit code (issue 19) ----------

@pytest.fixture()
def no_work(monkeypatch: pytest.MonkeyPatch) -> None:
    """Any real work (corpus, models, the evaluation itself) fails the test."""
    from rar_lite.data import corpus
    from rar_lite.evaluation import harness

    def forbidden(*args, **kwargs):
        raise AssertionError("work started before the arguments were checked")

    monkeypatch.setattr(harness, "evaluate", forbidden)
    monkeypatch.setattr(corpus, "load_corpus", forbidden)


def _dataset(directory: Path) -> Path:
    directory.mkdir(parents=True)
    for name in ("test.jsonl", "entity2id.json", "item_ids.json"):
        (directory / name).write_text("")
    return directory


def _fails(argv: list[str], code: int, message: str, capsys: pytest.CaptureFixture[str]) -> None:
    """`rar-lite argv` exits with `code` and one line on stderr matching `message`."""
    try:
        got = cli.main(argv)
    except SystemExit as error:  # argparse's own checks
        got = error.code
    err = capsys.readouterr().err
    assert got == code, err
    assert err.count("\n") == 1 and "Traceback" not in err, err
    assert re.search(message, err), err


@pytest.mark.parametrize(("extra", "message"), [
    (["--seeds", "-1"], r"argument --seeds: -1 is below 0"),
    (["--seeds", "1.5"], r"argument --seeds: '1.5' is not an integer"),
    (["--seeds", "x"], r"argument --seeds: 'x' is not an integer"),
    (["--n-simulated", "0"], r"argument --n-simulated: 0 is below 1"),
    (["--n-real", "-5"], r"argument --n-real: -5 is below 1"),
    (["--n-generate", "1e3"], r"argument --n-generate: '1e3' is not an integer"),
    (["--systems", "gpt5"], r"unknown system 'gpt5'"),
    (["--datasets", "movielens"], r"unknown dataset 'movielens'"),
    (["--seeds", "0", "0"], r"--seeds: \[0, 0\] repeats a seed"),
    (["--data-dir", "inspired"], r"--data-dir 'inspired': expected NAME=DIRECTORY"),
    (["--data-dir", "imdb=/tmp"], r"unknown dataset 'imdb'"),
    (["--datasets", "inspired", "--data-dir", "inspired={missing}"],
     r"--data-dir: '.*missing' is not a directory"),
    (["--datasets", "inspired", "--data-dir", "inspired={partial}"],
     r"has no entity2id.json, item_ids.json"),
    (["--datasets", "redial"], r"--datasets redial: redial not found.*RAR_LITE_REDIAL_DIR"),
    (["--out", "{file}"], r"--out '.*a-file' is a file, not a directory"),
    (["--out", "{file}/below"], r"--out '.*a-file/below' cannot be written"),
    (["--llm", "smollm2", "gpt-5"], r"--llm: .*openai:<model>"),
    (["--llm", "smollm2", "smollm2"], r"a backbone is named twice"),
])
def test_evaluate_bad_arguments_exit_2_before_any_work(
        extra: list[str], message: str, tmp_path: Path, no_work,
        monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.delenv("RAR_LITE_REDIAL_DIR", raising=False)
    (tmp_path / "a-file").write_text("")
    partial = tmp_path / "partial"
    partial.mkdir()
    (partial / "test.jsonl").write_text("")
    places = {"missing": tmp_path / "missing", "partial": partial, "file": tmp_path / "a-file"}
    argv = ["evaluate", "--quick", "--out", str(tmp_path / "out"), "--datasets", "simulated",
            *[arg.format(**places) for arg in extra]]  # later options override these
    _fails(argv, 2, message, capsys)


def test_evaluate_good_arguments_reach_the_work(tmp_path: Path, no_work,
                                               capsys: pytest.CaptureFixture[str]) -> None:
    data = _dataset(tmp_path / "inspired")
    argv = ["evaluate", "--quick", "--datasets", "simulated", "inspired", "--seeds", "3", "1",
            "--data-dir", f"inspired={data}", "--out", str(tmp_path / "new" / "out")]
    _fails(argv, 1, r"work started before the arguments were checked", capsys)
    assert (tmp_path / "new" / "out").is_dir()  # created (and probed) before the work
    args = cli.build_parser().parse_args(argv)
    config = cli.validate_evaluate(args)
    assert config.seeds == (3, 1) and config.data_dirs == {"inspired": str(data)}
    assert (config.llm, config.more_llms) == ("smollm2", ())
    args = cli.build_parser().parse_args([*argv, "--llm", "hf:org/a", "smollm2"])
    config = cli.validate_evaluate(args)  # further backbones: rows of their own
    assert (config.llm, config.more_llms) == ("hf:org/a", ("smollm2",))


def test_runtime_error_is_one_line_and_debug_shows_the_traceback(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    data = _dataset(tmp_path / "d")
    (data / "entity2id.json").write_text('{"Heat (1995)": 0.5}')
    (data / "item_ids.json").write_text("[0]")
    generations = tmp_path / "g.jsonl"
    generations.write_text('{"index": 0, "text": "Heat"}\n')
    argv = ["score-generations", "--dataset-dir", str(data), "--generations", str(generations)]
    _fails(argv, 1, r"entity2id\.json: the id of 'Heat \(1995\)' must be an integer", capsys)
    with pytest.raises(ConversationFormatError):
        cli.main(["--debug", *argv])
    with pytest.raises(ConversationFormatError):
        cli.main([*argv, "--debug"])
    _fails(["score-generations", "--dataset-dir", str(data), "--generations",
            str(tmp_path / "none.jsonl")], 2, r"--generations: '.*none.jsonl' is not a file",
           capsys)
    _fails(["score-generations", "--dataset-dir", str(tmp_path), "--generations",
            str(generations)], 2, r"--dataset-dir: .* has no test.jsonl", capsys)


def test_resolve_refuses_an_argument_that_is_not_utf8(no_work,
                                                      capsys: pytest.CaptureFixture[str]) -> None:
    name = b"Heat \xff (1995)".decode("utf-8", "surrogateescape")  # how Python passes argv
    _fails(["resolve", "Heat", name], 2, r"name 'Heat \\xff \(1995\)' is not valid UTF-8",
           capsys)


def test_interrupt_is_one_line(monkeypatch: pytest.MonkeyPatch,
                               capsys: pytest.CaptureFixture[str]) -> None:
    from rar_lite.data import corpus

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(corpus, "load_corpus", interrupted)
    _fails(["corpus"], 130, r"rar-lite corpus: interrupted", capsys)


def test_unknown_option_is_one_line(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as error:
        cli.main(["evaluate", "--frobnicate"])
    err = capsys.readouterr().err
    assert error.value.code == 2 and err.count("\n") == 1 and "--frobnicate" in err


# --- score-generations: the nearest-name search, and what the command imports (issue 20) -------

DBPEDIA = "<http://dbpedia.org/resource/{}>"
#: Modules the `--help` and `score-generations` paths must not import: each costs from a few
#: tenths of a second (pandas) to seconds (torch) of a command that needs none of them.
HEAVY = ("torch", "transformers", "sentence_transformers", "faiss", "trl", "peft", "datasets",
         "matplotlib", "seaborn", "pandas", "scipy")


def _scoring_dataset(tmp_path: Path, answers: list[str]) -> list[str]:
    """A CIKM-format dataset whose two movies share the name "water" (plus Hoffa), one answer
    per turn; the `score-generations` arguments for it."""
    data = tmp_path / "d"
    data.mkdir()
    names = {DBPEDIA.format("Water_(1985_film)"): 7, DBPEDIA.format("Water_(2005_film)"): 3,
             DBPEDIA.format("Hoffa_(film)"): 5}
    (data / "entity2id.json").write_text(json.dumps(names))
    (data / "item_ids.json").write_text("[7, 3, 5]")
    turn = {"context": ["", "Hi", "Something"], "rec": [7], "prev_entity": []}
    (data / "test.jsonl").write_text(
        "".join(json.dumps({**turn, "rec": rec}) + "\n" for rec in ([7], [3, 5])))
    generations = tmp_path / "g.jsonl"
    generations.write_text("".join(json.dumps({"index": index, "text": text}) + "\n"
                                   for index, text in enumerate(answers)))
    return ["score-generations", "--dataset-dir", str(data), "--generations", str(generations)]


def test_score_generations_takes_the_first_of_equally_near_entities(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    # "Water" names both 7 and 3 (distance 0): the first in entity2id.json, 7, as rapidfuzz's
    # extractOne picks it; "Hofa" (a typo, asked twice) is nearest to Hoffa in both turns
    argv = _scoring_dataset(tmp_path, ["1. Hofa\n2. Water (1985)", "1. Water\n2. Hofa"])
    assert cli.main(argv) == 0
    scores = json.loads(capsys.readouterr().out)
    # pairs: turn 0 target 7 at rank 1; turn 1 target 3 missing (Water is 7), 5 at rank 1
    assert (scores["n_turns"], scores["n_pairs"]) == (2, 3)
    assert scores["recall@1"] == 0.0 and scores["recall@5"] == pytest.approx(2 / 3)
    assert scores["mrr@5"] == pytest.approx(1 / 3)


@pytest.mark.parametrize("argv", [None, ["--help"], "score-generations"])
def test_command_imports_no_heavy_module(argv: list[str] | str | None, tmp_path: Path) -> None:
    """`import rar_lite.cli` (with the modules score-generations uses), `rar-lite --help` and
    `rar-lite score-generations` import none of `HEAVY`: a new eager import is caught here."""
    if argv == "score-generations":
        argv = _scoring_dataset(tmp_path, ["1. Water\n2. Hofa", "Hoffa, Water"])
    code = ("import json, sys\n"
            "from rar_lite import cli, metrics\n"
            "from rar_lite.data import cikm, parsing\n"
            "argv = json.loads(sys.argv[1])\n"
            "if argv is not None:\n"
            "    try:\n"
            "        assert cli.main(argv) == 0\n"
            "    except SystemExit as stop:\n"
            "        assert stop.code == 0\n"
            f"print(json.dumps(sorted(m for m in {HEAVY!r} if m in sys.modules)))\n")
    done = subprocess.run([sys.executable, "-c", code, json.dumps(argv)], capture_output=True,
                          text=True, cwd=tmp_path, timeout=120)
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout.splitlines()[-1]) == []
