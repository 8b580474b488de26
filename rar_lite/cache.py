"""One cache directory for every artifact the book builds (corpus, checkpoints, LLM responses).

The directory is `$RAR_LITE_CACHE` when set, else `~/.cache/rar-lite`. Files are written
atomically (a temporary file in the same directory, then `os.replace`), so an interrupted run
never leaves a half-written artifact behind. Tabular artifacts carry a manifest with the
fingerprint of their inputs and code and the SHA-256 of the data file: a stale or corrupt artifact
is detected on load and rebuilt, never silently used.
"""

from __future__ import annotations

import contextlib
import hashlib
import inspect
import json
import os
import tempfile
import warnings
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType

import pandas as pd

CACHE_ENV = "RAR_LITE_CACHE"


def cache_dir() -> Path:
    """The cache directory (created if missing): `$RAR_LITE_CACHE` or `~/.cache/rar-lite`."""
    root = os.environ.get(CACHE_ENV) or Path.home() / ".cache" / "rar-lite"
    path = Path(root).expanduser()
    path.mkdir(parents=True, exist_ok=True)
    return path


@contextlib.contextmanager
def atomic_path(target: Path) -> Iterator[Path]:
    """Yield a temporary path next to `target`; move it onto `target` only if the block succeeds."""
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        yield tmp
        os.replace(tmp, target)
    finally:
        tmp.unlink(missing_ok=True)


def write_text_atomic(target: Path, text: str) -> None:
    """Write `text` to `target` atomically (UTF-8)."""
    with atomic_path(target) as tmp:
        tmp.write_text(text, encoding="utf-8")


def sha256_file(path: Path) -> str:
    """Hex SHA-256 of a file's bytes."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def fingerprint(*parts: object) -> str:
    """A short stable hash of JSON-serialisable parts (file hashes, versions, parameters)."""
    payload = json.dumps(parts, sort_keys=True, default=str).encode()
    return hashlib.sha256(payload).hexdigest()[:16]


def code_version(*modules: ModuleType) -> str:
    """Hash of the source of `modules`: an artifact built by older code is rebuilt."""
    return fingerprint(*(inspect.getsource(module) for module in modules))


def _manifest_path(path: Path) -> Path:
    return path.with_name(path.name + ".manifest.json")


def save_frame(frame: pd.DataFrame, path: Path, key: str) -> None:
    """Write `frame` as Parquet plus a manifest holding `key` and the file's SHA-256."""
    path = Path(path)
    with atomic_path(path) as tmp:
        frame.to_parquet(tmp, index=False)
        digest = sha256_file(tmp)
    manifest = {"key": key, "sha256": digest, "rows": len(frame), "columns": list(frame.columns)}
    write_text_atomic(_manifest_path(path), json.dumps(manifest, indent=2))


def load_frame(path: Path, key: str) -> pd.DataFrame | None:
    """Load a frame written by `save_frame`, or None when it is missing, stale or corrupt.

    A stale artifact (different key) is silently ignored; a corrupt one (hash or read failure)
    is reported with a warning naming the file, then ignored so that the caller rebuilds it.
    """
    path = Path(path)
    manifest_file = _manifest_path(path)
    if not path.exists() or not manifest_file.exists():
        return None
    try:
        manifest = json.loads(manifest_file.read_text(encoding="utf-8"))
        if manifest.get("key") != key:
            return None
        if sha256_file(path) != manifest.get("sha256"):
            raise ValueError("SHA-256 does not match its manifest")
        frame = pd.read_parquet(path)
        if len(frame) != manifest.get("rows") or list(frame.columns) != manifest.get("columns"):
            raise ValueError("rows or columns do not match its manifest")
    except Exception as error:  # noqa: BLE001 - any failure means "rebuild"
        warnings.warn(f"cache file {path} is corrupt ({error}); rebuilding it", stacklevel=2)
        return None
    return frame
