"""The `rar-lite` command line.

Usage::

    rar-lite corpus [--rebuild]          build (or load) the corpus and print its card
    rar-lite resolve NAME [NAME ...]     resolve movie names to corpus items
    rar-lite score-generations --dataset-dir DIR --generations FILE [--protocol cikm23]
                                         score raw LLM answers as He et al. (CIKM 2023) did
    rar-lite evaluate [--quick] [--systems ...] [--datasets ...] [--seeds ...] [--out DIR]
                                         chapter 6: RAR against its baselines, tables to DIR
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence


def _corpus(args: argparse.Namespace) -> int:
    from rar_lite import corpus as rc

    corpus = rc.load_corpus(rebuild=args.rebuild)
    print(rc.corpus_card(corpus).as_frame().to_string(index=False))
    print(f"cached at {rc.corpus_path()}")
    return 0


def _resolve(args: argparse.Namespace) -> int:
    from rar_lite import corpus as rc
    from rar_lite import matching

    matcher = matching.TitleMatcher(rc.load_corpus())
    print(matching.explain(matcher, args.names).to_string(index=False))
    return 0


def _score_generations(args: argparse.Namespace) -> int:
    import json

    from rar_lite.cikm import score_generations

    print(json.dumps(score_generations(args.dataset_dir, args.generations), indent=2))
    return 0


def _evaluate(args: argparse.Namespace) -> int:
    import pandas as pd

    from rar_lite import evaluation

    chosen = {key: value for key, value in {
        "systems": args.systems, "datasets": args.datasets, "seeds": args.seeds,
        "n_simulated": args.n_simulated, "n_real": args.n_real,
        "n_generate": args.n_generate}.items() if value is not None}
    dirs = dict(item.split("=", 1) for item in args.data_dir or [] if "=" in item)
    if len(dirs) != len(args.data_dir or []):
        print("rar-lite evaluate: --data-dir takes NAME=DIRECTORY", file=sys.stderr)
        return 2
    if dirs:
        chosen["data_dirs"] = dirs
    try:
        config = (evaluation.EvalConfig.quick_run(**chosen) if args.quick
                  else evaluation.EvalConfig(**chosen))
    except ValueError as error:
        print(f"rar-lite evaluate: {error}", file=sys.stderr)
        return 2
    result = evaluation.evaluate(config, progress=not args.no_progress)
    pd.set_option("display.width", 200)
    for dataset in config.datasets:
        for condition in evaluation.CONDITIONS:
            print(f"\n{dataset}, {condition} pairs")
            print(evaluation.main_table(
                result, dataset, condition,
                references=dataset == "inspired" and condition == "all").to_string())
        if {"rar-sft", "retriever"} <= set(config.systems):
            test = result.paired(dataset, "rar-sft", "retriever")
            print(f"RAR (SFT) - retriever only, NDCG@10: {test['diff']:+.4f} "
                  f"[{test['low']:+.4f}, {test['high']:+.4f}], p = {test['p']:.4f}")
    print("\ncost (empty LLM cache)\n" + result.cost.round(3).to_string())
    print(f"\nwritten to {result.save(args.out)} ({result.seconds / 60:.1f} min)")
    return 0


def build_parser() -> argparse.ArgumentParser:
    """The argument parser (one sub-command per task)."""
    parser = argparse.ArgumentParser(prog="rar-lite", description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(dest="command", required=True)
    corpus = commands.add_parser("corpus", help="build or load the movie corpus, print its card")
    corpus.add_argument("--rebuild", action="store_true", help="ignore the cache")
    corpus.set_defaults(run=_corpus)
    resolve = commands.add_parser("resolve", help="resolve movie names to corpus items")
    resolve.add_argument("names", nargs="+", help='names as written, e.g. "Heat (1995)"')
    resolve.set_defaults(run=_resolve)
    score = commands.add_parser("score-generations",
                                help="score raw LLM answers for a ReDial/INSPIRED/Reddit-Movie "
                                     "test set (He et al., CIKM 2023 protocol)")
    score.add_argument("--dataset-dir", required=True,
                       help="directory with test.jsonl, entity2id.json, item_ids.json")
    score.add_argument("--generations", required=True,
                       help="JSONL: one line per answered turn, with 'index' and 'text' or 'resp'")
    score.add_argument("--protocol", choices=("cikm23",), default="cikm23")
    score.set_defaults(run=_score_generations)
    ev = commands.add_parser("evaluate", help="RAR against its baselines (chapter 6)")
    ev.add_argument("--quick", action="store_true", help="a small run (what CI executes)")
    ev.add_argument("--systems", nargs="+", help="default: all of popularity retriever llm "
                    "keyword rar-sft rar-loop rar-generate")
    ev.add_argument("--datasets", nargs="+", help="default: simulated inspired (also: redial, "
                    "reddit-movie, given their directory)")
    ev.add_argument("--seeds", nargs="+", type=int, help="default: 0 1 2")
    ev.add_argument("--n-simulated", type=int, help="simulated test conversations")
    ev.add_argument("--n-real", type=int, help="turns of each real dataset (default: all)")
    ev.add_argument("--n-generate", type=int, help="conversations for RAR's generation mode")
    ev.add_argument("--data-dir", action="append", metavar="NAME=DIR",
                    help="a real dataset's directory, e.g. inspired=../data/inspired "
                         "(default: $RAR_LITE_<NAME>_DIR)")
    ev.add_argument("--out", default="results/evaluation", help="directory for the tables")
    ev.add_argument("--no-progress", action="store_true", help="no progress bars")
    ev.set_defaults(run=_evaluate)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the `rar-lite` script."""
    args = build_parser().parse_args(argv)
    return int(args.run(args))


if __name__ == "__main__":
    sys.exit(main())
