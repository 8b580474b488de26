"""Benchmark of `rar-lite recommend` with cached artifacts, as a whole process, two ways:

- one-shot: interpreter start, imports, loading the cached retriever and tuned reranker,
  retrieval, 20 pointwise scores, for a one-line request;
- served: the same request sent by `rar-lite recommend --server URL` to a running `rar-lite
  serve`, which loaded the engine once (its start-up time is reported too);

and, inside one process, the engine's load time and each answer's time.

The first run builds whatever the cache lacks (at the full profile: the corpus, LRURec and
chapter 4's tuning, many minutes on a cold cache) and is not counted; then `--runs` timed runs
of each kind, each with a request the response cache has not seen (so the LLM really scores).
Prints a table and writes `--out` (JSON). The issue's bar: under 5 s on 2 cores with the
default model; both readings are reported against it.

    .venv/bin/python scripts/bench_recommend.py [--profile full] [--runs 3] [--out FILE]
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import time
import uuid
from pathlib import Path

from rar_lite import cache

BAR_S = 5.0
REQUEST = "I loved Heat and want another heist film, something {}"
MOODS = ("tense", "from the 80s", "with a twist", "set in a city", "not too long", "acclaimed")


def _run(profile: str, text: str, server: str | None = None) -> float:
    argv = [sys.executable, "-m", "rar_lite.cli", "recommend", text, "--no-progress"]
    if server:
        argv += ["--server", server]
    elif profile == "quick":
        argv.append("--quick")
    began = time.perf_counter()
    subprocess.run(argv, check=True, capture_output=True)
    return time.perf_counter() - began


def _served(profile: str, texts: list[str]) -> tuple[float, list[float]]:
    """Start `rar-lite serve` on a free port, time its start-up (until /health answers), then
    one `recommend --server` process per text; the server is stopped at the end."""
    from rar_lite.book import serving

    argv = [sys.executable, "-m", "rar_lite.cli", "serve", "--port", "0", "--no-progress"]
    began = time.perf_counter()
    server = subprocess.Popen(argv + (["--quick"] if profile == "quick" else []),
                              stdout=subprocess.PIPE, text=True)
    try:
        first = server.stdout.readline()  # "rar-lite serves on URL (...)"
        url = first.split(" serves on ")[1].split()[0]
        serving.health(url)
        start = time.perf_counter() - began
        return start, [_run(profile, text, url) for text in texts]
    finally:
        server.terminate()
        server.wait(timeout=30)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--profile", choices=("full", "quick"), default="full")
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--out", default="results/bench_recommend.json")
    args = parser.parse_args()
    salt = uuid.uuid4().hex[:6]  # requests no earlier run cached
    warm = _run(args.profile, REQUEST.format(f"(warm-up {salt})"))
    process = [_run(args.profile, REQUEST.format(f"{MOODS[n % len(MOODS)]} ({salt} {n})"))
               for n in range(args.runs)]
    serve_start, served = _served(args.profile, [
        REQUEST.format(f"{MOODS[n % len(MOODS)]} ({salt} served {n})") for n in range(args.runs)])

    from rar_lite.book import demo

    began = time.perf_counter()
    engine = demo.serving_engine(profile=args.profile)
    load = time.perf_counter() - began
    answers = [engine.recommend_text(REQUEST.format(f"{mood} ({salt} in-process)")).seconds
               for mood in MOODS[: args.runs]]
    result = {"profile": args.profile, "warm_up_s": round(warm, 2),
              "process_s": [round(s, 2) for s in process],
              "process_median_s": round(statistics.median(process), 2),
              "engine_load_s": round(load, 2),
              "answer_s": [round(s, 3) for s in answers],
              "answer_median_s": round(statistics.median(answers), 3),
              "serve_start_s": round(serve_start, 2),
              "served_process_s": [round(s, 2) for s in served],
              "served_process_median_s": round(statistics.median(served), 2), "bar_s": BAR_S,
              "bar_met_one_shot": statistics.median(process) <= BAR_S,
              "bar_met_served": statistics.median(served) <= BAR_S,
              "machine": cache.machine()}
    rows = [("one-shot whole process (median)", result["process_median_s"]),
            ("engine load, in process", result["engine_load_s"]),
            ("one answer, in process (median)", result["answer_median_s"]),
            ("`rar-lite serve` start-up, once", result["serve_start_s"]),
            ("whole process with --server (median)", result["served_process_median_s"])]
    width = max(len(name) for name, _ in rows)
    for name, seconds in rows:
        print(f"{name:<{width}}  {seconds:7.3f} s")
    for reading in ("one_shot", "served"):
        met = "met" if result[f"bar_met_{reading}"] else "NOT met"
        print(f"bar (whole process <= {BAR_S:g} s), {reading.replace('_', '-')}: {met}")
    out = Path(args.out)
    cache.write_json(out, result)
    print(f"written to {out}")


if __name__ == "__main__":
    main()
