"""Teaching the small LLM to rerank: pointwise LoRA fine-tuning (chapter 4).

Zero-shot, SmolLM2-135M ranks by letter, not by movie. Listwise tuning (answer = the target's
letter) was measured to stay at chance; *pointwise* tuning works: one short prompt per candidate
("Request: ... Does the movie below fit the request? Answer yes or no. Movie: ..."), the target
labelled "yes" and a few other candidates of the same conversation "no", and the score
s = logit(yes) - logit(no). The tuned judge reads it right after the movie's card, the user's turn
of the chat template left open (`TuneConfig.layout` "card", recorded with the adapter, which
`TransformersBackend` reads back): the template's six closing tokens are then not computed once
per candidate, as they are at the assistant's turn where the untuned model is asked ("answer").

Two losses (`TuneConfig.loss`):

- ``"group"`` (default): the examples of one conversation form a group, and the loss is the
  softmax cross-entropy of the target among the group's scores, -log(e^s_t / sum_j e^s_j). The
  request is the same within a group, so a yes/no *prior* cancels out: every gradient step goes
  to telling the movies apart. This is the ranking the reranker is used for.
- ``"bce"``: binary cross-entropy of each score against its label. A 160-step run (lr 2e-4,
  hard negatives) was measured here to learn only the prior (margin ~0, loss ~0.56): at chance.

The loop is a small custom one rather than TRL's SFTTrainer: the completion is a single token, so
the language-model head is applied only at the last position and only to the "yes" and "no" rows
(TRL 1.16's default loss computes full-vocabulary statistics at every position, measured 3x
slower here). Weights stay fp32 with bf16 autocast on CPUs that support it; LoRA (PEFT) on all
linear layers. The examples of one conversation share their prompt up to the movie: that prefix
is encoded once per step and the members continue it from its key/value cache (`yes_no_margin`
with `groups`; measured 2.2x faster per step than encoding every prompt whole, same scores and
gradients up to rounding). Every `checkpoint_every` steps the adapter, optimizer and random
states are saved, so an interrupted run resumes where it stopped with the same result. The
finished adapter is saved as safetensors and loaded back by path through
`TransformersBackend(adapter=...)`.
"""

from __future__ import annotations

import json
import math
import shutil
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from tqdm.auto import tqdm

from rar_lite import cache
from rar_lite.backends.llm_local import (
    bf16_supported,
    chat_text,
    check_layout,
    continuation_inputs,
    smollm2_path,
    tokens_apart,
)
from rar_lite.data.conversations import Conversation
from rar_lite.reranking import prompts

LOSSES = ("group", "bce")


@dataclass(frozen=True)
class TuneConfig:
    """Pointwise LoRA fine-tuning settings (CPU defaults; raise steps/batch on a GPU)."""

    steps: int = 100
    batch_size: int = 16  # prompts per step (groups of 1 + negatives)
    lr: float = 5e-4
    lora_r: int = 16
    lora_alpha: int = 32
    lora_dropout: float = 0.05
    negatives: int = 3  # "no" examples per "yes"
    loss: str = "group"
    seed: int = 0
    checkpoint_every: int = 20
    layout: str = "card"  # where the prompts end and the score is read (`llm_local.LAYOUTS`)

    def __post_init__(self) -> None:
        if self.loss not in LOSSES:
            raise ValueError(f"loss must be one of {LOSSES}, got {self.loss!r}")
        check_layout(self.layout)
        if self.steps < 1 or self.batch_size < 1:
            raise ValueError("steps and batch_size must be positive")


@dataclass(frozen=True)
class Example:
    """One pointwise training example; `group` ties the examples of one conversation."""

    request: str
    movie: str
    label: int  # 1: the target ("yes"), 0: another candidate ("no")
    group: int = 0
    context: str = "request"  # which `prompts.CONTEXTS` template `request` fills

    def prompt(self) -> str:
        return prompts.pointwise_prompt(self.request, self.movie, self.context)


def pointwise_examples(conversations: list[Conversation], candidates: list[list[int]],
                       texts: pd.Series, negatives: int = 3, seed: int = 0,
                       context: str = "request", all_targets: bool = False) -> list[Example]:
    """For each conversation (group i): its target "yes" and `negatives` other candidates "no".

    `candidates[i]` are the candidates of conversation i (the target may or may not be among
    them); negatives are drawn from those that are not a target. With `all_targets`, every
    target of a conversation makes a group of its own (real turns often name several). Groups
    stay together, in a shuffled order.
    """
    rng = np.random.default_rng(seed)
    groups = []
    for conversation, pool in zip(conversations, candidates):
        request = prompts.context_text(conversation, context)
        others = [c for c in pool if c not in conversation.targets]
        for target in conversation.targets[:None if all_targets else 1]:
            g = len(groups)
            group = [Example(request, texts[target], 1, g, context)]
            for k in rng.choice(len(others), size=min(negatives, len(others)), replace=False):
                group.append(Example(request, texts[others[int(k)]], 0, g, context))
            groups.append(group)
    return [e for i in rng.permutation(len(groups)) for e in groups[i]]


@dataclass
class TuneResult:
    """A finished tuning run: where the adapter is and how training went."""

    adapter: Path
    history: pd.DataFrame  # per step: loss, margin (mean score of positives - negatives)
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
                  yes: int, no: int, groups: Sequence[int] | None = None) -> torch.Tensor:
    """logit(yes) - logit(no) at the last position of each (chat-formatted) text, in fp32.

    With `groups` (one id per text), the texts of a group share their prefix (system, request,
    question: `rerank.shared_prefix`), which is encoded once, and every member continues it
    from its key/value cache, gradients included: about half the tokens of a batch. The scores
    equal the whole texts' up to rounding (LoRA dropout, in training, then draws one mask for a
    group's prefix). Texts are encoded whole when a prefix and its suffixes do not tokenize
    apart as they do together, or a group has one member."""
    if groups is not None:
        shared = _shared_prefixes(tokenizer, texts, groups)
        if shared is not None:
            return _margin_after_prefixes(model, tokenizer, *shared, yes, no)
    enc = tokenizer(texts, return_tensors="pt", padding=True, add_special_tokens=False)
    positions = (enc["attention_mask"].cumsum(1) - 1).clamp(min=0)
    device = model.get_output_embeddings().weight.device
    with _autocast(device):
        out = model(input_ids=enc["input_ids"].to(device),
                    attention_mask=enc["attention_mask"].to(device),
                    position_ids=positions.to(device), output_hidden_states=True,
                    logits_to_keep=1)
    return _margin(model, out.hidden_states[-1][:, -1], yes, no)


def _autocast(device: torch.device) -> torch.autocast:
    """bf16 autocast on a GPU, and on a CPU with native bf16; fp32 elsewhere."""
    enabled = bf16_supported() if device.type == "cpu" else device.type == "cuda"
    return torch.autocast(device.type, dtype=torch.bfloat16, enabled=enabled)


def _margin(model: torch.nn.Module, hidden: torch.Tensor, yes: int, no: int) -> torch.Tensor:
    """logit(yes) - logit(no) from final hidden states (B, d), in fp32."""
    rows = model.get_output_embeddings().weight[[yes, no]].float()
    logits = hidden.float() @ rows.T
    return logits[:, 0] - logits[:, 1]


def _shared_prefixes(tokenizer: object, texts: list[str], groups: Sequence[int]
                     ) -> tuple[list[list[int]], list[int], list[list[int]]] | None:
    """(each group's prefix tokens, each text's group row, each text's suffix tokens), or None
    when some group's texts do not split cleanly (see `yes_no_margin`)."""
    from rar_lite.reranking.rerank import shared_prefix

    if len(groups) != len(texts):
        raise ValueError(f"{len(texts)} texts but {len(groups)} group ids")
    members: dict[int, list[int]] = {}
    for i, g in enumerate(groups):
        members.setdefault(int(g), []).append(i)
    heads, owner, tails = [], [0] * len(texts), [[] for _ in texts]
    for row, rows in enumerate(members.values()):
        prefix = shared_prefix([texts[i] for i in rows])
        split = tokens_apart(tokenizer, prefix, [texts[i][len(prefix):] for i in rows])
        if split is None:
            return None
        heads.append(split[0])
        for i, tail in zip(rows, split[1]):
            owner[i], tails[i] = row, tail
    return heads, owner, tails


def _margin_after_prefixes(model: torch.nn.Module, tokenizer: object, heads: list[list[int]],
                           owner: list[int], tails: list[list[int]], yes: int,
                           no: int) -> torch.Tensor:
    """`yes_no_margin` of prefixes `heads` (encoded once, left-padded, in one pass) continued by
    `tails[i]` from the cache of prefix `owner[i]`."""
    enc = tokenizer.pad({"input_ids": heads}, padding_side="left", return_tensors="pt")
    positions = (enc["attention_mask"].cumsum(1) - 1).clamp(min=0)
    device = model.get_output_embeddings().weight.device
    with _autocast(device):
        past = model(input_ids=enc["input_ids"].to(device),
                     attention_mask=enc["attention_mask"].to(device),
                     position_ids=positions.to(device), use_cache=True).cache
        rows = torch.tensor(owner)
        past.batch_select_indices(rows.to(device))  # row r: the prefix of text r's group
        batch = continuation_inputs(enc["attention_mask"][rows], tails, tokenizer.pad_token_id)
        out = model(**{k: v.to(device) for k, v in batch.items()}, cache=past,
                    output_hidden_states=True, logits_to_keep=1)
    return _margin(model, out.hidden_states[-1][:, -1], yes, no)


def group_loss(scores: torch.Tensor, labels: torch.Tensor, groups: torch.Tensor) -> torch.Tensor:
    """Mean over groups of -log softmax(scores of the group)[positive]; groups without exactly
    one positive are skipped."""
    losses = []
    for g in torch.unique(groups):
        mask = groups == g
        s, y = scores[mask], labels[mask]
        if int(y.sum()) != 1:
            continue
        losses.append(torch.logsumexp(s, 0) - s[y.argmax()])
    if not losses:
        raise ValueError("no group with exactly one positive in the batch")
    return torch.stack(losses).mean()


def _batches(examples: list[Example], batch_size: int, rng: np.random.Generator) -> list[list[int]]:
    """One epoch of batches of whole groups (about `batch_size` examples each), shuffled."""
    by_group: dict[int, list[int]] = {}
    for i, e in enumerate(examples):
        by_group.setdefault(e.group, []).append(i)
    groups = list(by_group.values())
    batches, current = [], []
    for g in rng.permutation(len(groups)):
        current += groups[g]
        if len(current) >= batch_size:
            batches.append(current)
            current = []
    return batches or [current]


def _save_state(path: Path, model: torch.nn.Module, optimizer: torch.optim.Optimizer,
                record: dict, progress: dict) -> None:
    """Checkpoint (adapter, optimizer, RNGs, progress) into `path` (`cache.save_training`)."""
    from peft import get_peft_model_state_dict

    tensors = {f"adapter.{k}": v for k, v in get_peft_model_state_dict(model).items()}
    tensors["rng.torch"] = torch.get_rng_state()
    cache.save_training(path, record, optimizer, tensors, **progress)


def _load_state(path: Path, record: dict, model: torch.nn.Module,
                optimizer: torch.optim.Optimizer) -> dict | None:
    """Restore `_save_state`'s checkpoint of the same run into `model`, `optimizer` and torch's
    RNG; returns its progress, or None when there is none usable."""
    from peft import set_peft_model_state_dict

    resumed = cache.resume_training(path, record, optimizer, needs=("rng.torch",))
    if resumed is None:
        return None
    tensors, progress = resumed
    set_peft_model_state_dict(model, {k[8:]: v for k, v in tensors.items()
                                      if k.startswith("adapter.")})
    torch.set_rng_state(tensors["rng.torch"])
    return progress


def snapshot_dir(directory: Path, step: int) -> Path:
    """Where `tune_pointwise(..., snapshots=...)` writes the adapter of `step` (a sibling of
    `directory`: the backend names a model by its adapter folder, so the name is unique)."""
    return Path(directory).with_name(f"{Path(directory).name}-step{step}")


def curve_steps(snapshots: Sequence[int], steps: int) -> list[int]:
    """The steps a run of `steps` saved with `snapshots` can be read at: 0 (the untuned model),
    the snapshots strictly inside the run, and `steps` itself."""
    return [0, *sorted({int(s) for s in snapshots if 0 < int(s) < steps}), steps]


def step_adapters(directory: Path, snapshots: Sequence[int],
                  steps: int) -> dict[int, Path | None]:
    """The adapter of each of `curve_steps`: None for step 0 (the base model), the snapshot
    folders (`snapshot_dir`), and `directory` for the last step."""
    return {step: None if step == 0 else Path(directory) if step == steps
            else snapshot_dir(directory, step) for step in curve_steps(snapshots, steps)}


def tune_pointwise(examples: list[Example], config: TuneConfig, directory: Path,
                   base: str | Path | None = None, progress: bool = True,
                   snapshots: Sequence[int] = (), device: str | None = None) -> TuneResult:
    """LoRA-tune the base model (default: packaged SmolLM2) on pointwise examples; the adapter
    is written atomically to `directory` (with `tune.json`: the config and the history), and
    the adapters of the steps in `snapshots` to `snapshot_dir(directory, step)` (for choosing
    the number of steps on held-out data). A directory that already holds a finished run with
    the same config is loaded, not retrained; an interrupted run resumes from its last
    checkpoint (`<directory>.checkpoint`). `device`: where to train (default: CUDA when present;
    on a GPU dropout draws from CUDA's generator, so a resumed run there is not bit-identical).
    """
    from peft import LoraConfig, get_peft_model

    directory = Path(directory)
    snapshots = curve_steps(snapshots, config.steps)[1:-1]
    record = {"config": asdict(config), "n_examples": len(examples),
              "examples": cache.fingerprint([asdict(e) for e in examples]),
              "base": str(base or "smollm2"), "layout": config.layout}
    if snapshots:
        record["snapshots"] = snapshots
    meta = directory / "tune.json"
    if meta.exists() and all((snapshot_dir(directory, s) / "tune.json").exists()
                             for s in snapshots):
        saved = json.loads(meta.read_text())
        if {k: saved.get(k) for k in record} == record:
            cache.say("LoRA tuning: reusing the adapter in the cache", progress)
            return TuneResult(directory, pd.DataFrame(saved["history"]), saved["seconds"])
    if not examples:
        raise ValueError("no training examples")
    if config.loss == "group" and not any(e.label == 1 for e in examples):
        raise ValueError("the group loss needs a positive example in each group")
    torch.manual_seed(config.seed)
    model, tokenizer = _load_base(base)
    yes = tokenizer.encode("yes", add_special_tokens=False)[0]
    no = tokenizer.encode("no", add_special_tokens=False)[0]
    lora = LoraConfig(r=config.lora_r, lora_alpha=config.lora_alpha,
                      lora_dropout=config.lora_dropout, target_modules="all-linear",
                      task_type="CAUSAL_LM")
    model = get_peft_model(model, lora).to(device or cache.default_device())
    model.train()
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad],
                                  lr=config.lr)
    texts = [chat_text(tokenizer, e.prompt(), prompts.POINTWISE_SYSTEM, config.layout)
             for e in examples]
    labels = torch.tensor([float(e.label) for e in examples])
    groups = torch.tensor([e.group for e in examples])
    rng = np.random.default_rng(config.seed)
    history: list[dict] = []
    seconds_before = 0.0
    batches = _batches(examples, config.batch_size, rng)
    checkpoint = directory.with_name(directory.name + ".checkpoint")
    state = _load_state(checkpoint, record, model, optimizer)
    if state is not None:
        rng.bit_generator.state = state["rng"]
        history, batches = state["history"], state["batches"]
        seconds_before = state["seconds"]
    started = time.perf_counter()
    for step in tqdm(range(len(history) + 1, config.steps + 1), desc="LoRA tuning",
                     initial=len(history), total=config.steps, disable=not progress):
        if not batches:
            batches = _batches(examples, config.batch_size, rng)
        batch = batches.pop(0)
        scores = yes_no_margin(model, tokenizer, [texts[i] for i in batch], yes, no,
                               groups=groups[batch].tolist())
        target = labels[batch].to(scores.device)
        if config.loss == "group":
            loss = group_loss(scores, target, groups[batch].to(scores.device))
        else:
            loss = torch.nn.functional.binary_cross_entropy_with_logits(scores, target)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        pos, neg = scores[target == 1], scores[target == 0]
        history.append({"step": step, "loss": loss.item(),
                        "margin": (pos.mean() - neg.mean()).item() if len(pos) and len(neg)
                        else math.nan})
        if step in snapshots:
            _save_adapter(snapshot_dir(directory, step), model, {**record, "step": step},
                          history, seconds_before + time.perf_counter() - started)
        if step % config.checkpoint_every == 0 and step < config.steps:
            _save_state(checkpoint, model, optimizer, record, {
                "history": history, "batches": batches, "rng": rng.bit_generator.state,
                "seconds": seconds_before + time.perf_counter() - started})
    seconds = seconds_before + time.perf_counter() - started
    _save_adapter(directory, model, record, history, seconds)
    shutil.rmtree(checkpoint, ignore_errors=True)
    return TuneResult(directory, pd.DataFrame(history), seconds)


def _save_adapter(directory: Path, model: torch.nn.Module, record: dict, history: list[dict],
                  seconds: float) -> None:
    """The LoRA adapter (adapter_model.safetensors + adapter_config.json) and `tune.json`,
    written atomically."""
    with cache.atomic_dir(directory) as tmp:
        model.save_pretrained(tmp)
        (tmp / "tune.json").write_text(json.dumps({**record, "history": history,
                                                   "seconds": seconds}))
