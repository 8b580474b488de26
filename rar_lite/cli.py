"""The `rar-lite` command line.

    rar-lite corpus [--rebuild]          build (or load) the corpus and print its card
    rar-lite resolve NAME [NAME ...]     resolve movie names to corpus items
    rar-lite score-generations --dataset-dir DIR --generations FILE [--protocol cikm23]
                                         score raw LLM answers as He et al. (CIKM 2023) did
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
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the `rar-lite` script."""
    args = build_parser().parse_args(argv)
    return int(args.run(args))


if __name__ == "__main__":
    sys.exit(main())
