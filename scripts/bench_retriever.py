"""Benchmark of the chapter-3 retrievers: LRURec and SASRec, three seeds each, on the MovieLens
latest-small snapshot by the LlamaRec/LRURec protocol (5-core, leave-one-out, full ranking with
the history masked). Prints one table and writes results/bench_retriever.json.

    .venv/bin/python scripts/bench_retriever.py [--seeds 0 1 2] [--models lrurec sasrec]

Runs are cached (rar_lite.retrieval.retriever.fit_retriever), so a rerun only evaluates.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import pandas as pd

from rar_lite import cache
from rar_lite.data.corpus import load_corpus
from rar_lite.data.interactions import leave_one_out, load_interactions
from rar_lite.retrieval import retriever

KS = (5, 10, 20, 50, 100)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--models", nargs="+", default=["lrurec", "sasrec"])
    parser.add_argument("--out", type=Path, default=Path("results/bench_retriever.json"))
    args = parser.parse_args()

    split = leave_one_out(load_interactions(load_corpus()))
    runs = []
    for model in args.models:
        for seed in args.seeds:
            served, result = retriever.fit_retriever(split, model=model, seed=seed)
            test = retriever.evaluate_split(result.model, split, served.vocab, "test", ks=KS)
            history = result.history
            runs.append({"model": model, "seed": seed, "epochs": int(len(history)),
                         "best_epoch": result.best_epoch,
                         "seconds_per_epoch": float(history["seconds"].mean()),
                         "train_seconds": float(history["seconds"].sum()), **test})
            print(f"{model} seed {seed}: NDCG@10 {test['ndcg@10']:.4f} Recall@10 "
                  f"{test['recall@10']:.4f} ({len(history)} epochs)", flush=True)
    frame = pd.DataFrame(runs)
    rows = []
    for model, group in frame.groupby("model", sort=False):
        row = {"model": model}
        for metric in ("ndcg@5", "ndcg@10", "recall@5", "recall@10", "mrr@5", "mrr@10",
                       "recall@20", "recall@50", "recall@100"):
            row[metric] = f"{group[metric].mean():.4f} ± {group[metric].std(ddof=1):.4f}" \
                if len(group) > 1 else f"{group[metric].mean():.4f}"
        row["epochs"] = f"{group['epochs'].mean():.0f}"
        row["s/epoch"] = f"{group['seconds_per_epoch'].mean():.1f}"
        row["published ndcg@10"] = retriever.PUBLISHED[model]["ndcg@10"]
        row["published recall@10"] = retriever.PUBLISHED[model]["recall@10"]
        rows.append(row)
    table = pd.DataFrame(rows)
    print(f"\n{len(split.users)} users, {len(split.items)} items (5-core); test = last item; "
          "published numbers: LlamaRec paper, 2023 snapshot (610 users, 3,650 items)")
    print(table.to_string(index=False))
    cache.write_json(args.out, {
        "machine": cache.machine(),
        "runs": runs, "published": retriever.PUBLISHED,
        "summary": {m: {k: float(np.mean(frame.loc[frame.model == m, k])) for k in
                        ("ndcg@10", "recall@10", "recall@20", "recall@50", "recall@100")}
                    for m in args.models},
    })
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
