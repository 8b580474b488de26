"""The OpenAI-compatible backend against a real HTTP server on loopback, and the response cache."""

import json
import threading
import time
from collections import deque
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from rar_lite import llm

KEY = "sk-test-secret-123"


class ScriptedServer:
    """Answers each POST with the next scripted action: ("ok", text), ("status", code),
    ("sleep", seconds), ("malformed", body)."""

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
                else:
                    self._send(value, json.dumps({"error": {"message": f"failure {value}"}}))

            def _send(self, code: int, payload: str) -> None:
                data = payload.encode()
                self.send_response(code)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                if code == 429:
                    self.send_header("Retry-After", "0")
                self.end_headers()
                self.wfile.write(data)

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
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


def backend(server: ScriptedServer, **kwargs) -> llm.OpenAIChatBackend:
    return llm.OpenAIChatBackend(model="test-model", base_url=server.url, api_key=KEY,
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
    dead = llm.OpenAIChatBackend(model="m", base_url="http://127.0.0.1:9/v1", api_key=KEY,
                                 max_retries=1, backoff=0.01)
    with pytest.raises(llm.LLMError, match="request failed") as error:
        dead.generate(["x"])
    assert KEY not in str(error.value)


def test_missing_key_and_model(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in (llm.ENV_KEY, "OPENAI_API_KEY", llm.ENV_MODEL):
        monkeypatch.delenv(name, raising=False)
    with pytest.raises(llm.LLMError, match="no API key"):
        llm.OpenAIChatBackend(model="m")
    with pytest.raises(llm.LLMError, match="no model given"):
        llm.OpenAIChatBackend(api_key=KEY)


def test_settings_from_environment_and_key_hidden(monkeypatch: pytest.MonkeyPatch,
                                                  server: ScriptedServer) -> None:
    monkeypatch.setenv(llm.ENV_BASE_URL, server.url)
    monkeypatch.setenv(llm.ENV_MODEL, "env-model")
    monkeypatch.setenv(llm.ENV_KEY, KEY)
    chosen = llm.OpenAIChatBackend()
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
