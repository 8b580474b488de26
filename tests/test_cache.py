import json
from pathlib import Path

import pandas as pd
import pytest

from rar_lite import cache


def test_cache_dir_follows_environment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(cache.CACHE_ENV, str(tmp_path / "here"))
    assert cache.cache_dir() == tmp_path / "here"
    assert (tmp_path / "here").is_dir()


def test_atomic_path_leaves_nothing_on_failure(tmp_path: Path) -> None:
    target = tmp_path / "out.txt"
    with pytest.raises(RuntimeError):
        with cache.atomic_path(target) as tmp:
            tmp.write_text("half")
            raise RuntimeError("interrupted")
    assert not target.exists()
    assert list(tmp_path.iterdir()) == []


def test_atomic_path_keeps_old_file_until_success(tmp_path: Path) -> None:
    target = tmp_path / "out.txt"
    target.write_text("old")
    with pytest.raises(RuntimeError):
        with cache.atomic_path(target) as tmp:
            tmp.write_text("new")
            raise RuntimeError
    assert target.read_text() == "old"
    cache.write_text_atomic(target, "new")
    assert target.read_text() == "new"


def test_frame_round_trip_and_staleness(tmp_path: Path) -> None:
    frame = pd.DataFrame({"a": [1, 2], "b": [["x"], ["y", "z"]]})
    path = tmp_path / "f.parquet"
    cache.save_frame(frame, path, key="k1")
    loaded = cache.load_frame(path, key="k1")
    assert loaded is not None
    assert loaded["a"].tolist() == [1, 2]
    assert [list(v) for v in loaded["b"]] == [["x"], ["y", "z"]]
    assert cache.load_frame(path, key="k2") is None  # stale: other inputs or code
    assert cache.load_frame(tmp_path / "missing.parquet", key="k1") is None


def test_corrupt_frame_is_reported_not_used(tmp_path: Path) -> None:
    path = tmp_path / "f.parquet"
    cache.save_frame(pd.DataFrame({"a": range(100)}), path, key="k")
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    path.write_bytes(bytes(data))
    with pytest.warns(UserWarning, match="corrupt"):
        assert cache.load_frame(path, key="k") is None


def test_truncated_manifest_is_reported(tmp_path: Path) -> None:
    path = tmp_path / "f.parquet"
    cache.save_frame(pd.DataFrame({"a": [1]}), path, key="k")
    manifest = path.with_name(path.name + ".manifest.json")
    manifest.write_text(json.dumps({"key": "k"})[:-3])
    with pytest.warns(UserWarning, match="corrupt"):
        assert cache.load_frame(path, key="k") is None


def test_fingerprint_is_stable_and_sensitive() -> None:
    assert cache.fingerprint("a", 1, {"x": 2}) == cache.fingerprint("a", 1, {"x": 2})
    assert cache.fingerprint("a", 1) != cache.fingerprint("a", 2)
