"""Experiments: the run sizes (`profiles`), the chapters' shared artifacts (`artifacts`: the
simulated data, chapter 3's LRURec, chapter 4's tuned reranker, the judge tuned on real dialogue,
chapter 5's loop, each built or loaded from the cache through one function), and the chapters'
own experiments: chapter 4's rerankers (`reranker_study`), chapter 5's loop (`loop_study`) and its
seven arms (`loop_arms`). The rest of the package imports only `artifacts` and `profiles` from
here: `rar-lite evaluate`, the demo, the notebooks and the benchmark scripts all reuse what the
chapters cached.

May import: core, `data`, `retrieval`, `backends`, `reranking`, `loop`, `dialogue`.
"""
