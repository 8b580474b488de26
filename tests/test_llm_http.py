"""The OpenAI-compatible backend against a real HTTP server on loopback, and the response cache."""

import json
import threading
import time
from collections import deque
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from rar_lite.backends import llm, llm_api

KEY = "sk-test-secret-123"


class ScriptedServer:
    """Answers each POST with the next scripted action: ("ok", text), ("status", code),
    ("sleep", seconds), ("malformed", body), ("echo", code) (an error body quoting the request
    and its headers, key included), ("raw", (code, body, headers)), ("drip", where) (sends the
    body or the headers one byte every 50 ms, for at most 10 s)."""

    def __init__(self) -> None:
        self.script: deque = deque()
        self.requests: list[dict] = []
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args) -> None:  # keep test output clean
                pass

            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length", 0))
                body = json.loads(self.rfile.read(length))
                outer.requests.append({"path": self.path, "body": body,
                                       "auth": self.headers.get("Authorization")})
                kind, value = outer.script.popleft() if outer.script else ("ok", "default")
                if kind == "sleep":
                    time.sleep(value)
                    kind, value = "ok", "late"
                if kind == "ok":
                    payload = json.dumps({"choices": [{"message": {"role": "assistant",
                                                                   "content": value}}]})
                    self._send(200, payload)
                elif kind == "malformed":
                    self._send(200, value)
                elif kind == "echo":
                    self._send(value, json.dumps({"error": {"message": (
                        f"bad request: {self.headers.get('Authorization')} is invalid for "
                        f"{body}, headers {dict(self.headers)}")}}))
                elif kind == "raw":
                    self._send(*value)
                elif kind == "drip":
                    self._drip(value)
                else:
                    self._send(value, json.dumps({"error": {"message": f"failure {value}"}}))

            def _send(self, code: int, payload: str, headers: dict | None = None) -> None:
                data = payload.encode()
                self.send_response(code)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                if code == 429 and not headers:
                    self.send_header("Retry-After", "0")
                for name, value in (headers or {}).items():
                    self.send_header(name, value)
                self.end_headers()
                self.wfile.write(data)

            def _drip(self, where: str) -> None:
                head = b"HTTP/1.1 200 OK\r\nContent-Length: 100000\r\n"
                if where == "body":
                    self.wfile.write(head + b"\r\n")
                else:
                    self.wfile.write(b"HTTP/1.1 200 OK\r\n")
                    head = b"X-Slow: " + b"a" * 100000
                for k in range(200):  # 10 s at most: a client without a deadline fails, not hangs
                    try:
                        self.wfile.write(head[k % len(head):][:1] if where != "body" else b" ")
                        self.wfile.flush()
                    except OSError:  # the client hung up: its deadline worked
                        return
                    time.sleep(0.05)

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True  # a dripping handler never blocks the teardown
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/v1"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture()
def server():
    s = ScriptedServer()
    yield s
    s.close()


def backend(server: ScriptedServer, **kwargs) -> llm_api.OpenAIChatBackend:
    """A client of the scripted server, one request at a time: the script's answers go out in
    the order requests arrive (the pool's order with requests in flight: tests/test_backbones)."""
    kwargs.setdefault("concurrency", 1)
    return llm_api.OpenAIChatBackend(model="test-model", base_url=server.url, api_key=KEY,
                                 backoff=0.01, **kwargs)


def test_success(server: ScriptedServer) -> None:
    server.script.append(("ok", "1. Heat (1995)"))
    assert backend(server).generate(["Recommend a movie"]) == ["1. Heat (1995)"]
    request = server.requests[0]
    assert request["path"] == "/v1/chat/completions"
    assert request["auth"] == f"Bearer {KEY}"
    assert request["body"]["model"] == "test-model"
    assert request["body"]["messages"][-1] == {"role": "user", "content": "Recommend a movie"}


def test_500_then_success_is_retried(server: ScriptedServer) -> None:
    server.script.extend([("status", 500), ("status", 503), ("ok", "fine")])
    assert backend(server).generate(["x"]) == ["fine"]
    assert len(server.requests) == 3


def test_429_is_retried_then_gives_up(server: ScriptedServer) -> None:
    server.script.extend([("status", 429)] * 10)
    with pytest.raises(llm.LLMError, match="HTTP 429") as error:
        backend(server, max_retries=2).generate(["x"])
    assert len(server.requests) == 3  # the first try and two retries
    assert KEY not in str(error.value)


def test_client_error_is_not_retried(server: ScriptedServer) -> None:
    server.script.append(("status", 400))
    with pytest.raises(llm.LLMError, match="HTTP 400: failure 400"):
        backend(server).generate(["x"])
    assert len(server.requests) == 1


def test_slow_response_times_out(server: ScriptedServer) -> None:
    server.script.append(("sleep", 1.0))
    with pytest.raises(llm.LLMError, match="no answer within 0.2 s") as error:
        backend(server, timeout=0.2, max_retries=0).generate(["x"])
    assert KEY not in str(error.value)


def test_malformed_json(server: ScriptedServer) -> None:
    server.script.append(("malformed", "{not json"))
    with pytest.raises(llm.LLMError, match="malformed response"):
        backend(server).generate(["x"])
    server.script.append(("malformed", json.dumps({"choices": []})))
    with pytest.raises(llm.LLMError, match="malformed response"):
        backend(server).generate(["x"])


def test_connection_refused() -> None:
    dead = llm_api.OpenAIChatBackend(model="m", base_url="http://127.0.0.1:9/v1", api_key=KEY,
                                 max_retries=1, backoff=0.01)
    with pytest.raises(llm.LLMError, match="request failed") as error:
        dead.generate(["x"])
    assert KEY not in str(error.value)


def test_missing_key_and_model(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in (llm_api.ENV_KEY, "OPENAI_API_KEY", llm_api.ENV_MODEL):
        monkeypatch.delenv(name, raising=False)
    with pytest.raises(llm.LLMError, match="no API key"):
        llm_api.OpenAIChatBackend(model="m")
    with pytest.raises(llm.LLMError, match="no model given"):
        llm_api.OpenAIChatBackend(api_key=KEY)


def test_settings_from_environment_and_key_hidden(monkeypatch: pytest.MonkeyPatch,
                                                  server: ScriptedServer) -> None:
    monkeypatch.setenv(llm_api.ENV_BASE_URL, server.url)
    monkeypatch.setenv(llm_api.ENV_MODEL, "env-model")
    monkeypatch.setenv(llm_api.ENV_KEY, KEY)
    chosen = llm_api.OpenAIChatBackend()
    assert (chosen.base_url, chosen.model) == (server.url, "env-model")
    assert KEY not in repr(chosen) and KEY not in str(chosen)


def test_cache_avoids_second_call(server: ScriptedServer, tmp_path: Path) -> None:
    responses = llm.ResponseCache(tmp_path / "c.sqlite")
    server.script.extend([("ok", "A"), ("ok", "B")])
    chat = backend(server)
    first = llm.cached_generate(chat, ["p1", "p2"], responses)
    again = llm.cached_generate(chat, ["p2", "p1"], responses)
    assert first == ["A", "B"] and again == ["B", "A"]
    assert len(server.requests) == 2 and responses.hits == 2 and responses.misses == 2
    # other decoding parameters are another key
    server.script.append(("ok", "C"))
    assert llm.cached_generate(chat, ["p1"], responses, max_new_tokens=5) == ["C"]


def test_retry_busy_waits_out_a_lock_and_raises_other_errors() -> None:
    import sqlite3

    calls = []

    def locked_twice() -> None:
        calls.append(1)
        if len(calls) < 3:
            raise sqlite3.OperationalError("database is locked")

    llm._retry_busy(locked_twice)
    assert len(calls) == 3

    def broken() -> None:
        calls.append(1)
        raise sqlite3.OperationalError("no such table: responses")

    calls.clear()
    with pytest.raises(sqlite3.OperationalError, match="no such table"):
        llm._retry_busy(broken)
    assert len(calls) == 1

    def always_locked() -> None:
        raise sqlite3.OperationalError("database is locked")

    with pytest.raises(sqlite3.OperationalError, match="locked"):
        llm._retry_busy(always_locked, deadline_s=0.05)


def test_cache_many_openers_of_a_new_file(tmp_path: Path) -> None:
    """Eight connections creating the same new file at once (switching it to WAL) all succeed."""
    for trial in range(30):
        path = tmp_path / f"new-{trial}.sqlite"
        errors, barrier = [], threading.Barrier(8)

        def open_one(i: int, path: Path = path, barrier: threading.Barrier = barrier) -> None:
            try:
                barrier.wait()
                llm.ResponseCache(path).put(f"k{i}", i)
            except Exception as error:  # noqa: BLE001
                errors.append(error)

        threads = [threading.Thread(target=open_one, args=(i,)) for i in range(8)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert not errors
        assert len(llm.ResponseCache(path)) == 8


def test_cache_concurrent_writers(tmp_path: Path) -> None:
    path = tmp_path / "shared.sqlite"
    errors = []

    def work(offset: int) -> None:
        try:
            local = llm.ResponseCache(path)
            for k in range(50):
                local.get_or_compute({"k": (offset + k) % 60}, lambda k=k: [offset, k])
        except Exception as error:  # noqa: BLE001
            errors.append(error)

    threads = [threading.Thread(target=work, args=(i * 10,)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    assert len(llm.ResponseCache(path)) == 60


def test_cache_each_computes_only_missing_prompts(tmp_path: Path) -> None:
    responses = llm.ResponseCache(tmp_path / "each.sqlite")
    calls = []

    def compute(prompts: list[str]) -> list[int]:
        calls.append(list(prompts))
        return [len(p) for p in prompts]

    assert responses.get_or_compute_each({"kind": "t"}, ["a", "bb"], compute) == [1, 2]
    assert responses.get_or_compute_each({"kind": "t"}, ["bb", "ccc", "a"], compute) == [2, 3, 1]
    assert calls == [["a", "bb"], ["ccc"]]
    assert (responses.hits, responses.misses) == (2, 3)
    with pytest.raises(llm.LLMError, match="expected 1 values"):
        responses.get_or_compute_each({"kind": "t"}, ["dddd"], lambda p: [])


# --- security and reliability (issue 19) -----------------------------------------------------

def test_key_echoed_by_the_server_is_redacted(server: ScriptedServer) -> None:
    server.script.append(("echo", 400))
    with pytest.raises(llm.LLMError, match="HTTP 400: bad request") as error:
        backend(server).generate(["x"])
    assert KEY not in str(error.value) and "***" in str(error.value)
    server.script.extend([("echo", 500)] * 3)  # retried, then the same redacted message
    with pytest.raises(llm.LLMError, match="after 2 retries") as error:
        backend(server, max_retries=2).generate(["x"])
    assert KEY not in str(error.value)
    server.script.append(("malformed", f"oops, you sent Bearer {KEY}"))
    with pytest.raises(llm.LLMError, match="malformed") as error:
        backend(server).generate(["x"])
    assert KEY not in str(error.value)


def test_redirect_is_not_followed_and_location_redacted(server: ScriptedServer) -> None:
    server.script.append(("raw", (307, "", {"Location": f"http://evil.example/?key={KEY}"})))
    with pytest.raises(llm.LLMError, match="not followed") as error:
        backend(server).generate(["x"])
    assert KEY not in str(error.value) and len(server.requests) == 1


@pytest.mark.parametrize("text", [
    f"Authorization: Bearer {KEY}", f'{{"api_key": "{KEY}"}}', "key sk-abcdefgh12345678 here",
    "AIza" + "x" * 35, f"https://host/v1?key={KEY}&x=1"])
def test_redact_hides_key_like_strings(text: str) -> None:
    shown = llm_api.redact(text, [KEY])
    assert KEY not in shown and "sk-abcdefgh" not in shown and "x" * 30 not in shown
    assert "***" in shown


def test_retry_after_is_capped(server: ScriptedServer, monkeypatch: pytest.MonkeyPatch) -> None:
    waits: list[float] = []
    monkeypatch.setattr(llm_api, "_sleep", waits.append)
    server.script.extend([("raw", (429, "{}", {"Retry-After": "3600"})),
                          ("raw", (503, "{}", {"Retry-After": "Wed, 21 Oct 2099 07:28:00 GMT"})),
                          ("raw", (429, "{}", {"Retry-After": "nonsense"})),
                          ("raw", (429, "{}", {"Retry-After": "-5"})), ("ok", "fine")])
    assert backend(server, max_retry_after=2.0).generate(["x"]) == ["fine"]
    assert waits == [2.0, 2.0, 0.04, 0.0]  # capped, capped, backoff (0.01 x 2^2), not negative


def test_waiting_past_the_deadline_fails_at_once(server: ScriptedServer,
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    waits: list[float] = []
    monkeypatch.setattr(llm_api, "_sleep", waits.append)
    server.script.append(("raw", (429, "{}", {"Retry-After": "3600"})))
    with pytest.raises(llm.LLMError, match="HTTP 429.*deadline"):
        backend(server, deadline=5.0).generate(["x"])
    assert waits == [] and len(server.requests) == 1


@pytest.mark.parametrize("where", ["body", "headers"])
def test_dripping_server_hits_the_total_deadline(server: ScriptedServer, where: str) -> None:
    server.script.append(("drip", where))
    with pytest.raises(llm.LLMError, match="within the 0.5 s deadline") as error:
        backend(server, deadline=0.5, timeout=5.0).generate(["x"])
    assert KEY not in str(error.value)
    server.script.append(("ok", "after"))  # the client still works afterwards
    assert backend(server).generate(["x"]) == ["after"]


def test_plain_http_to_another_host_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(llm_api.ENV_ALLOW_HTTP, raising=False)
    with pytest.raises(llm.LLMError, match="plain http to api.example.com") as error:
        llm_api.OpenAIChatBackend(model="m", base_url="http://api.example.com/v1", api_key=KEY)
    assert KEY not in str(error.value)
    for url in ("http://localhost:8000/v1", "http://127.0.0.2/v1", "http://[::1]:8080/v1",
                "https://api.example.com/v1"):
        llm_api.OpenAIChatBackend(model="m", base_url=url, api_key=KEY)
    llm_api.OpenAIChatBackend(model="m", base_url="http://10.0.0.5/v1", api_key=KEY, allow_http=True)
    monkeypatch.setenv(llm_api.ENV_ALLOW_HTTP, "1")
    llm_api.OpenAIChatBackend(model="m", base_url="http://10.0.0.5/v1", api_key=KEY)
    for url in ("ftp://host/v1", "file:///etc/passwd", "not a url"):
        with pytest.raises(llm.LLMError, match="expected http"):
            llm_api.OpenAIChatBackend(model="m", base_url=url, api_key=KEY)


def test_credentials_in_the_base_url_are_not_shown() -> None:
    chosen = llm_api.OpenAIChatBackend(model="m", api_key=KEY,
                                   base_url=f"https://user:{KEY}@api.example.com/v1?k={KEY}")
    assert KEY not in repr(chosen) and "api.example.com/v1" in repr(chosen)


@pytest.mark.parametrize("setting", [{"timeout": 0}, {"deadline": -1}, {"max_retries": -1},
                                     {"max_retry_after": float("inf")}, {"backoff": "x"}])
def test_bad_settings_are_refused(setting: dict) -> None:
    with pytest.raises(llm.LLMError, match=next(iter(setting))):
        llm_api.OpenAIChatBackend(model="m", base_url="http://127.0.0.1/v1", api_key=KEY, **setting)


@pytest.mark.parametrize("body", [
    "[" * 100_000 + "]" * 100_000,  # deep nesting: RecursionError in the JSON parser
    json.dumps({"choices": [{"message": {"content": {"not": "text"}}}]}),
    json.dumps({"choices": [{"message": {"content": 12}}]}),
    json.dumps({"choices": "abc"}), json.dumps([1, 2]), "9" * 5000, "\xff\xfe"])
def test_hostile_bodies_are_malformed_responses(server: ScriptedServer, body: str) -> None:
    server.script.append(("malformed", body))
    with pytest.raises(llm.LLMError, match="malformed response"):
        backend(server).generate(["x"])


def test_oversized_response_is_refused(server: ScriptedServer,
                                       monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(llm_api, "MAX_RESPONSE_BYTES", 1000)
    server.script.append(("ok", "x" * 5000))
    with pytest.raises(llm.LLMError, match="larger than"):
        backend(server).generate(["x"])


def test_corrupt_cache_is_moved_aside_and_rebuilt(tmp_path: Path) -> None:
    path = tmp_path / "c.sqlite"
    path.write_bytes(b"this is not a database" * 100)
    with pytest.warns(UserWarning, match="corrupt.*c.sqlite.corrupt"):
        responses = llm.ResponseCache(path)
    assert not responses.read_only and (tmp_path / "c.sqlite.corrupt").exists()
    assert responses.get_or_compute({"k": 1}, lambda: "v") == "v"
    assert llm.ResponseCache(path).get(llm.ResponseCache.key(k=1)) == "v"


def test_answers_are_read_and_written_in_batches(tmp_path: Path,
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    import sqlite3

    responses = llm.ResponseCache(tmp_path / "b.sqlite")
    real, opened = sqlite3.connect, []
    monkeypatch.setattr(sqlite3, "connect", lambda *a, **k: opened.append(a) or real(*a, **k))
    responses.put_many([("a", [1.5]), ("b", "yes"), ("c", None)])
    assert responses.get_many(["b", "missing", "a", "c"]) == ["yes", None, [1.5], None]
    assert len(opened) == 2  # one connection for the three writes, one for the four reads
    computed = []
    prompts = ["p1", "p2", "p3"]
    values = responses.get_or_compute_each({"m": 1}, prompts,
                                           lambda asked: computed.append(asked) or
                                           [len(p) for p in asked])
    assert values == [2, 2, 2] and computed == [prompts] and len(opened) == 4
    assert responses.get_or_compute_each({"m": 1}, ["p2", "p4"],
                                         lambda asked: [9 for _ in asked]) == [2, 9]
    assert llm.ResponseCache(tmp_path / "b.sqlite").get_many(
        [llm.ResponseCache.key(m=1, prompt=p) for p in ("p1", "p4")]) == [2, 9]


def test_reading_more_keys_than_one_query_takes(tmp_path: Path) -> None:
    llm.ResponseCache(tmp_path / "m.sqlite").put_many([(f"k{n}", n) for n in range(1200)])
    asked = [f"k{n}" for n in range(1199, -1, -1)] + ["k7", "absent", "k1199"]
    assert llm.ResponseCache(tmp_path / "m.sqlite").get_many(asked) == \
        list(range(1199, -1, -1)) + [7, None, 1199]


def test_truncated_cache_is_rebuilt(tmp_path: Path) -> None:
    path = tmp_path / "d.sqlite"
    responses = llm.ResponseCache(path)
    for k in range(300):
        responses.put(str(k), "x" * 500)
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    with pytest.warns(UserWarning, match="is corrupt"):
        damaged = llm.ResponseCache(path)
    damaged.put("new", 1)
    assert damaged.get("new") == 1 and damaged.get("5") is None
    assert (tmp_path / "d.sqlite.corrupt").exists()


def test_read_only_cache_serves_stored_answers(tmp_path: Path,
                                               monkeypatch: pytest.MonkeyPatch) -> None:
    import sqlite3

    path = tmp_path / "r.sqlite"
    llm.ResponseCache(path).put("stored", ["answer"])
    real = sqlite3.connect

    def read_only_disk(target, *args, **kwargs):  # what SQLite does on a read-only mount
        if kwargs.get("uri"):
            return real(target, *args, **kwargs)
        return real(Path(target).resolve().as_uri() + "?mode=ro", *args, uri=True, **kwargs)

    monkeypatch.setattr(sqlite3, "connect", read_only_disk)
    responses = llm.ResponseCache(path)
    assert responses.get("stored") == ["answer"]
    with pytest.warns(UserWarning, match="cannot be written.*reading it only"):
        responses.put("new", 2)
    assert responses.read_only and responses.get("new") == 2 and len(responses) == 2
    # reads work without the -wal/-shm files a read-only directory cannot hold
    monkeypatch.setattr(sqlite3, "connect", real)
    for suffix in ("-wal", "-shm"):
        Path(f"{path}{suffix}").unlink(missing_ok=True)
    assert responses.get("stored") == ["answer"]


def test_cache_directory_that_cannot_exist(tmp_path: Path) -> None:
    (tmp_path / "file").write_text("a file where the cache directory should be")
    with pytest.warns(UserWarning, match="cannot be written"):
        responses = llm.ResponseCache(tmp_path / "file" / "c.sqlite")
    assert responses.get_or_compute({"k": 1}, lambda: "v") == "v"
    assert responses.get_or_compute({"k": 1}, lambda: "other") == "v"  # kept in memory


@pytest.mark.parametrize("key", [f"{KEY}\n", f"{KEY}\r\nX-Injected: 1", f"Bearer {KEY}"])
def test_key_with_whitespace_is_refused_without_showing_it(key: str) -> None:
    with pytest.raises(llm.LLMError, match="line breaks or control characters") as error:
        llm_api.OpenAIChatBackend(model="m", base_url="http://127.0.0.1/v1", api_key=key)
    assert KEY not in str(error.value)
