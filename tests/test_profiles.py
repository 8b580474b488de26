"""The run-size profiles: FULL is the chapters' defaults, QUICK sets only parameters that exist
and is smaller everywhere, and `rar-lite evaluate` takes its sizes from the same object."""

from dataclasses import FrozenInstanceError, fields

import nbformat
import pytest
from conftest import ROOT

from rar_lite.book import build_book
from rar_lite.dialogue import real_reranker
from rar_lite.evaluation import harness
from rar_lite.experiments import loop_arms, profiles
from rar_lite.loop import feedback
from rar_lite.reranking.tune import TuneConfig


def _parameters(notebook: str) -> set[str]:
    """The names assigned in a chapter's parameters cell."""
    nb = nbformat.read(ROOT / "notebooks" / f"{notebook}.ipynb", as_version=4)
    cell = next(c for c in nb.cells if "parameters" in c.metadata.get("tags", []))
    return {line.split("=")[0].strip() for line in cell.source.splitlines()
            if "=" in line and not line.startswith("#")}


def test_full_is_the_chapters_defaults() -> None:
    full = profiles.FULL
    assert full.retriever_overrides() == {}  # to early stopping
    assert full.tune == TuneConfig(seed=0) and full.tune_conversations == 1000
    assert full.dialogue == real_reranker.DialogueTuning() and full.dev_turns is None
    assert full.arms == loop_arms.Sizes()
    assert harness.EvalConfig.from_profile("full") == harness.EvalConfig()
    assert full.loop_config(3) == feedback.LoopConfig(seed=3)  # chapter 5's loop, as cached
    assert all(p == {"PROFILE": "full"} for p in map(full.parameters, _chapters()))


def _chapters() -> list[str]:
    return [p.stem for p in build_book.toc_notebooks(ROOT)]


@pytest.mark.parametrize("notebook", _chapters())
def test_quick_sets_parameters_the_chapter_has(notebook: str) -> None:
    given = profiles.QUICK.parameters(notebook)
    assert given["PROFILE"] == "quick"
    unknown = set(given) - _parameters(notebook)
    assert not unknown, f"{notebook} has no parameter {sorted(unknown)}"


def test_quick_is_smaller_than_full() -> None:
    quick, full = profiles.QUICK, profiles.FULL
    assert quick.retriever_epochs and quick.retriever_epochs < 10
    assert quick.tune.steps < full.tune.steps and quick.tune_conversations < full.tune_conversations
    assert quick.loop_train < full.loop_train and 1 <= quick.loop_rounds <= full.loop_rounds
    assert quick.dialogue.tune.steps < full.dialogue.tune.steps and quick.dev_turns
    for size in fields(loop_arms.Sizes):
        small, big = getattr(quick.arms, size.name), getattr(full.arms, size.name)
        assert big is None or small <= big, size.name
    config, default = harness.EvalConfig.from_profile("quick"), harness.EvalConfig()
    assert config.profile == "quick" and config.sizes() is quick
    assert config.n_simulated < default.n_simulated and len(config.seeds) <= len(default.seeds)
    # fewer candidates everywhere: the reranker's K, the loop's sets, the judge's pools
    assert 10 <= quick.k < full.k and config.k == quick.k and quick.dialogue.k <= quick.k
    assert quick.loop_config(1, sets=3) == feedback.LoopConfig(rounds=quick.loop_rounds,
                                                                sets=3, k=quick.k, seed=1)


def test_overrides_win_and_names_are_checked() -> None:
    config = harness.EvalConfig.from_profile(profiles.QUICK, seeds=(3, 1), n_simulated=2)
    assert (config.seeds, config.n_simulated, config.n_real) == ((3, 1), 2, 4)
    assert profiles.get(profiles.QUICK) is profiles.QUICK
    with pytest.raises(ValueError, match="unknown profile 'fast'; choose from full, quick"):
        profiles.get("fast")
    with pytest.raises(ValueError, match="unknown profile"):
        harness.EvalConfig(profile="fast")


def test_parameters_are_json_and_the_profile_is_frozen() -> None:
    assert profiles.QUICK.parameters("notebooks/06_evaluation.ipynb") == {
        "PROFILE": "quick", "SEEDS": [0]}  # a tuple becomes a list papermill can write
    with pytest.raises(FrozenInstanceError):
        profiles.QUICK.loop_train = 1
    with pytest.raises(TypeError):
        profiles.QUICK.notebooks["05_feedback_loop"]["N_TEST"] = 1
