"""Retrieval: the first stage. LRURec and SASRec over user histories (the paper's retriever),
the dense retriever over the conversation and the item cards (this project's), their fusion,
and the FAISS index that serves them.

May import: core, `data`.
"""
