"""`OpenAIChatBackend`: any OpenAI-compatible chat-completions endpoint (OpenAI, Gemini's
OpenAI-compatible endpoint, vLLM, Ollama, a llama.cpp server, `transformers serve`).

Base URL, model and key come from arguments or `RAR_LITE_LLM_BASE_URL` / `RAR_LITE_LLM_MODEL` /
`RAR_LITE_LLM_API_KEY` (falling back to `OPENAI_BASE_URL` / `OPENAI_API_KEY`). A per-read timeout
and a total deadline per request; retries on 429, 5xx and connection errors after the server's
`Retry-After` (capped) or an exponential backoff; the key is never printed, logged or put in an
error message (echoed error bodies are redacted), and goes over plain http only to this machine
unless `RAR_LITE_LLM_ALLOW_HTTP=1` (or `allow_http=True`) says the network is trusted.
`generate` keeps up to `concurrency` requests in flight (answers in input order, each handed to
the response cache as it arrives); `usage` adds up the tokens the server reports.
"""

from __future__ import annotations

import functools
import json
import os
import re
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from rar_lite.backends.llm import LLMError, Usage

ENV_BASE_URL, ENV_MODEL, ENV_KEY = "RAR_LITE_LLM_BASE_URL", "RAR_LITE_LLM_MODEL", "RAR_LITE_LLM_API_KEY"
ENV_ALLOW_HTTP = "RAR_LITE_LLM_ALLOW_HTTP"

#: Statuses worth retrying: rate limits and server-side failures.
RETRY_STATUSES = frozenset({429, 500, 502, 503, 504})
#: The most bytes read from one response: a larger one is refused, not buffered.
MAX_RESPONSE_BYTES = 16 << 20
_SECRET_PATTERNS = (  # what an API key or token looks like, wherever it is echoed
    re.compile(r"(?i)(bearer\s+)[^\s\"',;]+"),
    re.compile(r"(?i)((?:api[_-]?key|x-api-key|access[_-]?token|authorization)[\"']?\s*[:=]\s*"
               r"[\"']?)[^\s\"',;&}]+"),
    re.compile(r"\bsk-[A-Za-z0-9_\-]{8,}"),
    re.compile(r"\bAIza[0-9A-Za-z_\-]{30,}"),
)


def redact(text: str, secrets: Sequence[str] = ()) -> str:
    """`text` with every secret (as given or URL-encoded) and anything that looks like an API key
    or a bearer token replaced by `***`: server error bodies may echo the request."""
    from urllib.parse import quote

    for secret in secrets:
        if len(secret) >= 4:  # a 1-3 character placeholder key (local servers) is no secret
            for form in {secret, quote(secret, safe="")}:
                text = text.replace(form, "***")
    for pattern in _SECRET_PATTERNS:
        text = pattern.sub(lambda m: (m.group(1) if m.re.groups else "") + "***", text)
    return text


def is_loopback(host: str) -> bool:
    """Whether `host` is this machine (localhost, 127.0.0.0/8, ::1)."""
    import ipaddress

    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _retry_after(value: str | None) -> float | None:
    """Seconds a `Retry-After` header asks for (a number or an HTTP date); None if unusable."""
    import email.utils
    import math

    if not value:
        return None
    try:
        seconds = float(value)
    except ValueError:
        try:
            seconds = email.utils.parsedate_to_datetime(value).timestamp() - time.time()
        except (TypeError, ValueError, IndexError, OverflowError):
            return None
    return max(0.0, seconds) if math.isfinite(seconds) else None


def _sleep(seconds: float) -> None:  # one seam for tests to record the waits
    time.sleep(seconds)


class _DeadlinePassed(Exception):
    """A request's total deadline passed (raised by `_Deadline` users, never escapes)."""


class _Deadline:
    """Shuts down the sockets a request reads from once its total time is up: a server that
    drips a byte at a time never trips a per-read timeout. Sockets are registered by
    `_watched` connections while the deadline is the current thread's."""

    _local = threading.local()

    def __init__(self, seconds: float) -> None:
        self.fired = False
        self._sockets: list[Any] = []
        self._lock = threading.Lock()
        self._timer = threading.Timer(max(seconds, 0.0), self._fire)
        self._timer.daemon = True

    def __enter__(self) -> _Deadline:
        _Deadline._local.current = self
        self._timer.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._timer.cancel()
        _Deadline._local.current = None

    def _fire(self) -> None:
        with self._lock:
            self.fired = True
            for sock in self._sockets:
                _shutdown(sock)

    @classmethod
    def watch(cls, sock: Any) -> None:
        current = getattr(cls._local, "current", None)
        if current is None or sock is None:
            return
        with current._lock:
            current._sockets.append(sock)
            if current.fired:
                _shutdown(sock)


def _shutdown(sock: Any) -> None:
    import socket

    try:
        sock.shutdown(socket.SHUT_RDWR)
    except OSError:  # already closed
        pass


@functools.cache
def _watched(pool_class: type) -> type:
    """`pool_class` whose connections register their socket with the current `_Deadline`."""

    class Connection(pool_class.ConnectionCls):  # type: ignore[name-defined, misc]
        def getresponse(self, *args: Any, **kwargs: Any) -> Any:
            _Deadline.watch(self.sock)
            return super().getresponse(*args, **kwargs)

    return type(pool_class.__name__, (pool_class,), {"ConnectionCls": Connection})


def _deadline_adapter(connections: int = 10) -> Any:
    """A requests adapter (no retries of its own, `connections` kept open per host) whose
    connections obey `_Deadline`."""
    from requests.adapters import HTTPAdapter

    class DeadlineAdapter(HTTPAdapter):
        @staticmethod
        def _watch_all(manager: Any) -> Any:
            manager.pool_classes_by_scheme = {
                scheme: _watched(cls) for scheme, cls in manager.pool_classes_by_scheme.items()}
            return manager

        def init_poolmanager(self, *args: Any, **kwargs: Any) -> None:
            super().init_poolmanager(*args, **kwargs)
            self._watch_all(self.poolmanager)

        def proxy_manager_for(self, proxy: str, **kwargs: Any) -> Any:
            return self._watch_all(super().proxy_manager_for(proxy, **kwargs))

    return DeadlineAdapter(max_retries=0, pool_maxsize=max(10, connections))


@dataclass
class OpenAIChatBackend:
    """Chat completions over HTTP (see the module docstring for the environment variables).

    Each request has a per-read `timeout` and a total `deadline` (retries and waits included);
    429 and 5xx answers and connection errors are retried up to `max_retries` times, after the
    server's `Retry-After` (at most `max_retry_after` seconds) or an exponential backoff.
    `generate` keeps up to `concurrency` requests in flight and returns the answers in input
    order; `usage` adds up the tokens of the server's `usage` fields.
    The key is sent over https, or plain http to this machine only: a plain-http server
    elsewhere needs `allow_http=True` or `RAR_LITE_LLM_ALLOW_HTTP=1` (anyone on the network
    path can read the key). Redirects are not followed. Error messages never hold the key.
    """

    pools_requests = True  # (not a field) callers send every prompt at once: `pools_requests`
    model: str = ""
    base_url: str = ""
    api_key: str = field(default="", repr=False)
    timeout: float = 60.0  # seconds per read
    max_retries: int = 4
    backoff: float = 0.5  # seconds; doubles after each retry
    system_prompt: str | None = None
    deadline: float = 300.0  # seconds per chat() call, retries included
    max_retry_after: float = 30.0
    allow_http: bool = False
    concurrency: int = 8  # requests in flight at once in `generate`
    name: str = "openai-chat"
    usage: Usage = field(default_factory=Usage, repr=False)

    def __post_init__(self) -> None:
        from urllib.parse import urlsplit

        self.base_url = (self.base_url or os.environ.get(ENV_BASE_URL)
                         or os.environ.get("OPENAI_BASE_URL") or "https://api.openai.com/v1")
        self.model = self.model or os.environ.get(ENV_MODEL) or ""
        self.api_key = self.api_key or os.environ.get(ENV_KEY) or os.environ.get(
            "OPENAI_API_KEY") or ""
        if not self.model:
            raise LLMError(f"no model given: pass model=... or set {ENV_MODEL}")
        if not self.api_key:
            raise LLMError(f"no API key: pass api_key=... or set {ENV_KEY} (or OPENAI_API_KEY)")
        if not self.api_key.isprintable() or any(c.isspace() for c in self.api_key):
            raise LLMError("the API key holds spaces, line breaks or control characters (a "
                           "copy-paste slip?): check the value given")
        for setting in ("timeout", "deadline", "backoff", "max_retry_after"):
            value = getattr(self, setting)
            if not isinstance(value, (int, float)) or not 0 <= value < float("inf") or (
                    setting in ("timeout", "deadline") and value == 0):
                raise LLMError(f"{setting} must be a positive number of seconds, got {value!r}")
        if not isinstance(self.max_retries, int) or self.max_retries < 0:
            raise LLMError(f"max_retries must be an integer >= 0, got {self.max_retries!r}")
        if not isinstance(self.concurrency, int) or self.concurrency < 1:
            raise LLMError(f"concurrency must be an integer >= 1, got {self.concurrency!r}")
        parts = urlsplit(self.base_url)
        # the URL as shown in messages: no user:password, no query (either may hold a secret)
        self._shown_url = redact(f"{parts.scheme}://{parts.hostname or ''}"
                                 f"{f':{parts.port}' if parts.port else ''}{parts.path}",
                                 [self.api_key])
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise LLMError(f"base URL {self._shown_url!r}: expected http(s)://host/...")
        allowed = self.allow_http or os.environ.get(ENV_ALLOW_HTTP, "").strip().lower() in (
            "1", "true", "yes")
        if parts.scheme == "http" and not is_loopback(parts.hostname) and not allowed:
            raise LLMError(
                f"refusing to send the API key over plain http to {parts.hostname}: use https, "
                f"or, on a network you trust, pass allow_http=True or set {ENV_ALLOW_HTTP}=1")
        import requests

        self._session = requests.Session()
        self._session.trust_env = True  # proxies from the environment still apply
        self._session.mount("http://", _deadline_adapter(self.concurrency))
        self._session.mount("https://", _deadline_adapter(self.concurrency))

    def __repr__(self) -> str:  # the key never appears, not even in a notebook's output
        return f"OpenAIChatBackend(model={self.model!r}, base_url={self._shown_url!r}, api_key=***)"

    def _error(self, message: str) -> LLMError:
        """The one place an HTTP failure becomes an `LLMError`: the key and anything that looks
        like one are redacted from the message."""
        return LLMError(redact(message, [self.api_key]))

    def _failure(self, status: int | None = None, body: bytes = b"",
                 error: Exception | None = None) -> str:
        """What went wrong, in words: an exception's type, or the status and the server's own
        error message (its `error.message`, else the start of the body)."""
        if error is not None:
            return f"{self._shown_url}: request failed ({type(error).__name__})"
        text = body.decode("utf-8", errors="replace")
        try:
            parsed = json.loads(text)
            found = parsed.get("error") if isinstance(parsed, dict) else None
            found = found.get("message", found) if isinstance(found, dict) else found
            text = str(found or parsed)
        except (ValueError, RecursionError):
            pass
        shown = redact(text, [self.api_key])[:300] or "(empty body)"  # redact, then cut
        return f"{self._shown_url}: HTTP {status}: {shown}"

    def _post(self, url: str, payload: dict, remaining: float) -> tuple[int, Any, bytes]:
        """(status, headers, body) of one POST, within `remaining` seconds in all."""
        with _Deadline(remaining) as deadline:
            try:
                with self._session.post(
                        url, timeout=(min(self.timeout, remaining), self.timeout), stream=True,
                        allow_redirects=False, json=payload,
                        headers={"Authorization": f"Bearer {self.api_key}"}) as response:
                    body = response.raw.read(MAX_RESPONSE_BYTES + 1, decode_content=True)
            except Exception:
                if deadline.fired:
                    raise _DeadlinePassed from None
                raise
            if deadline.fired:  # a socket shut mid-headers reads as a short, clean response
                raise _DeadlinePassed
            return response.status_code, response.headers, body

    def chat(self, prompt: str, max_new_tokens: int = 64, temperature: float = 0.0) -> dict:
        """One chat completion; returns the parsed JSON response."""
        import requests
        from urllib3.exceptions import HTTPError

        messages = ([{"role": "system", "content": self.system_prompt}]
                    if self.system_prompt else []) + [{"role": "user", "content": prompt}]
        payload = {"model": self.model, "messages": messages, "max_tokens": max_new_tokens,
                   "temperature": temperature}
        url = self.base_url.rstrip("/") + "/chat/completions"
        ends = time.monotonic() + self.deadline
        over = f"{self._shown_url}: no complete answer within the {self.deadline:g} s deadline"
        failure = ""
        for attempt in range(self.max_retries + 1):
            wait = None
            try:
                status, headers, body = self._post(url, payload, ends - time.monotonic())
            except _DeadlinePassed:
                raise self._error(over) from None
            except (requests.exceptions.RequestException, HTTPError, OSError) as error:
                if _timed_out(error):
                    raise self._error(f"{self._shown_url}: no answer within {self.timeout:g} s"
                                      ) from None
                failure = self._failure(error=error)
            else:
                if len(body) > MAX_RESPONSE_BYTES:
                    raise self._error(f"{self._shown_url}: response larger than "
                                      f"{MAX_RESPONSE_BYTES >> 20} MiB")
                if status == 200:
                    return self._completion(body)
                failure = self._failure(status, body)
                if 300 <= status < 400:
                    raise self._error(f"{failure} (redirect to {headers.get('Location')!r} not "
                                      "followed: give the final URL as the base URL)")
                if status not in RETRY_STATUSES:
                    raise self._error(failure)
                wait = _retry_after(headers.get("Retry-After"))
            if attempt == self.max_retries:
                break
            wait = min(self.backoff * 2 ** attempt if wait is None else wait,
                       self.max_retry_after)
            if time.monotonic() + wait >= ends:
                raise self._error(f"{failure}; {over}")
            _sleep(wait)
        raise self._error(f"{failure} (after {self.max_retries} retries)")

    def _completion(self, body: bytes) -> dict:
        """The parsed chat completion, or an `LLMError` quoting the start of the body."""
        try:
            parsed = json.loads(body)
            content = parsed["choices"][0]["message"]["content"]
            if content is not None and not isinstance(content, str):
                raise TypeError("content is not a string")
        except (ValueError, KeyError, IndexError, TypeError, RecursionError):
            shown = body[:200].decode("utf-8", errors="replace")
            raise self._error(f"{self._shown_url}: malformed response (not a chat completion): "
                              f"{shown!r}") from None
        return parsed

    def generate(self, prompts: Sequence[str], max_new_tokens: int = 64,
                 temperature: float = 0.0, on_answer: Callable[[int, str], None] | None = None,
                 progress: bool = False) -> list[str]:
        """The answers to `prompts`, in their order, with up to `concurrency` requests in flight.
        `on_answer(i, text)` is called (in this thread) as each answer arrives; a request that
        fails does not stop the others: once all are done, an `LLMError` names how many failed
        and the first failure."""
        from concurrent.futures import ThreadPoolExecutor, as_completed

        from tqdm.auto import tqdm

        answers: list[str] = [""] * len(prompts)
        failed: dict[int, LLMError] = {}
        pool = ThreadPoolExecutor(max(1, min(self.concurrency, len(prompts))),
                                  thread_name_prefix="rar-lite-llm")
        running = {pool.submit(self.chat, prompt, max_new_tokens, temperature): i
                   for i, prompt in enumerate(prompts)}
        try:
            for done in tqdm(as_completed(running), total=len(running), disable=not progress,
                             desc=f"{self.model}: answers", leave=False):
                i = running[done]
                try:
                    response = done.result()
                except LLMError as error:
                    failed[i] = error
                    continue
                answers[i] = response["choices"][0]["message"]["content"] or ""
                tokens = response.get("usage") or {}
                self.usage.add(_tokens(tokens, "prompt_tokens"),
                               _tokens(tokens, "completion_tokens"))
                if on_answer is not None:
                    on_answer(i, answers[i])
        except BaseException:  # an interrupt: what arrived was handed over; drop the rest
            pool.shutdown(wait=False, cancel_futures=True)
            raise
        pool.shutdown()
        if failed:
            first = min(failed)
            raise LLMError(f"{len(failed)} of {len(prompts)} requests failed (the other answers "
                           f"were kept); the first, prompt {first}: {failed[first]}")
        return answers


def _tokens(usage: Any, key: str) -> int:
    """A token count from a `usage` field (0 where the server sent none, or not a number)."""
    value = usage.get(key) if isinstance(usage, dict) else None
    return int(value) if isinstance(value, (int, float)) and value >= 0 else 0


def _timed_out(error: Exception) -> bool:
    """Whether a requests error is a read timeout (urllib3 may wrap it in other errors)."""
    import requests
    from urllib3.exceptions import ReadTimeoutError

    if isinstance(error, (requests.exceptions.Timeout, TimeoutError)):
        return True
    seen: set[int] = set()
    current: Any = error
    while current is not None and id(current) not in seen:  # walk the wrapped reasons
        seen.add(id(current))
        if isinstance(current, ReadTimeoutError):
            return True
        current = getattr(current, "reason", None) or (current.args[0] if getattr(
            current, "args", None) and isinstance(current.args[0], BaseException) else None)
    return False
