"""Execute the book's notebooks with papermill and build the Jupyter Book 1.x HTML site.

`python -m rar_lite.book.build_book --mode full` is the README's main job: the book sources (the
`_config.yml`, `_toc.yml`, `book/` and `notebooks/`) are copied to a staging directory, every
notebook in `_toc.yml` is executed there with its default parameters (`--mode quick` runs the QUICK
profile's sizes, `rar_lite.experiments.profiles`), and `jupyter-book build -W -n --keep-going`
renders the executed copies. A failing cell stops papermill; a warning fails the build. The
committed notebooks stay output-free.

The static book loads no widget JavaScript (it would come from a CDN): after execution each widget
output keeps its picture when it has one (chapter 8's demo) or becomes the text its final state
shows (tqdm's progress bars: `lrurec: 100% |██████████| 3/3 [00:04<00:00]`), see `freeze_widgets`.
"""

from __future__ import annotations

import argparse
import html
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import yaml

#: What the book is made of, relative to the repository root.
BOOK_SOURCES: tuple[str, ...] = ("_config.yml", "_toc.yml", "references.bib", "book", "notebooks")
#: The intro's pipeline figure, drawn into the staged book by `stage`.
PIPELINE_FIGURE = Path("book") / "figures" / "pipeline.svg"
WIDGET_VIEW = "application/vnd.jupyter.widget-view+json"
WIDGET_STATE = "application/vnd.jupyter.widget-state+json"


def repo_root() -> Path:
    """The checkout holding `_toc.yml` (the package is installed in editable mode)."""
    return Path(__file__).resolve().parents[2]


def toc_files(toc_path: Path) -> list[str]:
    """Every document named in a Jupyter Book `_toc.yml` (root first), without extension."""
    toc = yaml.safe_load(Path(toc_path).read_text(encoding="utf-8"))
    found = [toc["root"]]

    def walk(node: object) -> None:
        if isinstance(node, dict):
            if "file" in node:
                found.append(node["file"])
            for value in node.values():
                walk(value)
        elif isinstance(node, list):
            for value in node:
                walk(value)

    walk({k: v for k, v in toc.items() if k != "root"})
    return found


def toc_notebooks(root: Path) -> list[Path]:
    """The notebooks of the book, in reading order, as paths relative to `root`."""
    return [Path(f"{doc}.ipynb") for doc in toc_files(root / "_toc.yml")
            if (root / f"{doc}.ipynb").exists()]


def stage(root: Path, dest: Path) -> None:
    """Copy the book sources from `root` into a fresh `dest` and draw the pipeline figure."""
    if dest.exists():
        shutil.rmtree(dest)
    dest.mkdir(parents=True)
    for name in BOOK_SOURCES:
        source = root / name
        if source.is_dir():
            shutil.copytree(source, dest / name,
                            ignore=shutil.ignore_patterns(".ipynb_checkpoints", "__pycache__"))
        elif source.exists():
            shutil.copy2(source, dest / name)
    from rar_lite.book.plots import save_pipeline_figure

    save_pipeline_figure(dest / PIPELINE_FIGURE)  # drawn by the package, not committed


def execute(notebook: Path, profile: str = "full", parameters: dict | None = None) -> float:
    """Execute `notebook` in place with papermill (cwd = its folder) at `profile`'s sizes
    (`profiles.Profile.parameters`; `parameters` on top), then make its widget outputs static
    (`freeze_widgets`); returns seconds taken."""
    import papermill

    from rar_lite.experiments import profiles

    started = time.perf_counter()
    papermill.execute_notebook(
        str(notebook), str(notebook), cwd=str(notebook.parent), kernel_name="python3",
        parameters={**profiles.get(profile).parameters(notebook), **(parameters or {})},
        progress_bar=False,
    )
    freeze_widgets(notebook)
    return time.perf_counter() - started


def widget_text(model_id: str, state: dict) -> str:
    """The text a widget shows in its saved `state` (ipywidgets' widget-state JSON): labels and
    HTML values as text, progress bars drawn with blocks, boxes as their children in order."""
    model = state.get(model_id.removeprefix("IPY_MODEL_"))
    if model is None:
        return ""
    values = model.get("state", {})
    if "children" in values:
        return " ".join(t for c in values["children"] if (t := widget_text(c, state)))
    if model.get("model_name") in ("FloatProgressModel", "IntProgressModel"):
        filled = round(10 * values.get("value", 0) / values["max"]) if values.get("max") else 0
        return "|" + "█" * filled + " " * (10 - filled) + "|"
    value = values.get("value")
    if not isinstance(value, str):  # a slider's number, a checkbox: not shown as text here
        return ""
    return " ".join(html.unescape(re.sub(r"<[^>]+>", "", value)).split())  # \u2007 is a space


def freeze_widgets(notebook: Path) -> int:
    """Make an executed notebook's widget outputs static, in place; returns how many changed.

    An output that also carries a picture (or HTML) keeps it; one that has only its text
    stand-in gets the text of the widget's final state (`widget_text`) instead. The saved
    widget state goes too, so the book embeds no widget JavaScript or state."""
    import nbformat

    nb = nbformat.read(notebook, as_version=4)
    state = nb.metadata.get("widgets", {}).get(WIDGET_STATE, {}).get("state", {})
    changed = 0
    for cell in nb.cells:
        for output in cell.get("outputs", []):
            view = output.get("data", {}).pop(WIDGET_VIEW, None)
            if view is None:
                continue
            changed += 1
            if set(output["data"]) <= {"text/plain"}:
                output["data"]["text/plain"] = (widget_text(view["model_id"], state)
                                                or output["data"].get("text/plain", ""))
    nb.metadata.pop("widgets", None)
    nbformat.write(nb, notebook)
    return changed


def build_html(book_dir: Path) -> Path:
    """Run `jupyter-book build` on a staged, executed book; returns the HTML directory."""
    executable = Path(sys.executable).with_name("jupyter-book")
    command = [str(executable), "build", str(book_dir), "-W", "-n", "--keep-going"]
    subprocess.run(command, check=True)
    return book_dir / "_build" / "html"


def build(mode: str = "full", out: Path | None = None, root: Path | None = None) -> Path:
    """Stage, execute every notebook, build the HTML; returns the HTML directory."""
    root = root or repo_root()
    book_dir = (out or root / "_build") / "book"
    stage(root, book_dir)
    from rar_lite import cache
    from rar_lite.backends.llm import ResponseCache

    answers = ResponseCache()  # the one the chapters share: what each adds, it computed
    timings, computed = {}, {}
    for notebook in toc_notebooks(book_dir):
        print(f"executing {notebook} ({mode})", flush=True)
        before = len(answers)
        timings[str(notebook)] = execute(book_dir / notebook, profile=mode)
        computed[str(notebook)] = len(answers) - before
        print(f"  done in {timings[str(notebook)]:.1f} s, {computed[str(notebook)]} LLM "
              "answers computed", flush=True)
    started = time.perf_counter()
    html = build_html(book_dir)
    timings["jupyter-book build"] = time.perf_counter() - started
    print(f"book built: {html / 'index.html'}")
    print(timing_table(timings, computed))
    cache.write_json(book_dir / "timings.json", {
        "mode": mode, "machine": cache.machine(), "seconds": timings,
        "total_seconds": sum(timings.values()), "llm_answers_computed": computed,
        "llm_answers_cached_at_start": len(answers) - sum(computed.values())})
    return html


def timing_table(timings: dict[str, float], computed: dict[str, int] | None = None) -> str:
    """A Markdown table of the minutes each step took, with the total; with `computed`, also
    the LLM answers each notebook computed (not found in the answer cache)."""
    if computed is None:
        rows = [f"| {name} | {seconds / 60:.1f} |" for name, seconds in timings.items()]
        total = sum(timings.values()) / 60
        return "\n".join(["| step | minutes |", "| --- | --- |", *rows,
                          f"| total | {total:.1f} |"])
    rows = [f"| {name} | {seconds / 60:.1f} | {computed.get(name, '')} |"
            for name, seconds in timings.items()]
    total = f"| total | {sum(timings.values()) / 60:.1f} | {sum(computed.values())} |"
    return "\n".join(["| step | minutes | LLM answers computed |", "| --- | --- | --- |", *rows,
                      total])


def main(argv: list[str] | None = None) -> None:
    """Command line: `python -m rar_lite.book.build_book [--mode full|quick] [--out DIR]`."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mode", choices=("full", "quick"), default="full",
                        help="full: default parameters; quick: QUICK=True in every notebook")
    parser.add_argument("--out", type=Path, default=None,
                        help="output directory (default: _build in the checkout)")
    args = parser.parse_args(argv)
    os.environ.setdefault("PYTHONHASHSEED", "0")
    build(args.mode, args.out)


if __name__ == "__main__":
    main()
