"""The book's last chapters and its build: chapters 7-8 executed in QUICK mode once chapter 5 is
done, then the Jupyter Book build of the QUICK book once every chapter is (tests/test_book.py runs
chapters 1-6 on the other worker of `make test`; tests/conftest.py says how they wait on each
other). tests/conftest.py collects this file last, so `make test` hands it out last."""

import re
from pathlib import Path

import pytest
from conftest import LATE, QUICK_BOOK, ROOT, run_chapter, wait_for_chapters

from rar_lite.book import book_check, build_book


def _chapters(notebooks: list[str]) -> dict[str, str]:
    """status name -> the test of tests/test_book.py that executes it."""
    return {Path(n).stem: f"test_book.py::test_notebook_runs_in_quick_mode[{n}]"
            for n in notebooks}


@pytest.fixture(scope="module")
def staged_book(book_cache: Path, request: pytest.FixtureRequest) -> Path:
    """The book tests/test_book.py staged and executes, once chapter 5 (what chapters 7-8 build
    on) is done; staged here when that file is not in the session."""
    chapter_5 = _chapters(["notebooks/05_feedback_loop.ipynb"])
    if any(item.nodeid.endswith(test) for item in request.session.items
           for test in chapter_5.values()):
        wait_for_chapters(book_cache, chapter_5, request.session)
    else:
        build_book.stage(ROOT, QUICK_BOOK)
    return QUICK_BOOK


def test_late_chapters_are_the_last_two() -> None:
    assert list(LATE) == [str(n) for n in build_book.toc_notebooks(ROOT)[-2:]]


@pytest.mark.notebooks
@pytest.mark.parametrize("notebook", LATE)
def test_late_notebook_runs_in_quick_mode(staged_book: Path, chapter_cache: Path,
                                          notebook: str) -> None:
    run_chapter(chapter_cache, staged_book / notebook)  # it ran and shows outputs


@pytest.mark.notebooks
def test_book_builds_without_warnings(staged_book: Path, book_cache: Path,
                                      request: pytest.FixtureRequest) -> None:
    early = [str(n) for n in build_book.toc_notebooks(ROOT) if str(n) not in LATE]
    wait_for_chapters(book_cache, {**_chapters(early), "no_real_data_06":
                                   "test_book.py::test_chapter_6_runs_without_real_data"},
                      request.session)
    html = build_book.build_html(staged_book)  # -W: any warning fails (CalledProcessError)
    for doc in build_book.toc_files(staged_book / "_toc.yml"):
        assert (html / f"{doc}.html").exists(), doc
    assert "pipeline.svg" in (html / "book" / "intro.html").read_text(encoding="utf-8")
    assert list((html / "_images").glob("pipeline*.svg")), "the intro's figure was not copied"
    # read offline: MathJax ships with the site, no page loads a script from the network, and
    # no page prints a warning or a path of this machine (Chromium checks what a reader sees)
    assert (html / "_static" / "mathjax" / "tex-chtml.js").exists()
    paths = book_check.machine_paths(html)
    for page in book_check.pages_of(html):
        text = (html / page).read_text(encoding="utf-8")
        assert not re.search(r"<script[^>]+src=\"(https?:)?//", text), page
        assert book_check.text_problems(text, paths) == [], page
