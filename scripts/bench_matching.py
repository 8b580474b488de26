"""Benchmark of rar_lite.data.matching: resolve throughput and round-trip accuracy.

Prints a table and writes results/bench_matching.json. Not a test: timings depend on the machine.

    .venv/bin/python scripts/bench_matching.py [--n 10000] [--seed 0]
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
import pandas as pd

from rar_lite import cache
from rar_lite.data import corpus as rc
from rar_lite.data import matching


def timed(fn, *args):
    start = time.perf_counter()
    out = fn(*args)
    return out, time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=10_000, help="names per workload")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=Path("results/bench_matching.json"))
    args = parser.parse_args()

    corpus, load_s = timed(rc.load_corpus)
    # the index built, not read back from the cache (`TitleMatcher` caches it)
    matcher, index_s = timed(lambda c: matching.TitleMatcher(c, use_cache=False), corpus)
    rng = np.random.default_rng(args.seed)
    sample = corpus.iloc[rng.choice(len(corpus), size=args.n, replace=True)]
    years = [None if pd.isna(y) else int(y) for y in sample["year"]]
    workloads = {
        "exact titles": list(sample["title"]),
        "perturbed titles": [matching.perturb_name(t, y, rng) for t, y in
                             zip(sample["title"], years)],
        "invented titles": [f"The {a} {b} of {c}" for a, b, c in zip(
            rng.choice(["Silent", "Crimson", "Velvet", "Hollow", "Paper"], args.n),
            rng.choice(["Lantern", "Orchard", "Harbour", "Engine", "Mirror"], args.n),
            rng.integers(100, 100_000, args.n))],
    }
    rows = []
    for name, names in workloads.items():
        found, seconds = timed(matcher.resolve_many, names)
        rows.append({"workload": name, "names": len(names), "seconds": round(seconds, 2),
                     "names_per_s": round(len(names) / seconds),
                     "resolved": round(sum(f is not None for f in found) / len(names), 4)})
    trip, trip_s = timed(matching.round_trip, matcher, corpus, 1000, args.seed)
    table = pd.DataFrame(rows)
    print(f"corpus: {len(corpus):,} items (load {load_s:.1f} s); matcher index {index_s:.1f} s")
    print(table.to_string(index=False))
    print(f"round trip (1,000 linked items, perturbed): {trip['ok'].mean():.1%} in {trip_s:.1f} s")
    result = {
        "machine": cache.machine(),
        "corpus_items": len(corpus), "index_seconds": index_s,
        "workloads": rows, "round_trip_rate": float(trip["ok"].mean()),
    }
    cache.write_json(args.out, result)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
