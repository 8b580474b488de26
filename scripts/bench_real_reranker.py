"""Does the LLM stage add on real dialogue? The pointwise reranker tuned on dev dialogue.

Fits the real-data retriever on INSPIRED's dev split (`realdata.fit`: dense head on the train
dialogues, fusion weights on the selection dialogues), tunes the pointwise judge on the train
dialogues with the fused retriever's hard negatives (`real_reranker.tune_on_dialogue`: steps and
interpolation weight chosen on the selection dialogues), then — once — scores INSPIRED test
(He et al.'s pairs, every turn, the fused retriever's top 20):

- popularity; the fused retriever's order; the untuned judge alone; the tuned judge alone; the
  tuned judge interpolated with the retriever at the dev-chosen weight (the full pipeline); the
  zero-shot title likelihood (`rerank.TitleReranker`) alone and blended at its own dev-chosen
  weight and way (`real_reranker.title_check`: the mentioned movies kept in the retriever's
  places or not); on all pairs and on new targets only (He et al.'s two conditions);
- paired differences against the retriever's order, and the full pipeline against popularity
  (bootstrap 95% intervals and sign-flip p-values, `stats.paired_test`).

`--titles-only` leaves the judge out (no LoRA tuning: minutes instead of ~35 on 2 cores).
Prints the tables and writes `--out` (JSON). The test split chooses nothing.

    .venv/bin/python scripts/bench_real_reranker.py [--context dialogue] [--titles-only]
                                                    [--out FILE]
"""

from __future__ import annotations

import argparse
import json
import time
from dataclasses import asdict
from pathlib import Path

import pandas as pd

from rar_lite import cache, stats
from rar_lite.backends.llm import ResponseCache
from rar_lite.backends.llm_local import TransformersBackend
from rar_lite.data.corpus import load_corpus
from rar_lite.dialogue import realdata
from rar_lite.dialogue.real_reranker import (
    DialogueTuning,
    title_check,
    tune_on_dialogue,
)
from rar_lite.loop import pipeline
from rar_lite.reranking.prompts import CONTEXTS
from rar_lite.reranking.rerank import (
    PointwiseReranker,
    RetrieverOrder,
    TitleReranker,
)
from rar_lite.reranking.tune import TuneConfig

METRICS = ("recall@1", "recall@5", "recall@10", "ndcg@5", "ndcg@10")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    defaults = DialogueTuning()
    parser.add_argument("--context", default=defaults.context, choices=list(CONTEXTS))
    parser.add_argument("--steps", type=int, default=defaults.tune.steps)
    parser.add_argument("--batch-size", type=int, default=defaults.tune.batch_size)
    parser.add_argument("--lr", type=float, default=defaults.tune.lr)
    parser.add_argument("--negatives", type=int, default=defaults.tune.negatives)
    parser.add_argument("--simulated", type=int, default=defaults.n_simulated,
                        help="simulated requests (rar_lite.data.seekers) mixed into the training")
    parser.add_argument("--snapshots", type=int, nargs="*", default=list(defaults.snapshots))
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--n-test", type=int, default=None, help="test turns (default: all)")
    parser.add_argument("--titles-only", action="store_true",
                        help="only the title likelihood (no judge, no LoRA tuning)")
    parser.add_argument("--out", type=Path, default=Path("results/bench_real_reranker.json"))
    args = parser.parse_args()

    corpus = load_corpus()
    inspired, dev = realdata.load_inspired(corpus)
    if inspired is None or not dev:
        raise SystemExit(realdata.MISSING_DATA)
    config = DialogueTuning(context=args.context, snapshots=tuple(args.snapshots),
                            n_simulated=args.simulated, tune=TuneConfig(
        **{**asdict(defaults.tune), "steps": args.steps, "batch_size": args.batch_size,
           "negatives": args.negatives, "lr": args.lr}))
    started = time.perf_counter()
    fit = realdata.fit(inspired.corpus, realdata.catalogue(inspired), None, dev, seed=args.seed,
                       progress=True)
    retriever = fit.fused(None, inspired.corpus)
    responses = ResponseCache()
    popularity = fit.fused(None, inspired.corpus, realdata.POPULARITY_ONLY, exclude_history=True)
    systems = {"popularity": (popularity, RetrieverOrder()),
               "retriever order": (retriever, RetrieverOrder())}
    tuned, blended = None, None
    if not args.titles_only:
        tuned = tune_on_dialogue(retriever, inspired.corpus, fit.train, fit.selection, config,
                                 seed=args.seed, response_cache=responses, progress=True)
        print(f"\nselection ({len(fit.selection)} turns), reranker alone by steps\n"
              f"{tuned.steps_table.round(4)}\nchosen: step {tuned.step}\n"
              f"interpolation on selection\n{tuned.weight_table.round(4)}\n"
              f"chosen weight {tuned.weight}")
        judge = tuned.reranker(inspired.corpus, responses)
        untuned = PointwiseReranker(TransformersBackend(), inspired.corpus, responses,
                                    context=args.context, card=config.card)
        kept = ", mentioned kept" if tuned.keep_mentioned else ""
        blended = f"tuned judge, weight {tuned.weight:g}{kept}"
        systems |= {"untuned judge alone": (retriever, untuned),
                    "tuned judge alone": (retriever, judge),
                    blended: (retriever, tuned.blended(inspired.corpus, responses))}
    backend = TransformersBackend()
    check = title_check(retriever, inspired.corpus, fit.selection, k=config.k, backend=backend,
                        response_cache=responses, progress=True, seed=args.seed)
    tuning_seconds = time.perf_counter() - started
    print(f"\ntitle likelihood, interpolation on selection\n{check.table.round(4)}\n"
          f"{check.describe(len(fit.selection))}")
    way = ", mentioned kept" if check.keep_mentioned else ""
    titled = f"title likelihood, weight {check.weight:g}{way}"
    title = TitleReranker(backend, inspired.corpus, responses)
    systems |= {"title likelihood alone": (retriever, title),
                titled: (retriever, check.blended(inspired.corpus, responses))}
    test = inspired.conversations[:args.n_test]
    runs, seconds = {}, {}
    for name, (source, reranker) in systems.items():
        began = time.perf_counter()
        per_pair = pipeline.run_pipeline(source, reranker, test, k=config.k, ks=(1, 5, 10),
                                         progress=True, name=name).per_pair
        mentioned = {c.conversation_id: set(c.history) for c in test}
        runs[name] = per_pair.assign(new=[t not in mentioned[c] for c, t in per_pair.index])
        seconds[name] = (time.perf_counter() - began) / len(test)
    pd.set_option("display.width", 160)
    tables = {}
    for condition in ("all", "recommendation"):  # He et al.: every pair / new targets only
        chosen = {name: p if condition == "all" else p[p["new"]] for name, p in runs.items()}
        tables[condition] = pd.DataFrame({name: {m: float(p[m].mean()) for m in METRICS}
                                          for name, p in chosen.items()}).T
        print(f"\nINSPIRED test, {condition} pairs ({len(chosen['popularity'])} pairs over "
              f"{len(test)} turns), candidates: the fused retriever's top {config.k}\n"
              f"{tables[condition].round(4)}")
    paired = {}
    comparisons = [(name, "retriever order") for name in systems
                   if name not in ("popularity", "retriever order")] + (
        [(blended, "popularity"), (titled, blended)] if blended else [(titled, "popularity")])
    for a, b in comparisons:
        for metric in ("ndcg@10", "recall@10"):
            test_ = stats.paired_test(runs[a][metric].to_numpy(), runs[b][metric].to_numpy(),
                                      seed=args.seed)
            paired[f"{a} - {b} ({metric})"] = test_
            print(f"{a} - {b}, {metric}: {test_['diff']:+.4f} "
                  f"(95% CI {test_['low']:+.4f} to {test_['high']:+.4f}, p = {test_['p']:.3g})")
    out = {"config": {**asdict(config), "seed": args.seed},
           "machine": cache.machine(),
           "dev": fit.dev, "tuning_seconds": tuning_seconds,
           **({"train_seconds": float(tuned.seconds), "chosen_step": tuned.step,
               "chosen_weight": tuned.weight, "chosen_keep_mentioned": tuned.keep_mentioned,
               "selection_steps": json.loads(tuned.steps_table.to_json(orient="index")),
               "selection_weights": json.loads(tuned.weight_table.to_json(orient="index"))}
              if tuned else {}),
           "title_weight": check.weight, "title_keep_mentioned": check.keep_mentioned,
           "title_selection_weights": json.loads(check.table.to_json(orient="index")),
           "title_selection_paired": check.paired,
           "test": {c: json.loads(t.to_json(orient="index")) for c, t in tables.items()},
           "paired": paired,
           "seconds_per_conversation": seconds}
    cache.write_json(args.out, out)
    print(f"tuning and selection {tuning_seconds / 60:.1f} min; wrote {args.out}")


if __name__ == "__main__":
    main()
