"""Evaluation (chapter 6, `rar-lite evaluate`): the baselines that are not a reranker over
retrieved candidates, and the harness that runs every system on the same conversations and
turns the results into tables.

May import: core, `data`, `retrieval`, `backends`, `reranking`, `loop`, `dialogue`,
`experiments`.
"""
