"""The book: table of contents in step with the files, notebooks in the committed form, every
notebook executed in QUICK mode, and the Jupyter Book build passing with -W and loading nothing
from the network. The QUICK book is built in _build/quick, where `make test` then opens every
page in headless Chromium (`make check-book`, rar_lite.book_check)."""

import re
from pathlib import Path

import nbformat
import pytest

from conftest import ROOT
from rar_lite import book_check, build_book

NOTEBOOKS = build_book.toc_notebooks(ROOT)


def test_toc_entries_exist() -> None:
    for doc in build_book.toc_files(ROOT / "_toc.yml"):
        assert (ROOT / f"{doc}.md").exists() or (ROOT / f"{doc}.ipynb").exists(), doc


def test_every_notebook_is_in_the_toc() -> None:
    on_disk = sorted(p.relative_to(ROOT) for p in (ROOT / "notebooks").glob("*.ipynb"))
    assert on_disk == sorted(NOTEBOOKS)
    assert NOTEBOOKS == sorted(NOTEBOOKS)  # reading order is chapter order


def test_timing_table_in_minutes_with_total() -> None:
    table = build_book.timing_table({"notebooks/01.ipynb": 90.0, "jupyter-book build": 12.0})
    assert table.splitlines() == ["| step | minutes |", "| --- | --- |",
                                  "| notebooks/01.ipynb | 1.5 |", "| jupyter-book build | 0.2 |",
                                  "| total | 1.7 |"]


def test_api_reference_lists_every_module() -> None:
    page = (ROOT / "book" / "api.md").read_text()
    modules = sorted(p.stem for p in (ROOT / "rar_lite").glob("*.py") if p.stem != "__init__")
    missing = [m for m in modules if f".. automodule:: rar_lite.{m}\n" not in page]
    assert not missing, f"add to book/api.md: {missing}"


@pytest.mark.parametrize("notebook", NOTEBOOKS, ids=str)
def test_notebook_form(notebook: Path) -> None:
    nb = nbformat.read(ROOT / notebook, as_version=4)
    code = [c for c in nb.cells if c.cell_type == "code"]
    assert all(not c.outputs and c.execution_count is None for c in code), "commit stripped"
    params = [c for c in code if "parameters" in c.metadata.get("tags", [])]
    assert len(params) == 1 and params[0] is code[0], "first code cell is the parameters cell"
    for name in ("SEED", "QUICK"):
        assert f"{name} =" in params[0].source
    assert nb.cells[0].cell_type == "markdown" and "You will learn" in nb.cells[0].source


#: Where the tests build the QUICK book (`make test` checks it in Chromium afterwards).
QUICK_BOOK = ROOT / "_build" / "quick" / "book"


@pytest.fixture(scope="module")
def staged_book() -> Path:
    build_book.stage(ROOT, QUICK_BOOK)
    return QUICK_BOOK


@pytest.mark.notebooks
@pytest.mark.parametrize("notebook", NOTEBOOKS, ids=str)
def test_notebook_runs_in_quick_mode(staged_book: Path, notebook: Path) -> None:
    build_book.execute(staged_book / notebook, quick=True)
    nb = nbformat.read(staged_book / notebook, as_version=4)
    assert any(c.get("outputs") for c in nb.cells if c.cell_type == "code")


@pytest.mark.notebooks
def test_book_builds_without_warnings(staged_book: Path) -> None:
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
