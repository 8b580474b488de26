"""The LLM layer's common ground: one small interface for every backend, and an on-disk
response cache.

- `Backend`: what a reranker needs from an LLM (`generate`; a local model also gives next-token
  logits). Two implementations: `rar_lite.backends.llm_local.TransformersBackend` (a local causal
  LM, the packaged SmolLM2 by default) and `rar_lite.backends.llm_api.OpenAIChatBackend` (any
  OpenAI-compatible endpoint); `rar_lite.backends.backbones` names either with one spec string.
- `ResponseCache`: SQLite on disk, keyed by backend, model, prompt and decoding parameters, safe
  under concurrent use (WAL, one transaction per write), so a rerun does not pay twice;
  `cached_generate` puts a backend's answers through it.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import sqlite3
import time
import warnings
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from rar_lite import cache


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

#: Keys per `IN (...)` query: below SQLite's oldest limit on a statement's variables (999).
_SQL_VARIABLES = 500


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
        return self.get_many([key])[0]

    def get_many(self, keys: Sequence[str]) -> list[Any | None]:
        """`get` of each key, read over one connection in one query per 500 keys."""
        found: list[Any | None] = [None] * len(keys)
        wanted = []
        for n, key in enumerate(keys):
            if key in self._memory:
                found[n] = json.loads(self._memory[key])
            else:
                wanted.append(n)
        if not wanted or (self.read_only and not self.path.exists()):
            return found
        try:
            rows: dict[str, str] = {}
            with self._connect() as db:
                for start in range(0, len(wanted), _SQL_VARIABLES):  # SQLite's variable limit
                    part = wanted[start:start + _SQL_VARIABLES]
                    chunk = list(dict.fromkeys(keys[n] for n in part))
                    marks = ",".join("?" * len(chunk))
                    rows.update(db.execute(f"SELECT key, value FROM responses "
                                           f"WHERE key IN ({marks})", chunk).fetchall())
            for n in wanted:
                try:
                    found[n] = json.loads(rows[keys[n]]) if keys[n] in rows else None
                except ValueError:  # a value that is not JSON: recompute it
                    found[n] = None
        except (sqlite3.DatabaseError, OSError) as error:
            if not self.read_only:
                self._recover(error)
        return found

    def put(self, key: str, value: Any) -> None:
        self.put_many([(key, value)])

    def put_many(self, items: Sequence[tuple[str, Any]]) -> None:
        """Store each (key, value) in one transaction: closing the last connection folds the
        write-ahead log into the file once, not once per value (`scripts/bench_cache.py`: 1.1
        against 0.08 ms per answer on an idle 2-core machine, 22 against 1.4 beside a busy job)."""
        rows = [(key, json.dumps(value)) for key, value in items]
        for _ in range(2):  # a damaged file is rebuilt once, then written again
            if self.read_only or not rows:
                break
            try:
                with self._connect() as db:
                    db.execute("BEGIN")
                    db.executemany("INSERT OR REPLACE INTO responses (key, value) VALUES (?, ?)",
                                   rows)
                    db.execute("COMMIT")
                return
            except (sqlite3.DatabaseError, OSError) as error:
                self._recover(error)
        self._memory.update(rows)

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
        found = self.get_many(keys)
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
            self.put_many([(keys[i], value) for j, (i, value) in enumerate(zip(missing, fresh))
                           if j not in stored])
            for i, value in zip(missing, fresh):
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
