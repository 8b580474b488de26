"""Chapter 5's first experiment: RAR's loop on LRURec, the paper's history-only retriever
(the loop on the conversation-aware retriever is `loop_arms`).

The conversations (simulated with data seed 0) and the chapter-4 tuned reranker stay fixed; the
retriever and the loop take the model seed. For one seed: the supervised LRURec of chapter 3 (π_ref,
cached), the feedback loop on `n_train` training conversations (cached per round), and four
systems on held-out *test* conversations (`compare`): the retriever alone, RAR with the SFT
retriever, RAR with the retriever after the loop, and that retriever alone.
"""

from __future__ import annotations

import pandas as pd

from rar_lite.backends.llm import ResponseCache
from rar_lite.backends.llm_local import TransformersBackend
from rar_lite.data.conversations import Conversation
from rar_lite.experiments.artifacts import LoopSetup, run_feedback
from rar_lite.loop import feedback, pipeline
from rar_lite.reranking import rerank


def pointwise_reranker(setup: LoopSetup, backend: TransformersBackend | None = None,
                       response_cache: ResponseCache | None = None) -> rerank.PointwiseReranker:
    """The pointwise reranker on `backend` (e.g. chapter 4's tuned one), answers cached."""
    return rerank.PointwiseReranker(backend or TransformersBackend(), setup.corpus,
                                    response_cache=response_cache or ResponseCache())


def compare(setup: LoopSetup, reranker: object, loop: feedback.LoopResult,
            conversations: list[Conversation], k: int = 20,
            progress: bool = False) -> dict[str, pipeline.PipelineRun]:
    """Retriever alone, RAR with the SFT retriever, RAR after the loop, on `conversations`."""
    after = setup.served.with_model(loop.model)
    return {
        "retriever only (SFT)": pipeline.run_pipeline(setup.served, rerank.RetrieverOrder(),
                                                      conversations, k),
        "RAR, SFT retriever": pipeline.run_pipeline(setup.served, reranker, conversations, k,
                                                    progress=progress, name="RAR (SFT)"),
        "RAR after the feedback loop": pipeline.run_pipeline(after, reranker, conversations, k,
                                                             progress=progress,
                                                             name="RAR (loop)"),
        "retriever only (after the loop)": pipeline.run_pipeline(after, rerank.RetrieverOrder(),
                                                                 conversations, k),
    }


def compare_readers(setup: LoopSetup, readers: dict[str, object], conversations: list[Conversation],
                    config: feedback.LoopConfig, n_train: int = 200, k: int = 20,
                    progress: bool = False) -> tuple[dict[str, pipeline.PipelineRun],
                                                     dict[str, feedback.LoopResult]]:
    """Chapter 7's question, does a better reranker make a better loop? For each named reranker
    in `readers`: RAR with the SFT retriever, the feedback loop with that reranker as its reader,
    and RAR with the retriever after its loop, all on `conversations` (plus the retriever alone).
    Returns (runs by name, loops by reader name)."""
    loops = {name: run_feedback(setup, reader, config, n_train, progress)
             for name, reader in readers.items()}
    runs = {"retriever only (SFT)": pipeline.run_pipeline(setup.served, rerank.RetrieverOrder(),
                                                          conversations, k)}
    for name, reader in readers.items():
        runs[f"RAR, {name}"] = pipeline.run_pipeline(setup.served, reader, conversations, k,
                                                     progress=progress)
    for name, reader in readers.items():
        runs[f"RAR, {name}, after its loop"] = pipeline.run_pipeline(
            setup.served.with_model(loops[name].model), reader, conversations, k,
            progress=progress)
    return runs, loops


def loop_histories(loops: dict[str, feedback.LoopResult],
                   columns: tuple[str, ...] = ("reward", "valid ndcg@10")) -> pd.DataFrame:
    """Rounds × (column, reader): the loops' histories side by side."""
    frame = pd.concat({name: loop.history.set_index("round")[list(columns)]
                       for name, loop in loops.items()}, axis=1)
    return frame.swaplevel(axis=1)[list(columns)]


def trace_table(record: feedback.Feedback, corpus: pd.DataFrame) -> pd.DataFrame:
    """One conversation's round, one row per sampled candidate: which set, its sampled position,
    title, the LLM's rank of it within the set, whether it is the target; plus each set's
    reward."""
    target = record.conversation.targets[0]
    rows = []
    for s, (items, ranked, reward) in enumerate(zip(record.sets, record.rankings,
                                                    record.rewards)):
        for position, item in enumerate(items):
            rows.append({"set": s + 1, "sampled position": position + 1,
                         "title": corpus.at[item, "title"], "year": corpus.at[item, "year"],
                         "LLM rank": ranked.index(item) + 1, "target": item == target,
                         "set reward": reward})
    return pd.DataFrame(rows)


def summary_table(results: dict[str, pipeline.PipelineRun]) -> pd.DataFrame:
    """Systems × mean metrics (and seconds per conversation)."""
    return pd.DataFrame({name: run.summary() for name, run in results.items()}).T


def verdict(table: pd.DataFrame, metric: str = "ndcg@10") -> str:
    """Sentences on the loop's effect, written from the measured table."""
    sft, loop = table.at["RAR, SFT retriever", metric], table.at["RAR after the feedback loop",
                                                                  metric]
    alone = table.at["retriever only (SFT)", metric]
    recall = [c for c in table.columns if c.startswith("candidate recall@")][0]
    change = (loop - sft) / sft if sft > 0 else float("nan")
    lines = [f"{metric}: retriever alone {alone:.4f}, RAR with the SFT retriever {sft:.4f}, "
             f"RAR after the loop {loop:.4f} ({change:+.1%} relative to RAR-SFT).",
             f"{recall} (the target among the candidates): "
             f"{table.at['RAR, SFT retriever', recall]:.3f} before the loop, "
             f"{table.at['RAR after the feedback loop', recall]:.3f} after."]
    return "\n".join(lines)


def pair_sources(records: list[feedback.Feedback]) -> pd.Series:
    """Where a round's pairs come from: the rejected set missed the target (a signal the
    supervised retriever already had), or both sets held it and the LLM ranked it differently
    because of the other candidates (the LLM's own signal)."""
    counts = {"rejected set missed the target": 0, "both sets held it, LLM ranked it differently": 0}
    for record in records:
        target = record.conversation.targets[0]
        for _, rejected in record.pairs:
            key = ("both sets held it, LLM ranked it differently" if target in record.sets[rejected]
                   else "rejected set missed the target")
            counts[key] += 1
    return pd.Series(counts, name="pairs")
