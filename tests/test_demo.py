"""Chapter 8's demo, headless: the engine's logic, and the widgets driven like a reader would
(pick a persona, press the button, read the result)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from rar_lite.book import demo
from rar_lite.reranking import rerank


class _FixedRetriever:
    """Stands in for a trained retriever: always the same candidates, scores descending."""

    def __init__(self, items: list[int]) -> None:
        self.items = items
        self.histories: list[list[int]] = []

    def topk(self, histories, k=20):
        self.histories += histories
        return (np.array([self.items[:k]]), np.array([np.arange(k, 0, -1, dtype="float32")]))


@pytest.fixture(scope="module")
def engine(corpus: pd.DataFrame, matcher) -> demo.DemoEngine:
    titles = ["Toy Story", "Heat", "Casablanca", "Jumanji", "The Usual Suspects"]
    items = [int(corpus.index[corpus.title == t][0]) for t in titles]
    return demo.DemoEngine(corpus, matcher, {"fixed": _FixedRetriever(items)},
                           {"keyword rule": rerank.KeywordReranker(corpus),
                            "retriever order": rerank.RetrieverOrder()}, k=5)


def test_liked_titles_become_the_history(engine: demo.DemoEngine, matcher) -> None:
    conversation, unresolved = engine.conversation(
        "Heat (1995), The Galactic Pancake Odyssey", "Something animated and funny.")
    assert conversation.history == (matcher.resolve("Heat (1995)").item_id,)
    assert unresolved == ["The Galactic Pancake Odyssey"]
    assert conversation.seeker_text() == "I liked Heat. Something animated and funny."
    with pytest.raises(ValueError, match="type a request"):
        engine.conversation(" ", "")


def test_ranking_carries_reasons_from_the_metadata(engine: demo.DemoEngine) -> None:
    result = engine.recommend("", "A funny animated movie please", ranker="keyword rule", top=3)
    assert result.ranking["title"].iloc[0] == "Toy Story"  # the only animated comedy
    assert "genre Animation" in result.ranking.iloc[0, -1]
    assert list(result.candidates["title"]) == ["Toy Story", "Heat", "Casablanca", "Jumanji",
                                                "The Usual Suspects"]
    assert len(result.ranking) == 3 and list(result.ranking["rank"]) == [1, 2, 3]
    plain = engine.recommend("", "A funny animated movie please", ranker="retriever order")
    assert "score" not in plain.ranking.columns  # the retriever's order has no scores
    with pytest.raises(ValueError, match="unknown option 'gpt'"):
        engine.recommend("", "anything", ranker="gpt")


def test_widget_runs_headless(engine: demo.DemoEngine) -> None:
    widget = demo.build_demo(engine)
    widget.persona.value = "family night"  # fills both text boxes
    assert widget.liked.value == demo.PERSONAS["family night"].liked
    assert widget.request.value == demo.PERSONAS["family night"].request
    widget.ranker.value = "keyword rule"
    widget.button.click()
    shown = widget.result.value
    assert "Recommended" in shown and "Toy Story" in shown and "genre Animation" in shown
    assert "I liked Toy Story, Babe." in shown
    widget.liked.value, widget.request.value = "", ""
    widget.button.click()
    assert "type a request" in widget.result.value  # errors are shown, not raised
    assert widget.box.children[0] is widget.persona


def test_titles_in_free_text_are_found_and_unknown_ones_reported(matcher) -> None:
    from rar_lite.data.matching import find_titles

    heat, suspects = (matcher.resolve(t).item_id for t in ("Heat (1995)", "The Usual Suspects"))
    toy, matrix = (matcher.resolve(t).item_id for t in ("Toy Story", "The Matrix"))
    assert find_titles("I loved Heat and want another heist film", matcher).items == [heat]
    found = find_titles('Loved "The Usual Suspects" and Heat (1995). Not The Galactic Pancake '
                        'Odyssey though', matcher)
    assert found.items == [suspects, heat]
    assert found.unknown == ["The Galactic Pancake Odyssey"]
    assert find_titles("Something like Toy Story and The Matrix, please.", matcher).items == [
        toy, matrix]  # one capitalised run, split at "and" when it names no movie as a whole
    nothing = find_titles("I want a comedy. Something light!", matcher)
    assert nothing.items == [] and nothing.unknown == []  # openers are not titles
    assert find_titles('Like "Hte Matrix"', matcher).items == [matrix]  # quoted: typos allowed


def test_recommend_text_runs_the_pipeline_and_serialises(engine: demo.DemoEngine,
                                                         matcher) -> None:
    result = engine.recommend_text("I loved Heat. Something animated and funny like "
                                   "The Galactic Pancake Odyssey", ranker="keyword rule", top=2)
    heat = matcher.resolve("Heat (1995)").item_id
    assert result.conversation.history == (heat,) and engine.retrievers["fixed"].histories[
        -1] == [heat]
    assert result.unresolved == ["The Galactic Pancake Odyssey"]
    record = result.as_json()
    assert [r["title"] for r in record["recommendations"]] == list(result.ranking["title"])
    assert record["recommendations"][0]["item_id"] == result.items[0]
    assert "genre Animation" in record["recommendations"][0]["why"]
    assert record["history"] == [heat] and record["unresolved"] == result.unresolved
    with pytest.raises(ValueError, match="type a request"):
        engine.recommend_text("   ")


def test_recommend_command_prints_table_or_json(engine: demo.DemoEngine, monkeypatch,
                                                capsys) -> None:
    import json

    from rar_lite import cli

    asked = {}

    def fake_engine(**options):
        asked.update(options)
        return engine

    monkeypatch.setattr(demo, "serving_engine", fake_engine)
    assert cli.main(["recommend", "I loved Heat and want something animated", "--k", "2",
                     "--quick", "--no-progress"]) == 0
    printed = capsys.readouterr().out
    assert "movies you named: Heat (1995)" in printed and "rank" in printed
    assert asked == {"profile": "quick", "progress": False, "llm": None}
    assert cli.main(["recommend", "Heat", "--json", "--no-progress"]) == 0
    record = json.loads(capsys.readouterr().out)
    assert len(record["recommendations"]) == 5 and record["history"]
    assert cli.main(["recommend", "  ", "--no-progress"]) == 2
    assert "the request is empty" in capsys.readouterr().err
    assert cli.main(["recommend", "Heat", "--llm", "gpt"]) == 2


def test_a_retriever_that_reads_the_words_gets_the_conversation(corpus, matcher) -> None:
    class _WordsRetriever(_FixedRetriever):
        def topk_conversations(self, conversations, k=20):
            self.histories += [c.seeker_text() for c in conversations]
            return self.topk([[]], k)

    titles = ["Toy Story", "Heat", "Casablanca"]
    reader = _WordsRetriever([int(corpus.index[corpus.title == t][0]) for t in titles])
    engine = demo.DemoEngine(corpus, matcher, {"words": reader},
                             {"retriever order": rerank.RetrieverOrder()}, k=3)
    result = engine.recommend_text("A heist film like Heat")
    assert reader.histories[0] == "A heist film like Heat"  # the text, not only the history
    assert list(result.ranking["title"]) == titles


def test_serving_engine_writes_a_record_then_loads_from_it(corpus, monkeypatch) -> None:
    """`rar-lite recommend`'s engine: built the chapters' way once (the record of its parts
    written), then loaded from the record without rebuilding the data; a record whose parts
    fail to load is built again, with a warning."""
    import json
    from types import SimpleNamespace

    from rar_lite.backends import llm_local
    from rar_lite.experiments import artifacts, profiles

    built, loaded, assembled = [], [], []
    vocab = SimpleNamespace(item_ids=np.array([3, 5, 8]))
    served = SimpleNamespace(vocab=vocab, popularity=np.array([4.0, 2.0, 1.0]))
    setup = SimpleNamespace(corpus=corpus, sets="sets", served=served,
                            run_directory="/cache/retriever/lrurec-x")

    def fake_setup(seed, profile, progress=False):
        built.append(seed)
        return setup

    def fake_tuning(profile, sets, progress=False):
        assert sets == "sets"
        return "tuned", SimpleNamespace(adapter="/cache/adapters/pointwise-x")

    def fake_load(record):
        loaded.append(record)
        if record["lrurec"] == "gone":
            raise FileNotFoundError("gone/config.json")
        return "served from the record"

    monkeypatch.setattr(artifacts, "loop_setup", fake_setup)
    monkeypatch.setattr(artifacts, "chapter_tuning", fake_tuning)
    monkeypatch.setattr(demo, "_load_served", fake_load)
    monkeypatch.setattr(llm_local, "TransformersBackend", lambda adapter: f"backend of {adapter}")
    monkeypatch.setattr(demo, "_assemble", lambda corpus, served, tuned, model, dense, progress:
                        assembled.append((served, tuned, model, dense)) or "engine")
    path = demo.serving_record_path(7, profiles.QUICK)
    path.unlink(missing_ok=True)

    assert demo.serving_engine(7, "quick") == "engine" and built == [7] and not loaded
    record = json.loads(path.read_text())
    assert record == {"lrurec": "/cache/retriever/lrurec-x", "item_ids": [3, 5, 8],
                      "popularity": [4.0, 2.0, 1.0], "adapter": "/cache/adapters/pointwise-x"}
    assert demo.serving_engine(7, "quick", llm="hf:x") == "engine" and built == [7]
    assert loaded == [record]
    assert assembled == [(served, "tuned", None, True),
                         ("served from the record", "backend of /cache/adapters/pointwise-x",
                          "hf:x", True)]
    path.write_text(json.dumps({**record, "lrurec": "gone"}))
    with pytest.warns(UserWarning, match="unusable .*gone/config.json.*building the engine"):
        demo.serving_engine(7, "quick")
    assert built == [7, 7] and json.loads(path.read_text()) == record
    assert demo.serving_record_path(8, profiles.QUICK) != path  # another seed, another record
    assert demo.serving_record_path(7, profiles.FULL) != path


@pytest.fixture()
def server(engine: demo.DemoEngine):
    """`rar-lite serve`'s server around the small engine, on a free port, in a thread."""
    import threading

    from rar_lite.book import serving

    running = serving.RecommendServer(engine, port=0)
    thread = threading.Thread(target=running.serve_forever, daemon=True)
    thread.start()
    yield running
    running.shutdown()
    running.server_close()
    thread.join(timeout=10)


def _post(url: str, body: bytes) -> tuple[int, dict]:
    """A raw POST /recommend: the status and the JSON answer."""
    import json
    import urllib.error
    import urllib.request

    request = urllib.request.Request(f"{url}/recommend", data=body)
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read())


def test_server_answers_as_the_engine_does_and_names_what_is_wrong(server, engine) -> None:
    import json

    from rar_lite.book import serving

    assert serving.health(server.url) == {"status": "ok", "k": 5, "retriever": "fixed",
                                          "ranker": "keyword rule"}
    text = "I loved Heat. Something animated and funny"
    answer = serving.ask(server.url, text, k=2)
    local = json.loads(json.dumps(serving.record(engine, text, 2)))
    assert answer.pop("seconds") >= 0 and local.pop("seconds") >= 0
    assert answer == local and answer["named"] == ["Heat (1995)"]
    assert [r["title"] for r in answer["recommendations"]][0] == "Toy Story"
    assert (answer["retriever"], answer["ranker"], answer["retrieved"]) == (
        "fixed", "keyword rule", 5)
    for body, wrong in ((b"{nope", "not JSON"), (b"[1]", "JSON object"),
                        (b'{"text": "  "}', '"text" must be a non-empty'),
                        (b'{"text": "Heat", "k": 0}', '"k" must be a positive integer'),
                        (b'{"text": "Heat", "k": true}', '"k" must be'),
                        (json.dumps({"text": "x" * 2001}).encode(), "at most 2000")):
        status, error = _post(server.url, body)
        assert status == 400 and wrong in error["error"], (body, error)
    status, error = _post(server.url, b"x" * (serving.MAX_BODY + 1))
    assert status == 400 and "1 to 64000 bytes" in error["error"]
    with pytest.raises(serving.ServerError, match=r"refused the request \(404\): no such path"):
        serving.health(server.url + "/elsewhere")
    assert len(serving.ask(server.url, "Heat", k=9)["recommendations"]) == 5  # its K at most


def test_recommend_through_the_server_prints_what_the_local_engine_prints(
        server, engine, monkeypatch, capsys) -> None:
    from rar_lite import cli

    monkeypatch.setattr(demo, "serving_engine", lambda **options: engine)
    text = "I loved Heat and The Galactic Pancake Odyssey, want something animated"
    assert cli.main(["recommend", text, "--k", "3", "--no-progress"]) == 0
    local = capsys.readouterr().out.splitlines()
    assert cli.main(["recommend", text, "--k", "3", "--server", server.url]) == 0
    remote = capsys.readouterr().out.splitlines()
    assert local[:-1] == remote[:-1] and len(remote) == 7  # named, unknown, header, 3 rows, time
    assert local[0] == "movies you named: Heat (1995)"
    assert local[1] == "not found in the corpus (not guessed): The Galactic Pancake Odyssey"
    assert local[2].split()[:4] == ["rank", "title", "year", "genres"]
    assert local[3].split()[:3] == ["1", "Toy", "Story"]
    assert remote[-1].endswith("s: fixed retrieves 5, then keyword rule)")
    monkeypatch.setenv(cli.SERVER_ENV, server.url)  # the default of --server
    assert cli.main(["recommend", text, "--k", "3"]) == 0
    assert capsys.readouterr().out.splitlines()[:-1] == remote[:-1]
    assert cli.main(["recommend", "Heat", "--server", server.url, "--quick"]) == 2
    assert "--quick cannot go with --server" in capsys.readouterr().err


def test_recommend_without_a_server_says_how_to_start_one(capsys) -> None:
    import socket

    from rar_lite import cli

    with socket.socket() as probe:  # a port nothing listens on
        probe.bind(("127.0.0.1", 0))
        url = f"http://127.0.0.1:{probe.getsockname()[1]}"
    assert cli.main(["recommend", "Heat", "--server", url]) == 1
    err = capsys.readouterr().err
    assert f"no rar-lite server answers at {url}" in err and "rar-lite serve" in err


def test_serve_command_loads_once_and_stops_on_interrupt(engine, server, monkeypatch,
                                                         capsys) -> None:
    from rar_lite import cli
    from rar_lite.book import serving

    asked = []
    monkeypatch.setattr(demo, "serving_engine", lambda **options: asked.append(options) or engine)

    def interrupted(self, poll_interval=0.5):
        raise KeyboardInterrupt

    monkeypatch.setattr(serving.RecommendServer, "serve_forever", interrupted)
    assert cli.main(["serve", "--port", "0", "--quick", "--no-progress"]) == 0
    out = capsys.readouterr()
    assert "rar-lite serves on http://127.0.0.1:" in out.out and "stopped" in out.err
    assert asked == [{"profile": "quick", "progress": False, "llm": None}]
    taken = server.server_address[1]  # the fixture's server holds this port
    assert cli.main(["serve", "--port", str(taken), "--no-progress"]) == 2
    assert f"--port {taken}: cannot listen on 127.0.0.1:{taken}" in capsys.readouterr().err


def test_recommend_through_a_server_imports_no_heavy_module(server, tmp_path) -> None:
    """The client side of `recommend --server` stays light: none of the libraries the engine
    needs is imported (the point of the server)."""
    import json
    import subprocess
    import sys

    heavy = ("torch", "transformers", "sentence_transformers", "faiss", "pandas", "numpy")
    code = ("import json, sys\n"
            "from rar_lite import cli\n"
            f"assert cli.main(['recommend', 'I loved Heat', '--server', {server.url!r}]) == 0\n"
            f"print(json.dumps(sorted(m for m in {heavy!r} if m in sys.modules)))\n")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          cwd=tmp_path, timeout=120)
    assert done.returncode == 0, done.stderr
    assert "movies you named: Heat (1995)" in done.stdout
    assert json.loads(done.stdout.splitlines()[-1]) == []
