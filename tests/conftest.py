"""Shared fixtures. The whole session uses one fresh cache directory (so tests never read a
user's cache, and notebooks executed by the tests share what earlier tests built). Real data a
user fetched with `rar-lite download` lives in the user's data directory; before the cache moves,
its directories are handed to the session through the variables that name them, so the
real-data tests run on it, and `RAR_LITE_DATA_DIR` is cleared so that nothing else is found."""

from __future__ import annotations

import os
from pathlib import Path

import pandas as pd
import pytest

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="session", autouse=True)
def session_cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from rar_lite.data import download

    for variable, found in ((download.dataset_env("inspired"), download.find_dataset("inspired")),
                            (download.DEV_ENV, download.find_dev())):
        if found is not None and not os.environ.get(variable):  # the Makefile may set it empty
            os.environ[variable] = str(found)
    os.environ.pop(download.DATA_ENV, None)
    if os.environ.get("PYTEST_XDIST_WORKER"):  # two workers share two cores: one thread each
        import torch  # (the notebooks' kernels are processes of their own, with two)

        torch.set_num_threads(1)
        # ...whose OpenMP threads must not spin while they wait: with three threads on two
        # cores a spinning thread holds the core its partner needs (measured: chapter 3 beside
        # one busy thread took 300 s spinning, 117 s passive, 80 s alone either way)
        os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    path = tmp_path_factory.mktemp("rar-lite-cache")
    if os.environ.get("PYTEST_XDIST_WORKER"):  # the de-quantised SmolLM2 is made once for both
        shared = tmp_path_factory.getbasetemp().parent / "shared-models"  # (llm_local's lock)
        shared.mkdir(exist_ok=True)
        (path / "models").symlink_to(shared, target_is_directory=True)
    previous = os.environ.get("RAR_LITE_CACHE")
    os.environ["RAR_LITE_CACHE"] = str(path)
    yield path
    if previous is None:
        os.environ.pop("RAR_LITE_CACHE", None)
    else:
        os.environ["RAR_LITE_CACHE"] = previous


@pytest.fixture(scope="session")
def corpus(session_cache: Path) -> pd.DataFrame:
    from rar_lite.data.corpus import load_corpus

    return load_corpus()


@pytest.fixture(scope="session")
def matcher(corpus: pd.DataFrame):
    from rar_lite.data.matching import TitleMatcher

    return TitleMatcher(corpus)


@pytest.fixture(scope="session")
def local_llm(session_cache: Path):
    """A real OpenAI-compatible server (`transformers serve`, someone else's code) with the
    packaged SmolLM2 on 127.0.0.1, started once per test process and stopped at its end (one
    torch thread: it shares two cores with the test workers)."""
    from rar_lite.backends import serve

    with serve.local_server(threads=1) as server:
        yield server
