import json
import os
import warnings
from pathlib import Path

import pandas as pd
import pytest
import torch

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


# --- checkpoints: safetensors + JSON, never pickle (issue 19) ---------------------------------

def _trained() -> tuple[torch.nn.Module, torch.optim.Optimizer]:
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(4, 3), torch.nn.ReLU(), torch.nn.Linear(3, 1))
    optimizer = torch.optim.AdamW(model.parameters(), lr=0.1)
    for _ in range(3):
        optimizer.zero_grad()
        model(torch.randn(8, 4)).pow(2).mean().backward()
        optimizer.step()
    return model, optimizer


def _save(directory: Path, model: torch.nn.Module, optimizer: torch.optim.Optimizer,
          epoch: int, record: dict | None = None) -> None:
    cache.save_training(directory, record, optimizer,
                        {f"model.{k}": v for k, v in model.state_dict().items()}, epoch=epoch)


def test_checkpoint_round_trip_continues_bit_identically(tmp_path: Path) -> None:
    model, optimizer = _trained()
    _save(tmp_path / "ck", model, optimizer, epoch=3)
    tensors, record = cache.load_checkpoint(tmp_path / "ck")
    assert record["epoch"] == 3 and "_checkpoint" not in record
    twin = torch.nn.Sequential(torch.nn.Linear(4, 3), torch.nn.ReLU(), torch.nn.Linear(3, 1))
    twin_optimizer = torch.optim.AdamW(twin.parameters(), lr=0.5)  # lr comes from the record
    tensors, progress = cache.resume_training(tmp_path / "ck", None, twin_optimizer)
    assert progress == {"epoch": 3}  # the optimizer's part went into the optimizer
    twin.load_state_dict({k[6:]: v for k, v in tensors.items() if k.startswith("model.")})
    assert twin_optimizer.param_groups[0]["betas"] == (0.9, 0.999)  # a tuple again
    assert twin_optimizer.param_groups[0]["lr"] == 0.1
    batch = torch.randn(8, 4)
    for m, o in ((model, optimizer), (twin, twin_optimizer)):
        o.zero_grad()
        m(batch).pow(2).mean().backward()
        o.step()
    for a, b in zip(model.state_dict().values(), twin.state_dict().values()):
        assert torch.equal(a, b)


def test_training_resumes_only_the_same_run(tmp_path: Path) -> None:
    model, optimizer = _trained()
    run = {"config": {"lr": 0.1}, "data": "abc"}
    _save(tmp_path / "ck", model, optimizer, epoch=2, record=run)
    fresh = torch.optim.AdamW(_trained()[0].parameters(), lr=0.1)
    before = fresh.state_dict()
    for other in ({"config": {"lr": 0.2}, "data": "abc"}, None):  # another run: start over
        assert cache.resume_training(tmp_path / "ck", other, fresh) is None
    assert cache.resume_training(tmp_path / "ck", run, fresh, needs=("head.delta",)) is None
    assert fresh.state_dict() == before  # nothing restored from a run that is not resumed
    tensors, progress = cache.resume_training(tmp_path / "ck", run)  # no optimizer: weights only
    assert progress == {"epoch": 2} and "model.0.weight" in tensors
    assert fresh.state_dict() == before
    tensors, progress = cache.resume_training(tmp_path / "ck", run, fresh, needs=("model.0.bias",))
    assert progress == {"epoch": 2}
    for saved, restored in zip(optimizer.state_dict()["state"].values(),
                               fresh.state_dict()["state"].values()):
        assert torch.equal(saved["exp_avg"], restored["exp_avg"])


def test_missing_checkpoint_is_none_without_warning(tmp_path: Path) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert cache.load_checkpoint(tmp_path / "nothing") is None


@pytest.mark.parametrize("damage", ["truncate tensors", "flip a byte", "delete tensors",
                                    "truncate record", "old format", "foreign name",
                                    "record is a list"])
def test_damaged_checkpoint_is_reported_and_ignored(tmp_path: Path, damage: str) -> None:
    model, optimizer = _trained()
    _save(tmp_path, model, optimizer, epoch=1)
    record = tmp_path / "state.json"
    (tensor_file,) = tmp_path.glob("state-*.safetensors")
    data = tensor_file.read_bytes()
    if damage == "truncate tensors":
        tensor_file.write_bytes(data[: len(data) // 2])
    elif damage == "flip a byte":
        tensor_file.write_bytes(data[:-1] + bytes([data[-1] ^ 1]))
    elif damage == "delete tensors":
        tensor_file.unlink()
    elif damage == "truncate record":
        record.write_text(record.read_text()[:-10])
    elif damage == "old format":  # the pickle-era layout: a JSON record, no tensor file named
        record.write_text(json.dumps({"epoch": 1}))
    elif damage == "foreign name":  # a record pointing outside the directory is refused
        body = json.loads(record.read_text())
        body["_checkpoint"]["tensors"] = "../../etc/passwd"
        record.write_text(json.dumps(body))
    else:
        record.write_text("[1, 2]")
    with pytest.warns(UserWarning, match=r"checkpoint .*state\.json is unusable"):
        assert cache.load_checkpoint(tmp_path) is None


def test_checkpoint_killed_before_its_record_keeps_the_previous_one(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    model, optimizer = _trained()
    _save(tmp_path, model, optimizer, epoch=1)

    def killed(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(cache, "write_text_atomic", killed)
    with torch.no_grad():
        model[0].weight.add_(1.0)
    with pytest.raises(KeyboardInterrupt):
        _save(tmp_path, model, optimizer, epoch=2)
    monkeypatch.undo()
    tensors, record = cache.load_checkpoint(tmp_path)
    assert record["epoch"] == 1
    assert not torch.equal(tensors["model.0.weight"], model[0].weight)
    _save(tmp_path, model, optimizer, epoch=2)  # the next save removes the stale tensor file
    assert len(list(tmp_path.glob("state-*.safetensors"))) == 1


def test_checkpoint_record_key_is_reserved(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="reserved"):
        cache.save_checkpoint(tmp_path, {}, {"_checkpoint": 1})


def test_atomic_dir_replaces_whole_or_not_at_all(tmp_path: Path) -> None:
    target = tmp_path / "adapter"
    with cache.atomic_dir(target) as tmp:
        (tmp / "a.txt").write_text("one")
    assert (target / "a.txt").read_text() == "one"
    with pytest.raises(RuntimeError):
        with cache.atomic_dir(target) as tmp:
            (tmp / "b.txt").write_text("half")
            raise RuntimeError("interrupted")
    assert sorted(p.name for p in target.iterdir()) == ["a.txt"]
    with cache.atomic_dir(target) as tmp:
        (tmp / "b.txt").write_text("two")
    assert sorted(p.name for p in target.iterdir()) == ["b.txt"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["adapter"]  # nothing left behind


def test_benchmark_json_names_the_machine_and_is_written_whole(tmp_path: Path) -> None:
    import numpy as np

    facts = cache.machine(dtype="bfloat16")
    assert facts["cpus"] == os.cpu_count() and facts["dtype"] == "bfloat16"
    assert {"platform", "python"} <= set(facts)
    target = tmp_path / "results" / "bench.json"  # the folder is created
    assert cache.write_json(target, {"seconds": np.float32(1.5), "machine": facts}) == target
    assert json.loads(target.read_text()) == {"seconds": 1.5, "machine": facts}
    assert [p.name for p in target.parent.iterdir()] == ["bench.json"]  # no temporary left
