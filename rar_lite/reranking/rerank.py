"""Rerankers: given a conversation and K candidate item ids, return them in a new order.

Every reranker returns a `Ranking` that is a permutation of the candidates (so metrics are always
computed on a full list), plus what went wrong if anything did (`failure`), the raw answer for
generation modes, the names that resolve to no corpus item (`hallucinated`) and the real movies
named that are not candidates (`outside`).

- `RandomOrder`: a seeded random permutation per conversation (chance, measured).
- `RetrieverOrder`: the retriever's own order (the baseline every reranker must beat).
- `KeywordReranker`: a rule with no learning: candidates reordered by how many of the seeker's
  stated attributes (genre words, decade, runtime, acclaim, MPAA) their metadata matches.
- `VerbalizerReranker` (LlamaRec): lettered candidates, one forward pass, rank by the next-token
  logits of the letters; `permutations > 1` averages over shuffled orders to cancel position bias.
- `GenerationReranker`: the LLM writes a ranked list of titles, resolved with the title matcher;
  listed candidates go first, the rest keep the retriever's order.
- `ConstrainedReranker`: greedy decoding restricted to a prefix tree of the candidates' titles, so
  the model can only write candidate titles (no hallucination by construction).
- `TitleReranker`: the likelihood of the LLM answering the conversation with each candidate's
  title (per token): what the model knows of the films, with no card to read.
- `PointwiseReranker`: one short yes/no prompt per candidate, scored by logit(yes) - logit(no):
  no position bias by construction, and the mode a small model can be taught
  (`rar_lite.reranking.tune`).

The LLM rerankers take any backend (`rar_lite.backends.backbones`); those that read next-token
logits (verbalizer, constrained, title, pointwise) refuse an API model and say which modes work
instead.
LLM calls go through `rar_lite.backends.llm.ResponseCache` when one is given.
"""

from __future__ import annotations

import os
import re
import zlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np
import pandas as pd
from tqdm.auto import tqdm

from rar_lite.backends.llm import (
    Backend,
    ResponseCache,
    cached_generate,
    pools_requests,
    require_logits,
)
from rar_lite.backends.llm_local import TransformersBackend
from rar_lite.data import parsing
from rar_lite.data.conversations import Conversation
from rar_lite.data.corpus import BriefCards
from rar_lite.data.matching import TitleMatcher
from rar_lite.reranking import prompts


@dataclass
class Ranking:
    """A reranker's output: `items` is a permutation of the candidates, best first."""

    items: list[int]
    scores: list[float] | None = None  # aligned with `items` where the mode has scores
    failure: str | None = None
    raw: str | None = None
    listed: list[int] = field(default_factory=list)  # candidates the LLM named, in its order
    hallucinated: list[str] = field(default_factory=list)  # names resolving to nothing
    outside: list[int] = field(default_factory=list)  # real movies named, not candidates


def _check(candidates: Sequence[int]) -> list[int]:
    candidates = [int(c) for c in candidates]
    if len(set(candidates)) != len(candidates):
        raise ValueError("candidates contain duplicates")
    return candidates


def _by_scores(candidates: list[int], scores: np.ndarray) -> Ranking:
    order = np.argsort(-scores, kind="stable")  # ties keep the retriever's order
    return Ranking([candidates[i] for i in order], [float(scores[i]) for i in order])


def conversation_rng(seed: int, conversation: Conversation) -> np.random.Generator:
    """A generator seeded by `seed` and the conversation's id: the same draws for a
    conversation whatever else is ranked, in any order or process."""
    return np.random.default_rng([seed, zlib.crc32(conversation.conversation_id.encode())])


class RandomOrder:
    """A random permutation per conversation (seeded): the chance level, measured."""

    name = "random order"

    def __init__(self, seed: int = 0) -> None:
        self.seed = seed

    def rank(self, conversation: Conversation, candidates: Sequence[int]) -> Ranking:
        candidates = _check(candidates)
        rng = conversation_rng(self.seed, conversation)
        return Ranking([candidates[i] for i in rng.permutation(len(candidates))])


class RetrieverOrder:
    """The candidates as the retriever ranked them."""

    name = "retriever order"

    def rank(self, conversation: Conversation, candidates: Sequence[int]) -> Ranking:
        candidates = _check(candidates)
        return Ranking(candidates, None, None if candidates else "no candidates")



class InterpolatedReranker:
    """A reranker's scores blended with the retriever's order: each candidate gets
    `weight` x z(reranker score) + (1 - weight) x z(-log(position + 1)), z-scores taken over the
    candidates. At weight 0 this is the retriever's order, at 1 the reranker's; the weight is
    chosen on dev data, so a reranker that carries no signal cannot pull the pipeline down there.

    With `keep_mentioned`, candidates the conversation already mentioned (its history) keep the
    retriever's positions and only the others are reordered by the blend, in the places left:
    the retriever's mention signal is kept where the reranker cannot read it. The scores are
    then the final order's -log(position + 1).
    """

    def __init__(self, reranker: object, weight: float, keep_mentioned: bool = False) -> None:
        if not 0.0 <= weight <= 1.0:
            raise ValueError(f"weight must be in [0, 1], got {weight}")
        self.reranker, self.weight = reranker, float(weight)
        self.keep_mentioned = bool(keep_mentioned)
        kept = ", mentioned kept in place" if keep_mentioned else ""
        self.name = (f"{getattr(reranker, 'name', 'reranker')} + retriever "
                     f"(weight {weight:g}{kept})")

    def rank(self, conversation: Conversation, candidates: Sequence[int]) -> Ranking:
        candidates = _check(candidates)
        if not candidates:
            return Ranking([], None, "no candidates")
        prior = -np.log(np.arange(len(candidates)) + 1.0)
        if self.weight == 0.0:
            return _by_scores(candidates, prior)
        scored = self.reranker.rank(conversation, candidates)
        if scored.failure or scored.scores is None:
            return Ranking(candidates, None, scored.failure or "the reranker gave no scores")
        by_item = dict(zip(scored.items, scored.scores))
        mine = np.array([by_item[c] for c in candidates], dtype=float)
        blended = _by_scores(candidates, self.weight * _z(mine) + (1.0 - self.weight) * _z(prior))
        mentioned = set(conversation.history) if self.keep_mentioned else set()
        if not mentioned & set(candidates):
            return blended
        others = iter(i for i in blended.items if i not in mentioned)
        items = [c if c in mentioned else next(others) for c in candidates]
        return Ranking(items, prior.tolist())


def _z(values: np.ndarray) -> np.ndarray:
    """z-scores (all 0 when the values are constant)."""
    std = values.std()
    return (values - values.mean()) / std if std > 0 else np.zeros_like(values)


# --- keyword rule ----------------------------------------------------------------------------

_DECADE = re.compile(r"\b(?:(?:19|20)?(\d)0s|(?:19|20)(\d)0's)\b")
_DECADE_WORDS = {"twenties": 1920, "thirties": 1930, "forties": 1940, "fifties": 1950,
                 "sixties": 1960, "seventies": 1970, "eighties": 1980, "nineties": 1990}


class KeywordReranker:
    """Rule-based: count the seeker's attribute words that a candidate's metadata matches.

    Genre words (plain and vague forms, e.g. "funny" for Comedy), a decade ("the 90s", "1990s",
    "nineties"), "short"/"long", "highly rated"/"acclaimed", an MPAA rating. Ties keep the
    retriever's order. On simulated dialogues this is strong by construction: their words were
    generated from the target's metadata.
    """

    name = "keyword match"

    def __init__(self, corpus: pd.DataFrame) -> None:
        from rar_lite.data.simulate import GENRE_WORDS

        self.items = corpus.set_index("item_id")
        self.genre_patterns = {
            genre: re.compile(r"\b(?:" + "|".join(re.escape(w) for w in words) + r")\b")
            for genre, words in GENRE_WORDS.items()
        }

    def wants(self, conversation: Conversation) -> dict:
        """The attributes the seeker's words name."""
        text = conversation.seeker_text().lower()
        genres = {g for g, pattern in self.genre_patterns.items() if pattern.search(text)}
        decades = set()
        for match in _DECADE.finditer(text):
            digit = match.group(1) or match.group(2)
            decades.add((1900 if int(digit) >= 2 else 2000) + 10 * int(digit))
        decades |= {d for word, d in _DECADE_WORDS.items() if word in text}
        return {"genres": genres, "decades": decades,
                "short": bool(re.search(r"\b(?:short|not too long|under 100)\b", text)),
                "long": bool(re.search(r"\b(?:long one|over two hours|epic length)\b", text)),
                "acclaimed": bool(re.search(r"\b(?:highly rated|acclaimed|well reviewed)\b",
                                            text)),
                "mpaa": set(re.findall(r"\brated (pg-13|nc-17|pg|r)\b", text))}

    def matches(self, wants: dict, item_id: int) -> list[str]:
        """The stated attributes the item's metadata matches, as readable reasons."""
        row = self.items.loc[item_id]
        reasons = [f"genre {g}" for g in sorted(wants["genres"] & set(row["genres"]))]
        year = row["year"]
        if wants["decades"] and pd.notna(year) and int(year) // 10 * 10 in wants["decades"]:
            reasons.append(f"from the {int(year) // 10 * 10}s")
        runtime, rating = row["runtime_min"], row["imdb_rating"]
        if wants["short"] and pd.notna(runtime) and runtime <= 95:
            reasons.append(f"short ({int(runtime)} min)")
        if wants["long"] and pd.notna(runtime) and runtime >= 130:
            reasons.append(f"long ({int(runtime)} min)")
        if wants["acclaimed"] and pd.notna(rating) and rating >= 7.5:
            reasons.append(f"acclaimed (IMDb {rating:.1f})")
        if isinstance(row["mpaa"], str) and row["mpaa"].lower() in wants["mpaa"]:
            reasons.append(f"rated {row['mpaa']}")
        return reasons

    def score(self, wants: dict, item_id: int) -> float:
        """How many stated attributes the item matches (see `matches`)."""
        return float(len(self.matches(wants, item_id)))

    def rank(self, conversation: Conversation, candidates: Sequence[int]) -> Ranking:
        candidates = _check(candidates)
        wants = self.wants(conversation)
        return _by_scores(candidates, np.array([self.score(wants, c) for c in candidates]))


# --- LLM rerankers ---------------------------------------------------------------------------

class _LLMReranker:
    name = "llm"
    needs_logits = True  # reads next-token logits: a local model only (`llm.require_logits`)
    card = "full"  # the card each candidate is shown by (`card_texts`)

    def __init__(self, backend: TransformersBackend, corpus: pd.DataFrame,
                 response_cache: ResponseCache | None = None) -> None:
        if self.needs_logits:
            require_logits(backend, self.name)
        self.backend = backend
        self.texts = card_texts(corpus, self.card)
        self.cache = response_cache

    def _each(self, kind: str, prompt_texts: list[str], compute) -> list:
        """`compute(texts)` (one value per text) through the response cache, one entry per
        text: candidates that several sets or calls share are scored once."""
        if self.cache is None:
            return list(compute(prompt_texts))
        return self.cache.get_or_compute_each(
            {"backend": self.backend.name, "model": self.backend.model, "kind": kind},
            prompt_texts, compute)

    def _cached(self, kind: str, prompt_texts: list[str], compute) -> list:
        if self.cache is None:
            return compute()
        parts = {"backend": self.backend.name, "model": self.backend.model, "kind": kind,
                 "prompts": prompt_texts}
        return self.cache.get_or_compute(parts, compute)


class VerbalizerReranker(_LLMReranker):
    """Rank lettered candidates by the next-token logits of their letters (see module doc)."""

    name = "verbalizer"

    def __init__(self, backend: TransformersBackend, corpus: pd.DataFrame,
                 permutations: int = 1, seed: int = 0,
                 response_cache: ResponseCache | None = None) -> None:
        super().__init__(backend, corpus, response_cache)
        self.permutations, self.seed = permutations, seed
        self.label_ids = [backend.tokenizer.encode(label, add_special_tokens=False)[0]
                          for label in prompts.LABELS]

    def orders(self, conversation: Conversation, k: int) -> list[np.ndarray]:
        """The candidate orders shown: the retriever's first, then seeded shuffles."""
        rng = conversation_rng(self.seed, conversation)
        return [np.arange(k)] + [rng.permutation(k) for _ in range(self.permutations - 1)]

    def label_scores(self, conversation: Conversation, candidates: list[int],
                     orders: list[np.ndarray]) -> np.ndarray:
        """(len(orders), K) log-probabilities of each shown position's letter."""
        texts = [self.backend.chat_prompt(prompts.listwise_prompt(
            conversation, [self.texts[candidates[i]] for i in order])) for order in orders]

        def compute() -> list:
            logits = self.backend.last_logits(texts, tokens=self.label_ids[:len(candidates)])
            return logits.log_softmax(dim=-1).tolist()

        return np.array(self._cached("verbalizer", texts, compute))

    def rank(self, conversation: Conversation, candidates: Sequence[int]) -> Ranking:
        candidates = _check(candidates)
        if not candidates:
            return Ranking([], None, "no candidates")
        orders = self.orders(conversation, len(candidates))
        shown = self.label_scores(conversation, candidates, orders)
        scores = np.zeros(len(candidates))
        for order, row in zip(orders, shown):
            scores[order] += row  # position p showed candidate order[p]
        return _by_scores(candidates, scores / len(orders))


#: The cards a pointwise reranker can read (`card_texts`).
CARDS = ("brief", "full")


def card_texts(corpus: pd.DataFrame, card: str = "brief") -> Mapping[int, str]:
    """Item id -> the card a pointwise reranker reads, and is tuned on: "brief"
    (`corpus.brief_card`: no cast, no vote count) or "full" (the corpus's own `text`)."""
    if card not in CARDS:
        raise ValueError(f"card must be one of {CARDS}, got {card!r}")
    return BriefCards(corpus) if card == "brief" else corpus.set_index("item_id")["text"]


class PointwiseReranker(_LLMReranker):
    """Score each candidate alone: logit(yes) - logit(no) after a yes/no question, the
    candidate shown by its `card` (`card_texts`; the tuned adapter must have been tuned on the
    same kind of card), read where the backend's adapter was tuned to answer (its `layout`:
    after the card, or at the assistant's turn for the untuned model)."""

    name = "pointwise"

    def __init__(self, backend: TransformersBackend, corpus: pd.DataFrame,
                 response_cache: ResponseCache | None = None, batch_size: int = 20,
                 context: str = "request", card: str = "brief") -> None:
        self.card = card
        super().__init__(backend, corpus, response_cache)
        if context not in prompts.CONTEXTS:
            raise ValueError(f"context must be one of {tuple(prompts.CONTEXTS)}, got {context!r}")
        self.context = context
        tokenizer = backend.tokenizer
        self.yes = tokenizer.encode("yes", add_special_tokens=False)[0]
        self.no = tokenizer.encode("no", add_special_tokens=False)[0]
        self.batch_size = batch_size

    def prompt_texts(self, conversation: Conversation, candidates: list[int]) -> list[str]:
        request = prompts.context_text(conversation, self.context)
        return [self.backend.chat_prompt(prompts.pointwise_prompt(request, self.texts[c],
                                                                  self.context),
                                         system=prompts.POINTWISE_SYSTEM,
                                         layout=self.backend.layout)  # as its adapter was tuned
                for c in candidates]

    def rank(self, conversation: Conversation, candidates: Sequence[int]) -> Ranking:
        candidates = _check(candidates)
        if not candidates:
            return Ranking([], None, "no candidates")
        texts = self.prompt_texts(conversation, candidates)

        def compute(batch: list[str]) -> list[float]:
            prefix = shared_prefix(batch)
            logits = self.backend.prefix_last_logits(
                prefix, [t[len(prefix):] for t in batch], batch_size=self.batch_size,
                tokens=(self.yes, self.no))  # the two logits it reads, not all 49k
            return (logits[:, 0] - logits[:, 1]).tolist()

        return _by_scores(candidates, np.array(self._each("pointwise", texts, compute),
                                               dtype=float))

    def margins(self, texts: list[str]) -> np.ndarray:
        """logit(yes) - logit(no) after each of `texts` (prompts as `prompt_texts` writes them),
        each encoded whole, through the response cache (chapter 7 reads them before and after
        DPO, on every run of the book)."""
        def compute(batch: list[str]) -> list[float]:
            logits = self.backend.last_logits(batch, tokens=(self.yes, self.no))
            return (logits[:, 0] - logits[:, 1]).tolist()

        return np.array(self._each("margin", texts, compute), dtype=float)

    def rank_sets(self, conversation: Conversation,
                  sets: Sequence[Sequence[int]]) -> list[Ranking]:
        """Rank several candidate sets of one conversation, scoring their union once (each
        candidate is judged alone, so its score does not depend on the set)."""
        union = list(dict.fromkeys(int(c) for s in sets for c in s))
        scored = self.rank(conversation, union)
        if scored.failure:
            return [Ranking(list(s), None, scored.failure) for s in sets]
        score = dict(zip(scored.items, scored.scores))
        return [_by_scores(list(s), np.array([score[int(c)] for c in s], dtype=float))
                for s in (_check(s) for s in sets)]


def shared_prefix(texts: Sequence[str]) -> str:
    """The longest common prefix of `texts` that ends a line or a word before a space ("" if
    none): the part of the pointwise prompts (system, request, question, "Movie:") the backend
    can encode once, cut where the tokenizer cuts too (a suffix then starts with " Title")."""
    common = os.path.commonprefix(list(texts)) if len(texts) > 1 else ""
    line = common.rfind("\n") + 1
    return common[:max(line, common.rfind(" ", line))]


class GenerationReranker(_LLMReranker):
    """The LLM writes a ranked list of titles; each is resolved with the title matcher."""

    name = "generation"
    needs_logits = False  # text in, text out: every backend, API models included

    def __init__(self, backend: Backend, corpus: pd.DataFrame,
                 matcher: TitleMatcher, n: int = 5, max_new_tokens: int = 96,
                 response_cache: ResponseCache | None = None) -> None:
        super().__init__(backend, corpus, response_cache)
        self.matcher, self.n, self.max_new_tokens = matcher, n, max_new_tokens

    def prompt(self, conversation: Conversation, candidates: list[int]) -> str:
        return prompts.listwise_prompt(conversation, [self.texts[c] for c in candidates],
                                       generation=True, n=self.n)

    def answers(self, asked: list[str], progress: bool = False) -> list[str]:
        """The raw answers to prompts, through the response cache when there is one: a local
        model answers one prompt at a time (no padding), an API model gets them all at once
        and keeps its `concurrency` in flight."""
        pooled = pools_requests(self.backend)
        groups = [asked] if pooled else [[one] for one in asked]
        out: list[str] = []
        for group in tqdm(groups, desc=self.name, disable=not progress or pooled, leave=False):
            out += cached_generate(self.backend, group, self.cache, self.max_new_tokens,
                                   progress=progress and pooled)
        return out

    def rank(self, conversation: Conversation, candidates: Sequence[int]) -> Ranking:
        return self.rank_all([conversation], [candidates])[0]

    def rank_all(self, conversations: Sequence[Conversation],
                 candidates: Sequence[Sequence[int]], progress: bool = False) -> list[Ranking]:
        """`rank` of each conversation with its candidates, every prompt sent at once."""
        checked = [_check(c) for c in candidates]
        asked = [n for n, c in enumerate(checked) if c]
        raw = dict(zip(asked, self.answers([self.prompt(conversations[n], checked[n])
                                            for n in asked], progress)))
        return [rank_from_answer(raw[n], c, self.matcher) if c else
                Ranking([], None, "no candidates") for n, c in enumerate(checked)]


def resolve_names(names: Sequence[str], matcher: TitleMatcher) -> tuple[list[int], list[str]]:
    """(corpus ids of the names that resolve, in order; the names that resolve to nothing)."""
    resolved: list[int] = []
    hallucinated: list[str] = []
    for name in names:
        found = matcher.resolve(name)
        if found is None:
            hallucinated.append(name)
        else:
            resolved.append(found.item_id)
    return resolved, hallucinated


def rank_from_answer(raw: str, candidates: list[int], matcher: TitleMatcher) -> Ranking:
    """Turn a generated answer into a Ranking: named candidates first (in the answer's order),
    then the rest in the retriever's order; record hallucinated and outside names."""
    names = parsing.parse_list(raw)
    pool = set(candidates)
    resolved, hallucinated = resolve_names(names, matcher)
    listed = [i for i in dict.fromkeys(resolved) if i in pool]
    outside = [i for i in resolved if i not in pool]
    failure = None if names else "no parsable list in the answer"
    items = listed + [c for c in candidates if c not in listed]
    return Ranking(items, None, failure, raw, listed, hallucinated, outside)


def titles(corpus: pd.DataFrame) -> pd.Series:
    """item_id -> "Title (year)" (the title alone when the year is unknown)."""
    return corpus.set_index("item_id").apply(
        lambda r: f"{r['title']} ({int(r['year'])})" if pd.notna(r["year"]) else r["title"],
        axis=1)


class TitleReranker(_LLMReranker):
    """Score each candidate by the mean per-token log-probability that the LLM, asked for one
    movie after the conversation (`prompts.title_prompt`), answers with its "Title (year)".

    No card is read: the score is what the model itself associates with the dialogue, which
    the retriever's cards may not hold. The per-token mean (rather than the sum, which favours
    short titles) was chosen on INSPIRED's dev selection dialogues. One forward pass of the
    conversation, then the titles (~10 tokens each) against its key/value cache.
    """

    name = "title likelihood"

    def __init__(self, backend: TransformersBackend, corpus: pd.DataFrame,
                 response_cache: ResponseCache | None = None, batch_size: int = 20) -> None:
        super().__init__(backend, corpus, response_cache)
        self.titles = titles(corpus)
        self.batch_size = batch_size

    def prompt(self, conversation: Conversation) -> str:
        return self.backend.chat_prompt(prompts.title_prompt(conversation),
                                        system=prompts.TITLE_SYSTEM)

    def rank(self, conversation: Conversation, candidates: Sequence[int]) -> Ranking:
        candidates = _check(candidates)
        if not candidates:
            return Ranking([], None, "no candidates")
        prompt = self.prompt(conversation)
        texts = [prompt + self.titles[c] for c in candidates]

        def compute(asked: list[str]) -> list[float]:
            sums, counts = self.backend.suffix_log_probs(
                prompt, [t[len(prompt):] for t in asked], batch_size=self.batch_size)
            return (sums / counts).tolist()

        return _by_scores(candidates, np.array(self._each("title", texts, compute),
                                               dtype=float))


class ConstrainedReranker(_LLMReranker):
    """Greedy decoding through a prefix tree of candidate titles: only candidates can be written.

    Each pick decodes one title token by token, allowing at each step only tokens that continue
    some remaining candidate's tokenised title; the picked candidate leaves the tree and the next
    pick starts on a new line. `n` titles are generated; the rest follow in retriever order.
    """

    name = "constrained generation"

    def __init__(self, backend: TransformersBackend, corpus: pd.DataFrame, n: int = 3,
                 response_cache: ResponseCache | None = None) -> None:
        super().__init__(backend, corpus, response_cache)
        self.titles = titles(corpus)
        self.n = n

    def rank(self, conversation: Conversation, candidates: Sequence[int]) -> Ranking:
        candidates = _check(candidates)
        if not candidates:
            return Ranking([], None, "no candidates")
        prompt = self.backend.chat_prompt(prompts.listwise_prompt(
            conversation, [self.texts[c] for c in candidates], generation=True, n=self.n))

        def compute() -> list:
            return self._decode(prompt, candidates)

        # ("constrained/kv": the cache key of this decoding, which feeds the tokens it wrote back
        # as they are, not the text re-tokenized as the first version did)
        picked = [int(c) for c in self._cached("constrained/kv", [prompt], compute)]
        items = picked + [c for c in candidates if c not in picked]
        return Ranking(items, None, None, "\n".join(f"{k + 1}. {self.titles[c]}"
                                                    for k, c in enumerate(picked)), picked)

    def _decode(self, prompt: str, candidates: list[int]) -> list[int]:
        """The picks, decoded greedily through the prefix tree. The prompt is encoded once: each
        token written (a title's, then the next line's "\n2. ") extends the same key/value cache,
        so a pick costs its own tokens, not the whole prompt again."""
        tokenizer = self.backend.tokenizer
        remaining = {c: tokenizer.encode(f"{self.titles[c]}", add_special_tokens=False)
                     for c in candidates}
        picked: list[int] = []
        feed = tokenizer(prompt + "1. ", add_special_tokens=False)["input_ids"]
        past = None
        for rank in range(min(self.n, len(candidates))):
            if rank:
                feed = tokenizer.encode(f"\n{rank + 1}. ", add_special_tokens=False)
            past, logits = self.backend.extend(feed, past)
            prefix: list[int] = []
            while True:
                alive = [c for c, seq in remaining.items() if seq[:len(prefix)] == prefix]
                done = [c for c in alive if len(remaining[c]) == len(prefix)]
                if done:
                    choice = done[0]
                    break
                allowed = sorted({remaining[c][len(prefix)] for c in alive})
                token = allowed[int(logits[allowed].argmax())]
                prefix.append(token)
                past, logits = self.backend.extend([token], past)
            picked.append(choice)
            del remaining[choice]
        return picked


def rank_all(reranker: object, conversations: Sequence[Conversation],
             candidates: Sequence[Sequence[int]], progress: bool = False,
             desc: str | None = None) -> list[Ranking]:
    """`reranker.rank` of each conversation with its candidates; a reranker that sends its
    prompts together (`GenerationReranker.rank_all`: an API model's requests in flight) gets
    them all at once."""
    if isinstance(reranker, GenerationReranker):
        return reranker.rank_all(conversations, candidates, progress)
    return [reranker.rank(c, pool) for c, pool in tqdm(
        list(zip(conversations, candidates)), disable=not progress,
        desc=desc or getattr(reranker, "name", "rerank"))]


def position_bias(rankings: list[Ranking], shown: list[list[int]]) -> np.ndarray:
    """How often the candidate shown at each position ended first: (K,) shares summing to 1.
    An unbiased ranker on randomly placed targets gives about 1/K everywhere."""
    k = max(len(s) for s in shown)
    counts = np.zeros(k)
    for ranking, order in zip(rankings, shown):
        if ranking.items:
            counts[order.index(ranking.items[0])] += 1
    return counts / max(1, counts.sum())


def candidate_sets(conversations: list[Conversation], scores_fn, k: int = 20,
                   include_target: bool = True, seed: int = 0) -> list[list[int]]:
    """K candidates per conversation from a retriever, in its order.

    `scores_fn(histories, k) -> (ids, scores)` is e.g. `Retriever.topk`. With `include_target`,
    a target the retriever missed replaces the candidate at a random position (seeded by the
    conversation id), so the reranker is always tested on sets that contain the answer. The
    position must be random: a fixed slot (say, last) would reward a reranker's position bias.
    """
    ids, _ = scores_fn([list(c.history) for c in conversations], k)
    out = []
    for conversation, row in zip(conversations, ids):
        pool = [int(i) for i in row]
        target = conversation.targets[0]
        if include_target and target not in pool:
            rng = conversation_rng(seed, conversation)
            pool[int(rng.integers(len(pool)))] = target
        out.append(pool)
    return out


def evaluate_rankings(rankings: list[Ranking], conversations: list[Conversation],
                      ks: tuple[int, ...] = (1, 5, 10, 20)) -> dict[str, float]:
    """Mean NDCG/Recall/MRR of rankings against the conversations' targets, plus the share of
    rankings with a recorded failure and the hallucination counts of generation modes."""
    from rar_lite import metrics

    ranks = [r for ranking, c in zip(rankings, conversations)
             for r in metrics.ranks_in_list(ranking.items, c.targets)]
    out = metrics.metrics_from_ranks(ranks, ks)
    out["failures"] = float(np.mean([r.failure is not None for r in rankings]))
    named = sum(len(r.listed) + len(r.hallucinated) + len(r.outside) for r in rankings)
    out["hallucination_rate"] = (sum(len(r.hallucinated) for r in rankings) / named
                                 if named else 0.0)
    out["outside_rate"] = sum(len(r.outside) for r in rankings) / named if named else 0.0
    return out
