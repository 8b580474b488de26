"""Chapter 8's interactive demo: type what you liked and what you want, see RAR work.

`DemoEngine` holds the logic (no widgets): the liked movies are resolved with the title matcher
and become the retriever's history; the request and the liked titles become a one-turn
conversation; a chosen retriever proposes K candidates and a chosen ranking mode orders them; each
ranked movie comes with the stated attributes its metadata matches (the reason the metadata
gives). `build_demo(engine)` wraps it in ipywidgets (persona picker, text boxes, toggles, a
button, an HTML result), so the widget layer is thin and testable headless.

Displayed, a `Demo` is the live widget in Jupyter and also carries a PNG picture of its current
state (`snapshot_png`), which the static book shows (it loads no widget JavaScript).
"""

from __future__ import annotations

import html
import io
import json
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import pandas as pd

from rar_lite.book.serving import clip
from rar_lite.data import parsing
from rar_lite.data.conversations import Conversation, Turn
from rar_lite.data.matching import TitleMatcher, find_titles
from rar_lite.reranking import rerank
from rar_lite.retrieval.retriever import Retriever

if TYPE_CHECKING:
    from rar_lite.experiments.profiles import Profile

OPENER = "Hi! What would you like to watch?"
WHY = "why (metadata matching the request)"


@dataclass(frozen=True)
class Persona:
    """A prepared seeker: movies they liked and what they ask for now."""

    liked: str
    request: str


PERSONAS: dict[str, Persona] = {
    "heist fan": Persona("Heat (1995), The Usual Suspects (1995)",
                         "Something tense from the 90s, not too long, please."),
    "family night": Persona("Toy Story (1995), Babe (1995)",
                            "A funny animated movie for my kids, rated G."),
    "romantic": Persona("Titanic (1997), Casablanca (1942)",
                        "I'm after a highly rated romantic movie. Over two hours is ok."),
    "sci-fi": Persona("The Matrix (1999), Alien (1979)",
                      "An acclaimed sci-fi movie from the 80s."),
}


@dataclass
class DemoResult:
    """What one request produced: the resolved history, the names that did not resolve, the
    candidates (retriever order) and the final ranking with reasons."""

    conversation: Conversation
    unresolved: list[str]
    candidates: pd.DataFrame  # rank, title, year, genres, retriever score
    ranking: pd.DataFrame  # rank, title, year, genres, score, why
    seconds: float
    items: list[int] = field(default_factory=list)  # the ranking's item ids

    def as_json(self) -> dict:
        """The result as plain JSON types (`rar-lite recommend --json`)."""
        table = self.ranking.astype(object).where(self.ranking.notna(), None)
        rows = table.rename(columns={WHY: "why"}).to_dict(orient="records")
        return {"said": self.conversation.seeker_text(),
                "history": list(self.conversation.history), "unresolved": self.unresolved,
                "recommendations": [{"item_id": item, **row} for item, row in
                                    zip(self.items, rows)],
                "seconds": round(self.seconds, 3)}


class DemoEngine:
    """Retrieve and rank for a typed request (see the module docstring).

    `retrievers` and `rankers` map display names to a `Retriever` and to anything with
    `rank(conversation, candidates)`; the first of each is the default.
    """

    def __init__(self, corpus: pd.DataFrame, matcher: TitleMatcher,
                 retrievers: dict[str, Retriever], rankers: dict[str, object],
                 k: int = 20) -> None:
        if not retrievers or not rankers:
            raise ValueError("the demo needs at least one retriever and one ranking mode")
        self.items = corpus.set_index("item_id")
        self.matcher, self.retrievers, self.rankers, self.k = matcher, retrievers, rankers, k
        self.keywords = rerank.KeywordReranker(corpus)

    def conversation(self, liked: str, request: str) -> tuple[Conversation, list[str]]:
        """The one-turn conversation for the typed text, and the liked names that resolved to
        no movie."""
        if not request.strip() and not liked.strip():
            raise ValueError("type a request or some movies you liked")
        resolved, unresolved = rerank.resolve_names(parsing.parse_list(liked), self.matcher)
        history = list(dict.fromkeys(resolved))
        said = request.strip()
        if history:
            titles = ", ".join(self.items.at[i, "title"] for i in history)
            said = f"I liked {titles}. {said}".strip()
        turns = (Turn("recommender", OPENER), Turn("seeker", said))
        return Conversation("demo", turns, tuple(history), (), "demo"), unresolved

    def _table(self, items: list[int], scores: list[float] | None) -> pd.DataFrame:
        rows = self.items.loc[items]
        table = pd.DataFrame({"rank": range(1, len(items) + 1), "title": rows["title"].to_numpy(),
                              "year": rows["year"].astype("Int64").to_numpy(),
                              "genres": [", ".join(g) for g in rows["genres"]]})
        if scores is not None:
            table["score"] = [round(s, 3) for s in scores]
        return table

    def text_conversation(self, text: str) -> tuple[Conversation, list[str]]:
        """The one-turn conversation for a free text ("I loved Heat and want another heist
        film"): the movies it names (`matching.find_titles`) are the history, the title-like
        phrases that name no corpus movie are returned, not guessed."""
        if not text.strip():
            raise ValueError("type a request, e.g. 'I loved Heat and want another heist film'")
        found = find_titles(text, self.matcher)
        turns = (Turn("recommender", OPENER), Turn("seeker", " ".join(text.split())))
        return Conversation("demo", turns, tuple(found.items), (), "demo"), found.unknown

    def recommend(self, liked: str, request: str, retriever: str | None = None,
                  ranker: str | None = None, top: int = 10) -> DemoResult:
        """Retrieve K with `retriever`, order them with `ranker`, keep the `top` best."""
        began = time.perf_counter()
        conversation, unresolved = self.conversation(liked, request)
        return self.run(conversation, unresolved, retriever, ranker, top, began)

    def recommend_text(self, text: str, retriever: str | None = None,
                       ranker: str | None = None, top: int = 10) -> DemoResult:
        """`recommend` for one free text (`text_conversation`): `rar-lite recommend`."""
        began = time.perf_counter()
        conversation, unresolved = self.text_conversation(text)
        return self.run(conversation, unresolved, retriever, ranker, top, began)

    def run(self, conversation: Conversation, unresolved: list[str],
            retriever: str | None = None, ranker: str | None = None, top: int = 10,
            began: float | None = None) -> DemoResult:
        """Retrieve K for `conversation` with `retriever`, order them with `ranker`, keep the
        `top` best, each with the card facts that match what was asked."""
        retriever = retriever or next(iter(self.retrievers))
        ranker = ranker or next(iter(self.rankers))
        for name, options in ((retriever, self.retrievers), (ranker, self.rankers)):
            if name not in options:
                raise ValueError(f"unknown option {name!r}; choose from {', '.join(options)}")
        began = time.perf_counter() if began is None else began
        chosen = self.retrievers[retriever]
        if hasattr(chosen, "topk_conversations"):  # reads the words too (the fused retriever)
            ids, scores = chosen.topk_conversations([conversation], self.k)
        else:  # reads the history only (LRURec)
            ids, scores = chosen.topk([list(conversation.history)], self.k)
        candidates = [int(i) for i in ids[0]]
        ranking = self.rankers[ranker].rank(conversation, candidates)
        wants = self.keywords.wants(conversation)
        best = ranking.items[:top]
        final = self._table(best, ranking.scores[:top] if ranking.scores else None)
        final[WHY] = ["; ".join(self.keywords.matches(wants, i)) or "—" for i in best]
        shown = self._table(candidates, [float(s) for s in scores[0]])
        return DemoResult(conversation, unresolved, shown.rename(
            columns={"score": "retriever score"}), final, time.perf_counter() - began,
            [int(i) for i in best])


def render(result: DemoResult) -> str:
    """The result as HTML: the understood request, the ranking, then the candidates."""
    said = html.escape(result.conversation.seeker_text())
    notes = (f"<p><b>Not found in the corpus:</b> {html.escape(', '.join(result.unresolved))}</p>"
             if result.unresolved else "")
    return (f"<p><b>Seeker:</b> {said}</p>{notes}"
            f"<h4>Recommended ({result.seconds:.2f} s)</h4>"
            f"{result.ranking.to_html(index=False, escape=True)}"
            f"<h4>The retriever's {len(result.candidates)} candidates</h4>"
            f"{result.candidates.to_html(index=False, escape=True)}")


@dataclass
class Demo:
    """The widgets of the demo (kept as attributes so tests and readers can drive them)."""

    engine: DemoEngine
    persona: object
    liked: object
    request: object
    retriever: object
    ranker: object
    button: object
    result: object
    box: object
    last: DemoResult | str | None = None  # the shown result, the error message, or nothing yet

    def run(self, *_: object) -> None:
        """The button's callback: recommend and show the result (or the error)."""
        self.result.value = "<p>Working…</p>"
        try:
            self.last = self.engine.recommend(
                self.liked.value, self.request.value, self.retriever.value, self.ranker.value)
            self.result.value = render(self.last)
        except ValueError as error:
            self.last = str(error)
            self.result.value = f"<p style='color:#b00'>{html.escape(str(error))}</p>"

    def _repr_mimebundle_(self, include: object = None, exclude: object = None) -> dict:
        """The live widget for Jupyter, plus a PNG of its state for static pages."""
        return {**self.box._repr_mimebundle_(), "image/png": snapshot_png(self)}


def snapshot_png(demo: Demo, top: int = 10) -> bytes:
    """A picture of the widget as it stands: the form (selected toggles filled) and the top of
    the shown ranking with its reasons. Drawn with matplotlib, so it needs no browser."""
    from matplotlib.figure import Figure
    from matplotlib.patches import FancyBboxPatch

    ranking = demo.last.ranking.head(top) if isinstance(demo.last, DemoResult) else None
    rows = 7 + (len(ranking) + 3 if ranking is not None else 2)
    fig = Figure(figsize=(8.5, 0.3 * rows + 0.25))
    ax = fig.add_axes((0, 0, 1, 1))
    ax.set_xlim(0, 110)
    ax.set_ylim(rows, 0)
    ax.axis("off")

    def box(x: float, y: float, w: float, text: str, filled: bool = False) -> None:
        ax.add_patch(FancyBboxPatch((x, y + 0.15), w, 0.7, boxstyle="round,pad=0,rounding_size=0.15",
                                    facecolor="#1976d2" if filled else "white",
                                    edgecolor="#1976d2" if filled else "#9e9e9e"))
        ax.text(x + 0.8, y + 0.5, text, va="center", fontsize=9,
                color="white" if filled else "black")

    fields = [("Persona", f"{demo.persona.value}  ▾"), ("Liked", demo.liked.value),
              ("Request", demo.request.value)]
    for y, (label, value) in enumerate(fields):
        ax.text(10, y + 0.5, label, ha="right", va="center", fontsize=9)
        box(11, y, 97, clip(value, 95))
    for y, (label, toggle) in enumerate((("Retriever", demo.retriever), ("Ranking", demo.ranker)),
                                        start=len(fields)):
        ax.text(10, y + 0.5, label, ha="right", va="center", fontsize=9)
        for i, option in enumerate(toggle.options):
            box(11 + 29 * i, y, 28, clip(option, 26), filled=option == toggle.value)
    box(11, 5, 16, "Recommend", filled=True)
    if ranking is None:
        note = demo.last if isinstance(demo.last, str) else "(press Recommend)"
        ax.text(1, 7.5, note, va="center", fontsize=9, color="#b00" if demo.last else "gray")
        return _png(fig)
    ax.text(1, 6.5, clip(f"Seeker: {demo.last.conversation.seeker_text()}", 110), va="center",
            fontsize=9)
    ax.text(1, 7.5, f"Recommended ({demo.last.seconds:.2f} s)", va="center", fontsize=10,
            weight="bold")
    why = ranking.columns[-1]
    columns = ((1, "rank", 4), (6, "title", 36), (50, "year", 6), (56, why, 50))
    for x, name, width in columns:
        ax.text(x, 8.5, clip(name, width), va="center", fontsize=9, weight="bold")
        for y, value in enumerate(ranking[name], start=9):
            ax.text(x, y + 0.5, clip(value, width), va="center", fontsize=9)
    return _png(fig)


def _png(fig: object) -> bytes:
    """The figure as PNG bytes (no pyplot: nothing is shown twice in a notebook)."""
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=120)
    return buffer.getvalue()


def build_demo(engine: DemoEngine, persona: str | None = None) -> Demo:
    """The chat widget: persona picker, liked movies, request, retriever and ranking toggles,
    a button, and the HTML result."""
    import ipywidgets as widgets

    own = "(type your own)"
    picker = widgets.Dropdown(options=[own, *PERSONAS], value=persona or own,
                              description="Persona")
    liked = widgets.Text(description="Liked", placeholder="Heat (1995), The Usual Suspects",
                         layout=widgets.Layout(width="90%"))
    request = widgets.Textarea(description="Request", placeholder="What do you want now?",
                               layout=widgets.Layout(width="90%"))
    retriever = widgets.ToggleButtons(options=list(engine.retrievers), description="Retriever")
    ranker = widgets.ToggleButtons(options=list(engine.rankers), description="Ranking")
    button = widgets.Button(description="Recommend", button_style="primary")
    result = widgets.HTML()
    box = widgets.VBox([picker, liked, request, retriever, ranker, button, result])
    demo = Demo(engine, picker, liked, request, retriever, ranker, button, result, box)

    def fill(change: dict) -> None:
        chosen = PERSONAS.get(change["new"])
        if chosen is not None:
            liked.value, request.value = chosen.liked, chosen.request

    picker.observe(fill, names="value")
    if persona in PERSONAS:
        fill({"new": persona})
    button.on_click(demo.run)
    return demo


def chapter_engine(seed: int = 0, profile: str | Profile = "full", progress: bool = False,
                   loop: bool = True, llm: str | None = None, dense: bool = False
                   ) -> DemoEngine:
    """The engine of chapter 8, from what chapters 3–5 built at `profile`'s sizes (cached, else
    built now): the SFT LRURec and (with `loop`) the same retriever after the feedback loop;
    chapter 4's tuned pointwise LLM, the keyword rule and the retriever's own order as ranking
    modes. With `llm` (a `backbones` spec other than the default), the first ranking mode is that
    model in generation mode (it writes the titles it picks from the candidates' cards), which
    works with any backbone, API models included. With `dense`, the first retriever is this
    project's fused one: the zero-shot MiniLM over the request and the item cards, with LRURec's
    and the popularity prior's scores (`realdata.DEFAULT_WEIGHTS`; mentioned movies left out),
    which reads the words as well as the titles (`serving_engine`)."""
    from rar_lite.experiments import artifacts, profiles

    profile = profiles.get(profile)
    setup = artifacts.loop_setup(seed, profile, progress=progress)
    tuned = artifacts.chapter_backend(profile, setup.sets, progress)
    engine = _assemble(setup.corpus, setup.served, tuned, llm, dense, progress)
    if loop:
        trained = artifacts.run_feedback(
            setup, engine.rankers["LLM (tuned pointwise)"],
            profile.loop_config(seed), profile.loop_train,
            progress=progress)
        engine.retrievers["after the feedback loop"] = setup.served.with_model(trained.model)
    return engine


def _assemble(corpus: pd.DataFrame, served: Retriever, tuned: object, llm: str | None,
              dense: bool, progress: bool) -> DemoEngine:
    """`chapter_engine`'s retrievers and ranking modes around LRURec `served` and the tuned
    pointwise backend `tuned`."""
    from rar_lite.backends import backbones
    from rar_lite.backends.llm import ResponseCache

    matcher = TitleMatcher(corpus)
    responses = ResponseCache()
    rankers: dict[str, object] = {"LLM (tuned pointwise)": rerank.PointwiseReranker(
        tuned, corpus, response_cache=responses)}
    if llm is not None and backbones.parse(llm) != backbones.parse(backbones.DEFAULT):
        backend = backbones.load(llm)
        rankers = {f"LLM ({backbones.label(backend)}, generation)": rerank.GenerationReranker(
            backend, corpus, matcher, response_cache=responses), **rankers}
    retrievers: dict[str, object] = {"SFT retriever": served}
    if dense:
        from rar_lite.dialogue import realdata

        fit = realdata.fit(corpus, [int(i) for i in served.vocab.item_ids], served, None,
                           progress=progress)
        retrievers = {"fused (dense + LRURec)": fit.fused(served, corpus, exclude_history=True),
                      **retrievers}
    return DemoEngine(corpus, matcher, retrievers,
                      {**rankers, "keyword rule": rerank.KeywordReranker(corpus),
                       "retriever order": rerank.RetrieverOrder()})


def serving_engine(seed: int = 0, profile: str | Profile = "full", progress: bool = False,
                   llm: str | None = None) -> DemoEngine:
    """`rar-lite recommend`'s engine: `chapter_engine(loop=False, dense=True)`, loaded fast.

    The first call builds it the chapters' way (training what the cache lacks) and writes a
    record of where its parts are (`serving_record_path`: LRURec's checkpoint, vocabulary and
    popularity counts, chapter 4's adapter); later calls load those parts directly, skipping the
    simulated data and the tuning set that the chapters' functions rebuild to find them. A
    record whose parts are gone or unusable is rebuilt."""
    from rar_lite import cache
    from rar_lite.backends.llm_local import TransformersBackend
    from rar_lite.data.corpus import load_corpus
    from rar_lite.experiments import artifacts, profiles

    profile = profiles.get(profile)
    path = serving_record_path(seed, profile)
    if path.exists():
        try:
            record = json.loads(path.read_text(encoding="utf-8"))
            corpus = load_corpus()
            served = _load_served(record)
            tuned = TransformersBackend(adapter=record["adapter"])
            return _assemble(corpus, served, tuned, llm, True, progress)
        except Exception as error:  # parts deleted, damaged or foreign: build again
            warnings.warn(f"{path} is unusable ({error}); building the engine again",
                          stacklevel=2)
    setup = artifacts.loop_setup(seed, profile, progress=progress)
    tuned, result = artifacts.chapter_tuning(profile, setup.sets, progress)
    cache.write_json(path, {
        "lrurec": str(setup.run_directory), "item_ids": setup.served.vocab.item_ids.tolist(),
        "popularity": setup.served.popularity.tolist(), "adapter": str(result.adapter)})
    return _assemble(setup.corpus, setup.served, tuned, llm, True, progress)


def serving_record_path(seed: int, profile: Profile) -> Path:
    """Where `serving_engine`'s record for (`seed`, `profile`) lives, keyed by the corpus and by
    the code that builds its parts (a change to either leads to a new record)."""
    from rar_lite import cache
    from rar_lite.data import simulate
    from rar_lite.data.corpus import corpus_cache_key
    from rar_lite.experiments import artifacts
    from rar_lite.reranking import tune
    from rar_lite.retrieval import retriever, seqrec

    key = cache.fingerprint(seed, repr(profile), corpus_cache_key(), cache.code_version(
        artifacts, retriever, seqrec, simulate, tune))
    return cache.cache_dir() / "serving" / f"{profile.name}-{key}.json"


def _load_served(record: dict) -> Retriever:
    """LRURec from a `serving_engine` record (`retriever.load_model` checks the vocabulary)."""
    from rar_lite.retrieval.retriever import load_model
    from rar_lite.retrieval.seqrec import ItemVocab

    vocab = ItemVocab(record["item_ids"])
    return Retriever(load_model(Path(record["lrurec"]), vocab), vocab, record["popularity"])
