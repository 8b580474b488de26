"""Benchmark of the chapter-4 rerankers on held-out simulated validation conversations: the
target among K=20 retrieved candidates (LRURec, chapter 3), zero-shot SmolLM2-135M in every mode,
the pointwise LoRA-tuned reranker, and two baselines. Prints one table, writes
results/bench_reranker.json. Answers are cached (the chapter reuses them); latencies are
measured separately with the cache off.

    .venv/bin/python scripts/bench_reranker.py [--n 100] [--n-generation 20] [--train 1000]

`--card full` tunes and runs the tuned pointwise reranker on the full item card instead of the
brief one (`rerank.card_texts`). `--latency-only --out FILE` measures the tuned pointwise reranker alone (the issue-20 bar): its
seconds per conversation of 20 candidates with the answer cache off, and, in the same run as the
machine's reference, one forward pass of the same model over a 600-token prompt; the ratio of the
two; the tokens a conversation's prompts hold (the shared prefix once) and the time per token
against the reference pass's; and whether its rankings equal those of the unbatched path (every prompt encoded whole), in
the model's bf16 and again in fp32 (bf16 rounding depends on the shapes of the computation).
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

import pandas as pd

from rar_lite import cache
from rar_lite.backends import llm, llm_local
from rar_lite.data.matching import TitleMatcher
from rar_lite.experiments import artifacts, reranker_study
from rar_lite.reranking import rerank
from rar_lite.reranking.tune import TuneConfig


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=100, help="validation conversations")
    parser.add_argument("--n-generation", type=int, default=20,
                        help="conversations for the (slow) generation modes")
    parser.add_argument("--train", type=int, default=1000, help="training conversations")
    parser.add_argument("--steps", type=int, default=TuneConfig().steps)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=Path("results/bench_reranker.json"))
    parser.add_argument("--latency-only", action="store_true",
                        help="time the tuned pointwise reranker only (see the docstring)")
    parser.add_argument("--n-latency", type=int, default=10,
                        help="conversations timed with --latency-only")
    parser.add_argument("--card", choices=rerank.CARDS, default="brief",
                        help="the card the tuned pointwise reranker is tuned on and reads")
    args = parser.parse_args()
    if args.latency_only:
        return latency_only(args)

    setup = artifacts.study_setup(args.n, seed=args.seed, progress=False)
    responses = llm.ResponseCache()
    base = llm_local.TransformersBackend()
    print(f"backend: {base.model} ({base.dtype}, {base.device}); {len(setup.conversations)} "
          "validation conversations, 20 candidates each", flush=True)
    tuned, result = artifacts.tuned_backend(
        setup, TuneConfig(steps=args.steps, seed=args.seed), n_train=args.train, progress=True,
        card=args.card)
    print(f"tuning: {args.steps} steps in {result.seconds / 60:.1f} min; final margin "
          f"{result.history['margin'].tail(10).mean():.2f}", flush=True)
    fast = {**reranker_study.zero_shot_rerankers(base, setup.corpus, args.seed, responses),
            "pointwise (tuned)": rerank.PointwiseReranker(tuned, setup.corpus,
                                                          response_cache=responses,
                                                          card=args.card)}
    table, _ = reranker_study.compare_rerankers(
        fast, setup.conversations, setup.candidates, progress=True,
        ablate=("verbalizer (zero-shot)", "pointwise (tuned)"))
    slow = reranker_study.generation_rerankers(base, setup.corpus, TitleMatcher(setup.corpus),
                                               responses)
    n = args.n_generation
    slow_table, _ = reranker_study.compare_rerankers(
        slow, setup.conversations[:n], setup.candidates[:n], progress=True)
    slow_table.index = [f"{name} [{n} conversations]" for name in slow_table.index]
    table = pd.concat([table, slow_table])
    timing = reranker_study.latency({**fast, **slow}, setup.conversations[:10],
                                    setup.candidates[:10])
    table["s / conversation"] = [timing.get(name.split(" [")[0].replace(" (words removed)", ""))
                                 for name in table.index]
    pd.set_option("display.width", 200)
    print(table.round(3).to_string())
    cache.write_json(args.out, {
        "machine": cache.machine(dtype=str(base.dtype)),
        "n": args.n, "n_generation": n, "train_conversations": args.train, "card": args.card,
        "tuning_seconds": result.seconds, "tuning_history": result.history.to_dict("list"),
        "table": table.reset_index(names="reranker").to_dict("records"),
    })
    print(f"wrote {args.out}")


def forward_seconds(backend: llm_local.TransformersBackend, text: str, tokens: int = 600,
                    repeats: int = 5) -> float:
    """Median seconds of one forward pass (last position's logits) over `tokens` tokens."""
    import torch

    ids = backend.tokenizer(text, add_special_tokens=False)["input_ids"]
    ids = (ids * (tokens // max(1, len(ids)) + 1))[:tokens]
    batch = torch.tensor([ids], device=backend.device)
    times = []
    with torch.no_grad():
        for _ in range(repeats + 1):  # the first pass warms up
            started = time.perf_counter()
            backend.lm(input_ids=batch, logits_to_keep=1)
            times.append(time.perf_counter() - started)
    return statistics.median(times[1:])


def same_as_whole(reranker: rerank.PointwiseReranker, setup: artifacts.StudySetup,
                  rankings: list[rerank.Ranking]) -> tuple[bool, float]:
    """Whether `rankings` (the shared-prefix path) equal the rankings of every prompt encoded
    whole, and the largest score difference between the two paths."""
    identical, largest = True, 0.0
    for conversation, pool, ranking in zip(setup.conversations, setup.candidates, rankings):
        texts = reranker.prompt_texts(conversation, list(pool))
        logits = reranker.backend.last_logits(texts, batch_size=20)  # every prompt whole
        whole = (logits[:, reranker.yes] - logits[:, reranker.no]).tolist()
        order = [pool[i] for i in sorted(range(len(pool)), key=lambda i: -whole[i])]
        identical &= order == list(ranking.items)
        fast = dict(zip(ranking.items, ranking.scores))
        largest = max(largest, max(abs(fast[c] - w) for c, w in zip(pool, whole)))
    return identical, largest


def latency_only(args: argparse.Namespace) -> None:
    setup = artifacts.study_setup(args.n_latency, seed=args.seed, progress=False)
    tuned, _ = artifacts.tuned_backend(
        setup, TuneConfig(steps=args.steps, seed=args.seed), n_train=args.train, card=args.card)
    reranker = rerank.PointwiseReranker(tuned, setup.corpus, card=args.card)  # no answer cache
    reranker_study.run(reranker, setup.conversations[:1], setup.candidates[:1])  # warm-up
    before = tuned.usage.copy()
    rankings, seconds = reranker_study.run(reranker, setup.conversations, setup.candidates)
    tokens = tuned.usage.since(before).prompt_tokens / len(rankings)  # the prefix counted once
    forward = forward_seconds(tuned, reranker_study.example_prompt(setup, 0))
    identical, largest = same_as_whole(reranker, setup, rankings)
    tuned.lm.float()  # the same check in fp32, where rounding does not depend on the shapes
    exact, exact_largest = same_as_whole(
        reranker, setup, reranker_study.run(reranker, setup.conversations, setup.candidates)[0])
    record = {"machine": cache.machine(dtype=str(tuned.dtype), device=tuned.device),
              "model": tuned.model, "card": args.card, "conversations": len(rankings),
              "candidates": len(setup.candidates[0]),
              "seconds_per_conversation": seconds, "forward_600_tokens_seconds": forward,
              "ratio": seconds / forward,
              # what a conversation costs in tokens, and the time per token against the
              # reference pass's (1.0: the reranker runs at the machine's rate per token)
              "tokens_per_conversation": tokens,
              "per_token_ratio": (seconds / tokens) / (forward / 600),
              "identical_rankings": identical,
              "largest_score_difference": largest, "identical_rankings_fp32": exact,
              "largest_score_difference_fp32": exact_largest}
    print(json.dumps(record, indent=2))
    cache.write_json(args.out, record)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
