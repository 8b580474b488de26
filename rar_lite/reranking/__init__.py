"""Reranking: the second stage. Prompt templates, the rerankers (verbalizer, pointwise,
generation, constrained, rules), pointwise LoRA tuning (chapter 4) and DPO alignment of the
reranker itself (chapter 7).

May import: core, `data`, `backends`.
"""
