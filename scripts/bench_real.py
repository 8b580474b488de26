"""RAR on real conversations: every retriever and the full pipeline on a CIKM-format test split.

Runs `rar_lite.evaluation.harness.evaluate` on one real dataset (INSPIRED by default) with
popularity, LRURec (the paper's retriever), the dense and fused retrievers (ours), RAR over LRURec
and RAR over the fused retriever; every choice (the dense head, the fusion weights, the reranker's
weight) is made on INSPIRED's dev dialogues, the test split is only scored. Prints He et al.'s
table (R@1/5/10/20, N@10, all pairs and new items only), the retrieval ablation with
reach@20/50/100, the paired tests behind the bars, and writes everything to `--out` (JSON).

    .venv/bin/python scripts/bench_real.py [--dataset inspired] [--seeds 0] [--out FILE]
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import pandas as pd

from rar_lite import cache
from rar_lite.evaluation import harness

SYSTEMS = ("popularity", "retriever", "dense", "fused", "rar-sft", "rar-fused")
METRICS = ("recall@1", "recall@5", "recall@10", "recall@20", "ndcg@10")
#: (system a, system b): the comparisons the bars of the "real conversations" issue name.
PAIRS = (("rar-fused", "popularity"), ("rar-fused", "fused"), ("rar-fused", "dense"),
         ("fused", "dense"), ("rar-fused", "rar-sft"))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dataset", default="inspired", choices=harness.DATASETS[1:])
    parser.add_argument("--data-dir", help="the dataset's directory (default: $RAR_LITE_<NAME>_DIR)")
    parser.add_argument("--dev-dir", help="INSPIRED's dev split (default: "
                        "$RAR_LITE_INSPIRED_DEV_DIR)")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0])
    parser.add_argument("--systems", nargs="+", default=list(SYSTEMS),
                        choices=list(harness.SYSTEMS))
    parser.add_argument("--n-real", type=int, default=None, help="test turns (default: all)")
    parser.add_argument("--out", type=Path, default=Path("results/bench_real.json"))
    args = parser.parse_args()

    config = harness.EvalConfig(
        systems=tuple(args.systems), datasets=(args.dataset,), seeds=tuple(args.seeds),
        n_real=args.n_real, data_dirs={args.dataset: args.data_dir} if args.data_dir else None,
        dev_dir=args.dev_dir, n_cost=1)
    started = time.perf_counter()
    result = harness.evaluate(config, progress=True)
    seconds = time.perf_counter() - started

    out: dict = {"dataset": args.dataset, "seeds": args.seeds, "seconds": seconds,
                 "machine": cache.machine(),
                 "fit": result.fits.get(args.dataset, {}), "tables": {}, "paired": {}}
    pd.set_option("display.width", 160)
    for condition in harness.CONDITIONS:
        table = harness.main_table(result, args.dataset, condition, METRICS,
                                   references=condition == "all")
        print(f"\n{args.dataset}, {condition} pairs (He et al.'s protocol)\n{table}")
        summary = result.summary(args.dataset, condition, list(METRICS))
        out["tables"][condition] = {system: {m: float(row[m]) for m in METRICS}
                                    for system, row in summary.iterrows()}
    ablation = result.ablations.get(args.dataset)
    if ablation is not None:
        print(f"\nretrieval over the whole catalogue (reach@k: target in the top k)\n"
              f"{ablation.round(4)}")
        out["retrieval"] = json.loads(ablation.to_json(orient="index"))
    present = set(result.per_pair["system"])
    for a, b in PAIRS:
        if {harness.SYSTEMS[a], harness.SYSTEMS[b]} <= present:
            for metric in ("recall@10", "ndcg@10"):
                test = result.paired(args.dataset, a, b, metric)
                out["paired"][f"{a} - {b} ({metric})"] = test
                print(f"{a} - {b}, {metric}: {test['diff']:+.4f} "
                      f"(95% CI {test['low']:+.4f} to {test['high']:+.4f}, "
                      f"p = {test['p']:.3g})")
    print(f"\nfit on dev: {out['fit']}\n{seconds / 60:.1f} min")
    cache.write_json(args.out, out)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
