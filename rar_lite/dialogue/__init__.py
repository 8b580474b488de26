"""Real dialogue: the retriever fitted on INSPIRED's dev dialogues and the reranker tuned
on them (this project's answer to the small LLM that reads only simulated requests).

May import: core, `data`, `retrieval`, `backends`, `reranking`, `loop`.
"""
