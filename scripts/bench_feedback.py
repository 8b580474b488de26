"""The feedback loop on the conversation-aware retriever: arms (a)-(g) of
`rar_lite.experiments.loop_arms`.

Per dataset (`simulated`; `inspired` when RAR_LITE_INSPIRED_DIR and RAR_LITE_INSPIRED_DEV_DIR
point at the data): RAR-SFT, SFT + cross-entropy on the loop conversations, the DPO loop from
each, and the shuffled-reward control, on the same seeds; the full pipeline's and the
retriever's NDCG@10 on held-out test conversations, the paired differences c-a, d-b, e-a (and
the distillation arms' f-a, g-a) with
bootstrap 95% intervals, and the per-round diagnostics. Every choice (round, epoch, reranker
weight) is made on the selection conversations; the test split is only scored.

    .venv/bin/python scripts/bench_feedback.py [--seeds 0 1 2] [--datasets simulated inspired]
        [--arms a b c d e f g] [--out results/bench_feedback.json]

FILE (JSON): per dataset, per arm {"ndcg@10": mean, "retriever ndcg@10": mean, ...}, and under
"diffs" {"c-a" | "d-b" | "e-a" | "f-a" | "g-a": {"mean": x, "ci95": [lo, hi]}} as fractions of
the second arm's mean (the full pipeline; the retriever alone under diffs["retriever"]).
"""

from __future__ import annotations

import argparse
import json
import time
from dataclasses import asdict
from pathlib import Path

import pandas as pd

from rar_lite import cache
from rar_lite.backends import llm
from rar_lite.experiments import loop_arms, profiles
from rar_lite.loop import head_loop


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--datasets", nargs="+", default=["simulated", "inspired"],
                        choices=["simulated", "inspired"])
    parser.add_argument("--rounds", type=int, default=head_loop.HeadLoopConfig().rounds)
    parser.add_argument("--arms", nargs="+", default=list(loop_arms.ARMS),
                        choices=list(loop_arms.ARMS), help="arm a is always run")
    parser.add_argument("--profile", default="full", choices=sorted(profiles.PROFILES),
                        help="sizes (quick: tiny, checks the wiring)")
    parser.add_argument("--out", type=Path, default=Path("results/bench_feedback.json"))
    args = parser.parse_args()

    responses = llm.ResponseCache()
    sizes = profiles.get(args.profile).arms
    config = head_loop.HeadLoopConfig(rounds=args.rounds)
    out: dict = {"machine": cache.machine(),
                 "args": {k: str(v) for k, v in vars(args).items()},
                 "config": asdict(config), "sizes": asdict(sizes)}
    pd.set_option("display.width", 220)
    pd.set_option("display.max_columns", 30)
    for name in args.datasets:
        started = time.perf_counter()
        make = loop_arms.simulated_setup if name == "simulated" else loop_arms.inspired_setup
        setup = make(args.profile, responses=responses, progress=True)
        if setup is None:
            print(f"{name}: the data is not here; skipped")
            continue
        print(f"{name}: loop {len(setup.loop)}, selection {len(setup.selection)}, "
              f"test {len(setup.test)} conversations; {setup.notes}", flush=True)
        result = loop_arms.run_arms(setup, tuple(args.seeds), config, progress=True,
                                    arms=tuple(args.arms))
        table, diffs = loop_arms.arms_table(result)
        curves = loop_arms.loop_curves(result)
        print(table.round(4).to_string())
        print(json.dumps(diffs, indent=1, default=float))
        print(loop_arms.describe(table, diffs, name))
        print(curves.round(4).to_string())
        seconds = time.perf_counter() - started
        print(f"{name} done in {seconds / 60:.1f} min", flush=True)
        out[name] = {**{arm: row.to_dict() for arm, row in table.iterrows()}, "diffs": diffs,
                     "sizes": {"loop": len(setup.loop), "selection": len(setup.selection),
                               "test": len(setup.test), "test pairs": len(
                                   next(iter(result.pipeline_ndcg.values())))},
                     "notes": setup.notes, "rounds": curves.to_dict("records"),
                     "seconds": seconds}
    cache.write_json(args.out, out)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
