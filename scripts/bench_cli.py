"""Benchmark of the `rar-lite` command as a whole process: `score-generations` on INSPIRED's
test split (one answer per turn) and `--help`.

Each command runs once to warm the disk cache (not counted), then `--runs` times; the table gives
the median, min and max wall time of the whole process (interpreter start, imports, work). The
generations file is made from the data, in a temporary directory: for each turn a numbered list
of 20 movie names from `item_ids.json`, the turn's targets among them (at a position that moves
with the turn, sometimes below the top 20), every fourth name with two letters swapped so that
the nearest-name search really runs. One more run with `python -X importtime` lists the
top-level imports that took longest. `score-generations` needs no corpus, so there is no corpus
cache to warm. Prints a table and writes `--out` (JSON). Not a test: timings depend on the
machine.

    .venv/bin/python scripts/bench_cli.py [--dataset-dir DIR] [--runs 5] [--out FILE]

INSPIRED: `--dataset-dir`, else `$RAR_LITE_INSPIRED_DIR`, else the downloaded copy, else
`../shared/data/inspired` beside the checkout (as the Makefile); absent: says so and exits 0.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from rar_lite import cache
from rar_lite.data import download
from rar_lite.data.cikm import cikm23_entity_name, read_entities

#: The whole-process bar of issue 20 for `score-generations` on INSPIRED, in seconds.
BAR_S = 3.0
#: Modules `score-generations` and `--help` must not import (tests/test_imports.py checks them).
HEAVY = ("torch", "transformers", "sentence_transformers", "faiss", "trl", "peft", "datasets",
         "matplotlib", "seaborn", "pandas", "scipy")
NAMES_PER_ANSWER = 20
REPO = Path(__file__).resolve().parent.parent


def inspired_dir(given: str | None) -> Path | None:
    """The INSPIRED test directory (see the module docstring), or None when there is none."""
    if given:
        return Path(given)
    found = download.find_dataset("inspired")
    if found is not None:
        return found
    beside = REPO.parent / "shared" / "data" / "inspired"
    return beside if beside.is_dir() else None


def _swap(name: str) -> str:
    """`name` with two letters in its middle swapped (a typo), unchanged when too short."""
    middle = len(name) // 2
    if len(name) < 4 or name[middle - 1] == name[middle]:
        return name
    return name[:middle - 1] + name[middle] + name[middle - 1] + name[middle + 1:]


def write_generations(directory: Path, path: Path) -> dict[str, int]:
    """Write a generations file for every line of `directory`'s test.jsonl (see the module
    docstring); returns its counts (turns, names, names equal to an entity's)."""
    entities = read_entities(directory)
    movies = json.loads((directory / "item_ids.json").read_text(encoding="utf-8"))
    known = {cikm23_entity_name(name) for name in entities.values()}
    lines = [line for line in (directory / "test.jsonl").read_text(encoding="utf-8").splitlines()
             if line.strip()]
    counts = {"turns": len(lines), "names": 0, "exact_names": 0}
    with path.open("w", encoding="utf-8") as out:
        for index, line in enumerate(lines):
            names = [cikm23_entity_name(entities[movies[(index * 7 + k) % len(movies)]]).title()
                     for k in range(NAMES_PER_ANSWER)]
            names = [_swap(name) if k % 4 == 3 else name for k, name in enumerate(names)]
            for target in json.loads(line)["rec"]:
                names.insert(index % 25, cikm23_entity_name(entities[target]).title())
            names = names[:NAMES_PER_ANSWER]
            counts["names"] += len(names)
            counts["exact_names"] += sum(name.lower() in known for name in names)
            text = "Here are some movies you might enjoy:\n" + "\n".join(
                f"{k}. {name}" for k, name in enumerate(names, start=1))
            out.write(json.dumps({"index": index, "text": text}) + "\n")
    return counts


def command() -> list[str]:
    """The `rar-lite` console script beside this interpreter, else `python -m rar_lite.cli`."""
    script = Path(sys.executable).with_name("rar-lite")
    return [str(script)] if script.is_file() else [sys.executable, "-m", "rar_lite.cli"]


def time_runs(argv: list[str], runs: int) -> tuple[list[float], str]:
    """Wall seconds of `runs` runs of `argv` after one warm-up run, and the last run's stdout."""
    subprocess.run(argv, capture_output=True, check=True)
    seconds = []
    for _ in range(runs):
        start = time.perf_counter()
        done = subprocess.run(argv, capture_output=True, text=True, check=True)
        seconds.append(time.perf_counter() - start)
    return seconds, done.stdout


def top_imports(args: list[str], n: int = 8) -> tuple[list[dict], list[str]]:
    """The `n` top-level imports of `rar-lite args` that took longest (`-X importtime`,
    cumulative ms), and which of `HEAVY` were imported at all."""
    done = subprocess.run([sys.executable, "-X", "importtime", "-m", "rar_lite.cli", *args],
                          capture_output=True, text=True, check=True)
    rows, imported = [], set()
    for line in done.stderr.splitlines():
        if not line.startswith("import time:") or "|" not in line:
            continue
        _, cumulative, name = line.split("|")
        module = name.strip()
        imported.add(module)
        if cumulative.strip().isdigit() and not name[1:].startswith(" "):
            rows.append({"module": module, "cumulative_ms": int(cumulative) / 1000})
    rows.sort(key=lambda row: -row["cumulative_ms"])
    return rows[:n], [module for module in HEAVY if module in imported]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dataset-dir", help="INSPIRED's test split (see the docstring)")
    parser.add_argument("--runs", type=int, default=5, help="timed runs per command")
    parser.add_argument("--out", type=Path, default=Path("results/bench_cli.json"))
    args = parser.parse_args()

    directory = inspired_dir(args.dataset_dir)
    if directory is None or not all((directory / name).is_file() for name in download.CIKM_FILES):
        where = directory or "no --dataset-dir, $RAR_LITE_INSPIRED_DIR, download or " \
            "../shared/data/inspired"
        print(f"INSPIRED not found ({where}): nothing to benchmark")
        return
    base = command()
    with tempfile.TemporaryDirectory() as tmp:
        generations = Path(tmp) / "generations.jsonl"
        counts = write_generations(directory, generations)
        score_args = ["score-generations", "--dataset-dir", str(directory),
                      "--generations", str(generations)]
        score_s, stdout = time_runs([*base, *score_args], args.runs)
        help_s, _ = time_runs([*base, "--help"], args.runs)
        imports, heavy = top_imports(score_args)
    scores = json.loads(stdout)
    rows = [{"command": "score-generations (INSPIRED)", "runs": score_s},
            {"command": "--help", "runs": help_s}]
    for row in rows:
        row.update(median_s=statistics.median(row["runs"]), min_s=min(row["runs"]),
                   max_s=max(row["runs"]))
    print(f"{' '.join(Path(part).name for part in base)}; {counts['turns']} answers, "
          f"{counts['names']} names ({counts['exact_names']} equal to an entity's name); "
          f"{args.runs} runs after a warm-up")
    print(f"{'command':<30} {'median s':>9} {'min s':>7} {'max s':>7}")
    for row in rows:
        print(f"{row['command']:<30} {row['median_s']:>9.2f} {row['min_s']:>7.2f} "
              f"{row['max_s']:>7.2f}")
    verdict = "met" if rows[0]["median_s"] <= BAR_S else "NOT met"
    print(f"bar: score-generations <= {BAR_S:.0f} s (median): {verdict}")
    print(f"scored {scores['n_turns']} turns, {scores['n_pairs']} pairs, "
          f"recall@10 {scores['recall@10']:.4f}")
    print("slowest top-level imports of score-generations (ms, cumulative): " + ", ".join(
        f"{row['module']} {row['cumulative_ms']:.0f}" for row in imports))
    print(f"heavy modules imported: {', '.join(heavy) or 'none'}")
    result = {
        "machine": cache.machine(),
        "command": base, "dataset_dir": str(directory), "generations": counts,
        "bar_s": BAR_S, "bar_met": rows[0]["median_s"] <= BAR_S, "timings": rows,
        "scores": scores, "top_imports": imports, "heavy_imported": heavy,
    }
    cache.write_json(args.out, result)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
