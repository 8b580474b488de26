"""The LLM answer cache's cost per answer: written one by one (a connection and a transaction
each, as every answer was before 2026-12-05) against a ranking's answers written together
(`ResponseCache.put_many`), and read one by one against together (`get_many`).

A pointwise ranking of K candidates reads K answers and writes those it computed. Each write
alone ends by closing the last connection, which folds SQLite's write-ahead log into the file;
together, that happens once per ranking. Prints a table and writes JSON: {"k", "rankings",
"machine", "write one by one ms per answer", "write together ms per answer", "read one by one
ms per answer", "read together ms per answer", "ms per ranking saved"}.

    .venv/bin/python scripts/bench_cache.py [--k 20] [--rankings 20] [--out FILE]
"""

from __future__ import annotations

import argparse
import tempfile
import time
import uuid
from pathlib import Path

from rar_lite import cache
from rar_lite.backends.llm import ResponseCache


def _ms_per_answer(action, batches: list[list[str]]) -> float:
    started = time.perf_counter()
    for keys in batches:
        action(keys)
    return (time.perf_counter() - started) * 1e3 / sum(map(len, batches))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--k", type=int, default=20, help="answers per ranking")
    parser.add_argument("--rankings", type=int, default=20, help="rankings timed per mode")
    parser.add_argument("--out", type=Path, default=Path("results/bench_cache.json"))
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        responses = ResponseCache(Path(tmp) / "answers.sqlite")
        responses.put_many([(uuid.uuid4().hex, 0.5) for _ in range(5000)])  # not empty

        def batches() -> list[list[str]]:
            return [[uuid.uuid4().hex for _ in range(args.k)] for _ in range(args.rankings)]

        alone, together = batches(), batches()
        record = {
            "k": args.k, "rankings": args.rankings, "machine": cache.machine(),
            "write one by one ms per answer": _ms_per_answer(
                lambda keys: [responses.put(key, 1.25) for key in keys], alone),
            "write together ms per answer": _ms_per_answer(
                lambda keys: responses.put_many([(key, 1.25) for key in keys]), together),
            "read one by one ms per answer": _ms_per_answer(
                lambda keys: [responses.get(key) for key in keys], alone),
            "read together ms per answer": _ms_per_answer(responses.get_many, together)}
    per_answer = (record["write one by one ms per answer"] + record["read one by one ms per answer"]
                  - record["write together ms per answer"] - record["read together ms per answer"])
    record["ms per ranking saved"] = per_answer * args.k
    print("| operation | ms per answer |\n| --- | --- |")
    for name, value in record.items():
        if name.endswith("per answer"):
            print(f"| {name.removesuffix(' ms per answer')} | {value:.3f} |")
    print(f"a ranking of {args.k} new answers: {record['ms per ranking saved']:.0f} ms saved")
    cache.write_json(args.out, record)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
