"""A local OpenAI-compatible server for the packaged model: `transformers serve`, from Python.

`local_server()` is a context manager. It starts `transformers serve` (transformers' `serving`
extra, installed with the package) on 127.0.0.1 at a free port, preloaded with the packaged
SmolLM2's local copy (or any local model directory) and with the network off
(``HF_HUB_OFFLINE=1``); it waits for ``/health`` and yields a `LocalServer`; leaving the block
stops the server. Chapter 4 uses it to run an API backbone without a key; the tests use it as a
server someone else wrote. Pointing the same code at OpenAI, Gemini's OpenAI-compatible endpoint
or a vLLM server is a matter of the base URL, key and model (`rar_lite.backends.backbones`).
"""

from __future__ import annotations

import contextlib
import os
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from rar_lite.backends.llm import LLMError
from rar_lite.backends.llm_api import ENV_BASE_URL, ENV_KEY, OpenAIChatBackend
from rar_lite.backends.llm_local import smollm2_path

#: A stand-in key: the local server checks none, but the client always sends one.
LOCAL_KEY = "local-no-key"


@dataclass(frozen=True)
class LocalServer:
    """A running local server: its base URL and the model name its requests must give."""

    base_url: str
    model: str
    log: Path

    @property
    def spec(self) -> str:
        """The `backbones` spec of this server's model (with `environment()` set)."""
        return f"openai:{self.model}"

    def environment(self) -> dict[str, str]:
        """The variables that point `openai:` specs (and `rar-lite evaluate --llm`) here."""
        return {ENV_BASE_URL: self.base_url, ENV_KEY: LOCAL_KEY}

    def backend(self, **settings: object) -> OpenAIChatBackend:
        """A client of this server (`settings`: `OpenAIChatBackend` fields, e.g. concurrency)."""
        return OpenAIChatBackend(model=self.model, base_url=self.base_url, api_key=LOCAL_KEY,
                                 **settings)


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def _healthy(base: str) -> bool:
    import requests

    try:
        return requests.get(f"{base}/health", timeout=2).status_code == 200
    except requests.RequestException:
        return False


@contextlib.contextmanager
def local_server(model: str | Path | None = None, port: int | None = None,
                 timeout: float = 180.0, threads: int | None = None) -> Iterator[LocalServer]:
    """`transformers serve` with `model` (a local directory; default: the packaged SmolLM2)
    on 127.0.0.1:`port` (default: a free one), with `threads` torch threads (default: torch's
    choice), up within `timeout` seconds or an `LLMError` quoting the end of its log; stopped
    when the block ends, whatever happens in it. The server answers one request at a time."""
    path = Path(model) if model is not None else smollm2_path()
    if not (path / "config.json").is_file():
        raise LLMError(f"{path} is not a local model directory (no config.json)")
    port = port or free_port()
    base = f"http://127.0.0.1:{port}"
    environment = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_VERBOSITY": "error",
                   "TOKENIZERS_PARALLELISM": "false"}
    if threads is not None:
        environment["OMP_NUM_THREADS"] = str(threads)
    with tempfile.TemporaryDirectory(prefix="rar-lite-serve-") as tmp:
        log = Path(tmp) / "server.log"
        with log.open("wb") as sink:
            process = subprocess.Popen(
                [sys.executable, "-m", "transformers.cli.transformers", "serve", str(path),
                 "--host", "127.0.0.1", "--port", str(port), "--device", "cpu",
                 "--log-level", "error"],
                stdin=subprocess.DEVNULL, stdout=sink, stderr=subprocess.STDOUT,
                env=environment, start_new_session=True)
            try:
                ends = time.monotonic() + timeout
                while not _healthy(base):
                    if process.poll() is not None or time.monotonic() > ends:
                        tail = log.read_text(errors="replace")[-2000:]
                        why = (f"exited with {process.returncode}" if process.poll() is not None
                               else f"not healthy within {timeout:g} s")
                        raise LLMError(f"transformers serve {why}; its log ends:\n{tail}")
                    time.sleep(0.25)
                yield LocalServer(f"{base}/v1", str(path), log)
            finally:
                process.terminate()
                try:
                    process.wait(timeout=15)
                except subprocess.TimeoutExpired:
                    process.kill()
                    process.wait()


class EchoServer:
    """A stand-in OpenAI-compatible server on 127.0.0.1 for measuring and testing the client:
    each chat request is answered after `delay` seconds with "answer to: <prompt>" and a `usage`
    field (prompt tokens: the prompt's words; completion tokens: 3); a prompt containing
    `fail_on` gets an HTTP 400. It counts the requests and the most it had in flight at once.
    Use it as a context manager (`with EchoServer(0.2) as server: server.base_url`)."""

    def __init__(self, delay: float = 0.0, fail_on: str = "FAIL") -> None:
        import threading
        from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

        self.delay, self.fail_on = delay, fail_on
        self.requests = self.in_flight = self.most_in_flight = 0
        lock = threading.Lock()
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: object) -> None:  # quiet
                pass

            def do_POST(self) -> None:
                import json

                with lock:
                    outer.requests += 1
                    outer.in_flight += 1
                    outer.most_in_flight = max(outer.most_in_flight, outer.in_flight)
                try:
                    body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                    prompt = body["messages"][-1]["content"]
                    time.sleep(outer.delay)
                    if outer.fail_on and outer.fail_on in prompt:
                        code, payload = 400, {"error": {"message": "refused by the test server"}}
                    else:
                        code, payload = 200, {
                            "choices": [{"message": {"role": "assistant",
                                                     "content": f"answer to: {prompt}"}}],
                            "usage": {"prompt_tokens": len(prompt.split()),
                                      "completion_tokens": 3}}
                    data = json.dumps(payload).encode()
                    self.send_response(code)
                    self.send_header("Content-Type", "application/json")
                    self.send_header("Content-Length", str(len(data)))
                    self.end_headers()
                    self.wfile.write(data)
                finally:
                    with lock:
                        outer.in_flight -= 1

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self.base_url = f"http://127.0.0.1:{self._server.server_address[1]}/v1"
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    def __enter__(self) -> EchoServer:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._server.shutdown()
        self._server.server_close()

    def backend(self, **settings: object) -> OpenAIChatBackend:
        """A client of this server (`settings`: `OpenAIChatBackend` fields)."""
        return OpenAIChatBackend(model="echo", base_url=self.base_url, api_key=LOCAL_KEY,
                                 **settings)
