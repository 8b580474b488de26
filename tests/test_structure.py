"""The package's rooms (rar_lite/__init__.py): every module lives in a room or is a core module,
and imports only what its room's docstring allows ("May import: ..."), lazy imports included."""

import ast
import re
from pathlib import Path

from conftest import ROOT

PACKAGE = ROOT / "rar_lite"
CORE = {"cache", "metrics", "stats"}
ANYTHING = {"cli", "__init__"}  # the command line and the package's own init


def rooms() -> dict[str, set[str]]:
    """room -> the rooms it may import (its docstring's "May import:" sentence)."""
    allowed = {}
    for init in sorted(PACKAGE.glob("*/__init__.py")):
        doc = ast.get_docstring(ast.parse(init.read_text())) or ""
        found = re.search(r"May import: (.*?)\.(\s|$)", doc, re.S)
        assert found, f"{init.relative_to(ROOT)}: no 'May import:' sentence"
        allowed[init.parent.name] = set(re.findall(r"`(\w+)`", found.group(1)))
        assert "core" in found.group(1), init
    return allowed


def imported_rooms(path: Path) -> set[str]:
    """The rooms and core modules a module imports (`from rar_lite.X import`, `import
    rar_lite.X`, `from rar_lite import X`), wherever the import statement is."""
    out = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names = ([node.module] if node.module != "rar_lite" else
                     [f"rar_lite.{a.name}" for a in node.names])
        elif isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        else:
            continue
        out |= {n.split(".")[1] for n in names if n.startswith("rar_lite.")}
    return out


def test_every_module_is_in_a_room_or_core() -> None:
    allowed = rooms()
    assert set(allowed) == {"data", "retrieval", "backends", "reranking", "loop", "dialogue",
                            "experiments", "evaluation", "book"}
    loose = {p.stem for p in PACKAGE.glob("*.py")} - CORE - ANYTHING
    assert not loose, f"put {sorted(loose)} in a room"
    assert not [p for p in PACKAGE.glob("*/*/*.py")], "rooms are one level deep"


def test_each_room_imports_only_what_it_may() -> None:
    allowed = rooms()
    wrong = []
    for path in sorted(PACKAGE.rglob("*.py")):
        room = path.parent.name if path.parent != PACKAGE else path.stem
        if room in ANYTHING:
            continue
        may = CORE if room in CORE else allowed[room] | CORE | {room}
        wrong += [f"{path.relative_to(ROOT)} imports {r}"
                  for r in sorted(imported_rooms(path) - may)]
    assert not wrong, "\n".join(wrong)


def test_only_the_experiments_room_imports_a_chapter_driver() -> None:
    """Outside `experiments`, the chapters' work is reached through its shared artifacts
    (`experiments.artifacts`) and the run sizes (`experiments.profiles`) only."""
    shared = {"rar_lite.experiments.artifacts", "rar_lite.experiments.profiles"}
    drivers = {p.stem for p in (PACKAGE / "experiments").glob("*.py")} - {"__init__"} - {
        name.rsplit(".", 1)[1] for name in shared}
    assert drivers == {"reranker_study", "loop_study", "loop_arms"}
    wrong = []
    for path in sorted(PACKAGE.rglob("*.py")):
        if path.parent.name == "experiments":
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and node.module == "rar_lite.experiments":
                wrong += [f"{path.relative_to(ROOT)}: {a.name}" for a in node.names
                          if a.name in drivers]
            elif isinstance(node, ast.ImportFrom) and node.module:
                wrong += [f"{path.relative_to(ROOT)}: {node.module}" for d in drivers
                          if node.module == f"rar_lite.experiments.{d}"]
    assert not wrong, "\n".join(wrong)


def test_the_check_sees_a_forbidden_import(tmp_path: Path) -> None:
    """The import scan itself: a lazy import inside a function counts."""
    module = tmp_path / "m.py"
    module.write_text("from rar_lite.data import corpus\n\ndef f():\n"
                      "    from rar_lite.book import plots\n    import rar_lite.loop.dpo\n"
                      "from rar_lite import cache\n")
    assert imported_rooms(module) == {"data", "book", "loop", "cache"}
