"""Open every page of the built book in headless Chromium with the network off, as a reader would.

`python -m rar_lite.book.book_check [HTML_DIR]` (`make check-book`) serves the built site on
127.0.0.1, opens each page in the system's Chromium (driven by Playwright, which never downloads
a browser here) and fails when a page

- requests anything outside the site (the request is blocked and recorded: offline it would fail),
- leaves a formula untypeset (raw TeX delimiters left in the text, a `.math` element without
  MathJax output, or a MathJax error),
- shows an image that does not load, or a file of the site is missing (HTTP 404),
- prints a warning (a warning category or a log line at warning level) or an absolute path of
  the machine that built it (a Python packages folder, the home, checkout, Python prefix or
  temporary folder), or raises a JavaScript error.

It saves a screenshot of each chapter under the build folder (`_build/screenshots`, next to
`html`), prints one line per page and closes with `book-check: N passed, N failed`. Without
Chromium it prints how to install it and a SKIPPED line, and exits 0.
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import http.server
import os
import re
import shutil
import sys
import tempfile
import threading
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

#: Chromium's names on Debian/Ubuntu and elsewhere, tried in this order.
CHROMIUM_NAMES: tuple[str, ...] = ("chromium", "chromium-browser", "google-chrome",
                                   "google-chrome-stable")
INSTALL_HINT = ("the browser check needs Chromium: `sudo apt-get install chromium` (Debian, "
                "Ubuntu: chromium-browser), or set RAR_LITE_CHROMIUM to a Chromium/Chrome binary")
# Text a reader should never see in a page: a printed warning.
WARNING_PATTERN = re.compile(r"\b[A-Za-z]*Warning:\s|\bWARNING:")
# Raw TeX delimiters left in the text once MathJax has run.
RAW_MATH_PATTERN = re.compile(r"\\\(|\\\[|\$\$")
#: JavaScript errors of the toolchain that a reader cannot notice, with the reason they pass.
KNOWN_JS_ERRORS: dict[str, str] = {
    "Identifier 'THEBE_JS_URL' has already been declared":
        "sphinx-thebe 0.3 adds its config script twice under Jupyter Book 1.0; thebe only starts "
        "on a click of a live-code button, which this book does not configure",
}
# Screenshots stop this far down a page (the API reference runs to 65,000 px).
MAX_SCREENSHOT_PX = 16_000
# Seconds to wait for a page, its images and MathJax.
PAGE_TIMEOUT_S = 60.0

# Runs in the page: wait for MathJax's first typeset and for every image, then report what a
# reader sees. Text is collected outside code, scripts and MathJax's own output.
_INSPECT_JS = """
async () => {
  if (window.MathJax && MathJax.startup && MathJax.startup.promise) {
    await MathJax.startup.promise;
  }
  const images = Array.from(document.images);
  images.forEach(img => { img.loading = 'eager'; });
  await Promise.all(images.map(img => img.complete ? null :
    new Promise(done => { img.addEventListener('load', done); img.addEventListener('error', done); })));
  const skip = new Set(['SCRIPT', 'STYLE', 'NOSCRIPT', 'TEMPLATE', 'PRE', 'CODE', 'TEXTAREA',
                        'MJX-CONTAINER', 'MJX-ASSISTIVE-MML']);
  const walker = document.createTreeWalker(document.body, NodeFilter.SHOW_TEXT, {
    acceptNode(node) {
      for (let el = node.parentElement; el; el = el.parentElement) {
        if (skip.has(el.tagName)) return NodeFilter.FILTER_REJECT;
      }
      return NodeFilter.FILTER_ACCEPT;
    }});
  const prose = [];
  while (walker.nextNode()) prose.push(walker.currentNode.nodeValue);
  const math = Array.from(document.querySelectorAll('.math'));
  return {
    prose: prose.join(' '),
    all_text: document.body.innerText + ' ' + document.body.textContent,
    formulas: document.querySelectorAll('mjx-container').length,
    math_elements: math.length,
    math_untypeset: math.filter(el => !el.querySelector('mjx-container'))
                        .map(el => el.textContent.trim().slice(0, 60)),
    math_errors: Array.from(document.querySelectorAll('mjx-merror'))
                      .map(el => el.textContent.trim().slice(0, 60)),
    images: images.length,
    broken_images: images.filter(img => !img.naturalWidth).map(img => img.getAttribute('src')),
  };
}
"""


@dataclass
class PageReport:
    """What one page showed: its problems (empty when it reads well offline), the formulas
    MathJax typeset, its images, the seconds it took and its screenshot (chapters only)."""

    page: str
    problems: list[str] = field(default_factory=list)
    formulas: int = 0
    has_math: bool = False
    images: int = 0
    seconds: float = 0.0
    screenshot: Path | None = None


def find_chromium(explicit: str | None = None) -> str | None:
    """The Chromium binary to drive: `explicit`, `$RAR_LITE_CHROMIUM`, else one on the PATH."""
    for candidate in (explicit, os.environ.get("RAR_LITE_CHROMIUM")):
        if candidate:
            return shutil.which(candidate) or (candidate if Path(candidate).is_file() else None)
    return next((path for name in CHROMIUM_NAMES if (path := shutil.which(name))), None)


def machine_paths(site: Path) -> list[str]:
    """Absolute paths of this machine that a built page must not show (the build's own)."""
    candidates = [Path.home(), Path(__file__).resolve().parents[2], Path(sys.prefix),
                  Path(tempfile.gettempdir()), site.resolve().parent]
    return sorted({str(p) + "/" for p in candidates if str(p) not in ("/", "")}, key=len)


def text_problems(text: str, paths: Sequence[str]) -> list[str]:
    """Warnings and install paths in a page's text, each with a little context."""
    problems = []
    for label, pattern in (("prints a warning", WARNING_PATTERN),
                           ("shows an install path", re.compile(r"[\w/.-]*(site|dist)-packages")),
                           *(("shows a path of the build machine", re.compile(re.escape(p)))
                             for p in paths)):
        found = pattern.search(text)
        if found:
            start = max(found.start() - 40, 0)
            snippet = " ".join(text[start:found.end() + 60].split())
            problems.append(f"{label}: …{snippet}…")
    return problems


def pages_of(site: Path) -> list[str]:
    """Every HTML page of a built site (relative, sorted), not the theme's or Sphinx's assets."""
    return sorted(str(p.relative_to(site)) for p in site.rglob("*.html")
                  if not p.relative_to(site).parts[0].startswith("_"))


def chapters_of(site: Path) -> set[str] | None:
    """The pages of the book's table of contents (`_toc.yml` two folders up), if found."""
    toc = site.parent.parent / "_toc.yml"
    if not toc.exists():
        return None
    from rar_lite.book.build_book import toc_files

    return {f"{doc}.html" for doc in toc_files(toc)} | {"index.html"}


def redirect_target(page: Path) -> Path | None:
    """The page an HTML redirect (`<meta http-equiv="Refresh" content="0; url=…">`) leads to."""
    found = re.search(r'http-equiv="refresh"\s+content="\d+;\s*url=([^"#]+)',
                      page.read_text(encoding="utf-8", errors="replace"), re.I)
    return (page.parent / found.group(1)).resolve() if found else None


class QuietServer(http.server.ThreadingHTTPServer):
    """A local server that does not print a traceback when the browser hangs up first (it often
    does, e.g. after asking for a missing favicon.ico); other errors are reported as usual."""

    def handle_error(self, request: object, client_address: object) -> None:
        if isinstance(sys.exc_info()[1], ConnectionError):  # BrokenPipe, ConnectionReset
            return
        super().handle_error(request, client_address)


@contextlib.contextmanager
def serve(site: Path) -> Iterator[str]:
    """Serve `site` on 127.0.0.1 (a free port) for the duration; yields the base URL."""

    class Quiet(http.server.SimpleHTTPRequestHandler):
        def log_message(self, *args: object) -> None:  # no access log on stderr
            pass

    server = QuietServer(("127.0.0.1", 0), functools.partial(Quiet, directory=str(site)))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/"
    finally:
        server.shutdown()
        server.server_close()


def check_site(site: Path, chromium: str, screenshots: Path | None = None,
               chapters: set[str] | None = None) -> list[PageReport]:
    """Open every page of `site` offline in headless `chromium`; one report per page.
    Chapters (all pages when `chapters` is None) get a full-page screenshot in `screenshots`
    (down to `MAX_SCREENSHOT_PX`)."""
    from playwright.sync_api import sync_playwright

    site = site.resolve()
    paths = machine_paths(site)
    reports = []
    with serve(site) as base, sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path=chromium,
            # belt and braces: no name resolves but the loopback, whatever the page tries
            args=["--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE 127.0.0.1"])
        context = browser.new_context(viewport={"width": 1280, "height": 900},
                                      service_workers="block")
        try:
            for page_name in pages_of(site):
                target = redirect_target(site / page_name)
                if target is not None:  # index.html: a meta refresh to the root chapter
                    reports.append(PageReport(page_name, [] if target.exists() else [
                        f"redirects to a missing page {target.relative_to(site)}"]))
                    continue
                shot = None
                if screenshots is not None and (chapters is None or page_name in chapters):
                    shot = screenshots / Path(page_name).with_suffix(".png")
                reports.append(_check_page(context, base, page_name, paths, shot))
        finally:
            browser.close()
    return reports


def _check_page(context: object, base: str, page_name: str, paths: Sequence[str],
                screenshot: Path | None) -> PageReport:
    """Load one page (outside requests blocked and recorded) and inspect it."""
    report = PageReport(page_name, screenshot=screenshot)
    outside: list[str] = []
    missing: list[str] = []
    errors: list[str] = []
    page = context.new_page()

    def route(route: object) -> None:
        url = route.request.url
        if url.startswith(base):
            route.continue_()
        else:
            outside.append(url)
            route.abort("internetdisconnected")

    page.route("**/*", route)
    page.on("response", lambda r: missing.append(f"{r.url[len(base):]} ({r.status})")
            if r.status >= 400 else None)
    page.on("pageerror", lambda error: errors.append(str(error).splitlines()[0]))
    started = time.perf_counter()
    try:
        page.goto(base + page_name, wait_until="load", timeout=PAGE_TIMEOUT_S * 1000)
        seen = page.evaluate(_INSPECT_JS)
        if screenshot is not None:
            screenshot.parent.mkdir(parents=True, exist_ok=True)
            height = page.evaluate("document.documentElement.scrollHeight")
            page.screenshot(path=str(screenshot), full_page=True, clip={
                "x": 0, "y": 0, "width": 1280, "height": min(height, MAX_SCREENSHOT_PX)})
    finally:
        page.close()
    report.seconds = time.perf_counter() - started
    report.formulas, report.images = seen["formulas"], seen["images"]
    raw = RAW_MATH_PATTERN.search(seen["prose"])
    report.has_math = bool(seen["math_elements"] or seen["formulas"] or raw)
    problems = report.problems
    problems += [f"requests {url} (outside the site)" for url in dict.fromkeys(outside)]
    problems += [f"missing file {what}" for what in dict.fromkeys(missing)]
    if seen["math_untypeset"] or raw:
        example = seen["math_untypeset"][0] if seen["math_untypeset"] else " ".join(
            seen["prose"][raw.start():raw.start() + 60].split())
        count = max(len(seen["math_untypeset"]), 1)
        problems.append(f"{count} formula(s) left untypeset (raw LaTeX: {example!r})")
    problems += [f"formula with a TeX error: {e!r}" for e in seen["math_errors"]]
    problems += [f"image {src} does not load" for src in seen["broken_images"]]
    problems += text_problems(seen["all_text"], paths)
    problems += [f"JavaScript error: {e}" for e in errors if e not in KNOWN_JS_ERRORS]
    return report


def summary(reports: Sequence[PageReport]) -> str:
    """One line per page, the problems under it, and the closing count line."""
    lines = []
    for r in reports:
        status = "ok  " if not r.problems else "FAIL"
        math = f"{r.formulas} formulas typeset" if r.has_math else "no math"
        shot = f", screenshot {r.screenshot.name}" if r.screenshot else ""
        lines.append(f"{status} {r.page}: {math}, {r.images} images, {r.seconds:.1f} s{shot}")
        lines += [f"     - {problem}" for problem in r.problems]
    failed = sum(bool(r.problems) for r in reports)
    lines.append(f"book-check: {len(reports) - failed} passed, {failed} failed")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    """Command line; returns the exit status (1 when any page fails)."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("html", type=Path, nargs="?", default=Path("_build/book/_build/html"),
                        help="the built site (default: make book's, _build/book/_build/html)")
    parser.add_argument("--screenshots", type=Path, default=None,
                        help="where the chapter screenshots go (default: HTML/../screenshots)")
    parser.add_argument("--chromium", default=None, help="the Chromium binary to drive")
    args = parser.parse_args(argv)
    chromium = find_chromium(args.chromium)
    if chromium is None:
        print(f"book-check SKIPPED: Chromium not found; {INSTALL_HINT}")
        return 0
    if not args.html.is_dir() or not pages_of(args.html):
        print(f"book-check: no built book in {args.html} (build it first: make book)")
        return 1
    started = time.perf_counter()
    reports = check_site(args.html, chromium, args.screenshots or args.html.parent / "screenshots",
                         chapters_of(args.html))
    print(f"checked {len(reports)} pages of {args.html} offline in {chromium} "
          f"({time.perf_counter() - started:.0f} s)")
    print(summary(reports))
    return 1 if any(r.problems for r in reports) else 0


if __name__ == "__main__":
    sys.exit(main())
