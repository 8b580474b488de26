"""Chapter 7: aligning the reranker itself with preference optimisation (TRL's `DPOTrainer`).

RAR keeps its LLM frozen; with a small open model we can also teach the generator from its own
mistakes. Starting from chapter 4's supervised (SFT) pointwise reranker:

1. **Mine pairs** (`preference_pairs`): on training conversations, the SFT reranker scores the
   retrieved candidates (the target among them); its own best-scored *wrong* candidate is the
   mistake to unlearn. Each conversation gives two DPO examples on the pointwise prompt: for the
   target's prompt, chosen "yes" / rejected "no"; for the mistake's prompt, chosen "no" /
   rejected "yes".
2. **DPO with LoRA** (`align_dpo`): the SFT adapter is merged into the base weights (saved as a
   plain safetensors model), TRL's `DPOTrainer` trains a new LoRA adapter on top, and the
   reference policy is that merged SFT model (PEFT's adapter switched off). The sigmoid DPO loss
   on a yes/no completion pushes the score margin logit(yes) − logit(no) up on targets and down
   on the model's own mistakes, measured relative to the SFT model (β keeps it close).
   **Batches hold whole conversations** (`training_order`): a conversation's target pair and
   mistake pair share a step, so their pushes on the yes/no *prior* largely cancel and the
   step's gain has to come from telling the two movies apart — chapter 4's group-loss lesson,
   applied to DPO.
   With TRL's default random sampling the two pairs land in different steps and each step
   drags the prior towards whichever kind its batch holds more of (`AlignConfig.order`
   chooses; `scripts/bench_align.py` measures both).
3. The result loads back by path through chapter 4's backend:
   `TransformersBackend(model=result.base, adapter=result.adapter)`.

Runs are cached in a directory keyed by the pairs and the config (`align.json` records both);
a finished run is loaded, not retrained.
"""

from __future__ import annotations

import json
import shutil
import time
import warnings
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import pandas as pd
from tqdm.auto import tqdm

from rar_lite import cache
from rar_lite.conversations import Conversation
from rar_lite.llm import smollm2_path
from rar_lite.rerank import PointwiseReranker

#: How `training_order` arranges the pairs (`AlignConfig.order`).
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
        if self.order not in ORDERS:
            raise ValueError(f"order must be one of {', '.join(ORDERS)}, got {self.order!r}")
        if self.batch_size < 2 or self.batch_size % 2:
            raise ValueError(f"batch_size must be even (a conversation's target and mistake "
                             f"pairs share a step), got {self.batch_size}")
        if self.epochs < 1:
            raise ValueError(f"epochs must be at least 1, got {self.epochs}")


@dataclass
class AlignResult:
    """The merged SFT model (the new base), the DPO adapter, the training log, the time."""

    base: Path
    adapter: Path
    history: pd.DataFrame  # step, loss, rewards/margins, rewards/accuracies
    seconds: float


def preference_pairs(reranker: PointwiseReranker, conversations: list[Conversation],
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
    import torch
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, AutoTokenizer

    directory = Path(directory)
    if (directory / "config.json").exists():
        return directory
    source = smollm2_path()
    base = AutoModelForCausalLM.from_pretrained(source, dtype=torch.float32)
    merged = PeftModel.from_pretrained(base, str(adapter)).merge_and_unload()
    with cache.atomic_dir(directory) as tmp:
        merged.save_pretrained(tmp, safe_serialization=True)
        AutoTokenizer.from_pretrained(source).save_pretrained(tmp)
    return directory


def align_dpo(pairs: list[dict], sft_adapter: Path, config: AlignConfig,
              directory: Path | None = None, progress: bool = True) -> AlignResult:
    """DPO-train a LoRA adapter on top of the merged SFT model (see the module docstring); the
    adapter and `align.json` are written atomically to `directory`, by default
    `cache_dir()/adapters/dpo-<fingerprint of the pairs, config and training order>`: a run
    that differs in any of them gets its own directory, so answers the response cache holds for
    one adapter are never served for another. A finished run in `directory` is loaded."""
    import torch
    from datasets import Dataset
    from peft import LoraConfig
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from trl import DPOConfig, DPOTrainer

    if not pairs:
        raise ValueError("no preference pairs to train on")
    record = {"config": asdict(config), "sft_adapter": Path(sft_adapter).name,
              "pairs": cache.fingerprint([{k: p[k] for k in ("prompt", "chosen", "rejected")}
                                          for p in pairs]), "n_pairs": len(pairs)}
    default = cache.cache_dir() / "adapters" / f"dpo-{cache.fingerprint(record)}"
    directory = Path(directory or default)
    base = merged_model(Path(sft_adapter), directory.with_name(Path(sft_adapter).name + "-merged"))
    meta = directory / "align.json"
    if meta.exists():
        saved = json.loads(meta.read_text())
        if {k: saved.get(k) for k in record} != record:
            raise ValueError(f"{directory} holds a different DPO run; give this one its own "
                             "directory (or none: the default is keyed by the run)")
        return AlignResult(base, directory, pd.DataFrame(saved["history"]), saved["seconds"])
    torch.manual_seed(config.seed)
    model = AutoModelForCausalLM.from_pretrained(base, dtype=torch.float32)
    tokenizer = AutoTokenizer.from_pretrained(base)
    tokenizer.pad_token = tokenizer.pad_token or tokenizer.eos_token
    with cache.atomic_dir(directory) as tmp:
        args = DPOConfig(output_dir=str(tmp / "trainer"), beta=config.beta,
                         learning_rate=config.lr, num_train_epochs=1,  # epochs: training_order
                         max_steps=config.max_steps, per_device_train_batch_size=config.batch_size,
                         gradient_accumulation_steps=1, lr_scheduler_type="constant",
                         warmup_steps=0, logging_steps=1, save_strategy="no", report_to=[],
                         use_cpu=not torch.cuda.is_available(), seed=config.seed,
                         data_seed=config.seed, max_length=512, disable_tqdm=not progress,
                         dataloader_num_workers=0, precompute_ref_log_probs=True,
                         train_sampling_strategy="sequential")
        lora = LoraConfig(r=config.lora_r, lora_alpha=config.lora_alpha, lora_dropout=0.0,
                          target_modules="all-linear", task_type="CAUSAL_LM")
        dataset = Dataset.from_list([{k: p[k] for k in ("prompt", "chosen", "rejected")}
                                     for p in training_order(pairs, config.epochs, config.seed,
                                                              config.order)])
        started = time.perf_counter()
        with warnings.catch_warnings():  # transformers 5.24 renames gradient checkpointing (noise)
            warnings.simplefilter("ignore", FutureWarning)
            trainer = DPOTrainer(model=model, args=args, train_dataset=dataset,
                                 processing_class=tokenizer, peft_config=lora)
            trainer.train()
        seconds = time.perf_counter() - started
        history = [{"step": log["step"], **{k: log[k] for k in log if k == "loss"
                                            or k.startswith("rewards/")}}
                   for log in trainer.state.log_history if "loss" in log]
        trainer.model.save_pretrained(tmp)  # adapter_model.safetensors + adapter_config.json
        shutil.rmtree(tmp / "trainer", ignore_errors=True)
        (tmp / "align.json").write_text(json.dumps({**record, "history": history,
                                                    "seconds": seconds}))
    return AlignResult(base, directory, pd.DataFrame(history), seconds)


def margins(reranker: PointwiseReranker, pairs: list[dict]) -> np.ndarray:
    """The reranker's logit(yes) − logit(no) on each pair's prompt (for before/after plots)."""
    backend = reranker.backend
    logits = backend.last_logits([p["prompt"] for p in pairs])
    return (logits[:, reranker.yes] - logits[:, reranker.no]).numpy()
