"""Teaching the small LLM to rerank: pointwise LoRA fine-tuning (chapter 4).

Zero-shot, SmolLM2-135M ranks by letter, not by movie. Listwise tuning (answer = the target's
letter) was measured to stay at chance; *pointwise* tuning works: one short prompt per candidate
("Request: ... Movie: ... Does the movie fit the request? Answer yes or no."), the target labelled
"yes" and a few other candidates "no", and the score logit(yes) - logit(no).

The loop is a small custom one rather than TRL's SFTTrainer: the completion is a single token, so
the language-model head is applied only at the last position and only to the "yes" and "no" rows
(TRL 1.16's default loss computes full-vocabulary statistics at every position, measured 3x
slower here). The loss is the two-way cross-entropy between logit(yes) and logit(no) — exactly
the score the reranker uses. Weights stay fp32 with bf16 autocast on CPUs that support it; LoRA
(PEFT) on all linear layers. The adapter is saved as safetensors and loaded back by path through
`TransformersBackend(adapter=...)`.
"""

from __future__ import annotations

import json
import math
import shutil
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from tqdm.auto import tqdm

from rar_lite import cache, prompts
from rar_lite.conversations import Conversation
from rar_lite.llm import bf16_supported, chat_text, smollm2_path


@dataclass(frozen=True)
class TuneConfig:
    """Pointwise LoRA fine-tuning settings (CPU defaults; raise steps/batch on a GPU)."""

    steps: int = 160
    batch_size: int = 16
    lr: float = 2e-4
    lora_r: int = 16
    lora_alpha: int = 32
    lora_dropout: float = 0.05
    negatives: int = 3  # "no" examples per "yes"
    seed: int = 0


@dataclass(frozen=True)
class Example:
    """One pointwise training example."""

    request: str
    movie: str
    label: int  # 1: the target ("yes"), 0: another candidate ("no")

    def prompt(self) -> str:
        return prompts.pointwise_prompt(self.request, self.movie)


def pointwise_examples(conversations: list[Conversation], candidates: list[list[int]],
                       texts: pd.Series, negatives: int = 3, seed: int = 0) -> list[Example]:
    """For each conversation: its target as "yes" and `negatives` other candidates as "no".

    `candidates[i]` are the retrieved candidates of conversation i (the target may or may not be
    among them); negatives are drawn from those that are not a target.
    """
    rng = np.random.default_rng(seed)
    examples = []
    for conversation, pool in zip(conversations, candidates):
        request = prompts.request_text(conversation)
        others = [c for c in pool if c not in conversation.targets]
        examples.append(Example(request, texts[conversation.targets[0]], 1))
        for k in rng.choice(len(others), size=min(negatives, len(others)), replace=False):
            examples.append(Example(request, texts[others[int(k)]], 0))
    order = rng.permutation(len(examples))
    return [examples[i] for i in order]


@dataclass
class TuneResult:
    """A finished tuning run: where the adapter is and how training went."""

    adapter: Path
    history: pd.DataFrame  # per step: loss, margin (mean yes-no score of positives - negatives)
    seconds: float


def _load_base(base: str | Path | None) -> tuple[torch.nn.Module, object]:
    from transformers import AutoModelForCausalLM, AutoTokenizer

    source = base or smollm2_path()
    tokenizer = AutoTokenizer.from_pretrained(source)
    tokenizer.padding_side = "left"
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    model = AutoModelForCausalLM.from_pretrained(source, dtype=torch.float32)
    return model, tokenizer


def yes_no_margin(model: torch.nn.Module, tokenizer: object, texts: list[str],
                  yes: int, no: int) -> torch.Tensor:
    """logit(yes) - logit(no) at the last position of each (chat-formatted) text, in fp32."""
    enc = tokenizer(texts, return_tensors="pt", padding=True, add_special_tokens=False)
    positions = (enc["attention_mask"].cumsum(1) - 1).clamp(min=0)
    autocast = torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16_supported())
    with autocast:
        out = model(input_ids=enc["input_ids"], attention_mask=enc["attention_mask"],
                    position_ids=positions, output_hidden_states=True, logits_to_keep=1)
    hidden = out.hidden_states[-1][:, -1].float()
    head = model.get_output_embeddings().weight
    rows = head[[yes, no]].float()
    logits = hidden @ rows.T
    return logits[:, 0] - logits[:, 1]


def tune_pointwise(examples: list[Example], config: TuneConfig, directory: Path,
                   base: str | Path | None = None, progress: bool = True) -> TuneResult:
    """LoRA-tune the base model (default: packaged SmolLM2) on pointwise examples; the adapter
    is written atomically to `directory` (with `tune.json`: the config and the history). A
    directory that already holds a finished run with the same config is loaded, not retrained.
    """
    from peft import LoraConfig, get_peft_model

    directory = Path(directory)
    record = {"config": asdict(config), "n_examples": len(examples),
              "examples": cache.fingerprint([asdict(e) for e in examples]),
              "base": str(base or "smollm2")}
    meta = directory / "tune.json"
    if meta.exists():
        saved = json.loads(meta.read_text())
        if {k: saved[k] for k in record} == record:
            return TuneResult(directory, pd.DataFrame(saved["history"]), saved["seconds"])
    if not examples:
        raise ValueError("no training examples")
    torch.manual_seed(config.seed)
    model, tokenizer = _load_base(base)
    yes = tokenizer.encode("yes", add_special_tokens=False)[0]
    no = tokenizer.encode("no", add_special_tokens=False)[0]
    lora = LoraConfig(r=config.lora_r, lora_alpha=config.lora_alpha,
                      lora_dropout=config.lora_dropout, target_modules="all-linear",
                      task_type="CAUSAL_LM")
    model = get_peft_model(model, lora)
    model.train()
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad],
                                  lr=config.lr)
    texts = [chat_text(tokenizer, e.prompt()) for e in examples]
    labels = torch.tensor([float(e.label) for e in examples])
    rng = np.random.default_rng(config.seed)
    history = []
    started = time.perf_counter()
    order = rng.permutation(len(examples))
    cursor = 0
    for step in tqdm(range(1, config.steps + 1), desc="LoRA tuning", disable=not progress):
        if cursor + config.batch_size > len(order):
            order, cursor = rng.permutation(len(examples)), 0
        batch = order[cursor:cursor + config.batch_size]
        cursor += config.batch_size
        margin = yes_no_margin(model, tokenizer, [texts[i] for i in batch], yes, no)
        target = labels[batch]
        loss = torch.nn.functional.binary_cross_entropy_with_logits(margin, target)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        pos, neg = margin[target == 1], margin[target == 0]
        history.append({"step": step, "loss": loss.item(),
                        "margin": (pos.mean() - neg.mean()).item() if len(pos) and len(neg)
                        else math.nan})
    seconds = time.perf_counter() - started
    tmp = directory.with_name(directory.name + ".partial")
    shutil.rmtree(tmp, ignore_errors=True)
    model.save_pretrained(tmp)  # adapter_model.safetensors + adapter_config.json
    (tmp / "tune.json").write_text(json.dumps({**record, "history": history,
                                               "seconds": seconds}))
    shutil.rmtree(directory, ignore_errors=True)
    tmp.rename(directory)
    return TuneResult(directory, pd.DataFrame(history), seconds)
