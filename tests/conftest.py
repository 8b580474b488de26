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
        _share_models(path, tmp_path_factory)  # (llm_local's lock)
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


# --- The book's notebooks, run by two test files on the two workers of `make test` -----------
# tests/test_book.py executes chapters 1-6 (and chapter 6 without real data) in order on one
# worker; tests/test_book_finish.py, scheduled last on the other worker (the files go out in
# collection order: `pytest_collection_modifyitems` below), executes chapters 7-8 once chapter 5
# is done, then builds the book once every chapter is. The notebooks share one cache directory
# (`book_cache`), so each chapter reuses what the earlier ones built whichever worker runs it; a
# chapter's test leaves a status file there that the other file waits on. Run alone or without
# xdist, nothing waits for a chapter that is not in the session.


#: The chapter chain's file, and the file that must not queue behind it (tests/test_book*.py).
CHAIN, FINISH = "tests/test_book.py", "tests/test_book_finish.py"


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Run tests/test_book.py's chapters first and tests/test_book_finish.py last: with
    `--no-loadscope-reorder` (the Makefile), xdist hands out files in this order, so the chapter
    chain starts at once on one worker and the finishing file waits on the other only after the
    unit tests (the same order runs without xdist)."""
    def rank(item: pytest.Item) -> int:
        path = item.nodeid.split("::", 1)[0]
        return {CHAIN: 0, FINISH: 2}.get(path, 1)

    items.sort(key=rank)  # stable: each file keeps its own order


def pytest_xdist_make_scheduler(config: pytest.Config, log: object) -> object | None:
    """`--dist loadfile` (the Makefile's), except that the finishing file is never queued on the
    worker whose chapter chain is still running. xdist hands a worker its next file once two of
    its tests are left, so the chain's worker, with chapter 6's two tests to go, could take the
    finishing file and run chapters 7-8 and the build only after chapter 6 (~110 s), not as
    soon as the other worker is free (tests/test_scheduling.py)."""
    if config.getoption("dist", None) != "loadfile":
        return None
    from xdist.scheduler import LoadFileScheduling

    class BookScheduling(LoadFileScheduling):
        def _reschedule(self, node: object) -> None:  # node: xdist's WorkerController
            chain = self.assigned_work.get(node, {}).get(CHAIN, {})
            if self.workqueue and next(iter(self.workqueue)) == FINISH and \
                    not all(chain.values()):
                return  # the other worker takes it when it asks
            super()._reschedule(node)

    return BookScheduling(config, log)


#: Where the QUICK book is staged, executed and built (`make test` checks it in Chromium after).
QUICK_BOOK = ROOT / "_build" / "quick" / "book"
#: The chapters tests/test_book_finish.py executes; tests/test_book.py executes the others.
LATE = ("notebooks/07_align_llm_with_trl.ipynb", "notebooks/08_interactive_demo.ipynb")


@pytest.fixture(scope="session")
def book_cache(session_cache: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The notebooks' cache directory: shared by the xdist workers (with the de-quantised
    SmolLM2 of `shared-models`), else the session's own."""
    if not os.environ.get("PYTEST_XDIST_WORKER"):
        return session_cache
    path = tmp_path_factory.getbasetemp().parent / "book-cache"
    path.mkdir(exist_ok=True)
    _share_models(path, tmp_path_factory)
    return path


def _share_models(cache: Path, tmp_path_factory: pytest.TempPathFactory) -> None:
    """`cache`/models as a link to the directory both xdist workers share."""
    shared = tmp_path_factory.getbasetemp().parent / "shared-models"
    shared.mkdir(exist_ok=True)
    try:
        (cache / "models").symlink_to(shared, target_is_directory=True)
    except FileExistsError:
        pass  # the other worker linked the shared cache already


@pytest.fixture
def chapter_cache(book_cache: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """`book_cache` as the cache of every kernel started during the test."""
    monkeypatch.setenv("RAR_LITE_CACHE", str(book_cache))
    return book_cache


def _status(book_cache: Path, stem: str) -> Path:
    return book_cache / "chapters" / stem


def run_chapter(book_cache: Path, notebook: Path, profile: str = "quick",
                parameters: dict | None = None):
    """Execute a staged notebook (build_book.execute), check that its code printed or drew
    something, and record whether it ran ("ok") or not ("failed") for a test on the other worker
    that waits on it. Returns the executed notebook."""
    import nbformat

    from rar_lite.book import build_book

    status = _status(book_cache, notebook.stem)
    status.parent.mkdir(parents=True, exist_ok=True)
    outcome = "failed"
    try:
        build_book.execute(notebook, profile, parameters)
        executed = nbformat.read(notebook, as_version=4)
        assert any(c.get("outputs") for c in executed.cells if c.cell_type == "code")
        outcome = "ok"
    finally:
        status.write_text(outcome)
    return executed


def wait_for_chapters(book_cache: Path, chapters: dict[str, str], session: pytest.Session,
                      timeout: float = 3600.0) -> None:
    """Wait until each of `chapters` (status name -> the test that runs it, a node id suffix)
    whose test is in this session has a status; fail at once if one failed (its own test says
    why)."""
    import time

    nodeids = [item.nodeid for item in session.items]
    waiting = [stem for stem, test in chapters.items()
               if any(nodeid.endswith(test) for nodeid in nodeids)]
    deadline = time.monotonic() + timeout
    while waiting:
        for stem in list(waiting):
            status = _status(book_cache, stem)
            if status.exists():
                if status.read_text() != "ok":
                    pytest.fail(f"{stem} failed to execute; its own test shows the error")
                waiting.remove(stem)
        if waiting:
            if time.monotonic() > deadline:
                pytest.fail(f"gave up waiting for {waiting} after {timeout:.0f} s")
            time.sleep(2)
