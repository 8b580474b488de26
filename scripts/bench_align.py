"""Chapter 7's ablation: how DPO's pairs are batched — a random mix of pairs in each step (TRL's
usual sampling) against each conversation's target and mistake pairs in the same step.

For each order: the chapter's pairs (mined from `--mine` training conversations with the SFT
reranker), DPO with the chapter's settings (`align.align_dpo`: the `DPOConfig` and `LoraConfig`
chapter 7 writes out, cached in the same run directory), then: the DPO loss and reward margin
over training (means of the first and last 10 steps), the yes/no margins on the training pairs
before and after (targets, mistakes and the gap between them), and on `--valid` held-out
validation conversations (chapter 4's protocol) NDCG@10, Recall@1 and the paired test against the
SFT reranker. Prints the table and writes results/bench_align.json. Runs are cached (a rerun only
re-reads them).

    .venv/bin/python scripts/bench_align.py [--orders random conversation] [--mine 150]
        [--lr 1e-4] [--beta 0.1] [--epochs 1] [--valid 100]
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import pandas as pd

from rar_lite import cache, stats
from rar_lite.backends import llm, llm_local
from rar_lite.experiments import artifacts, reranker_study
from rar_lite.loop import pipeline
from rar_lite.reranking import align, rerank


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--orders", nargs="+", default=list(align.ORDERS), choices=align.ORDERS)
    parser.add_argument("--mine", type=int, default=150, help="training conversations mined")
    parser.add_argument("--lr", type=float, default=align.AlignConfig().lr)
    parser.add_argument("--beta", type=float, default=align.AlignConfig().beta)
    parser.add_argument("--epochs", type=int, default=align.AlignConfig().epochs)
    parser.add_argument("--valid", type=int, default=100, help="validation conversations")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=Path("results/bench_align.json"))
    args = parser.parse_args()

    setup = artifacts.loop_setup(args.seed)
    study = artifacts.study_setup(args.valid, seed=0, sets=setup.sets)
    sft_backend, tuning = artifacts.chapter_tuning("full", setup.sets)
    responses = llm.ResponseCache()
    sft = rerank.PointwiseReranker(sft_backend, setup.corpus, response_cache=responses)
    mine = artifacts.sample_conversations(setup.sets.train, args.mine, seed=args.seed + 1)
    pools = rerank.candidate_sets(mine, setup.served.topk, k=20)
    pairs = align.mistake_pairs(sft, mine, pools, progress=True)
    kinds = pd.Series([p["kind"] for p in pairs])
    before = pd.Series(align.margins(sft, pairs)).groupby(kinds).mean()
    print(f"{len(pairs)} pairs from {len(mine)} conversations", flush=True)

    rerankers, rows = {"SFT": sft}, []
    for order in args.orders:
        config = align.AlignConfig(beta=args.beta, lr=args.lr, epochs=args.epochs,
                                   seed=args.seed, order=order)
        result = align.align_dpo(pairs, tuning.adapter, config)
        dpo = rerank.PointwiseReranker(llm_local.TransformersBackend(model=result.base,
                                                               adapter=result.adapter),
                                       setup.corpus, response_cache=responses)
        rerankers[order] = dpo
        after = pd.Series(align.margins(dpo, pairs)).groupby(kinds).mean()
        history = result.history
        rows.append({"order": order, "steps": len(history), "minutes": result.seconds / 60,
                     "loss, first 10": history["loss"].head(10).mean(),
                     "loss, last 10": history["loss"].tail(10).mean(),
                     "reward margin, last 10": history["rewards/margins"].tail(10).mean(),
                     "target margin": after["target"], "mistake margin": after["mistake"],
                     "gap, before": before["target"] - before["mistake"],
                     "gap, after": after["target"] - after["mistake"]})
    table, rankings = reranker_study.compare_rerankers(rerankers, study.conversations,
                                                       study.candidates, progress=True)
    ndcg = {name: pipeline.score_rankings(study.conversations, ranked, ks=(10,))["ndcg@10"]
            for name, ranked in rankings.items()}
    for row in rows:
        test = stats.paired_test(ndcg[row["order"]], ndcg["SFT"])
        row.update({"valid ndcg@10": table.at[row["order"], "ndcg@10"],
                    "valid recall@1": table.at[row["order"], "recall@1"],
                    "vs SFT": test["diff"], "CI low": test["low"], "CI high": test["high"],
                    "p": test["p"]})
    frame = pd.DataFrame(rows).set_index("order")
    print(f"SFT reranker: valid ndcg@10 {table.at['SFT', 'ndcg@10']:.4f}, "
          f"recall@1 {table.at['SFT', 'recall@1']:.2f}; margins before: "
          f"targets {before['target']:.3f}, mistakes {before['mistake']:.3f}")
    print(frame.T.round(4).to_string())
    cache.write_json(args.out, {
        "args": {k: str(v) for k, v in vars(args).items()}, "pairs": len(pairs),
        "machine": cache.machine(),
        "sft": {"valid ndcg@10": table.at["SFT", "ndcg@10"], "margins": before.to_dict()},
        "runs": json.loads(frame.to_json(orient="index"))})


if __name__ == "__main__":
    main()
