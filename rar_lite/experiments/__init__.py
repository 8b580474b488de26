"""Experiments: the run sizes (`profiles`) and the chapters' shared artifacts, built or
loaded from the cache through one function each: chapter 4's rerankers (`reranker_study`),
chapter 5's loop (`loop_study`) and its five arms (`loop_arms`). Notebooks, `rar-lite evaluate`,
the demo and the benchmark scripts all go through them.

May import: core, `data`, `retrieval`, `backends`, `reranking`, `loop`, `dialogue`.
"""
