"""Chapter 7: mining DPO pairs from the reranker's own mistakes, a tiny TRL DPO run whose
adapter loads back through the chapter-4 backend and moves the margins the right way, and the
run's cache key: every setting that can change the adapter, the notebook's `DPOConfig` included."""

from __future__ import annotations

import ast
import json
from dataclasses import replace
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest
from conftest import ROOT

from rar_lite import quiet_dependency_deprecations
from rar_lite.backends import llm_local
from rar_lite.data.conversations import Conversation, Turn
from rar_lite.reranking import align, rerank, tune

CHAPTER = ROOT / "notebooks" / "07_align_llm_with_trl.ipynb"


@pytest.fixture(autouse=True)
def _quiet_dependencies() -> None:
    quiet_dependency_deprecations()  # pytest resets the warning filters for each test


def _conversation(cid: str, target: int, text: str) -> Conversation:
    return Conversation(cid, (Turn("seeker", text),), (), (target,), "test")


class _FakeReranker:
    """Ranks by a fixed order and writes "prompt(item)" prompts."""

    def __init__(self, order: list[int]) -> None:
        self.order = order

    def rank(self, conversation, candidates):
        return rerank.Ranking(sorted(candidates, key=self.order.index))

    def prompt_texts(self, conversation, candidates):
        return [f"{conversation.conversation_id}: prompt({c})" for c in candidates]


def test_pairs_come_from_the_models_own_mistake() -> None:
    reranker = _FakeReranker([7, 3, 5, 9])
    conversations = [_conversation("a", 5, "x"), _conversation("b", 7, "y"),
                     _conversation("c", 4, "z")]
    pairs = align.mistake_pairs(reranker, conversations, [[3, 5, 9], [9, 7, 3], [3, 9]])
    assert [(p["conversation_id"], p["kind"], p["prompt"], p["chosen"], p["rejected"])
            for p in pairs] == [
        ("a", "target", "a: prompt(5)", "yes", "no"),
        ("a", "mistake", "a: prompt(3)", "no", "yes"),  # 3 is ranked above the target 5
        ("b", "target", "b: prompt(7)", "yes", "no"),
        ("b", "mistake", "b: prompt(3)", "no", "yes"),  # the best wrong one, even if below
    ]  # "c": its target is not among the candidates, no pair


@pytest.fixture(scope="module")
def items(corpus: pd.DataFrame) -> list[int]:
    titles = ["Heat", "Toy Story", "Casablanca", "Jumanji"]
    return [int(corpus.index[corpus.title == t][0]) for t in titles]


def test_tiny_dpo_run_moves_margins_and_loads_back(corpus, items, tmp_path: Path) -> None:
    texts = corpus.set_index("item_id")["text"]
    sft = tune.tune_pointwise(
        [tune.Example("a funny animated movie for kids", texts[items[1]], 1, 0),
         tune.Example("a funny animated movie for kids", texts[items[0]], 0, 0)],
        tune.TuneConfig(steps=1, batch_size=2), tmp_path / "sft", progress=False)
    reranker = rerank.PointwiseReranker(llm_local.TransformersBackend(adapter=sft.adapter), corpus)
    conversations = [_conversation("kids", items[1], "A funny animated movie for my kids."),
                     _conversation("heist", items[0], "A tense crime thriller with a heist.")]
    pairs = align.mistake_pairs(reranker, conversations, [items, items])
    assert len(pairs) == 4
    config = align.AlignConfig(lr=2e-4, batch_size=4, max_steps=2, beta=0.1)
    result = align.align_dpo(pairs, sft.adapter, config, tmp_path / "dpo", progress=False)
    assert (result.adapter / "adapter_model.safetensors").exists()
    assert (result.base / "model.safetensors").exists()
    assert len(result.history) == 2 and {"loss", "rewards/margins"} <= set(result.history)
    assert result.history["loss"].iloc[0] == pytest.approx(np.log(2), abs=1e-3)  # π = π_ref

    aligned = rerank.PointwiseReranker(llm_local.TransformersBackend(model=result.base,
                                                               adapter=result.adapter), corpus)
    # the aligned model reads its scores where the SFT model did (after the card)
    assert aligned.backend.layout == reranker.backend.layout == "card"
    before, after = align.margins(reranker, pairs), align.margins(aligned, pairs)
    wanted = np.array([1 if p["chosen"] == "yes" else -1 for p in pairs])
    # DPO raised the log-ratio of chosen over rejected answers on its pairs...
    assert result.history["rewards/margins"].iloc[-1] > 0
    assert result.history["loss"].iloc[-1] < np.log(2)
    # ...so on average the yes/no margin moved the asked way: up on targets, down on mistakes
    assert float(np.mean((after - before) * wanted)) > 0
    again = align.align_dpo(pairs, sft.adapter, config, tmp_path / "dpo", progress=False)
    assert again.seconds == result.seconds  # a finished run is loaded, not retrained
    other = align.AlignConfig(lr=1e-4, batch_size=4, max_steps=2, beta=0.1)
    with pytest.raises(ValueError, match="holds a different DPO run"):  # never overwritten
        align.align_dpo(pairs, sft.adapter, other, tmp_path / "dpo", progress=False)


def test_training_order_keeps_a_conversations_pairs_in_one_step() -> None:
    pairs = [{"conversation_id": c, "kind": k} for c in "abcde" for k in ("target", "mistake")]
    order = align.training_order(pairs, epochs=2, seed=0)
    assert len(order) == 2 * len(pairs)
    for epoch in (order[:10], order[10:]):
        assert sorted(map(id, epoch)) == sorted(map(id, pairs))  # every pair once per epoch
        for step in range(0, 10, 2):  # batch size 2: each step is one whole conversation
            first, second = epoch[step], epoch[step + 1]
            assert first["conversation_id"] == second["conversation_id"]
            assert (first["kind"], second["kind"]) == ("target", "mistake")
    epochs = [[p["conversation_id"] for p in e[::2]] for e in (order[:10], order[10:])]
    assert epochs[0] != epochs[1]  # reshuffled per epoch (seed 0 gives different orders)
    assert align.training_order(pairs, 2, seed=0) == order  # seeded
    shuffled = align.training_order(pairs, 1, seed=0, order="random")
    assert sorted(map(id, shuffled)) == sorted(map(id, pairs)) and shuffled != pairs


@pytest.mark.parametrize(("field", "value", "message"), [
    ("batch_size", 3, "batch_size must be even"), ("batch_size", 0, "batch_size must be even"),
    ("epochs", 0, "epochs must be at least 1"), ("order", "sorted", "order must be one of")])
def test_align_config_rejects_bad_values(field: str, value: object, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        align.AlignConfig(**{field: value})


def _pairs(n: int = 3) -> list[dict]:
    return [{"prompt": f"{c}: prompt({i})", "chosen": a, "rejected": b, "conversation_id": c,
             "kind": kind}
            for i, c in enumerate("abcdefgh"[:n])
            for kind, a, b in (("target", "yes", "no"), ("mistake", "no", "yes"))]


def _run(config: align.AlignConfig = align.AlignConfig(), pairs: list[dict] | None = None,
         output_dir: str = "out", **changes: object) -> align.DPORun:
    """A DPORun of the package's settings (no model is loaded), `changes` set on its DPOConfig."""
    args = align.dpo_args(config, output_dir)
    for field, value in changes.items():
        setattr(args, field, value)
    return align.DPORun(pairs or _pairs(), Path("pointwise-sft"), args, align.lora_config(config),
                        epochs=config.epochs, seed=config.seed, order=config.order)


def test_run_directory_is_keyed_by_everything_that_changes_the_adapter() -> None:
    run = _run()
    assert run.directory.parent.name == "adapters" and run.directory.name.startswith("dpo-")
    assert _run().directory == run.directory  # equal settings, new objects: the same run
    same = align.DPORun(_pairs(), Path("pointwise-sft"), run.args, run.lora)
    assert same.directory == run.directory  # the same objects again
    unkeyed = _run(output_dir="elsewhere", logging_steps=10, disable_tqdm=False, report_to=["x"])
    assert unkeyed.directory == run.directory  # where TRL writes and what it logs: not the key
    other = {
        "beta": _run(replace(align.AlignConfig(), beta=0.5)),
        "a DPOConfig field AlignConfig lacks": _run(weight_decay=0.01),
        "loss_type": _run(loss_type=["ipo"]),
        "use_cpu": _run(use_cpu=not run.args.use_cpu),
        "LoRA rank": _run(replace(align.AlignConfig(), lora_r=8)),
        "epochs": _run(replace(align.AlignConfig(), epochs=2)),
        "order seed": _run(replace(align.AlignConfig(), seed=1)),
        "order": _run(replace(align.AlignConfig(), order="random")),
        "pairs": _run(pairs=_pairs(4)),
    }
    directories = [r.directory for r in other.values()]
    assert run.directory not in directories and len(set(directories)) == len(directories)
    assert run.record["args"]["beta"] == 0.1 and "output_dir" not in run.record["args"]
    assert not run.finished
    with pytest.raises(FileNotFoundError, match="no finished run"):
        run.result()


class _Trained(Exception):
    """Raised by `_FakeTrainer.train`: the run's checks passed and training began."""


class _FakeTrainer:
    def __init__(self, args, lora) -> None:
        self.args, self.model = args, SimpleNamespace(peft_config={"default": lora})

    def train(self) -> None:
        raise _Trained


def test_train_refuses_a_trainer_with_other_settings() -> None:
    run = _run()
    expanded = align.lora_config(align.AlignConfig())
    expanded.target_modules = {"q_proj", "v_proj"}  # what PEFT does to "all-linear" in place
    with pytest.raises(_Trained):  # the run's own settings (PEFT-expanded): training starts
        run.train(_FakeTrainer(run.args, expanded))
    with pytest.raises(ValueError, match="LoRA config differs"):
        run.train(_FakeTrainer(run.args, align.lora_config(replace(align.AlignConfig(), lora_r=8))))
    run.args.beta = 0.5  # edited after the run took its key: never trained under the old key
    with pytest.raises(ValueError, match="DPOConfig differs"):
        run.train(_FakeTrainer(run.args, run.lora))


def test_run_refuses_shuffled_sampling_and_odd_batches() -> None:
    with pytest.raises(ValueError, match="must be 'sequential'"):
        _run(train_sampling_strategy="random")
    with pytest.raises(ValueError, match="batch_size must be even"):
        _run(per_device_train_batch_size=3)
    assert _run(replace(align.AlignConfig(), order="random"), per_device_train_batch_size=3)
    with pytest.raises(ValueError, match="no preference pairs"):
        align.DPORun([], Path("sft"), align.dpo_args(align.AlignConfig(), "out"),
                     align.lora_config(align.AlignConfig()))


def _chapter_cell(nb: dict, marker: str) -> str:
    (source,) = ["".join(c["source"]) for c in nb["cells"]
                 if c["cell_type"] == "code" and marker in "".join(c["source"])]
    return source


def test_chapter_builds_the_same_run_as_the_package() -> None:
    """Chapter 7 writes its DPOConfig, LoraConfig and DPORun out; with the chapter's parameters
    they key the same run as `align_dpo`'s `dpo_args` and `lora_config`, so the two never drift
    apart (bench_align.py and the tests train what the book shows)."""
    import torch
    from peft import LoraConfig
    from trl import DPOConfig

    nb = json.loads(CHAPTER.read_text(encoding="utf-8"))
    params: dict = {}
    exec(_chapter_cell(nb, "# Parameters"), params)  # noqa: S102 - the repository's own notebook
    cell = ast.parse(_chapter_cell(nb, "DPOConfig("))
    wanted = [node for node in cell.body if isinstance(node, ast.Assign)
              and {t.id for t in node.targets if isinstance(t, ast.Name)} & {"args", "lora", "run"}]
    assert len(wanted) == 3, "the chapter assigns args, lora and run"
    space = {**params, "max_steps": -1, "pairs": _pairs(), "align": align, "torch": torch,
             "DPOConfig": DPOConfig, "LoraConfig": LoraConfig,
             "tuning": SimpleNamespace(adapter=Path("pointwise-sft"))}
    exec(compile(ast.Module(wanted, type_ignores=[]), str(CHAPTER), "exec"), space)  # noqa: S102
    config = align.AlignConfig(beta=params["DPO_BETA"], lr=params["DPO_LR"],
                               epochs=params["DPO_EPOCHS"], batch_size=params["DPO_BATCH"],
                               max_steps=-1, seed=params["SEED"], order=params["DPO_ORDER"])
    package = _run(config)
    assert space["run"].record == package.record
    assert space["run"].directory == package.directory
