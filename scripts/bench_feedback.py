"""Chapter 5's experiment: the RAR feedback loop against the SFT retriever, with three seeds.

For each seed: the chapter-3 LRURec trained with that seed (π_ref), the online-DPO loop on
`--train` simulated training conversations with the chapter-4 tuned pointwise reranker, and, on
`--test` held-out test conversations: retriever only, RAR with the SFT retriever, RAR after the
loop (NDCG/Recall@5/10 of the final ranking, Recall@20 of the candidate sets). Prints the
mean ± std table and the per-round curves, writes results/bench_feedback.json. `--zero-shot`
adds one run (seed 0) of the loop driven by the zero-shot model.

    .venv/bin/python scripts/bench_feedback.py [--seeds 0 1 2] [--train 200] [--test 200]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time
from pathlib import Path

import pandas as pd

from rar_lite import feedback, llm, loop_study, pipeline, reranker_study
from rar_lite.tune import TuneConfig


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--train", type=int, default=200, help="training conversations")
    parser.add_argument("--test", type=int, default=200, help="held-out test conversations")
    parser.add_argument("--rounds", type=int, default=feedback.LoopConfig().rounds)
    parser.add_argument("--missing", nargs="+", default=["skip"], choices=feedback.MISSING,
                        help="what to do when every set missed the target (several: compare)")
    parser.add_argument("--zero-shot", action="store_true")
    parser.add_argument("--out", type=Path, default=Path("results/bench_feedback.json"))
    args = parser.parse_args()

    responses = llm.ResponseCache()
    study = reranker_study.study_setup(100, seed=0)
    tuned, tuning = reranker_study.tuned_backend(study, TuneConfig(seed=0), n_train=1000)
    print(f"reranker: {tuned.model} (tuned in {tuning.seconds / 60:.1f} min)", flush=True)
    runs: dict[str, list[dict]] = {}
    curves, wall = [], []
    jobs = [(seed, "tuned", missing) for missing in args.missing for seed in args.seeds]
    jobs += [(0, "zero-shot", args.missing[0])] if args.zero_shot else []
    for seed, which, missing in jobs:
        setup = loop_study.loop_setup(seed)
        backend = tuned if which == "tuned" else llm.TransformersBackend()
        reranker = loop_study.pointwise_reranker(setup, backend, responses)
        config = feedback.LoopConfig(rounds=args.rounds, seed=seed, missing=missing)
        started = time.perf_counter()
        loop = loop_study.run_feedback(setup, reranker, config, args.train, progress=True)
        test = loop_study.sample_conversations(setup.sets.test, args.test)
        results = loop_study.compare(setup, reranker, loop, test, progress=True)
        sft = loop_study.validate(setup)
        wall.append({"seed": seed, "reranker": which, "missing": missing,
                     "SFT valid ndcg@10": sft["ndcg@10"],
                     "loop seconds": loop.seconds,
                     "total seconds": time.perf_counter() - started})
        curves.append(loop.history.assign(seed=seed, reranker=which, missing=missing))
        for name, run in results.items():
            if "loop" not in name and (which != "tuned" or missing != args.missing[0]):
                continue  # the systems without a loop are the same: count each seed once
            label = name + ("" if which == "tuned" else " [zero-shot LLM]")
            if len(args.missing) > 1 and "loop" in name:
                label += f" [missing={missing}]"
            runs.setdefault(label, []).append(run.summary())
        print(f"seed {seed} ({which}, missing={missing}) done in "
              f"{wall[-1]['total seconds'] / 60:.1f} min", flush=True)
    table = pipeline.mean_std(runs)
    pd.set_option("display.width", 220)
    print(table.round(4).to_string())
    history = pd.concat(curves, ignore_index=True)
    print(history.round(4).to_string())
    print(pd.DataFrame(wall).round({"SFT valid ndcg@10": 4, "loop seconds": 1,
                                    "total seconds": 1}).to_string())
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({
        "machine": {"cpus": os.cpu_count(), "platform": platform.platform()},
        "args": {k: str(v) for k, v in vars(args).items()},
        "table": table.reset_index(names="system").to_dict("records"),
        "rounds": history.to_dict("records"), "wall": wall}, indent=2, default=float))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
