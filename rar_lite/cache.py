"""One cache directory for every artifact the book builds (corpus, checkpoints, LLM responses).

The directory is `$RAR_LITE_CACHE` when set, else `~/.cache/rar-lite`. Files are written
atomically (a temporary file in the same directory, then `os.replace`), so an interrupted run
never leaves a half-written artifact behind. Tabular artifacts carry a manifest with the
fingerprint of their inputs and code and the SHA-256 of the data file: a stale or corrupt artifact
is detected on load and rebuilt, never silently used.

Checkpoints (model weights, optimizer moments, RNG states, progress) have one format for the whole
package: `save_checkpoint` writes the tensors as safetensors and everything else as JSON, never a
pickle, so a file planted in the cache cannot run code when a chapter resumes; `load_checkpoint`
returns None (with a warning naming the file) for a missing, truncated or corrupt checkpoint, and
the caller recomputes. A trainer saves and resumes through `save_training` / `resume_training`:
its weights, its optimizer and its progress, resumed only by a run with the same record.
"""

from __future__ import annotations

import contextlib
import hashlib
import inspect
import json
import os
import re
import shutil
import sys
import tempfile
import uuid
import warnings
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

import pandas as pd

CACHE_ENV = "RAR_LITE_CACHE"


def cache_dir() -> Path:
    """The cache directory (created if missing): `$RAR_LITE_CACHE` or `~/.cache/rar-lite`."""
    root = os.environ.get(CACHE_ENV) or Path.home() / ".cache" / "rar-lite"
    path = Path(root).expanduser()
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise OSError(f"cache directory {path} cannot be created ({error.strerror or error}); "
                      f"set {CACHE_ENV} to a writable directory") from None
    return path


def say(message: str, show: bool = True) -> None:
    """One status line on stderr, beside the progress bars (`show` False: silent), e.g. that a
    long step is skipped because its cached artifact is reused."""
    if show:
        from tqdm.auto import tqdm

        tqdm.write(message, file=sys.stderr)


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


@contextlib.contextmanager
def atomic_dir(target: Path) -> Iterator[Path]:
    """Yield an empty temporary directory next to `target`; it replaces `target` (directory)
    only if the block succeeds, so readers see the old directory or the complete new one."""
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_name(f".{target.name}.{os.getpid()}.{uuid.uuid4().hex[:8]}.partial")
    tmp.mkdir()
    try:
        yield tmp
        old = tmp.with_suffix(".old")
        if target.exists():
            os.replace(target, old)
        os.replace(tmp, target)
        shutil.rmtree(old, ignore_errors=True)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def write_text_atomic(target: Path, text: str) -> None:
    """Write `text` to `target` atomically (UTF-8)."""
    with atomic_path(target) as tmp:
        tmp.write_text(text, encoding="utf-8")


def machine(**extra: object) -> dict[str, object]:
    """Where a measurement ran (a benchmark's JSON records it): platform, Python, CPU count,
    and `extra` facts (a dtype, a library's version)."""
    import platform

    return {"platform": platform.platform(), "python": platform.python_version(),
            "cpus": os.cpu_count(), **extra}


def default_device() -> str:
    """"cuda" when torch sees a GPU, else "cpu": where models train and run unless told."""
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


def write_json(target: Path, record: object, indent: int = 1) -> Path:
    """Write `record` as JSON to `target` atomically (its folder created; numpy scalars and
    other numbers as floats); returns `target`."""
    target = Path(target)
    write_text_atomic(target, json.dumps(record, indent=indent, default=float))
    return target


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


# --- checkpoints -------------------------------------------------------------------------------

CHECKPOINT_RECORD = "state.json"
_CHECKPOINT_KEY = "_checkpoint"
_TENSOR_FILE = re.compile(r"^state-[0-9a-f]{16}\.safetensors$")


def save_checkpoint(directory: Path, tensors: dict[str, Any], record: dict[str, Any]) -> None:
    """Write a checkpoint into `directory`: `tensors` (name -> torch tensor) as safetensors and
    `record` (JSON-serialisable: progress, histories, step counts) as `state.json`.

    The tensor file is named by its hash and written first; `state.json`, written atomically
    last, names it and holds its SHA-256. A run killed at any point leaves the previous complete
    checkpoint (or none), never a mixed one. Other files in `directory` are left alone.
    """
    from safetensors.torch import save

    if _CHECKPOINT_KEY in record:
        raise ValueError(f"{_CHECKPOINT_KEY!r} is reserved in a checkpoint record")
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    # clones: safetensors refuses tensors that share memory (tied weights, views)
    owned = {name: value.detach().cpu().clone().contiguous() for name, value in tensors.items()}
    data = save(owned)
    digest = hashlib.sha256(data).hexdigest()
    name = f"state-{digest[:16]}.safetensors"
    with atomic_path(directory / name) as tmp:
        tmp.write_bytes(data)
    body = {**record, _CHECKPOINT_KEY: {"format": 1, "tensors": name, "sha256": digest}}
    write_text_atomic(directory / CHECKPOINT_RECORD, json.dumps(body, indent=1))
    for stale in directory.glob("state-*.safetensors"):
        if stale.name != name and _TENSOR_FILE.match(stale.name):
            stale.unlink(missing_ok=True)


def load_checkpoint(directory: Path) -> tuple[dict[str, Any], dict[str, Any]] | None:
    """(tensors, record) saved by `save_checkpoint`, or None when there is none to resume from.

    A missing checkpoint returns None quietly; an unreadable, truncated or tampered one (bad
    JSON, a tensor file whose SHA-256 differs, an older pickle-based format) also returns None,
    with a warning naming the file, so the caller recomputes. Nothing is ever unpickled.
    """
    from safetensors.torch import load_file

    path = Path(directory) / CHECKPOINT_RECORD
    if not path.exists():
        return None
    try:
        record = json.loads(path.read_text(encoding="utf-8"))
        info = record.pop(_CHECKPOINT_KEY, None) if isinstance(record, dict) else None
        if not isinstance(info, dict) or info.get("format") != 1:
            raise ValueError("not a checkpoint of this version (no tensor file recorded)")
        name = str(info.get("tensors"))
        if not _TENSOR_FILE.match(name):
            raise ValueError(f"bad tensor file name {name!r}")
        tensor_path = path.with_name(name)
        if sha256_file(tensor_path) != info.get("sha256"):
            raise ValueError(f"{name} does not match its SHA-256 (truncated or modified)")
        tensors = load_file(str(tensor_path))
    except Exception as error:  # noqa: BLE001 - any failure means "recompute"
        warnings.warn(f"checkpoint {path} is unusable ({error}); recomputing", stacklevel=2)
        return None
    return tensors, record


def optimizer_tensors(optimizer: Any) -> tuple[dict[str, Any], dict[str, Any]]:
    """A torch optimizer's state split for `save_checkpoint`: its tensors (moments, step
    counters) as `optimizer.<param index>.<slot>`, and the rest (param groups, plain numbers) as
    a JSON-serialisable dict."""
    import torch

    state = optimizer.state_dict()
    tensors: dict[str, Any] = {}
    plain: dict[str, dict[str, Any]] = {}
    for index, slots in state["state"].items():
        for slot, value in slots.items():
            if isinstance(value, torch.Tensor):
                tensors[f"optimizer.{index}.{slot}"] = value
            else:
                plain.setdefault(str(index), {})[slot] = value
    return tensors, {"state": plain, "param_groups": state["param_groups"]}


def restore_optimizer(optimizer: Any, tensors: dict[str, Any], meta: dict[str, Any]) -> None:
    """Inverse of `optimizer_tensors`: load the saved state into `optimizer` (built over the
    same parameters). JSON turned tuples (Adam's betas) into lists; they become tuples again."""
    state: dict[int, dict[str, Any]] = {}
    for key, value in tensors.items():
        if key.startswith("optimizer."):
            _, index, slot = key.split(".", 2)
            state.setdefault(int(index), {})[slot] = value
    for index, slots in meta["state"].items():
        state.setdefault(int(index), {}).update(slots)
    groups = [{key: tuple(value) if isinstance(current.get(key), tuple) else value
               for key, value in saved.items()}
              for saved, current in zip(meta["param_groups"], optimizer.param_groups)]
    optimizer.load_state_dict({"state": state, "param_groups": groups})


def save_training(directory: Path, record: dict[str, Any] | None, optimizer: Any,
                  tensors: dict[str, Any], **progress: object) -> None:
    """A trainer's checkpoint (`save_checkpoint`): its `tensors` (weights, RNG states: names of
    the trainer's choosing), `optimizer`'s state, `progress` (history, step, ...: JSON) and the
    `record` a run must match to resume (None: the trainer keeps its record elsewhere)."""
    moments, meta = optimizer_tensors(optimizer)
    body = {**progress, "optimizer": meta}
    if record is not None:
        body["record"] = record
    save_checkpoint(directory, {**moments, **tensors}, body)


def resume_training(directory: Path, record: dict[str, Any] | None, optimizer: Any = None,
                    needs: tuple[str, ...] = ()) -> tuple[dict[str, Any], dict[str, Any]] | None:
    """(tensors, progress) of `save_training`'s checkpoint in `directory`, with `optimizer` (when
    given) restored; None, for the caller to start over, when the checkpoint is missing or
    damaged (`load_checkpoint`), was written for another `record`, or lacks a tensor of `needs`."""
    loaded = load_checkpoint(directory)
    if loaded is None:
        return None
    tensors, progress = loaded
    if progress.pop("record", None) != record or any(name not in tensors for name in needs):
        return None
    meta = progress.pop("optimizer")
    if optimizer is not None:
        restore_optimizer(optimizer, tensors, meta)
    return tensors, progress
