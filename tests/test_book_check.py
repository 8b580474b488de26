"""The offline browser check of the built book (rar_lite.book.book_check) on tiny hand-made sites: a
page with a remote script and raw math fails and says why, a self-contained page with the
book's own MathJax passes. The browser tests skip where Chromium is not installed."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest
from PIL import Image

from rar_lite.book import book_check

CHROMIUM = book_check.find_chromium()
needs_chromium = pytest.mark.skipif(CHROMIUM is None, reason=book_check.INSTALL_HINT)

MATHJAX = Path(importlib.util.find_spec("sphinx-mathjax-offline").submodule_search_locations[0],
               "static", "mathjax")

GOOD = """<!DOCTYPE html><html><head><meta charset="utf-8">
<script defer src="_static/mathjax/tex-chtml.js"></script></head><body>
<p>Inline <span class="math notranslate nohighlight">\\(x^2 + \\beta\\)</span> and display:</p>
<div class="math notranslate nohighlight">\\[\\mathcal{L} = -\\log \\sigma(z)\\]</div>
<img src="figure.png" alt="a figure"></body></html>"""

BAD = """<!DOCTYPE html><html><head><meta charset="utf-8">
<script defer src="https://cdn.jsdelivr.net/npm/mathjax@3/es5/tex-mml-chtml.js"></script>
</head><body><div class="math notranslate nohighlight">\\[\\mathcal{L} = -\\log \\sigma(z)\\]</div>
</body></html>"""

NOISY = """<!DOCTYPE html><html><head><meta charset="utf-8"></head><body>
<pre>/usr/lib/python3.11/site-packages/transformers/modeling_utils.py:3312: FutureWarning:
`is_gradient_checkpointing` is deprecated</pre><img src="missing.png" alt="gone"></body></html>"""


def _site(root: Path, pages: dict[str, str]) -> Path:
    """A tiny built site: the pages, a PNG and the book's MathJax in _static."""
    site = root / "html"
    (site / "_static").mkdir(parents=True)
    (site / "_static" / "mathjax").symlink_to(MATHJAX, target_is_directory=True)
    Image.new("RGB", (8, 8), "navy").save(site / "figure.png")
    for name, text in pages.items():
        (site / name).parent.mkdir(parents=True, exist_ok=True)
        (site / name).write_text(text, encoding="utf-8")
    return site


def test_text_problems_names_warnings_and_machine_paths() -> None:
    text = "x = 1\n/home/ann/rar/.venv/lib/python3.11/site-packages/t.py:3: FutureWarning: old"
    problems = book_check.text_problems(text, ["/home/ann/"])
    assert [p.split(":")[0] for p in problems] == [
        "prints a warning", "shows an install path", "shows a path of the build machine"]
    assert "FutureWarning: old" in problems[0]
    assert book_check.text_problems("WARNING: disk full", []) == [
        "prints a warning: …WARNING: disk full…"]
    assert book_check.text_problems("A warning about warnings: none here.", ["/home/ann/"]) == []


def test_server_is_quiet_when_the_browser_hangs_up(tmp_path: Path, capsys) -> None:
    server = book_check.QuietServer(("127.0.0.1", 0), book_check.http.server.BaseHTTPRequestHandler)
    try:
        for error in (BrokenPipeError(32, "Broken pipe"), ConnectionResetError(104, "reset")):
            try:
                raise error
            except ConnectionError:
                server.handle_error(None, ("127.0.0.1", 1))
        assert capsys.readouterr().err == ""
        try:
            raise ValueError("a real fault")
        except ValueError:
            server.handle_error(None, ("127.0.0.1", 1))
        assert "ValueError: a real fault" in capsys.readouterr().err
    finally:
        server.server_close()


def test_pages_and_redirects(tmp_path: Path) -> None:
    site = _site(tmp_path, {"index.html": '<meta http-equiv="Refresh" content="0; url=a/b.html" />',
                            "a/b.html": GOOD, "_static/x.html": BAD})
    assert book_check.pages_of(site) == ["a/b.html", "index.html"]
    assert book_check.redirect_target(site / "index.html") == (site / "a" / "b.html").resolve()
    assert book_check.redirect_target(site / "a" / "b.html") is None


def test_summary_closes_with_the_counts() -> None:
    reports = [book_check.PageReport("a.html", formulas=2, has_math=True),
               book_check.PageReport("b.html", ["requests https://x.org/y.js (outside the site)"])]
    lines = book_check.summary(reports).splitlines()
    assert lines[0].startswith("ok   a.html: 2 formulas typeset")
    assert lines[1].startswith("FAIL b.html: no math")
    assert lines[2] == "     - requests https://x.org/y.js (outside the site)"
    assert lines[-1] == "book-check: 1 passed, 1 failed"


def test_missing_chromium_skips_with_the_install_hint(
        monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture, tmp_path: Path) -> None:
    monkeypatch.delenv("RAR_LITE_CHROMIUM", raising=False)
    monkeypatch.setattr(book_check.shutil, "which", lambda name: None)
    assert book_check.main([str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert out.startswith("book-check SKIPPED: Chromium not found") and "apt-get install" in out


@needs_chromium
def test_remote_script_and_raw_math_fail_naming_page_and_reason(
        tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    site = _site(tmp_path, {"chapter.html": BAD, "noisy.html": NOISY})
    reports = {r.page: r for r in book_check.check_site(site, CHROMIUM, tmp_path / "shots")}
    bad = reports["chapter.html"].problems
    assert bad[0] == ("requests https://cdn.jsdelivr.net/npm/mathjax@3/es5/tex-mml-chtml.js "
                      "(outside the site)")
    assert bad[1].startswith("1 formula(s) left untypeset (raw LaTeX: '\\\\[\\\\mathcal{L}")
    assert len(bad) == 2 and reports["chapter.html"].has_math
    noisy = " | ".join(reports["noisy.html"].problems)
    for reason in ("missing file missing.png (404)", "image missing.png does not load",
                   "prints a warning", "shows an install path"):
        assert reason in noisy
    assert book_check.main([str(site), "--chromium", CHROMIUM]) == 1
    out = capsys.readouterr().out
    assert "FAIL chapter.html" in out and out.rstrip().endswith("0 passed, 2 failed")


@needs_chromium
def test_self_contained_page_with_local_mathjax_passes(tmp_path: Path) -> None:
    site = _site(tmp_path, {"chapter.html": GOOD})
    [report] = book_check.check_site(site, CHROMIUM, tmp_path / "shots")
    assert report.problems == []
    assert report.has_math and report.formulas == 2 and report.images == 1
    assert Image.open(tmp_path / "shots" / "chapter.png").size[0] == 1280
