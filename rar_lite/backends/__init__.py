"""LLM backends: one small interface (`llm.Backend`) for a local transformers model
(`llm_local`) and any OpenAI-compatible endpoint (`llm_api`), the spec strings that name them
(`backbones`), the on-disk response cache, and a local OpenAI-compatible server (`serve`).

May import: core.
"""
