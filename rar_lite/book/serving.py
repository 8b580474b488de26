"""`rar-lite serve`: the recommender kept loaded in one process, answering on this machine.

A one-shot `rar-lite recommend` spends most of its time before the first recommendation:
starting Python, importing torch, transformers and sentence-transformers, and loading LRURec,
MiniLM and the tuned SmolLM2 (`demo.serving_engine`). `serve` pays that once and then answers
each request over HTTP; `rar-lite recommend --server URL` sends the request there and imports
none of those libraries. The protocol is JSON:

- ``GET /health`` → ``{"status": "ok", "k": ..., "retriever": ..., "ranker": ...}``;
- ``POST /recommend`` with ``{"text": "...", "k": 10}`` → the `--json` record
  (`demo.DemoResult.as_json`) plus the pipeline's names; a bad body gets 400 with
  ``{"error": "..."}`` naming the field.

The server listens on 127.0.0.1 unless told otherwise, answers one request at a time (the
engine holds one model), reads at most `MAX_BODY` bytes of a request and never unpickles
anything. `format_result` prints a record as a table; both paths of `rar-lite recommend` use it.
This module imports only the standard library at the top, so the client stays light.
"""

from __future__ import annotations

import json
import sys
import urllib.error
import urllib.request
from http.server import BaseHTTPRequestHandler, HTTPServer
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from rar_lite.book.demo import DemoEngine

#: Where `rar-lite serve` listens unless told otherwise.
DEFAULT_HOST, DEFAULT_PORT = "127.0.0.1", 8765
#: The largest request body read, in bytes (a request is one line of text).
MAX_BODY = 64_000
#: The largest request text, in characters.
MAX_TEXT = 2_000


class ServerError(RuntimeError):
    """No server answered, or it refused the request; the message says which and why."""


def pipeline(engine: DemoEngine) -> dict:
    """The engine's default parts: its first retriever and ranking mode, and how many it
    retrieves."""
    return {"retriever": next(iter(engine.retrievers)), "ranker": next(iter(engine.rankers)),
            "retrieved": engine.k}


def record(engine: DemoEngine, text: str, k: int = 10) -> dict:
    """The engine's answer to `text` as the JSON record the server sends: `as_json` plus the
    titles of the movies named and the pipeline's parts."""
    result = engine.recommend_text(text, top=k)
    named = [f"{engine.items.at[i, 'title']} ({_year(engine.items.at[i, 'year'])})"
             for i in result.conversation.history]
    return {**result.as_json(), "named": named, **pipeline(engine)}


def _year(value: object) -> str:
    """A year for display (the corpus stores it as a float; a missing one prints '?')."""
    try:
        return str(int(value))  # type: ignore[call-overload]
    except (TypeError, ValueError):
        return "?"


def format_result(answer: dict) -> str:
    """A `record` as the text `rar-lite recommend` prints: the movies named, the names not
    found, the ranking as a table, and the time and pipeline."""
    lines = [f"movies you named: {', '.join(answer['named']) or 'none found in the corpus'}"]
    if answer["unresolved"]:
        lines.append(f"not found in the corpus (not guessed): {', '.join(answer['unresolved'])}")
    rows = answer["recommendations"]
    columns = [c for c in (rows[0] if rows else {}) if c != "item_id"]
    cells = [[_cell(row[c]) for c in columns] for row in rows]
    widths = [max([len(c), *(len(r[n]) for r in cells)]) for n, c in enumerate(columns)]
    numeric = [all(isinstance(row[c], (int, float)) for row in rows) for c in columns]

    def line(values: list[str]) -> str:
        return "  ".join(v.rjust(w) if num else v.ljust(w)
                         for v, w, num in zip(values, widths, numeric)).rstrip()

    lines += [line(columns), *(line(r) for r in cells)]
    lines.append(f"({answer['seconds']:.2f} s: {answer['retriever']} retrieves "
                 f"{answer['retrieved']}, then {answer['ranker']})")
    return "\n".join(lines)


def _cell(value: Any, width: int = 80) -> str:
    """One table cell: '—' for nothing, else `clip`ped to `width` characters."""
    return "—" if value is None else clip(value, width)


def clip(text: object, width: int) -> str:
    """`text` on one line, cut to `width` characters with an ellipsis."""
    text = " ".join(str(text).split())
    return text if len(text) <= width else text[:width - 1] + "…"


class RecommendServer(HTTPServer):
    """An HTTP server around one `DemoEngine` (see the module docstring)."""

    def __init__(self, engine: DemoEngine, host: str = DEFAULT_HOST, port: int = DEFAULT_PORT,
                 quiet: bool = True) -> None:
        self.engine, self.quiet = engine, quiet
        super().__init__((host, port), _Handler)

    @property
    def url(self) -> str:
        """The server's base URL (with the port it really got, when asked for port 0)."""
        host, port = self.server_address[:2]
        return f"http://{host}:{port}"

    def health(self) -> dict:
        """What ``GET /health`` answers."""
        parts = pipeline(self.engine)
        return {"status": "ok", "k": parts.pop("retrieved"), **parts}


class _Handler(BaseHTTPRequestHandler):
    """``GET /health`` and ``POST /recommend``; everything else is 404 or 405."""

    server: RecommendServer
    timeout = 30  # seconds a client may take to send its request

    def do_GET(self) -> None:  # noqa: N802 - the name http.server calls
        if self.path != "/health":
            self._send(404, {"error": f"no such path {self.path!r}: GET /health, "
                                      "POST /recommend"})
            return
        self._send(200, self.server.health())

    def do_POST(self) -> None:  # noqa: N802 - the name http.server calls
        if self.path != "/recommend":
            self._send(404, {"error": f"no such path {self.path!r}: POST /recommend"})
            return
        try:
            text, k = self._request()
        except ValueError as error:
            self._send(400, {"error": str(error)})
            return
        try:
            answer = record(self.server.engine, text, k)
        except ValueError as error:  # the engine's own message (e.g. an empty request)
            self._send(400, {"error": str(error)})
            return
        except Exception as error:  # noqa: BLE001 - one failed request; the server goes on
            self._send(500, {"error": f"{type(error).__name__}: {error}"})
            return
        self._send(200, answer)

    def _request(self) -> tuple[str, int]:
        """The request's text and k, checked: ValueError names what is wrong."""
        try:
            length = int(self.headers.get("Content-Length", ""))
        except ValueError:
            raise ValueError("the request needs a Content-Length header") from None
        if not 0 < length <= MAX_BODY:
            raise ValueError(f"the request body must be 1 to {MAX_BODY} bytes, got {length}")
        try:
            body = json.loads(self.rfile.read(length).decode("utf-8"))
        except (UnicodeDecodeError, json.JSONDecodeError) as error:
            raise ValueError(f"the request body is not JSON: {error}") from None
        if not isinstance(body, dict):
            raise ValueError('the request body must be a JSON object: {"text": "...", "k": 10}')
        text, k = body.get("text"), body.get("k", 10)
        if not isinstance(text, str) or not text.strip():
            raise ValueError('"text" must be a non-empty string: what the seeker wants')
        if len(text) > MAX_TEXT:
            raise ValueError(f'"text" is {len(text)} characters; at most {MAX_TEXT}')
        if isinstance(k, bool) or not isinstance(k, int) or k < 1:
            raise ValueError(f'"k" must be a positive integer, got {k!r}')
        return text, min(k, self.server.engine.k)  # as the engine does: at most its K

    def _send(self, status: int, payload: dict) -> None:
        body = json.dumps(payload, ensure_ascii=False).encode("utf-8")
        self.send_response(status)
        self.send_header("Content-Type", "application/json; charset=utf-8")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - http.server's name
        if not self.server.quiet:
            sys.stderr.write(f"{self.address_string()} {format % args}\n")


def _open(request: urllib.request.Request | str, url: str, timeout: float) -> dict:
    """`request` sent straight to the server (no proxy: it is on this machine or named), its
    JSON answer, or ServerError saying why there is none."""
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    try:
        with opener.open(request, timeout=timeout) as response:
            return json.loads(response.read().decode("utf-8"))
    except urllib.error.HTTPError as error:
        try:
            reason = json.loads(error.read().decode("utf-8"))["error"]
        except (ValueError, KeyError, TypeError):
            reason = error.reason
        raise ServerError(f"the server at {url} refused the request ({error.code}): "
                          f"{reason}") from None
    except (urllib.error.URLError, OSError) as error:
        reason = getattr(error, "reason", error)
        raise ServerError(f"no rar-lite server answers at {url} ({reason}); start one with "
                          "`rar-lite serve`") from None


def ask(url: str, text: str, k: int = 10, timeout: float = 300.0) -> dict:
    """Send one request to the server at `url` and return its `record`."""
    data = json.dumps({"text": text, "k": k}).encode("utf-8")
    request = urllib.request.Request(f"{url.rstrip('/')}/recommend", data=data,
                                     headers={"Content-Type": "application/json"})
    return _open(request, url, timeout)


def health(url: str, timeout: float = 5.0) -> dict:
    """The server's ``/health`` answer, or ServerError."""
    return _open(f"{url.rstrip('/')}/health", url, timeout)
