"""Benchmark of the API client's concurrent pool (`llm_api.OpenAIChatBackend.generate`): a local
stand-in server (`serve.EchoServer`) answers each request after a fixed delay; the same prompts
are sent one at a time and with N in flight, then again through the response cache. Prints one
table and writes JSON (default results/bench_llm_pool.json).

    .venv/bin/python scripts/bench_llm_pool.py [--answers 100] [--delay 0.2] [--concurrency 8]

The issue's bar: 100 answers at 200 ms with concurrency 8 in at most a sixth of the sequential
time, in the same order, and no request on the cached rerun.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import pandas as pd

from rar_lite import cache
from rar_lite.backends import llm
from rar_lite.backends.serve import EchoServer


def measure(answers: int, delay: float, concurrency: int) -> dict:
    prompts = [f"request {i}: a heist movie like Heat" for i in range(answers)]
    expected = [f"answer to: {p}" for p in prompts]
    rows = []
    with EchoServer(delay) as server, tempfile.TemporaryDirectory() as tmp:
        for label, workers, cached in (("sequential", 1, False),
                                       (f"{concurrency} in flight", concurrency, False),
                                       (f"{concurrency} in flight, cached rerun", concurrency,
                                        True)):
            backend = server.backend(concurrency=workers)
            responses = llm.ResponseCache(Path(tmp) / "responses.sqlite") if cached else None
            if cached:  # fill the cache, then time the rerun
                llm.cached_generate(backend, prompts, responses)
            before = server.requests
            began = time.perf_counter()
            got = llm.cached_generate(backend, prompts, responses)
            seconds = time.perf_counter() - began
            rows.append({"run": label, "seconds": round(seconds, 3),
                         "requests sent": server.requests - before,
                         "most in flight": server.most_in_flight if not cached else None,
                         "same order": got == expected})
            server.most_in_flight = 0
    sequential, pooled = rows[0]["seconds"], rows[1]["seconds"]
    return {"answers": answers, "delay_s": delay, "concurrency": concurrency, "runs": rows,
            "speedup": round(sequential / pooled, 2),
            "bar_met": pooled <= sequential / 6 and all(r["same order"] for r in rows)
            and rows[2]["requests sent"] == 0,
            "machine": cache.machine()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--answers", type=int, default=100)
    parser.add_argument("--delay", type=float, default=0.2, help="seconds per answer")
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--out", default="results/bench_llm_pool.json")
    args = parser.parse_args()
    result = measure(args.answers, args.delay, args.concurrency)
    print(pd.DataFrame(result["runs"]).to_string(index=False))
    print(f"speed-up {result['speedup']}x; bar (<= 1/6 of sequential, same order, cached rerun "
          f"sends nothing): {'met' if result['bar_met'] else 'NOT met'}")
    out = Path(args.out)
    cache.write_json(out, result)
    print(f"written to {out}")


if __name__ == "__main__":
    main()
