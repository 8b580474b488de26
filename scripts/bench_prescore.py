"""The seven arms' test runs with and without `pipeline.prescore`, on an empty answer cache.

Chapter 5's simulated arms (their loops cached, or trained first), then each distinct head's
full pipeline on the first N test conversations, twice, each time with a fresh answer cache for
the judge: one head after another (each conversation encoded again for each head's new
candidates), then with the union of every head's candidates scored once per conversation first.
Prints a table and writes JSON: {"heads", "conversations", "sequential": {"seconds",
"ndcg@10": [per head]}, "prescore": {...}, "speed-up", "heads whose ndcg@10 differs"} (in bf16
a score depends slightly on the batch it was computed in, and the cache keeps the first).

    .venv/bin/python scripts/bench_prescore.py [--n 40] [--out results/bench_prescore.json]
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

from rar_lite.backends.llm import ResponseCache
from rar_lite.experiments import loop_arms, profiles
from rar_lite.loop import head_loop, pipeline
from rar_lite.reranking import rerank


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=40, help="test conversations")
    parser.add_argument("--out", type=Path, default=Path("results/bench_prescore.json"))
    args = parser.parse_args()
    profile = profiles.get("full")
    setup = loop_arms.simulated_setup(profile, responses=ResponseCache(), progress=True)
    arms = loop_arms.run_arms(setup, (0, 1, 2), head_loop.HeadLoopConfig(k=profile.k),
                              progress=True)
    heads = {head_loop._digest(h.delta.detach().numpy()): h for h in arms.heads.values()}
    test = setup.test[:args.n]
    pools = [pipeline.retrieve(setup.retriever.with_head(h), test) for h in heads.values()]
    out: dict[str, object] = {"heads": len(heads), "conversations": len(test)}
    judge, saved = setup.judge, setup.judge.cache
    for mode in ("sequential", "prescore"):
        with tempfile.TemporaryDirectory() as tmp:
            judge.cache = ResponseCache(Path(tmp) / "answers.sqlite")
            reranker = rerank.InterpolatedReranker(judge, setup.reranker.weight)
            began = time.perf_counter()
            if mode == "prescore":
                pipeline.prescore(reranker, test, pools, progress=True)
            ndcg = [float(pipeline.run_pipeline(None, reranker, test, candidates=pool)
                          .per_pair["ndcg@10"].mean()) for pool in pools]
            out[mode] = {"seconds": time.perf_counter() - began, "ndcg@10": ndcg}
    judge.cache = saved
    out["speed-up"] = out["sequential"]["seconds"] / out["prescore"]["seconds"]
    out["heads whose ndcg@10 differs"] = sum(
        a != b for a, b in zip(out["sequential"]["ndcg@10"], out["prescore"]["ndcg@10"]))
    print(f"| {len(heads)} heads x {len(test)} conversations | seconds | mean ndcg@10 |")
    print("| --- | --- | --- |")
    for mode in ("sequential", "prescore"):
        values = out[mode]["ndcg@10"]
        print(f"| {mode} | {out[mode]['seconds']:.1f} | {sum(values) / len(values):.4f} |")
    print(f"speed-up {out['speed-up']:.2f}x; heads whose ndcg@10 differs: "
          f"{out['heads whose ndcg@10 differs']} of {len(heads)}")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(out, indent=1))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
