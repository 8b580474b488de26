"""Naming an LLM: one spec string for every command, chapter and function.

- ``smollm2`` (the default): the packaged SmolLM2-135M-Instruct, run locally by transformers.
- ``hf:<model id or local path>``: any transformers causal LM, on CPU or CUDA.
- ``openai:<model>``: an OpenAI-compatible chat-completions endpoint (OpenAI, Gemini's
  OpenAI-compatible endpoint, vLLM, Ollama, `transformers serve`); its base URL and key come from
  ``RAR_LITE_LLM_BASE_URL`` / ``RAR_LITE_LLM_API_KEY`` (or ``OPENAI_BASE_URL`` /
  ``OPENAI_API_KEY``), never from the spec, so a spec is safe to print and to save.

`load(spec)` gives the backend; `label(backend)` names it in tables. A local backend gives
next-token logits and so works in every mode; an API backend only writes text, so the modes
built on logits (verbalizer, pointwise, constrained) refuse it (`llm.require_logits`) and say
which modes work instead: generation mode and the LLM-only baseline.
"""

from __future__ import annotations

from dataclasses import dataclass

from rar_lite.backends.llm import Backend, LLMError
from rar_lite.backends.llm_api import OpenAIChatBackend
from rar_lite.backends.llm_local import TransformersBackend

#: The spec of the packaged model, used wherever none is given.
DEFAULT = "smollm2"
KINDS = ("smollm2", "hf", "openai")


@dataclass(frozen=True)
class Spec:
    """A parsed spec: `kind` in `KINDS`, `name` the model id or path ("" for smollm2)."""

    kind: str
    name: str = ""

    def __str__(self) -> str:
        return self.kind if self.kind == "smollm2" else f"{self.kind}:{self.name}"

    @property
    def api(self) -> bool:
        """Whether the model runs behind an API (text only, no logits)."""
        return self.kind == "openai"


def parse(spec: str | Spec) -> Spec:
    """`spec` parsed; a ValueError saying the accepted forms for anything else."""
    if isinstance(spec, Spec):
        return spec
    forms = ("expected 'smollm2', 'hf:<model id or local path>' or 'openai:<model>' "
             "(the endpoint and key come from RAR_LITE_LLM_BASE_URL and RAR_LITE_LLM_API_KEY)")
    if not isinstance(spec, str) or not spec.strip():
        raise ValueError(f"LLM spec {spec!r}: {forms}")
    text = spec.strip()
    if text.lower() == DEFAULT:
        return Spec(DEFAULT)
    kind, colon, name = text.partition(":")
    kind, name = kind.strip().lower(), name.strip()
    if not colon or kind not in KINDS[1:]:
        raise ValueError(f"LLM spec {spec!r}: {forms}")
    if not name:
        raise ValueError(f"LLM spec {spec!r} names no model after '{kind}:': {forms}")
    if not name.isprintable() or (kind == "openai" and any(c.isspace() for c in name)):
        raise ValueError(f"LLM spec {spec!r}: the model name holds control characters"
                         + (" or spaces" if kind == "openai" else ""))
    return Spec(kind, name)


def load(spec: str | Spec = DEFAULT, *, device: str | None = None, concurrency: int = 8,
         adapter: str | None = None) -> Backend:
    """The backend `spec` names. `device` is for local models (default: CUDA when present);
    `concurrency` bounds the requests an API backend keeps in flight; `adapter` is a LoRA adapter
    merged into a local model."""
    parsed = parse(spec)
    if parsed.api:
        if adapter:
            raise LLMError(f"{parsed}: an API model cannot load a LoRA adapter; use a local "
                           "model ('smollm2' or 'hf:...')")
        return OpenAIChatBackend(model=parsed.name, concurrency=concurrency)
    return TransformersBackend(parsed.name or None, device=device, adapter=adapter)


def label(backend: Backend) -> str:
    """The backbone as a table names it: the spec that loads it again (with the adapter's name
    after a '+' for a tuned local model)."""
    if isinstance(backend, OpenAIChatBackend):
        return f"openai:{backend.model}"
    model = str(backend.model)
    base, plus, adapter = model.partition("+")
    named = DEFAULT if base == TransformersBackend.DEFAULT_NAME else f"hf:{base}"
    return named + (f"+{adapter}" if plus else "")
