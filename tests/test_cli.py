import pytest

from rar_lite import cli


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
