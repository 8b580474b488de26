"""Benchmark of FAISS flat, HNSW and IVF indexes on synthetic paper-scale catalogues (the paper's
corpus has ~300k movies): build seconds, index bytes, ms per query (single queries and one batch)
and recall@100 against exact search. Chooses the constants of rar_lite/retrieval/ann.py. Prints one
table and writes results/bench_ann.json.

    .venv/bin/python scripts/bench_ann.py [--sizes 300000 3000000] [--dims 65 384]

Catalogues: a seeded hierarchical Gaussian mixture (64 topics x 32 sub-clusters, Zipf-sized),
which clusters like real embeddings do (uniform random vectors make every ANN index look worse
than on real data). Dim 65 mimics the LRURec retriever's items [e_j, b_j] (unnormalised, a
bias column) searched with queries [h, 1]; dim 384 mimics MiniLM card vectors (unit length).
Queries are fresh draws from the same mixture. Timings use FAISS's own threads (all cores).
"""

from __future__ import annotations

import argparse
import json
import os
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import faiss
import numpy as np
import pandas as pd

from rar_lite import cache
from rar_lite.retrieval import ann

K = 100
TOPICS, SUBCLUSTERS = 64, 32
CHUNK = 200_000


def _mixture(dim: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Component centres (unit length) and Zipf weights of the hierarchical mixture."""
    rng = np.random.default_rng([seed, dim])
    topics = rng.standard_normal((TOPICS, dim))
    topics /= np.linalg.norm(topics, axis=1, keepdims=True)
    centres = np.repeat(topics, SUBCLUSTERS, axis=0)
    centres += 0.8 * rng.standard_normal(centres.shape) / np.sqrt(dim)
    centres /= np.linalg.norm(centres, axis=1, keepdims=True)
    weights = 1.0 / np.arange(1, len(centres) + 1) ** 0.8
    return centres, rng.permutation(weights / weights.sum())


def draw(n: int, dim: int, seed: int, stream: int, queries: bool = False) -> np.ndarray:
    """`n` float32 vectors of the catalogue family `dim` (65: LRURec-like [e, b] items or
    [h, 1] queries; otherwise unit-length MiniLM-like), generated in seeded chunks."""
    base = dim - 1 if dim == 65 else dim
    centres, weights = _mixture(base, seed)
    out = np.empty((n, dim), dtype="float32")
    for number, start in enumerate(range(0, n, CHUNK)):
        rng = np.random.default_rng([seed, dim, stream, number])
        size = min(CHUNK, n - start)
        part = centres[rng.choice(len(centres), size=size, p=weights)]
        part += 0.6 * rng.standard_normal(part.shape) / np.sqrt(base)
        if dim == 65:  # LRURec-like: free norms, and a bias column (queries: h scaled, then 1)
            if queries:
                part *= 4.0
                extra = np.ones((size, 1))
            else:
                part *= rng.lognormal(0.0, 0.25, size=(size, 1))
                extra = rng.normal(0.0, 0.5, size=(size, 1))
            part = np.hstack([part, extra])
        else:
            part /= np.linalg.norm(part, axis=1, keepdims=True)
        out[start:start + size] = part
    return out


def index_bytes(index: object) -> int:
    """Bytes of the serialised index (counted as written, never held in memory)."""
    total = [0]

    def count(chunk: bytes) -> None:
        total[0] += len(chunk)

    writer = faiss.PyCallbackIOWriter(count)
    faiss.write_index(index, writer)
    del writer
    return total[0]


@contextmanager
def constants(**values: float) -> Iterator[None]:
    """Temporarily set rar_lite.retrieval.ann constants (so the package's own code builds each
    index)."""
    old = {name: getattr(ann, name) for name in values}
    for name, value in values.items():
        setattr(ann, name, value)
    try:
        yield
    finally:
        for name, value in old.items():
            setattr(ann, name, value)


def single_ms(index: object, queries: np.ndarray) -> np.ndarray:
    """Milliseconds of each query searched alone (batch of 1)."""
    times = np.empty(len(queries))
    for n in range(len(queries)):
        started = time.perf_counter()
        index.search(queries[n:n + 1], K)
        times[n] = (time.perf_counter() - started) * 1000
    return times


def recall(found: np.ndarray, truth: np.ndarray) -> float:
    """Mean share of the exact top-K found."""
    return float(np.mean([len(np.intersect1d(f, t)) / truth.shape[1]
                          for f, t in zip(found, truth)]))


def measure(index: object, queries: np.ndarray, truth: np.ndarray, single: int,
            setting: dict, build_s: float, nbytes: int) -> dict:
    """One table row: recall@K, single-query p50/p95 ms (two runs), batched ms per query."""
    started = time.perf_counter()
    _, found = index.search(queries, K)
    batched = (time.perf_counter() - started) * 1000 / len(queries)
    runs = [single_ms(index, queries[:single]) for _ in range(2)]
    row = {**setting, "build_s": round(build_s, 2), "index_MB": round(nbytes / 2**20, 1),
           f"recall@{K}": round(recall(found, truth), 4),
           "p50_ms": round(float(np.median(runs[1])), 3),
           "p95_ms": round(float(np.percentile(runs[1], 95)), 3),
           "p50_ms_run1": round(float(np.median(runs[0])), 3),
           "batched_ms": round(batched, 4), "single_queries": single,
           "missing": int((found < 0).sum()), "load_avg": round(os.getloadavg()[0], 2)}
    print("   ", {k: v for k, v in row.items() if k not in ("size", "dim")}, flush=True)
    return row


def bench(n: int, dim: int, n_queries: int, flat_single: int, kinds: list[str],
          hnsw_m: list[int], ef_search: list[int], probe_counts: list[int],
          seed: int) -> list[dict]:
    """All rows for one catalogue (the exact index is always built: it gives the truth)."""
    print(f"\n== {n:,} items, dim {dim} ==", flush=True)
    started = time.perf_counter()
    data = draw(n, dim, seed, stream=0)
    queries = draw(n_queries, dim, seed, stream=1, queries=True)
    print(f"  generated in {time.perf_counter() - started:.0f} s", flush=True)
    common = {"size": n, "dim": dim}
    rows = []

    started = time.perf_counter()
    flat = ann.build_index(data, kind="flat")
    build_s = time.perf_counter() - started
    started = time.perf_counter()
    scores, truth = flat.search(queries, K)
    print(f"  exact top-{K} of {n_queries} queries: {time.perf_counter() - started:.1f} s; "
          f"mean score top-1 {scores[:, 0].mean():.3f}, top-{K} {scores[:, -1].mean():.3f}",
          flush=True)
    rows.append(measure(flat, queries, truth, min(flat_single, n_queries),
                        {**common, "index": "flat", "params": "exact"}, build_s,
                        index_bytes(flat)))
    del flat

    for m in hnsw_m if "hnsw" in kinds else []:
        with constants(HNSW_M=m):
            started = time.perf_counter()
            index = ann.build_index(data, kind="hnsw", seed=seed)
            build_s = time.perf_counter() - started
        nbytes = index_bytes(index)
        for ef in sorted({*ef_search, ann.HNSW_EF_SEARCH}):
            index.hnsw.efSearch = ef
            rows.append(measure(index, queries, truth, n_queries,
                                {**common, "index": "hnsw", "params": f"M={m} efSearch={ef}"},
                                build_s, nbytes))
        del index

    if "ivf" not in kinds:
        return rows
    started = time.perf_counter()
    index = ann.build_index(data, kind="ivf", seed=seed)
    build_s = time.perf_counter() - started
    nbytes = index_bytes(index)
    for probes in sorted({*probe_counts, index.nprobe}):
        index.nprobe = probes
        rows.append(measure(index, queries, truth, n_queries,
                            {**common, "index": "ivf",
                             "params": f"nlist={index.nlist} nprobe={probes}"},
                            build_s, nbytes))
    del index, data
    return rows


def package_choice(row: dict) -> bool:
    """Whether `row` is the index `ann.build_index(kind="auto")` builds for its catalogue."""
    kind = ann.choose_kind(row["size"])
    if kind != row["index"]:
        return False
    if kind == "hnsw":
        return row["params"] == f"M={ann.HNSW_M} efSearch={ann.HNSW_EF_SEARCH}"
    if kind == "ivf":
        lists = ann.ivf_lists(row["size"])
        return row["params"] == f"nlist={lists} nprobe={ann.ivf_probes(lists)}"
    return True


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[300_000, 3_000_000])
    parser.add_argument("--dims", type=int, nargs="+", default=[65, 384])
    parser.add_argument("--queries", type=int, default=1000)
    parser.add_argument("--flat-single", type=int, default=100,
                        help="queries timed one by one on the exact index (it is slow)")
    parser.add_argument("--hnsw-m", type=int, nargs="+", default=[16, 32])
    parser.add_argument("--ef-search", type=int, nargs="+", default=[64, 128, 256])
    parser.add_argument("--nprobe", type=int, nargs="+", default=[16, 32, 64, 128])
    parser.add_argument("--kinds", nargs="+", default=["hnsw", "ivf"],
                        help="approximate indexes to run (exact search always runs)")
    parser.add_argument("--note", default="", help="recorded in the JSON (e.g. a shared machine)")
    parser.add_argument("--skip", nargs="*", default=[],
                        help="SIZExDIM catalogues to leave out, e.g. 3000000x384")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=Path("results/bench_ann.json"))
    args = parser.parse_args()

    rows, notes = [], [args.note] if args.note else []
    for n in args.sizes:
        for dim in args.dims:
            if f"{n}x{dim}" not in args.skip:
                rows += bench(n, dim, args.queries, args.flat_single, args.kinds, args.hnsw_m,
                              args.ef_search, args.nprobe, args.seed)
    if args.out.exists():  # keep the rows (and notes) of catalogues not run this time
        earlier = json.loads(args.out.read_text())
        run = {(r["size"], r["dim"]) for r in rows}
        rows = [r for r in earlier["rows"] if (r["size"], r["dim"]) not in run] + rows
        notes = [n for n in earlier.get("notes", []) if n not in notes] + notes
    rows.sort(key=lambda r: (r["size"], r["dim"]))
    for row in rows:
        row["package_choice"] = package_choice(row)
    table = pd.DataFrame(rows)
    table["auto"] = np.where(table["package_choice"], "<-", "")
    columns = ["size", "dim", "index", "params", f"recall@{K}", "p50_ms", "p95_ms",
               "batched_ms", "build_s", "index_MB", "auto"]
    print(f"\nrecall@{K} against exact search; p50/p95: single queries (batch of 1), second "
          f"of two timed runs; batched: {args.queries} queries in one call, per query; "
          f"{faiss.omp_get_max_threads()} FAISS threads; <-: what build_index(kind='auto') "
          "builds for that size")
    print(table[columns].to_string(index=False))
    cache.write_json(args.out, {
        "machine": cache.machine(faiss_threads=faiss.omp_get_max_threads(),
                                 faiss=faiss.__version__),
        "data": (f"hierarchical Gaussian mixture ({TOPICS} topics x {SUBCLUSTERS} "
                 "sub-clusters, Zipf 0.8 sizes), seed "
                 f"{args.seed}; dim 65: LRURec-like [e, b] items, [4h, 1] queries; "
                 "other dims: unit-length MiniLM-like; queries from the same mixture"),
        "k": K, "queries": args.queries, "flat_single_queries": args.flat_single,
        "notes": notes,
        "package_choice": {"flat_max_items": ann.FLAT_MAX_ITEMS,
                           "auto_approximate": ann.AUTO_APPROXIMATE,
                           "ivf": {str(n): f"nlist={ann.ivf_lists(n)} nprobe="
                                   f"{ann.ivf_probes(ann.ivf_lists(n))}"
                                   for n in sorted({r['size'] for r in rows})
                                   if ann.choose_kind(n) == "ivf"},
                           "hnsw_m": ann.HNSW_M, "hnsw_ef_search": ann.HNSW_EF_SEARCH},
        "rows": rows})
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
