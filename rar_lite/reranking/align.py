"""Chapter 7: aligning the reranker itself with preference optimisation (TRL's `DPOTrainer`).

RAR keeps its LLM frozen; with a small open model we can also teach the generator from its own
mistakes. Starting from chapter 4's supervised (SFT) pointwise reranker:

1. **Mine pairs** (`mistake_pairs`): on training conversations, the SFT reranker scores the
   retrieved candidates (the target among them); its own best-scored *wrong* candidate is the
   mistake to unlearn. Each conversation gives two DPO examples on the pointwise prompt: for the
   target's prompt, chosen "yes" / rejected "no"; for the mistake's prompt, chosen "no" /
   rejected "yes".
2. **DPO with LoRA**: chapter 7 builds TRL's `DPOConfig` and `DPOTrainer` and PEFT's
   `LoraConfig` in the notebook; `DPORun` supplies the rest. The SFT adapter is merged into the
   base weights (`merged_model`, saved as a plain safetensors model); `DPOTrainer` trains a new
   LoRA adapter on top, and the reference policy is that merged SFT model (PEFT's adapter
   switched off). The sigmoid DPO loss on a yes/no completion pushes the score margin
   logit(yes) − logit(no) up on targets and down on the model's own mistakes, measured relative
   to the SFT model (β keeps it close).
   **Batches hold whole conversations** (`training_order`): a conversation's target pair and
   mistake pair share a step, so their pushes on the yes/no *prior* largely cancel and the
   step's gain has to come from telling the two movies apart — chapter 4's group-loss lesson,
   applied to DPO. With TRL's default random sampling the two pairs land in different steps and
   each step drags the prior towards whichever kind its batch holds more of (the `order`
   argument chooses; `scripts/bench_align.py` measures both).
3. The result loads back by path through chapter 4's backend:
   `TransformersBackend(model=result.base, adapter=result.adapter)`.

A run is cached in a directory keyed by everything that can change its adapter (`DPORun.record`:
the pairs, the order, the trainer's arguments, the LoRA config, the library versions); a
finished run is loaded, not retrained. `align_dpo` is the chapter's run for scripts and tests,
with its settings in one place (`AlignConfig`, `dpo_args`, `lora_config`).
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import tempfile
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd
from tqdm.auto import tqdm

from rar_lite import cache
from rar_lite.backends.llm_local import adapter_layout, merge_adapter, smollm2_path
from rar_lite.data.conversations import Conversation
from rar_lite.reranking.rerank import PointwiseReranker

if TYPE_CHECKING:
    from datasets import Dataset
    from peft import LoraConfig
    from transformers import PreTrainedModel, PreTrainedTokenizerBase
    from trl import DPOConfig, DPOTrainer

#: How `training_order` arranges the pairs (the `order` of `AlignConfig` and `DPORun`).
ORDERS = ("conversation", "random")


@dataclass(frozen=True)
class AlignConfig:
    """DPO settings (CPU defaults; on a GPU raise the conversations and epochs)."""

    beta: float = 0.1
    lr: float = 1e-4
    epochs: int = 1
    batch_size: int = 8  # pairs per step (even: a conversation's two pairs share a step)
    max_steps: int = -1  # -1: the epochs decide
    lora_r: int = 16
    lora_alpha: int = 32
    seed: int = 0
    order: str = "conversation"  # see `training_order`; "random": TRL's usual shuffled pairs

    def __post_init__(self) -> None:
        _check_order(self.order, self.epochs, self.batch_size)


def _check_order(order: str, epochs: int, batch_size: int) -> None:
    """ValueError unless `order` is one of `ORDERS`, `epochs` ≥ 1 and, for "conversation", the
    batch size is even (a conversation's target and mistake pairs share a step)."""
    if order not in ORDERS:
        raise ValueError(f"order must be one of {', '.join(ORDERS)}, got {order!r}")
    if order == "conversation" and (batch_size < 2 or batch_size % 2):
        raise ValueError(f"batch_size must be even (a conversation's target and mistake pairs "
                         f"share a step), got {batch_size}")
    if epochs < 1:
        raise ValueError(f"epochs must be at least 1, got {epochs}")


@dataclass
class AlignResult:
    """The merged SFT model (the new base), the DPO adapter, the training log, the time."""

    base: Path
    adapter: Path
    history: pd.DataFrame  # step, loss, rewards/margins, rewards/accuracies
    seconds: float


def mistake_pairs(reranker: PointwiseReranker, conversations: list[Conversation],
                  candidates: list[list[int]], progress: bool = False) -> list[dict]:
    """Two DPO examples per conversation whose candidates hold its target (see the module
    docstring): {"prompt", "chosen", "rejected", "conversation_id", "kind"}; kind "target" or
    "mistake". The prompts are the reranker's own chat-formatted pointwise prompts."""
    pairs = []
    for conversation, pool in tqdm(list(zip(conversations, candidates)), desc="mining pairs",
                                   disable=not progress):
        target = conversation.targets[0]
        if target not in pool:
            continue
        ranking = reranker.rank(conversation, pool)
        mistake = next(i for i in ranking.items if i != target)
        target_prompt, mistake_prompt = reranker.prompt_texts(conversation, [target, mistake])
        pairs.append({"prompt": target_prompt, "chosen": "yes", "rejected": "no",
                      "conversation_id": conversation.conversation_id, "kind": "target"})
        pairs.append({"prompt": mistake_prompt, "chosen": "no", "rejected": "yes",
                      "conversation_id": conversation.conversation_id, "kind": "mistake"})
    return pairs


def training_order(pairs: list[dict], epochs: int, seed: int,
                   order: str = "conversation") -> list[dict]:
    """The pairs in training order, `epochs` times, each epoch reshuffled (seeded).

    "conversation" shuffles the *conversations* and keeps a conversation's pairs together, so
    with an even batch size every step holds both the target and the mistake of its
    conversations: their pushes on the yes/no prior largely cancel in the step, as chapter 4's
    group loss cancels the prior, and what is left is telling the two movies apart. "random"
    shuffles the pairs themselves (what TRL's sampler does): a step's pairs are a random mix of
    kinds."""
    rng = np.random.default_rng(seed)
    if order == "random":
        return [pairs[i] for _ in range(epochs) for i in rng.permutation(len(pairs))]
    groups: dict[str, list[dict]] = {}
    for pair in pairs:
        groups.setdefault(pair["conversation_id"], []).append(pair)
    keys = list(groups)
    return [pair for _ in range(epochs) for i in rng.permutation(len(keys))
            for pair in groups[keys[i]]]


def merged_model(adapter: Path, directory: Path) -> Path:
    """The base model with a LoRA `adapter` merged in fp32, saved (safetensors + tokenizer) to
    `directory` once; later calls return the saved copy."""
    from transformers import AutoTokenizer

    directory = Path(directory)
    if (directory / "config.json").exists():
        return directory
    source = smollm2_path()
    merged = merge_adapter(source, adapter)
    with cache.atomic_dir(directory) as tmp:
        merged.save_pretrained(tmp, safe_serialization=True)
        AutoTokenizer.from_pretrained(source).save_pretrained(tmp)
    return directory


#: `DPOConfig` fields that cannot change the trained adapter (where TRL writes, what it logs or
#: shows, data-loader plumbing): left out of a run's cache key. Every other field is in it.
UNKEYED_ARGS = re.compile(r"output_dir|run_name|project|report_to|disable_tqdm|push_to_hub"
                          r"|(logging|log|save|hub|trackio)_\w+|dataloader_(num_workers"
                          r"|pin_memory|persistent_workers|prefetch_factor)")
#: What TRL trains on, of each pair (the rest says where it came from).
PAIR_FIELDS = ("prompt", "chosen", "rejected")
#: `LoraConfig` fields PEFT fills in itself when it wraps the model: left out of the key.
UNKEYED_LORA = ("base_model_name_or_path", "revision", "inference_mode", "peft_version")


def _json(value: Any) -> Any:
    """`value` as align.json stores it (sets sorted), so a saved record compares equal."""
    return json.loads(json.dumps(value, sort_keys=True,
                                 default=lambda v: sorted(v) if isinstance(v, set) else str(v)))


def _args_record(args: DPOConfig) -> dict:
    return _json({k: v for k, v in args.to_dict().items() if not UNKEYED_ARGS.fullmatch(k)})


def _lora_record(lora: LoraConfig) -> dict:
    return _json({k: v for k, v in lora.to_dict().items() if k not in UNKEYED_LORA})


def _versions() -> dict[str, str]:
    import peft
    import torch
    import transformers
    import trl

    return {m.__name__: m.__version__ for m in (torch, transformers, peft, trl)}


def scratch_dir() -> Path:
    """A fresh path for TRL's `output_dir`, not created: the trainer makes it, nothing is saved
    there (`save_strategy="no"`), and `DPORun.train` removes it once training is done."""
    return Path(tempfile.gettempdir()) / f"trl-dpo-{uuid.uuid4().hex[:12]}"


def dpo_args(config: AlignConfig, output_dir: str | Path, progress: bool = False) -> DPOConfig:
    """TRL's `DPOConfig` for `config`, the one chapter 7 writes out field by field (a test checks
    that they give the same run): the epochs are already in the dataset (`training_order`), so
    one pass in order (sequential sampling); a constant learning rate; the reference
    log-probabilities computed once before training; the GPU when there is one."""
    import torch
    from trl import DPOConfig

    return DPOConfig(output_dir=str(output_dir), beta=config.beta, learning_rate=config.lr,
                     lr_scheduler_type="constant", warmup_steps=0,
                     per_device_train_batch_size=config.batch_size, gradient_accumulation_steps=1,
                     num_train_epochs=1, max_steps=config.max_steps,
                     train_sampling_strategy="sequential", precompute_ref_log_probs=True,
                     max_length=512, seed=config.seed, data_seed=config.seed,
                     use_cpu=not torch.cuda.is_available(), logging_steps=1, save_strategy="no",
                     report_to=[], disable_tqdm=not progress, dataloader_num_workers=0)


def lora_config(config: AlignConfig) -> LoraConfig:
    """PEFT's `LoraConfig` of the DPO adapter: rank `config.lora_r` on every linear layer."""
    from peft import LoraConfig

    return LoraConfig(r=config.lora_r, lora_alpha=config.lora_alpha, lora_dropout=0.0,
                      target_modules="all-linear", task_type="CAUSAL_LM")


class DPORun:
    """One DPO run, all but its trainer (chapter 7 builds `DPOTrainer` from `model()`,
    `dataset()`, `tokenizer()` and the run's `args` and `lora`; `train` trains and saves it).

    `record` holds everything that can change the adapter: the pairs and the dataset they make
    in `training_order` (its epochs, seed and order), the SFT adapter's name (itself a key) and
    layout (`llm_local.adapter_layout`: the DPO model reads its scores where the SFT one did),
    every field of `args` but `UNKEYED_ARGS`, the LoRA config and the versions of torch,
    transformers, PEFT and TRL. The
    directory is `cache_dir()/adapters/dpo-<fingerprint of record>` unless given, so a run with
    any other setting gets its own and a finished run is loaded, never served for another. The
    record is taken here, before the trainer exists: PEFT rewrites `lora.target_modules` in
    place when it wraps the model."""

    def __init__(self, pairs: list[dict], sft_adapter: Path, args: DPOConfig, lora: LoraConfig,
                 *, epochs: int = 1, seed: int = 0, order: str = "conversation",
                 directory: Path | None = None) -> None:
        if not pairs:
            raise ValueError("no preference pairs to train on")
        _check_order(order, epochs, args.per_device_train_batch_size)
        if args.train_sampling_strategy != "sequential":
            raise ValueError("train_sampling_strategy must be 'sequential': the dataset is "
                             "already in training order (training_order)")
        self.sft_adapter, self.args, self.lora = Path(sft_adapter), args, lora
        self.rows = [{k: p[k] for k in PAIR_FIELDS}
                     for p in training_order(pairs, epochs, seed, order)]
        self.record = _json({
            "pairs": cache.fingerprint([{k: p[k] for k in PAIR_FIELDS} for p in pairs]),
            "dataset": cache.fingerprint(self.rows), "n_pairs": len(pairs),
            "sft_adapter": self.sft_adapter.name, "layout": adapter_layout(self.sft_adapter),
            "order": {"epochs": epochs, "seed": seed, "order": order},
            "args": _args_record(args), "lora": _lora_record(lora), "versions": _versions()})
        default = cache.cache_dir() / "adapters" / f"dpo-{cache.fingerprint(self.record)}"
        self.directory = Path(directory or default)
        saved = self._saved()
        if saved is not None and {k: saved.get(k) for k in self.record} != self.record:
            raise ValueError(f"{self.directory} holds a different DPO run; give this one its own "
                             "directory (or none: the default is keyed by the run)")

    def _saved(self) -> dict | None:
        meta = self.directory / "align.json"
        return json.loads(meta.read_text()) if meta.exists() else None

    @property
    def finished(self) -> bool:
        """Whether this run was trained and saved before (then `result()` loads it)."""
        return (self.directory / "align.json").exists()

    @property
    def base(self) -> Path:
        """The merged SFT model (`merged_model`), built beside the run's directory once."""
        return merged_model(self.sft_adapter,
                            self.directory.with_name(self.sft_adapter.name + "-merged"))

    def model(self) -> PreTrainedModel:
        """The merged SFT model, fp32, freshly loaded after seeding with `args.seed` (so the LoRA
        weights `DPOTrainer` adds next start the same way every time)."""
        import torch
        from transformers import AutoModelForCausalLM, set_seed

        set_seed(self.args.seed)
        return AutoModelForCausalLM.from_pretrained(self.base, dtype=torch.float32)

    def tokenizer(self) -> PreTrainedTokenizerBase:
        """The merged model's tokenizer (padding with the end token when it has no pad token)."""
        from transformers import AutoTokenizer

        tokenizer = AutoTokenizer.from_pretrained(self.base)
        tokenizer.pad_token = tokenizer.pad_token or tokenizer.eos_token
        return tokenizer

    def dataset(self) -> Dataset:
        """The pairs in training order, all epochs ({"prompt", "chosen", "rejected"} rows)."""
        from datasets import Dataset

        return Dataset.from_list(self.rows)

    def train(self, trainer: DPOTrainer) -> AlignResult:
        """Train, then write the adapter (safetensors) and `align.json` (the record, the loss and
        rewards per step, the seconds) atomically to `directory`; a finished run is returned as
        it is. ValueError, before any training, if `trainer` does not use this run's `args` and
        LoRA config (edited since the run took its key?)."""
        if self.finished:
            return self.result()
        adapter = getattr(trainer.model, "peft_config", {}).get("default")
        if _args_record(trainer.args) != self.record["args"]:
            raise ValueError("the trainer's DPOConfig differs from the one the run was keyed by "
                             "(edited since?): build the DPORun again from the edited args")
        if adapter is None or ({**_lora_record(adapter), "target_modules": None}  # PEFT expands
                               != {**self.record["lora"], "target_modules": None}):
            raise ValueError("the trainer's LoRA config differs from the run's: pass "
                             "peft_config=run.lora")
        started = time.perf_counter()
        trainer.train()
        seconds = time.perf_counter() - started
        history = [{"step": log["step"], **{k: log[k] for k in log if k == "loss"
                                            or k.startswith("rewards/")}}
                   for log in trainer.state.log_history if "loss" in log]
        with cache.atomic_dir(self.directory) as tmp:
            trainer.model.save_pretrained(tmp)  # adapter_model.safetensors + adapter_config.json
            (tmp / "align.json").write_text(json.dumps({**self.record, "history": history,
                                                        "seconds": seconds}))
        with contextlib.suppress(OSError):  # TRL's working directory, if it left it empty
            os.rmdir(trainer.args.output_dir)
        return self.result()

    def result(self) -> AlignResult:
        """The finished run: the merged SFT base, the adapter, the training log, the seconds."""
        saved = self._saved()
        if saved is None:
            raise FileNotFoundError(f"{self.directory} holds no finished run (DPORun.train)")
        return AlignResult(self.base, self.directory, pd.DataFrame(saved["history"]),
                           saved["seconds"])


def align_dpo(pairs: list[dict], sft_adapter: Path, config: AlignConfig,
              directory: Path | None = None, progress: bool = True) -> AlignResult:
    """Chapter 7's DPO run with `config`'s settings (`dpo_args`, `lora_config`): trained once
    into `DPORun`'s directory (`directory` if given), loaded from it afterwards."""
    from trl import DPOTrainer

    args = dpo_args(config, scratch_dir(), progress)
    run = DPORun(pairs, sft_adapter, args, lora_config(config), epochs=config.epochs,
                 seed=config.seed, order=config.order, directory=directory)
    if not run.finished:
        run.train(DPOTrainer(model=run.model(), args=run.args, train_dataset=run.dataset(),
                             processing_class=run.tokenizer(), peft_config=run.lora))
    return run.result()


def margins(reranker: PointwiseReranker, pairs: list[dict]) -> np.ndarray:
    """The reranker's logit(yes) − logit(no) on each pair's prompt (for before/after plots;
    `PointwiseReranker.margins`: cached)."""
    return reranker.margins([p["prompt"] for p in pairs])
