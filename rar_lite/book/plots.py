"""Figures of the book (seaborn/matplotlib). Each function draws one labelled figure and returns
its axes, so a notebook cell is a single call."""

from __future__ import annotations

import warnings

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import seaborn as sns

from rar_lite.data import popularity


def plot_years(corpus: pd.DataFrame, ax: plt.Axes | None = None) -> plt.Axes:
    """Release years of the corpus, stacked by source."""
    ax = ax or plt.subplots(figsize=(8, 3.5))[1]
    data = corpus[corpus["year"].notna()].assign(year=lambda f: f["year"].astype(int))
    sns.histplot(data=data, x="year", hue="sources", multiple="stack", binwidth=2, ax=ax)
    ax.set(xlabel="release year", ylabel="movies", title="Movies per release year, by source")
    return ax


def plot_genres(corpus: pd.DataFrame, ax: plt.Axes | None = None) -> plt.Axes:
    """How many corpus movies carry each genre."""
    ax = ax or plt.subplots(figsize=(8, 4))[1]
    counts = corpus["genres"].explode().dropna().value_counts()
    sns.barplot(x=counts.values, y=counts.index, color="tab:blue", ax=ax)
    ax.set(xlabel="movies", ylabel="genre", title="Genres in the corpus (a movie has several)")
    return ax


def plot_long_tail(n_ratings: pd.Series, ax: plt.Axes | None = None) -> plt.Axes:
    """Ratings per movie, most rated first, on a log scale: the long tail of popularity."""
    ax = ax or plt.subplots(figsize=(8, 3.5))[1]
    values = np.sort(n_ratings[n_ratings > 0].to_numpy())[::-1]
    ax.plot(np.arange(1, values.size + 1), values, color="tab:red")
    ax.set(xscale="log", yscale="log", xlabel="movie rank by number of ratings",
           ylabel="ratings", title="The long tail: ratings per MovieLens movie")
    share = popularity.head_share(values, 0.1)
    ax.text(0.55, 0.85, f"top 10% of movies get {share:.0%} of ratings",
            transform=ax.transAxes)
    return ax


def plot_narrowing(narrowing: pd.DataFrame, ax: plt.Axes | None = None) -> plt.Axes:
    """Candidates left open per test conversation: by the history alone vs. by the words."""
    ax = ax or plt.subplots(figsize=(8, 3.5))[1]
    long = pd.DataFrame({
        "items left open": np.concatenate([narrowing["by_history"], narrowing["by_words"]]),
        "what is known": ["history only"] * len(narrowing) + ["history + stated slots"]
        * len(narrowing),
    })
    long["items left open"] = long["items left open"].clip(lower=1)  # log scale: 0 shown as 1
    sns.histplot(data=long, x="items left open", hue="what is known", log_scale=True,
                 bins=40, ax=ax)
    ax.set(xlabel="catalogue items consistent with what the seeker said (log scale)",
           ylabel="test conversations", title="How much the seeker's words narrow the search")
    return ax


def plot_lru_ring(eigenvalues: np.ndarray, steps: int = 60) -> plt.Figure:
    """The LRU picture: eigenvalues on a ring in the complex plane (left) and how fast the
    memory of one input fades, abs(λ)^t, for the slowest, median and fastest channel (right)."""
    fig, (left, right) = plt.subplots(1, 2, figsize=(9, 3.6))
    theta = np.linspace(0, 2 * np.pi, 200)
    for radius in (0.8, 0.99, 1.0):
        left.plot(radius * np.cos(theta), radius * np.sin(theta), lw=0.8,
                  color="black" if radius == 1.0 else "grey", ls="-" if radius == 1.0 else "--")
    left.scatter(eigenvalues.real, eigenvalues.imag, s=8, color="tab:blue")
    left.set(aspect="equal", xlabel="Re λ", ylabel="Im λ",
             title="eigenvalues λ (ring 0.8 ≤ |λ| ≤ 0.99)")
    moduli = np.sort(np.abs(eigenvalues))
    t = np.arange(steps)
    for label, r in (("slowest", moduli[-1]), ("median", np.median(moduli)),
                     ("fastest", moduli[0])):
        right.plot(t, r**t, label=f"{label} |λ| = {r:.3f}")
    right.set(xlabel="items ago", ylabel="weight |λ|^t", title="how long an item is remembered")
    right.legend()
    fig.tight_layout()
    return fig


def plot_training_curves(histories: dict[str, pd.DataFrame],
                         metric: str = "valid_recall@10") -> plt.Figure:
    """Training loss and a validation metric per epoch, one line per model."""
    fig, (left, right) = plt.subplots(1, 2, figsize=(10, 3.5))
    for name, history in histories.items():
        left.plot(history["epoch"], history["loss"], label=name)
        right.plot(history["epoch"], history[metric], label=name)
    left.set(xlabel="epoch", ylabel="training cross-entropy", title="training loss")
    right.set(xlabel="epoch", ylabel=metric.replace("valid_", "validation "),
              title="validation accuracy (early stopping watches this)")
    left.legend()
    right.legend()
    fig.tight_layout()
    return fig


def plot_position_bias(shares: dict[str, np.ndarray], ax: plt.Axes | None = None) -> plt.Axes:
    """For each reranker, the share of conversations whose top-ranked candidate had been shown
    at each position, against the uniform 1/K line."""
    ax = ax or plt.subplots(figsize=(8, 3))[1]
    k = 1
    for name, values in shares.items():
        k = len(values)
        ax.plot(range(1, k + 1), values, marker="o", label=name)
    ax.axhline(1 / k, color="grey", ls="--", label="uniform (1/K)")
    ax.set(xlabel="position at which the top-ranked candidate was shown (A = 1)",
           ylabel="share of conversations", title="Position bias")
    ax.legend()
    return ax


def plot_tuning(history: pd.DataFrame, window: int = 10) -> plt.Figure:
    """Loss and positive-negative score margin per step of a tuning run (rolling means)."""
    smooth = history.rolling(window, min_periods=1).mean()
    fig, (left, right) = plt.subplots(1, 2, figsize=(10, 3))
    left.plot(history["step"], smooth["loss"])
    left.set(xlabel="step", ylabel=f"loss ({window}-step mean)", title="pointwise LoRA: loss")
    right.plot(history["step"], smooth["margin"], color="tab:green")
    right.set(xlabel="step", ylabel="score(yes) − score(no)", title="margin positives − negatives")
    fig.tight_layout()
    return fig


def plot_tuning_curve(curve: pd.DataFrame) -> plt.Figure:
    """NDCG@10 and Recall@10 of the reranker by number of tuning steps (`tuning_curve`)."""
    fig, ax = plt.subplots(figsize=(6, 3))
    for column, marker in (("ndcg@10", "o"), ("recall@10", "s")):
        ax.plot(curve.index, curve[column], marker=marker, label=column)
    ax.set(xlabel="tuning steps (0: untuned)", ylabel="on validation cases",
           title="pointwise LoRA: quality by step", ylim=(0, 1), xticks=list(curve.index))
    ax.legend(loc="lower right")
    fig.tight_layout()
    return fig


#: The feedback-loop figure's boxes, (x, y, label) on axes of 0-10 by 0-4, and arrows.
LOOP_BOXES: dict[str, tuple[float, float, str]] = {
    "retriever": (1.2, 3.0, "retriever π\n(history → item scores)"),
    "sets": (5.0, 3.0, "M candidate sets\n~ Plackett–Luce(π)"),
    "llm": (8.8, 3.0, "LLM reranks each set\n(reads the conversation)"),
    "reward": (8.8, 1.0, "reward = NDCG of the\ntarget in the LLM's ranking"),
    "pairs": (5.0, 1.0, "pairs: higher reward\nchosen over lower"),
    "dpo": (1.2, 1.0, "DPO update of π\n(π_ref = SFT retriever)"),
}
LOOP_ARROWS = tuple((a, b, "") for a, b in [("retriever", "sets"), ("sets", "llm"),
                                            ("llm", "reward"), ("reward", "pairs"),
                                            ("pairs", "dpo"), ("dpo", "retriever")])


def _box_diagram(ax: plt.Axes, boxes: dict[str, tuple[float, float, str]],
                 arrows: tuple[tuple[str, str, str], ...], colours: dict[str, str],
                 size: tuple[float, float]) -> None:
    """Rounded boxes of `size` centred at their (x, y) and labelled arrows between their edges
    (side to side, top to bottom, or corner to corner when slanted)."""
    from matplotlib.patches import FancyArrowPatch, FancyBboxPatch

    width, height = size
    for name, (x, y, label) in boxes.items():
        ax.add_patch(FancyBboxPatch((x - width / 2, y - height / 2), width, height,
                                    boxstyle="round,pad=0.05,rounding_size=0.15",
                                    facecolor=colours.get(name, "#e8f0fb"), edgecolor="#444444",
                                    lw=1.2))
        ax.text(x, y, label, ha="center", va="center", fontsize=9.5)
    for a, b, label in arrows:
        (xa, ya, _), (xb, yb, _) = boxes[a], boxes[b]
        vertical, horizontal = abs(xa - xb) < 1e-9, abs(ya - yb) < 1e-9
        if vertical:
            sign = np.sign(yb - ya)
            start, end = (xa, ya + sign * height / 2), (xb, yb - sign * height / 2)
        elif horizontal:
            sign = np.sign(xb - xa)
            start, end = (xa + sign * width / 2, ya), (xb - sign * width / 2, yb)
        else:
            sx, sy = np.sign(xb - xa), np.sign(yb - ya)
            start = (xa + sx * width / 2, ya + sy * (height / 2 - 0.1))
            end = (xb - sx * width / 2, yb - sy * (height / 2 - 0.1))
        ax.add_patch(FancyArrowPatch(start, end, arrowstyle="-|>", mutation_scale=16,
                                     color="#333333", lw=1.4))
        if label:  # beside a vertical arrow, above a horizontal or slanted one
            mx, my = np.add(start, end) / 2
            dx = 0.12 if vertical else 0.0 if horizontal else -0.12
            ax.text(mx + dx, my + (0 if vertical else 0.05), label, fontsize=8.5,
                    ha="left" if vertical else "center" if horizontal else "right",
                    va="center" if vertical else "bottom", color="#333333")
    ax.set_aspect("equal")
    ax.axis("off")


def plot_feedback_loop() -> plt.Axes:
    """The RAR feedback loop as a diagram: retriever -> sampled sets -> LLM -> rewards -> DPO."""
    ax = plt.subplots(figsize=(9, 3.6))[1]
    _box_diagram(ax, LOOP_BOXES, LOOP_ARROWS, {}, size=(3.1, 1.1))
    ax.set(xlim=(-0.5, 10.5), ylim=(0.3, 3.7), title="One round of the RAR feedback loop")
    return ax


def plot_loop_curves(history: pd.DataFrame, start: dict[str, float] | None = None) -> plt.Figure:
    """Per round: mean reward of the sampled sets, the retriever's validation NDCG@10 (with the
    SFT retriever's value, `start["ndcg@10"]`, as a dashed line), and its log-ratio to π_ref (a
    Monte-Carlo KL estimate)."""
    panels = [("reward", "NDCG@10", "Mean reward of the sampled sets"),
              ("valid ndcg@10", "NDCG@10", "Retriever, validation"),
              ("log_ratio", "nats", "log π(S) − log π_ref(S)")]
    panels = [p for p in panels if p[0] in history]
    fig, axes = plt.subplots(1, len(panels), figsize=(4 * len(panels), 3.2), squeeze=False)
    for ax, (column, unit, title) in zip(axes[0], panels):
        ax.plot(history["round"], history[column], marker="o")
        if column == "valid ndcg@10" and start and "ndcg@10" in start:
            ax.axhline(start["ndcg@10"], ls="--", color="grey", label="SFT retriever")
            ax.legend()
        ax.set(xlabel="round", ylabel=unit, title=title)
        ax.set_xticks(history["round"])
    fig.tight_layout()
    return fig


#: The per-round diagnostics of the loop on the query head (`head_loop.round_stats` and
#: `head_loop.update`), as (column, y label, title).
HEAD_LOOP_PANELS = (
    ("pair share", "share", "Conversations that yield a pair"),
    ("gap mean", "NDCG@10", "Best − worst reward (mean, quartiles)"),
    ("chosen holds target", "share", "The preferred set holds the target"),
    ("loss", "loss", "DPO loss"),
    ("margin", "β · log-ratio margin", "Implicit reward margin"),
    ("selection", "objective", "Selection set (round 0: the start)"),
    ("distill loss", "cross-entropy", "Distillation loss (arms f, g)"),
    ("agreement", "Spearman ρ", "Retriever agrees with the LLM on the pool"),
)


def plot_head_loop(curves: pd.DataFrame) -> plt.Figure:
    """The loop's diagnostics per round, one line per arm (mean over seeds; `loop_arms.loop_curves`
    gives the rows), with the inter-quartile band of the reward gap; a panel shows only the arms
    that have its column (DPO arms c–e, distillation arms f–g)."""
    fig, axes = plt.subplots(2, 4, figsize=(16, 6.4))
    for ax, (column, unit, title) in zip(axes.flat, HEAD_LOOP_PANELS):
        for arm, rows in curves.groupby("arm", sort=True):
            if column not in rows or rows[column].isna().all():
                continue  # a DPO panel for a distillation arm, or the other way round
            mean = rows.groupby("round")[column].mean(numeric_only=True).dropna()
            ax.plot(mean.index, mean.to_numpy(), marker="o", label=f"arm {arm}")
            if column == "gap mean":
                low = rows.groupby("round")["gap q25"].mean().dropna()
                high = rows.groupby("round")["gap q75"].mean().dropna()
                ax.fill_between(low.index, low.to_numpy(), high.to_numpy(), alpha=0.15)
        ax.set(xlabel="round", ylabel=unit, title=title)
        ax.set_xticks(sorted(curves["round"].unique()))
    for ax in (axes.flat[0], axes.flat[5]):  # the DPO arms; every arm
        if ax.lines:
            ax.legend()
    fig.tight_layout()
    return fig


def plot_popularity_bias(buckets: pd.DataFrame, recommended: pd.DataFrame,
                         metric: str = "ndcg@10") -> plt.Figure:
    """Left: `metric` by target-popularity bucket for each system (`harness.bucket_table`);
    right: how popular the recommended items are, next to the targets' own popularity
    (`harness.recommended_popularity`; interactions + 1 on a log axis)."""
    fig, (left, right) = plt.subplots(1, 2, figsize=(13, 4.2))
    scores = buckets.drop(index="pairs (targets)", errors="ignore")
    long = scores.reset_index(names="system").melt(id_vars="system", var_name="bucket",
                                                   value_name=metric)
    sns.barplot(data=long, y="system", x=metric, hue="bucket", ax=left)
    sizes = buckets.loc["pairs (targets)"] if "pairs (targets)" in buckets.index else None
    title = f"{metric} by the target's popularity"
    if sizes is not None:
        title += "\n(" + ", ".join(f"{b}: {int(n)} targets" for b, n in sizes.items()) + ")"
    left.set(title=title, ylabel="system")
    data = recommended.assign(**{"interactions + 1": recommended["interactions"] + 1})
    order = list(dict.fromkeys(data["system"]))
    with warnings.catch_warnings():  # seaborn 0.13 passes matplotlib's deprecated `vert`
        warnings.simplefilter("ignore", DeprecationWarning)
        sns.boxplot(data=data, y="system", x="interactions + 1", order=order, ax=right,
                    color="tab:orange", fliersize=1)
    right.set(xscale="log", ylabel="system", title="Popularity of the top-10 recommendations\n"
                                             "(training interactions per item)")
    fig.tight_layout()
    return fig


def plot_dpo(history: pd.DataFrame) -> plt.Figure:
    """A TRL DPO run per step: the loss (ln 2 at the start), the reward margin of chosen over
    rejected, and the share of pairs with a positive margin."""
    panels = [("loss", "loss", "DPO loss"), ("rewards/margins", "β · log-ratio margin",
                                             "reward margin, chosen − rejected"),
              ("rewards/accuracies", "share of pairs", "pairs with a positive margin")]
    panels = [p for p in panels if p[0] in history]
    fig, axes = plt.subplots(1, len(panels), figsize=(4 * len(panels), 3.2), squeeze=False)
    for ax, (column, unit, title) in zip(axes[0], panels):
        ax.plot(history["step"], history[column], marker=".")
        ax.set(xlabel="step", ylabel=unit, title=title)
    axes[0][0].axhline(np.log(2), ls="--", color="grey")
    fig.tight_layout()
    return fig


#: The boxes of the pipeline figure: name -> (x, y, label); the axes run 0-10 by 0-6.
PIPELINE_BOXES: dict[str, tuple[float, float, str]] = {
    "corpus": (1.6, 5.1, "Movie corpus  (ch. 1)\nMovieLens + IMDb metadata"),
    "conversation": (6.9, 5.1, "Conversation  (ch. 2)\nthe seeker's words,\nthe movies mentioned"),
    "retriever": (1.6, 2.9, "Retriever  (ch. 3)\nLRURec on user histories"),
    "reranker": (6.9, 2.9,
                 "LLM reranker  (ch. 4)\nSmolLM2 + LoRA, reads\nthe request and metadata"),
    "ranking": (6.9, 0.7, "Ranked list\nonly corpus movies"),
    "evaluation": (1.6, 0.7, "Evaluation  (ch. 6)\nbaselines, CIs, bias, cost\ndemo  (ch. 8)"),
}

#: The arrows that carry data at recommendation time: (from, to, label).
PIPELINE_ARROWS: tuple[tuple[str, str, str], ...] = (
    ("corpus", "retriever", "movie ids"),
    ("conversation", "retriever", "mentioned movies\n= the history"),
    ("conversation", "reranker", ""),
    ("retriever", "reranker", "K candidates\n+ metadata"),
    ("reranker", "ranking", ""),
    ("ranking", "evaluation", ""),
)


def plot_pipeline(ax: plt.Axes | None = None) -> plt.Axes:
    """The RAR pipeline of the book: data, retriever, LLM reranker, ranked list, and the two
    learning signals (the feedback loop teaching the retriever, DPO on the reranker)."""
    from matplotlib.patches import FancyArrowPatch

    ax = ax or plt.subplots(figsize=(9, 5.4))[1]
    colours = {"corpus": "#dbe9f6", "conversation": "#dbe9f6", "retriever": "#fde0c5",
               "reranker": "#d5efd5", "ranking": "#eeeeee", "evaluation": "#eeeeee"}
    width, height = 3.0, 1.2
    _box_diagram(ax, PIPELINE_BOXES, PIPELINE_ARROWS, colours, (width, height))
    # The feedback loop (chapter 5): the reranker's rankings reward the retriever's sets.
    (xr, yr, _), (xl, yl, _) = PIPELINE_BOXES["reranker"], PIPELINE_BOXES["retriever"]
    ax.add_patch(FancyArrowPatch((xr - width / 2, yr - 0.35), (xl + width / 2, yl - 0.35),
                                 connectionstyle="arc3,rad=-0.35", arrowstyle="-|>",
                                 mutation_scale=16, color="#c0392b", lw=1.6, linestyle="--"))
    ax.text((xr + xl) / 2, yr - 1.15, "feedback loop  (ch. 5): rewards from the LLM's\n"
            "rankings → online DPO on the retriever", ha="center", va="center", fontsize=8.5,
            color="#c0392b")
    # DPO on the reranker's own mistakes (chapter 7).
    ax.add_patch(FancyArrowPatch((xr + width / 2, yr + 0.4), (xr + width / 2, yr - 0.4),
                                 connectionstyle="arc3,rad=-0.9", arrowstyle="-|>",
                                 mutation_scale=14, color="#1f618d", lw=1.6, linestyle="--"))
    ax.text(xr + width / 2 + 0.45, yr - 0.7, "DPO on its own\nmistakes  (ch. 7)", ha="center",
            va="top", fontsize=8.5, color="#1f618d")
    ax.set(xlim=(0, 10), ylim=(-0.1, 6), title="The RAR pipeline, chapter by chapter")
    return ax


def save_pipeline_figure(path) -> None:
    """Draw `plot_pipeline` into an SVG file at `path` (the intro's figure; reproducible)."""
    from pathlib import Path

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    ax = plot_pipeline()
    with plt.rc_context({"svg.hashsalt": "rar-lite"}):
        ax.figure.savefig(path, format="svg", bbox_inches="tight", metadata={"Date": None})
    plt.close(ax.figure)


def plot_head_curve(table: pd.DataFrame) -> plt.Axes:
    """The dense retriever's query head per epoch (`dense.train_head`'s table): training loss
    (left axis) and selection NDCG@10 (right axis), the kept epoch marked."""
    fig, ax = plt.subplots(figsize=(7, 3.2))
    ax.plot(table.index, table["loss"], color="tab:blue", marker=".", label="training loss")
    ax.set_xlabel("epoch (0 = MiniLM zero-shot)")
    ax.set_ylabel("softmax loss over the catalogue", color="tab:blue")
    right = ax.twinx()
    right.plot(table.index, table["selection ndcg@10"], color="tab:orange", marker=".")
    best = table["selection ndcg@10"].idxmax()
    right.axvline(best, color="grey", linestyle=":", label=f"kept: epoch {best}")
    right.set_ylabel("selection NDCG@10", color="tab:orange")
    right.legend(loc="lower right")
    ax.set_title("Training the query head on dev dialogues")
    fig.tight_layout()
    return ax


def plot_temperature(inclusion: dict[float, np.ndarray], k: int,
                     target_rank: int | None = None) -> plt.Axes:
    """What the sampling temperature does: for each τ, the chance that the retriever's item at
    each rank is in a Plackett–Luce set of size `k` (`plackett_luce.inclusion_probabilities`),
    with the conversation's target marked when it is among the ranks shown."""
    ax = plt.subplots(figsize=(7.5, 3.4))[1]
    for temperature, shares in inclusion.items():
        ax.plot(np.arange(1, len(shares) + 1), shares, label=f"τ = {temperature:g}")
    if target_rank is not None:
        ax.axvline(target_rank, color="grey", linestyle=":", label=f"target (rank {target_rank})")
    ax.axvline(k + 0.5, color="black", linewidth=0.8, alpha=0.4)
    ax.set(xscale="log", ylim=(-0.02, 1.02), xlabel="the retriever's rank of the item (log scale)",
           ylabel=f"P(in a set of {k})", title="Higher temperature: sets reach deeper, "
           "hold the retriever's top less often")
    ax.legend(fontsize=8)
    return ax
