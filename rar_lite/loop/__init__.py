"""The feedback loop (chapter 5): the whole pipeline on held-out conversations, the
Plackett-Luce distribution, rewards and the DPO loss, and the loop that lets the LLM's rankings
teach the retriever (on LRURec, the paper's; and on the conversation-aware retriever, ours).

May import: core, `data`, `retrieval`, `backends`, `reranking`.
"""
