"""Every prompt template of the book, in one place (chapter 4 prints them).

- `listwise_prompt`: the conversation plus K lettered candidates (their corpus text lines) and an
  instruction; used by the verbalizer (rank by the next-token logits of the letters) and by
  generation (the model writes a ranked list of titles).
- `pointwise_prompt`: one short prompt per candidate ("Does the movie below fit the request?
  Answer yes or no."), scored by logit(yes) - logit(no). The movie comes last, so the prompts of
  one conversation share everything before it (the backend encodes that prefix once). What the
  judge reads of the conversation is its *context* (`CONTEXTS`): the seeker's words alone
  ("request", chapter 4's simulated requests) or the latest turns of both speakers ("dialogue":
  real seekers answer the recommender's questions, so the question matters). A tuned judge reads
  its yes/no logits right after the movie, a zero-shot one at the assistant's turn
  (`llm_local.LAYOUTS`).
- `open_prompt`: the conversation alone, for an LLM recommending without retrieval.
- `title_prompt`: the latest turns and a request for one title; the title reranker scores how
  likely the model is to answer with each candidate's title.

The conversation is truncated to a budget of words, oldest turns first; candidates are never
dropped.
"""

from __future__ import annotations

import string

from rar_lite.data.conversations import Conversation

LABELS: tuple[str, ...] = tuple(string.ascii_uppercase)
#: Word budget of the conversation part of a prompt (the candidates come on top).
CONVERSATION_WORDS = 220

LISTWISE = """Here is a conversation between a movie seeker and a recommender.

{conversation}

Candidate movies:
{candidates}

Which candidate best fits what the seeker wants now? {task}"""
VERBALIZER_TASK = "Answer with the letter of the best candidate only."
GENERATION_TASK = ("Rank the {n} best candidates, best first, as a numbered list of their titles "
                   "(title and year), one per line, and nothing else.")

#: The pointwise judge's system prompt: short, so the prompt stays ~110 tokens (SmolLM2's chat
#: template would otherwise insert its default system prompt, ~20 tokens).
POINTWISE_SYSTEM = "You judge whether a movie fits a request."

POINTWISE = """Request: {request}
Does the movie below fit the request? Answer yes or no.
Movie: {movie}"""
POINTWISE_DIALOGUE = """Conversation:
{request}
Does the movie below fit what the seeker wants? Answer yes or no.
Movie: {movie}"""
#: What a pointwise judge reads of the conversation, and its template.
CONTEXTS: dict[str, str] = {"request": POINTWISE, "dialogue": POINTWISE_DIALOGUE}
#: Word budget of the "dialogue" context (the latest turns of both speakers).
DIALOGUE_WORDS = 120

#: The title reranker's system prompt and question (its answer is scored, not generated).
TITLE_SYSTEM = "You are a movie recommender."
TITLE = """Here is a conversation between a movie seeker and a recommender.

{conversation}

Recommend the one movie the seeker would like now: its title and year only."""

OPEN = """Here is a conversation between a movie seeker and a recommender.

{conversation}

Recommend {n} movies the seeker would like now, best first, as a numbered list of titles with
their year, one per line, and nothing else."""


def conversation_text(conversation: Conversation, max_words: int = CONVERSATION_WORDS) -> str:
    """The dialogue, one "Speaker: text" line per turn, dropping the oldest turns (then cutting
    the oldest words of the first kept turn) to fit `max_words`."""
    lines = [f"{t.speaker.capitalize()}: {t.text}" for t in conversation.turns]
    kept: list[str] = []
    budget = max_words
    for line in reversed(lines):
        words = line.split()
        if len(words) <= budget:
            kept.append(line)
            budget -= len(words)
        else:
            if budget > 3:
                kept.append("... " + " ".join(words[-budget:]))
            break
    return "\n".join(reversed(kept))


def candidate_lines(texts: list[str]) -> str:
    """Candidates as "(A) text" lines; at most 26 (one letter each)."""
    if len(texts) > len(LABELS):
        raise ValueError(f"at most {len(LABELS)} lettered candidates, got {len(texts)}")
    return "\n".join(f"({LABELS[k]}) {text}" for k, text in enumerate(texts))


def listwise_prompt(conversation: Conversation, candidate_texts: list[str],
                    generation: bool = False, n: int = 5,
                    max_words: int = CONVERSATION_WORDS) -> str:
    """The listwise prompt (verbalizer task, or generation of `n` titles)."""
    task = GENERATION_TASK.format(n=n) if generation else VERBALIZER_TASK
    return LISTWISE.format(conversation=conversation_text(conversation, max_words),
                           candidates=candidate_lines(candidate_texts), task=task)


def request_text(conversation: Conversation, max_words: int = 80) -> str:
    """What the seeker said, most recent words kept when over `max_words`."""
    words = conversation.seeker_text().split()
    return " ".join(words[-max_words:])


def context_text(conversation: Conversation, context: str = "request") -> str:
    """What a pointwise judge reads of `conversation` (`CONTEXTS`): the seeker's words, or the
    latest turns of both speakers within `DIALOGUE_WORDS`."""
    if context not in CONTEXTS:
        raise ValueError(f"context must be one of {tuple(CONTEXTS)}, got {context!r}")
    if context == "dialogue":
        return conversation_text(conversation, DIALOGUE_WORDS)
    return request_text(conversation)


def pointwise_prompt(request: str, movie_text: str, context: str = "request") -> str:
    """One candidate judged against the seeker's request (or the dialogue: `CONTEXTS`)."""
    if context not in CONTEXTS:
        raise ValueError(f"context must be one of {tuple(CONTEXTS)}, got {context!r}")
    return CONTEXTS[context].format(request=request, movie=movie_text)


def open_prompt(conversation: Conversation, n: int = 10,
                max_words: int = CONVERSATION_WORDS) -> str:
    """The conversation alone: the LLM recommends from memory (no retrieval)."""
    return OPEN.format(conversation=conversation_text(conversation, max_words), n=n)


def title_prompt(conversation: Conversation, max_words: int = DIALOGUE_WORDS) -> str:
    """The latest turns of both speakers and a request for one title (`TITLE`)."""
    return TITLE.format(conversation=conversation_text(conversation, max_words))
