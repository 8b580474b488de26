"""Split an LLM's free-text answer into the movie names it lists.

Two parsers:

- `parse_list` (the book's): numbered lists ("1. Heat (1995)", "2) ..."), bullets ("- ", "* ",
  "• "), one name per line, or a single line of comma/semicolon-separated names; prose around the
  list ("Sure! Here are ..." / "Enjoy!") is dropped; a description after the name ("Heat (1995) -
  a heist thriller") is cut by the title matcher later.
- `parse_cikm23`: the protocol of He et al. (CIKM 2023), for reproducing published numbers: take
  the text after the first "1.", else split by commas; strip numbering, parentheticals and extra
  spaces.
"""

from __future__ import annotations

import re

_NUMBERED = re.compile(r"^\s*(?:\(?\d{1,3}[.)\]:]|#\d{1,3})\s+(?P<name>.+)$")
_BULLET = re.compile(r"^\s*[-*•·]+\s+(?P<name>.+)$")
_PROSE_END = re.compile(r"[.!?:]$")


def parse_list(answer: object, max_items: int = 50) -> list[str]:
    """The names an answer lists, in order (see the module docstring); [] when there are none."""
    if not isinstance(answer, str) or not answer.strip():
        return []
    lines = [line.strip() for line in answer.replace("\r", "\n").split("\n") if line.strip()]
    listed = []
    for line in lines:
        match = _NUMBERED.match(line) or _BULLET.match(line)
        if match:
            listed.append(match.group("name").strip())
    if listed:
        return listed[:max_items]
    names: list[str] = []
    for line in lines:
        if len(lines) > 1 and _looks_like_prose(line):
            continue
        parts = re.split(r"\s*[;,]\s*|\s+and\s+", line) if ("," in line or ";" in line) else [line]
        names += [p.strip(" .") for p in parts if p.strip(" .")]
    return names[:max_items]


def _looks_like_prose(line: str) -> bool:
    """A sentence around the list: many words and a sentence ending, or an intro colon."""
    return line.endswith(":") or (len(line.split()) > 8 and bool(_PROSE_END.search(line)))


_CIKM_NUMBER = re.compile(r"^\s*\d+\s*[.)]\s*")
_PARENS = re.compile(r"\([^()]*\)")


def parse_cikm23(answer: object) -> list[str]:
    """Names as He et al. (CIKM 2023) extract them (see the module docstring)."""
    if not isinstance(answer, str) or not answer.strip():
        return []
    text = answer
    if "1." in text:
        text = text[text.index("1."):]
        parts = re.split(r"\n|(?<=\s)(?=\d+\.\s)", text)
    else:
        parts = text.split(",")
    names = []
    for part in parts:
        name = _PARENS.sub("", _CIKM_NUMBER.sub("", part))
        name = " ".join(name.split()).strip()
        if name:
            names.append(name)
    return names
