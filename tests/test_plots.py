"""Every figure of the book draws with labelled axes (headless)."""

import matplotlib

matplotlib.use("Agg")

import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

from rar_lite.book import plots


def _labelled(ax) -> bool:
    return bool(ax.get_xlabel()) and bool(ax.get_ylabel()) and bool(ax.get_title())


def test_corpus_figures(corpus: pd.DataFrame) -> None:
    assert _labelled(plots.plot_years(corpus))
    assert _labelled(plots.plot_genres(corpus))
    ax = plots.plot_long_tail(corpus["n_ratings"])
    assert _labelled(ax) and ax.get_xscale() == "log"
    assert "top 10% of movies" in ax.texts[0].get_text()


def test_other_figures() -> None:
    narrowing = pd.DataFrame({"by_history": [3000, 3100], "by_words": [0, 40]})
    assert _labelled(plots.plot_narrowing(narrowing))
    lam = np.exp(1j * np.linspace(0, 6, 16)) * np.linspace(0.8, 0.99, 16)
    assert all(_labelled(ax) for ax in plots.plot_lru_ring(lam).axes)
    history = pd.DataFrame({"epoch": [1, 2], "loss": [8.0, 7.5], "valid_recall@10": [0.1, 0.2]})
    assert all(_labelled(ax) for ax in plots.plot_training_curves({"m": history}).axes)
    ax = plots.plot_position_bias({"a": np.array([0.5, 0.25, 0.25])})
    assert _labelled(ax) and len(ax.lines) == 2  # the reranker and the uniform line
    tuning = pd.DataFrame({"step": [1, 2, 3], "loss": [0.7, 0.6, 0.5], "margin": [0, 1, 2]})
    assert all(_labelled(ax) for ax in plots.plot_tuning(tuning).axes)
    curve = pd.DataFrame({"ndcg@10": [0.3, 0.5, 0.6], "recall@10": [0.5, 0.8, 0.9]},
                         index=pd.Index([0, 50, 100], name="step"))
    (ax,) = plots.plot_tuning_curve(curve).axes
    assert _labelled(ax) and list(ax.get_xticks()) == [0, 50, 100]
    assert [list(line.get_ydata()) for line in ax.lines] == [[0.3, 0.5, 0.6], [0.5, 0.8, 0.9]]
    rounds = pd.DataFrame({"round": [1, 2], "reward": [0.3, 0.4], "valid ndcg@10": [0.07, 0.08],
                           "log_ratio": [0.0, 0.5]})
    curves = plots.plot_loop_curves(rounds, start={"ndcg@10": 0.07})
    assert all(_labelled(ax) for ax in curves.axes)
    assert curves.axes[1].get_legend() is not None  # the SFT reference line
    diagram = plots.plot_feedback_loop()
    assert diagram.get_title() and [t.get_text() for t in diagram.texts] == [
        label for _, _, label in plots.LOOP_BOXES.values()]
    assert sum(type(p).__name__ == "FancyArrowPatch" for p in diagram.patches) == 6


def test_popularity_bias_figure() -> None:
    buckets = pd.DataFrame({"head": [0.2, 0.3, 5], "tail": [0.0, 0.1, 7]},
                           index=["Popularity", "RAR, SFT retriever", "pairs (targets)"])
    recommended = pd.DataFrame({"system": ["Popularity", "Popularity", "targets (ground truth)"],
                                "interactions": [300.0, 250.0, 0.0]})
    fig = plots.plot_popularity_bias(buckets, recommended)
    left, right = fig.axes
    assert all(_labelled(ax) for ax in (left, right))
    assert "head: 5 targets" in left.get_title() and right.get_xscale() == "log"
    assert len(left.patches) >= 4  # 2 systems x 2 buckets (the size row is not a system)
    assert [t.get_text() for t in right.get_yticklabels()] == ["Popularity",
                                                               "targets (ground truth)"]


def test_dpo_figure() -> None:
    history = pd.DataFrame({"step": [1, 2], "loss": [0.69, 0.6], "rewards/margins": [0, 0.2],
                            "rewards/accuracies": [0.0, 0.75]})
    fig = plots.plot_dpo(history)
    assert len(fig.axes) == 3 and all(_labelled(ax) for ax in fig.axes)
    assert np.isclose(fig.axes[0].lines[1].get_ydata()[0], np.log(2))  # the start


def test_pipeline_figure_draws_every_box_and_saves_reproducibly(tmp_path) -> None:
    ax = plots.plot_pipeline()
    texts = [t.get_text() for t in ax.texts]
    for _, _, label in plots.PIPELINE_BOXES.values():
        assert label in texts
    assert any("feedback loop" in t for t in texts) and any("ch. 7" in t for t in texts)
    arrows = [p for p in ax.patches if type(p).__name__ == "FancyArrowPatch"]
    assert len(arrows) == len(plots.PIPELINE_ARROWS) + 2  # + the two learning signals
    plots.save_pipeline_figure(tmp_path / "a" / "pipeline.svg")
    plots.save_pipeline_figure(tmp_path / "b" / "pipeline.svg")
    first = (tmp_path / "a" / "pipeline.svg").read_bytes()
    assert first.startswith(b"<?xml") and b"<svg" in first
    assert first == (tmp_path / "b" / "pipeline.svg").read_bytes()
    ax.figure.clf()


def test_head_loop_diagnostics_figure() -> None:
    rows = []
    for arm in ("c", "e"):
        for seed in (0, 1):
            for round_ in (0, 1, 2):
                rows.append({"arm": arm, "seed": seed, "round": round_,
                             "selection": 0.2 + 0.01 * round_ * (arm == "c"),
                             **({} if round_ == 0 else {
                                 "pair share": 0.4, "gap mean": 0.3 + seed, "gap q25": 0.1,
                                 "gap q75": 0.5, "chosen holds target": 0.9, "loss": 0.69,
                                 "margin": 0.01 * round_})})
    for seed in (0, 1):  # a distillation arm: its own columns, none of the DPO ones
        for round_ in (0, 1, 2):
            rows.append({"arm": "f", "seed": seed, "round": round_, "selection": 0.25,
                         "agreement": 0.1 * round_,
                         **({} if round_ == 0 else {"distill loss": 5.0 - round_})})
    fig = plots.plot_head_loop(pd.DataFrame(rows))
    assert len(fig.axes) == len(plots.HEAD_LOOP_PANELS)
    assert all(_labelled(ax) for ax in fig.axes)
    gap = fig.axes[1]
    assert len(gap.lines) == 2 and len(gap.collections) == 2  # a line and a band per arm
    assert list(gap.lines[0].get_ydata()) == [0.8, 0.8]  # seeds averaged: (0.3 + 1.3) / 2
    assert list(fig.axes[5].lines[0].get_xdata()) == [0, 1, 2]  # the start is on the curve
    assert [t.get_text() for t in fig.axes[0].get_legend().get_texts()] == ["arm c", "arm e"]
    assert [t.get_text() for t in fig.axes[5].get_legend().get_texts()] == ["arm c", "arm e",
                                                                            "arm f"]
    distill, agree = fig.axes[6], fig.axes[7]
    assert len(distill.lines) == 1 and list(distill.lines[0].get_ydata()) == [4.0, 3.0]
    assert list(agree.lines[0].get_xdata()) == [0, 1, 2]  # the start's agreement is drawn
    assert all(len(fig.axes[n].lines) == 2 for n in range(5))  # no DPO panel draws arm f


def test_temperature_figure_draws_one_line_per_temperature_and_the_target() -> None:
    inclusion = {0.5: np.array([1.0, 0.9, 0.1]), 2.0: np.array([0.6, 0.7, 0.7])}
    ax = plots.plot_temperature(inclusion, k=2, target_rank=3)
    assert _labelled(ax)
    labels = [line.get_label() for line in ax.lines]
    assert labels[:2] == ["τ = 0.5", "τ = 2"] and "target (rank 3)" in labels
    np.testing.assert_allclose(ax.lines[1].get_ydata(), [0.6, 0.7, 0.7])
    assert "target (rank 3)" not in [line.get_label() for line in
                                     plots.plot_temperature(inclusion, k=2).lines]
