"""`rar-lite download`: against a local HTTP server laid out like raw.githubusercontent.com.

No test reaches beyond 127.0.0.1; the served files are small valid ones written here.
"""

from __future__ import annotations

import hashlib
import json
import re
import shutil
import socket
import threading
from collections.abc import Iterator
from functools import partial
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from rar_lite import cli
from rar_lite.data import download
from rar_lite.dialogue import realdata
from rar_lite.evaluation import harness

ENV_VARS = ("RAR_LITE_INSPIRED_DIR", "RAR_LITE_INSPIRED_DEV_DIR", "RAR_LITE_REDIAL_DIR",
            "RAR_LITE_REDDIT_MOVIE_DIR")


def _cikm_files() -> dict[str, str]:
    entities = {"<http://dbpedia.org/resource/Heat_(1995_film)>": 0,
                "<http://dbpedia.org/resource/Fargo_(1996_film)>": 1,
                "<http://dbpedia.org/resource/Al_Pacino>": 2}
    turns = [
        {"context": ["", "I loved Heat. Something with a twist?"], "rec": [1],
         "prev_entity": [0, 2], "dialog_id": "test_0", "turn_id": "test_1", "is_user": 0,
         "entity_name": ["Heat"], "input": "User: I loved Heat.\nSystem: "},
        {"context": [""], "rec": [0], "prev_entity": [], "dialog_id": "test_1",
         "turn_id": "test_0", "is_user": 0, "entity_name": [], "input": "System: "},
    ]
    return {"entity2id.json": json.dumps(entities), "item_ids.json": json.dumps([0, 1]),
            "test.jsonl": "".join(json.dumps(turn) + "\n" for turn in turns)}


def _dev_files() -> dict[str, str]:
    dialogue = [{"text": "Any thriller?", "role": "SEEKER", "movie": [], "movie_name": [],
                 "movie_link": [], "entity_name": [], "entity_link": []},
                {"text": "Try Heat", "role": "RECOMMENDER", "movie": ["Heat"],
                 "movie_name": ["Heat"],
                 "movie_link": ["<http://dbpedia.org/resource/Heat_(1995_film)>"],
                 "entity_name": [], "entity_link": []}]
    return {"dev.jsonl": json.dumps(dialogue) + "\n", "LICENSE.UniCRS": "MIT License\n"}


def _serve_tree(tree: Path) -> dict[str, str]:
    """Lay out every file `download` fetches under `tree` as raw.githubusercontent.com does;
    returns URL path -> content."""
    contents = {**_cikm_files(), **_dev_files()}
    served = {}
    for parts in download.SOURCES.values():
        for part in parts:
            for remote in part.files:
                path = f"{remote.repo}/{remote.commit}/{remote.path}"
                (tree / path).parent.mkdir(parents=True, exist_ok=True)
                (tree / path).write_text(contents[remote.name])
                served[path] = contents[remote.name]
    return served


class _Handler(SimpleHTTPRequestHandler):
    requests: list[str]

    def do_GET(self) -> None:  # noqa: N802 - http.server's name
        self.requests.append(self.path)
        super().do_GET()

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture()
def mirror(tmp_path: Path) -> Iterator[tuple[str, Path, list[str]]]:
    """(base URL, served tree, the paths requested so far) of a server on 127.0.0.1."""
    tree = tmp_path / "served"
    _serve_tree(tree)
    requests: list[str] = []
    handler = type("Handler", (_Handler,), {"requests": requests})
    server = ThreadingHTTPServer(("127.0.0.1", 0), partial(handler, directory=str(tree)))
    thread = threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}", tree, requests
    server.shutdown()
    server.server_close()


@pytest.fixture()
def root(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """An empty data root as `$RAR_LITE_DATA_DIR`; no dataset variable leaks in (the Makefile
    exports RAR_LITE_INSPIRED_DIR)."""
    for name in ENV_VARS:
        monkeypatch.delenv(name, raising=False)
    path = tmp_path / "data"
    monkeypatch.setenv(download.DATA_ENV, str(path))
    return path


def _closed_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def _he_url(base: str, name: str, file: str) -> str:
    return f"{base}/{download.HE_REPO}/{download.HE_COMMIT}/data/{name}/{file}"


def test_download_writes_the_files_and_their_source(mirror, root: Path) -> None:
    base, tree, _ = mirror
    where = download.download("inspired", mirror=base, progress=False)
    assert where == root / "inspired"
    expected = {**_cikm_files(), **_dev_files()}
    for directory, names in ((root / "inspired", download.CIKM_FILES),
                             (root / "inspired_dev", ("dev.jsonl", "LICENSE.UniCRS"))):
        assert sorted(p.name for p in directory.iterdir()) == sorted([*names, "SOURCE.json"])
        source = json.loads((directory / "SOURCE.json").read_text())
        assert set(source["files"]) == set(names) and source["downloaded"][:2] == "20"
        for name in names:
            assert (directory / name).read_text() == expected[name]
            entry = source["files"][name]
            assert entry["sha256"] == hashlib.sha256(expected[name].encode()).hexdigest()
            assert entry["url"].startswith(base + "/") and entry["commit"] in entry["url"]
    test_source = json.loads((root / "inspired" / "SOURCE.json").read_text())
    assert test_source["files"]["test.jsonl"]["url"] == _he_url(base, "inspired", "test.jsonl")
    assert "no license file" in test_source["terms"]
    assert sorted(p.name for p in root.iterdir()) == ["inspired", "inspired_dev"]  # no leftovers


def test_downloaded_data_is_found_by_the_readers(mirror, root: Path,
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    assert download.find_dataset("inspired") is None and download.find_dev() is None
    with pytest.raises(FileNotFoundError, match="run `rar-lite download inspired`"):
        harness.data_dir(harness.EvalConfig(), "inspired")
    download.download("inspired", mirror=mirror[0], progress=False)
    assert download.find_dataset("inspired") == root / "inspired"
    assert download.find_dev() == root / "inspired_dev"
    assert download.find_dataset("redial") is None
    assert harness.data_dir(harness.EvalConfig(), "inspired") == str(root / "inspired")
    assert realdata.dev_file() == root / "inspired_dev" / "dev.jsonl"
    # the environment variable wins over the download
    monkeypatch.setenv("RAR_LITE_INSPIRED_DIR", "/elsewhere/inspired")
    assert download.find_dataset("inspired") == Path("/elsewhere/inspired")
    with pytest.raises(ValueError, match="unknown dataset 'movielens'"):
        download.find_dataset("movielens")


def test_a_malformed_line_names_the_file_and_line_and_leaves_nothing(mirror, root: Path) -> None:
    base, tree, _ = mirror
    served = tree / download.HE_REPO / download.HE_COMMIT / "data/inspired/test.jsonl"
    served.write_text(served.read_text() + '{"context": ["broken"\n')
    with pytest.raises(download.DownloadError,
                       match=r"inspired/test\.jsonl \(from http://127\.0\.0\.1:\d+/.*\), "
                             r"line 3: malformed JSON"):
        download.download("inspired", mirror=base, progress=False)
    assert not root.exists() or list(root.iterdir()) == []


def test_bad_entities_are_refused_as_the_reader_would(mirror, root: Path) -> None:
    base, tree, _ = mirror
    served = tree / download.HE_REPO / download.HE_COMMIT / "data/redial/entity2id.json"
    served.write_text('{"<a>": 0, "<b>": 0}')
    with pytest.raises(download.DownloadError, match=r"redial/entity2id\.json: id 0 is given to"):
        download.download("redial", mirror=base, progress=False)
    assert not (root / "redial").exists()


def test_unreachable_server_is_a_connection_error_naming_the_urls(root: Path) -> None:
    base = f"http://127.0.0.1:{_closed_port()}"
    with pytest.raises(ConnectionError) as error:
        download.download("redial", mirror=base, progress=False)
    message = str(error.value)
    assert "offline" in message and _he_url(base, "redial", "test.jsonl") in message
    assert _he_url(base, "redial", "item_ids.json") in message  # every file to fetch by hand
    assert f"into {root / 'redial'}" in message
    assert not root.exists() or list(root.iterdir()) == []


def test_http_404_is_clear_and_leaves_no_partial_dataset(mirror, root: Path) -> None:
    base, tree, _ = mirror
    (tree / download.UNICRS_REPO).rename(tree / "moved")  # the dev split is missing
    with pytest.raises(download.DownloadError, match=r"dev\.jsonl answered HTTP 404"):
        download.download("inspired", mirror=base, progress=False)
    # the test split was fetched fine, but the two appear together or not at all
    assert not root.exists() or list(root.iterdir()) == []


def test_an_existing_copy_is_not_fetched_again_unless_forced(mirror, root: Path) -> None:
    base, tree, requests = mirror
    download.download("redial", mirror=base, progress=False)
    fetched = len(requests)
    assert fetched == 3
    served = tree / download.HE_REPO / download.HE_COMMIT / "data/redial/item_ids.json"
    served.write_text("[0]")
    download.download("redial", mirror=base, progress=False)
    assert len(requests) == fetched
    assert json.loads((root / "redial" / "item_ids.json").read_text()) == [0, 1]
    download.download("redial", mirror=base, force=True, progress=False)
    assert len(requests) == 2 * fetched
    assert json.loads((root / "redial" / "item_ids.json").read_text()) == [0]
    assert sorted(p.name for p in root.iterdir()) == ["redial"]


def test_only_the_missing_part_is_fetched(mirror, root: Path) -> None:
    base, _, requests = mirror
    download.download("inspired", mirror=base, progress=False)
    shutil.rmtree(root / "inspired_dev")
    requests.clear()
    download.download("inspired", mirror=base, progress=False)
    assert sorted(Path(r).name for r in requests) == ["LICENSE", "dev.jsonl"]


def test_reddit_movie_says_where_it_is_published(root: Path) -> None:
    with pytest.raises(ValueError, match=r"Hugging Face Hub .*ZhankuiHe/reddit_cikm.*"
                                         r"RAR_LITE_REDDIT_MOVIE_DIR"):
        download.download("reddit-movie")
    with pytest.raises(ValueError, match="unknown dataset 'movielens'"):
        download.download("movielens")
    with pytest.raises(ValueError, match="not an http"):
        download.download("redial", mirror="ftp://example.org")
    assert not root.exists()


def test_cli_download_end_to_end(mirror, root: Path, tmp_path: Path,
                                 capsys: pytest.CaptureFixture[str]) -> None:
    base = mirror[0]
    to = tmp_path / "elsewhere"
    argv = ["download", "inspired", "--mirror", base, "--to", str(to), "--no-progress"]
    assert cli.main(argv) == 0
    out = capsys.readouterr().out
    assert f"inspired test split: {to / 'inspired'} (fetched)" in out
    assert f"inspired dev split: {to / 'inspired_dev'} (fetched)" in out
    assert f"set RAR_LITE_DATA_DIR={to}" in out and "no license file" in out
    assert (to / "inspired" / "test.jsonl").read_text() == _cikm_files()["test.jsonl"]
    assert (to / "inspired_dev" / "dev.jsonl").is_file()
    assert cli.main(argv) == 0
    assert "already there" in capsys.readouterr().out
    # into the default data root: the variables are not needed any more
    assert cli.main(["download", "redial", "--mirror", base, "--no-progress"]) == 0
    out = capsys.readouterr().out
    assert f"redial test split: {root / 'redial'} (fetched)" in out
    assert "RAR_LITE_REDIAL_DIR is not needed any more" in out


@pytest.mark.parametrize(("argv", "code", "message"), [
    (["download", "reddit-movie"], 1, r"ZhankuiHe/reddit_cikm"),
    (["download", "redial", "--mirror", "ftp://x"], 2, r"--mirror: 'ftp://x' is not an http"),
    (["download", "movielens"], 2, r"argument name: invalid choice: 'movielens'"),
    (["download", "redial", "--mirror", "http://127.0.0.1:{port}"], 1,
     r"could not reach 127\.0\.0\.1:\d+ .*offline"),
])
def test_cli_download_errors_are_one_line(argv: list[str], code: int, message: str, root: Path,
                                          capsys: pytest.CaptureFixture[str]) -> None:
    argv = [arg.format(port=_closed_port()) for arg in [*argv, "--no-progress"]]
    try:
        got = cli.main(argv)
    except SystemExit as error:  # argparse's own checks
        got = error.code
    err = capsys.readouterr().err
    assert got == code and err.count("\n") == 1, err
    assert re.search(message, err), err


def test_check_file_names_the_line_of_a_non_utf8_byte_and_of_bad_json(tmp_path: Path) -> None:
    lines = tmp_path / "test.jsonl"
    lines.write_bytes(b'{"a": 1}\n{"b": "\xff"}\n')
    with pytest.raises(download.DownloadError, match=r"^inspired/test\.jsonl, line 2: not UTF-8"):
        download._check_file(lines, "inspired/test.jsonl")
    table = tmp_path / "entity2id.json"
    table.write_bytes(b'\xef\xbb\xbf{"a": 1}')  # a byte-order mark is fine
    download._check_file(table, "entity2id.json")
    table.write_bytes(b'{"a": 1,\n}')
    with pytest.raises(download.DownloadError, match=r"entity2id\.json, line 2: malformed JSON"):
        download._check_file(table, "entity2id.json")
