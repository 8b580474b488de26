"""`make test`'s scheduling (tests/conftest.py): a pytest run with two xdist workers over three
stand-in files shaped like the book's: the chapter chain, unit tests, the finishing file."""

import os
import subprocess
import sys
from pathlib import Path

from conftest import ROOT

BOOK_CONFTEST = str(ROOT / "tests" / "conftest.py")
CONFTEST = f"""
import importlib.util

spec = importlib.util.spec_from_file_location("book_conftest", {BOOK_CONFTEST!r})
book = importlib.util.module_from_spec(spec)
spec.loader.exec_module(book)
pytest_collection_modifyitems = book.pytest_collection_modifyitems
pytest_xdist_make_scheduler = book.pytest_xdist_make_scheduler
"""
MARK = """import os, time
from pathlib import Path


def mark(name):
    Path(os.environ["MARKS"], name).write_text(os.environ["PYTEST_XDIST_WORKER"])
"""
FILES = {  # the chain's last two tests (chapter 6's) are long; the other worker is busy
    "test_book.py": MARK + "def test_a(): mark('chain')\ndef test_b(): pass\n"
                           "def test_c(): time.sleep(2)\ndef test_d(): pass",
    "test_units.py": MARK + "\n".join(f"def test_{n}(): time.sleep(0.4)" for n in "abcde"),
    "test_book_finish.py": MARK + "def test_f(): mark('finish')",
}


def test_finishing_file_goes_to_the_worker_without_the_chain(tmp_path: Path) -> None:
    tests, marks = tmp_path / "tests", tmp_path / "marks"
    tests.mkdir()
    marks.mkdir()
    (tests / "conftest.py").write_text(CONFTEST)
    for name, source in FILES.items():
        (tests / name).write_text(source + "\n")
    env = {k: v for k, v in os.environ.items() if not k.startswith("PYTEST_XDIST")}
    env["MARKS"] = str(marks)  # (this test may itself run on an xdist worker)
    run = subprocess.run([sys.executable, "-m", "pytest", "-q", "-n", "2", "--dist", "loadfile",
                          "--no-loadscope-reorder", "-p", "no:cacheprovider", "tests"],
                         cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120,
                         check=False)
    assert run.returncode == 0, run.stdout + run.stderr
    assert "10 passed" in run.stdout
    # xdist alone gives the chain's worker the next file once two of its tests are left
    assert (marks / "finish").read_text() != (marks / "chain").read_text()
