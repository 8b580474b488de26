"""The book: table of contents in step with the files, notebooks in the committed form, and
chapters 1-6 executed in QUICK mode, in order (they build on each other through one cache), plus
chapter 6 without real data. Chapters 7-8 and the Jupyter Book build are in
tests/test_book_finish.py, which `make test` runs on the other worker beside these
(tests/conftest.py says how the two wait on each other). `make test` then opens every page of the
QUICK book in headless Chromium (`make check-book`, rar_lite.book.book_check)."""

import json
import re
import textwrap
from pathlib import Path

import nbformat
import pytest
from conftest import LATE, QUICK_BOOK, ROOT, run_chapter, wait_for_chapters

from rar_lite.book import build_book

NOTEBOOKS = build_book.toc_notebooks(ROOT)
EARLY = [n for n in NOTEBOOKS if str(n) not in LATE]


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
    computed = build_book.timing_table({"notebooks/01.ipynb": 90.0, "notebooks/02.ipynb": 30.0,
                                        "jupyter-book build": 12.0},
                                       {"notebooks/01.ipynb": 0, "notebooks/02.ipynb": 250})
    assert computed.splitlines() == [
        "| step | minutes | LLM answers computed |", "| --- | --- | --- |",
        "| notebooks/01.ipynb | 1.5 | 0 |", "| notebooks/02.ipynb | 0.5 | 250 |",
        "| jupyter-book build | 0.2 |  |", "| total | 2.2 | 250 |"]


def test_build_records_each_notebooks_time_and_llm_answers(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import uuid

    from rar_lite.backends.llm import ResponseCache

    def execute(notebook: Path, profile: str) -> float:  # a chapter that computes answers
        for _ in range(3 if notebook.stem == "b" else 0):
            ResponseCache().put(uuid.uuid4().hex, "yes")
        return 60.0

    monkeypatch.setattr(build_book, "stage", lambda root, dest: dest.mkdir(parents=True))
    monkeypatch.setattr(build_book, "toc_notebooks",
                        lambda root: [Path("notebooks/a.ipynb"), Path("notebooks/b.ipynb")])
    monkeypatch.setattr(build_book, "execute", execute)
    monkeypatch.setattr(build_book, "build_html", lambda book: book / "_build" / "html")
    build_book.build("quick", out=tmp_path)
    record = json.loads((tmp_path / "book" / "timings.json").read_text())
    assert record["mode"] == "quick" and record["machine"]["cpus"] >= 1
    assert record["llm_answers_computed"] == {"notebooks/a.ipynb": 0, "notebooks/b.ipynb": 3}
    assert record["seconds"]["notebooks/b.ipynb"] == 60.0
    assert record["total_seconds"] == pytest.approx(120.0, abs=1.0)


def test_api_reference_lists_every_module() -> None:
    page = (ROOT / "book" / "api.md").read_text()
    package = ROOT / "rar_lite"
    modules = sorted(".".join(p.relative_to(ROOT).with_suffix("").parts)
                     for p in package.rglob("*.py") if p.stem != "__init__")
    missing = [m for m in modules if f".. automodule:: {m}\n" not in page]
    assert not missing, f"add to book/api.md: {missing}"


def _widget_notebook() -> nbformat.NotebookNode:
    """An executed notebook with a tqdm bar (widget + text stand-in) and a widget that also
    carries a picture (chapter 8's demo), with the saved widget state."""
    view = build_book.WIDGET_VIEW
    bar = nbformat.v4.new_output("display_data", data={
        view: {"model_id": "bar", "version_major": 2, "version_minor": 0},
        "text/plain": "lrurec:   0%|          | 0/3 [00:00<?, ?it/s]"})
    demo = nbformat.v4.new_output("execute_result", data={
        view: {"model_id": "box", "version_major": 2, "version_minor": 0},
        "image/png": "iVBORw0KGgo=", "text/plain": "Demo(...)"}, execution_count=2)
    state = {"bar": {"model_name": "HBoxModel",
                     "state": {"children": ["IPY_MODEL_l", "IPY_MODEL_p", "IPY_MODEL_r"]}},
             "l": {"model_name": "HTMLModel", "state": {"value": "lrurec:\u2007100%"}},
             "p": {"model_name": "FloatProgressModel", "state": {"value": 3.0, "max": 3.0}},
             "r": {"model_name": "HTMLModel", "state": {"value": "\u20073/3\u2007[00:04&lt;00:00]"}},
             "box": {"model_name": "VBoxModel", "state": {"children": []}}}
    nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell("x", outputs=[bar, demo])])
    nb.metadata["widgets"] = {build_book.WIDGET_STATE: {"state": state}}
    return nb


def test_freeze_widgets_keeps_pictures_and_writes_final_bars(tmp_path: Path) -> None:
    path = tmp_path / "executed.ipynb"
    nbformat.write(_widget_notebook(), path)
    assert build_book.freeze_widgets(path) == 2
    nb = nbformat.read(path, as_version=4)
    bar, demo = (o["data"] for o in nb.cells[0].outputs)
    assert bar == {"text/plain": "lrurec: 100% |██████████| 3/3 [00:04<00:00]"}
    assert sorted(demo) == ["image/png", "text/plain"]  # the picture stays, the view goes
    assert "widgets" not in nb.metadata  # no widget state (nor its JavaScript) in the book
    assert build_book.widget_text("missing", {}) == ""


@pytest.mark.parametrize("notebook", NOTEBOOKS, ids=str)
def test_notebook_form(notebook: Path) -> None:
    raw = json.loads((ROOT / notebook).read_text(encoding="utf-8"))
    assert all(cell.get("id") for cell in raw["cells"]), "every cell has an id (nbformat 4.5)"
    assert all({"outputs", "execution_count"} <= set(cell) for cell in raw["cells"]
               if cell["cell_type"] == "code"), "every code cell has all its fields"
    nbformat.validate(nbformat.from_dict(raw))
    nb = nbformat.read(ROOT / notebook, as_version=4)
    code = [c for c in nb.cells if c.cell_type == "code"]
    assert all(not c.outputs and c.execution_count is None for c in code), "commit stripped"
    params = [c for c in code if "parameters" in c.metadata.get("tags", [])]
    assert len(params) == 1 and params[0] is code[0], "first code cell is the parameters cell"
    for name in ("SEED", "PROFILE"):
        assert f"{name} =" in params[0].source
    assert "QUICK" not in "".join(c.source for c in code), "sizes come from the profiles"
    assert nb.cells[0].cell_type == "markdown" and "You will learn" in nb.cells[0].source


#: A solution: a dropdown admonition (MyST colon fence) right under its exercise.
SOLUTION = re.compile(r":::\{admonition\} Solution\n\s*:class: dropdown\n(.*?)\n\s*:::", re.S)


@pytest.mark.parametrize("notebook", NOTEBOOKS, ids=str)
def test_every_exercise_has_a_solution_whose_code_compiles(notebook: Path) -> None:
    nb = nbformat.read(ROOT / notebook, as_version=4)
    text = next(c.source for c in nb.cells if c.cell_type == "markdown"
                and "## Exercises" in c.source).split("## Exercises", 1)[1]
    exercises = re.findall(r"^(\d+)\. ", text, re.M)
    assert exercises and exercises == [str(i) for i in range(1, len(exercises) + 1)]
    solutions = SOLUTION.findall(text)
    assert len(solutions) == len(exercises), "one solution under each exercise"
    for number, solution in enumerate(solutions, 1):
        assert solution.strip(), f"exercise {number}: empty solution"
        for code in re.findall(r"```python\n(.*?)```", solution, re.S):
            compile(textwrap.dedent(code), f"{notebook} exercise {number}", "exec")

def test_waiting_for_a_chapter(tmp_path: Path, request: pytest.FixtureRequest) -> None:
    """The finishing tests' wait (conftest.wait_for_chapters): none for a chapter this session
    does not run, none once it ran; a failed chapter, or one that never says, fails the waiter."""
    this_test = request.node.nodeid.split("/")[-1]
    wait_for_chapters(tmp_path, {"other": "test_book.py::not_collected"}, request.session,
                      timeout=0)
    status = tmp_path / "chapters" / "mine"
    status.parent.mkdir()
    status.write_text("ok")
    wait_for_chapters(tmp_path, {"mine": this_test}, request.session, timeout=0)
    status.write_text("failed")
    with pytest.raises(pytest.fail.Exception, match="mine failed to execute"):
        wait_for_chapters(tmp_path, {"mine": this_test}, request.session, timeout=0)
    status.unlink()
    with pytest.raises(pytest.fail.Exception, match=r"gave up waiting for \['mine'\]"):
        wait_for_chapters(tmp_path, {"mine": this_test}, request.session, timeout=0)


@pytest.fixture(scope="module")
def staged_book() -> Path:
    build_book.stage(ROOT, QUICK_BOOK)
    return QUICK_BOOK


@pytest.mark.notebooks
@pytest.mark.parametrize("notebook", EARLY, ids=str)
def test_notebook_runs_in_quick_mode(staged_book: Path, chapter_cache: Path,
                                     notebook: Path) -> None:
    run_chapter(chapter_cache, staged_book / notebook)  # it ran and shows outputs


@pytest.mark.notebooks
def test_chapter_6_runs_without_real_data(staged_book: Path, chapter_cache: Path,
                                          monkeypatch) -> None:
    """A fresh clone has no INSPIRED beside it: chapter 6 says where to get it, skips it and
    still runs every simulated part (`make test` in CI has the data, so this is the one run
    that takes the other branch)."""
    from rar_lite.data import download
    from rar_lite.experiments import profiles

    for variable in (download.dataset_env("inspired"), download.DEV_ENV, download.DATA_ENV):
        monkeypatch.delenv(variable, raising=False)
    assert download.find_dataset("inspired") is None
    copy = staged_book / "notebooks" / "no_real_data_06.ipynb"
    copy.write_bytes((ROOT / "notebooks" / "06_evaluation.ipynb").read_bytes())
    try:
        nb = run_chapter(chapter_cache, copy, "quick", profiles.QUICK.parameters("06_evaluation"))
    finally:
        copy.unlink()
    printed = "".join(o.get("text", "") for c in nb.cells if c.cell_type == "code"
                      for o in c.outputs)
    assert "rar-lite download inspired" in printed and "Skipping inspired" in printed
    assert "no real data in this run" in printed
    assert "Popularity" in "".join(str(o.get("data", {})) for c in nb.cells
                                   if c.cell_type == "code" for o in c.outputs)
