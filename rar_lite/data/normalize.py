"""Title normalisation shared by entity resolution (`rar_lite.data.corpus`) and name matching
(`rar_lite.data.matching`).

Catalogues write titles in forms no person types: "Usual Suspects, The", "Misérables, Les",
"Seven (a.k.a. Se7en)", "Amelie (Fabuleux destin d'Amélie Poulain, Le)". Two functions handle
them:

- `display_title` turns a catalogue title into the form a person would write ("The Usual
  Suspects"), dropping alternate titles in parentheses;
- `title_keys` gives the lookup keys of a title: its normalised main form plus each alternate
  title. A key is lowercase ASCII words with accents, punctuation and leading articles removed and
  "&" spelled "and", so that "The Usual Suspects", "usual suspects, the" and "Usual Suspects"
  share one key.
"""

from __future__ import annotations

import re
import unicodedata

#: Articles that catalogues move to the end of a title ("Usual Suspects, The"), in the languages
#: that occur in MovieLens and IMDb. Matched case-insensitively after a final comma.
ARTICLES: tuple[str, ...] = (
    "the", "a", "an",  # English
    "les", "la", "le", "l'", "un", "une", "des",  # French
    "el", "los", "las", "una", "uno", "lo",  # Spanish
    "il", "gli", "i", "l'",  # Italian
    "der", "die", "das", "ein", "eine",  # German
    "de", "het", "een",  # Dutch
    "den", "det", "en", "ett",  # Scandinavian
    "o", "os", "a", "as", "um", "uma",  # Portuguese
)
_ARTICLE_SET = frozenset(ARTICLES)
# Leading articles dropped from keys. Single letters other than "a" and the ambiguous short words
# ("i", "o", "as", "en", "de", "um") stay: dropping them would merge titles such as "I, Robot".
_KEY_LEADING = ("the", "a", "an", "les", "la", "le", "l", "el", "los", "las", "il", "gli",
                "der", "die", "das", "den", "det", "un", "une", "una", "ein", "eine", "het", "een")
_LEADING_RE = re.compile(r"^(?:" + "|".join(_KEY_LEADING) + r")\s+")
_TRAILING_ARTICLE_RE = re.compile(
    r"^(?P<body>.+?),\s*(?P<art>" + "|".join(re.escape(a) for a in sorted(_ARTICLE_SET, key=len,
                                                                        reverse=True))
    + r")$",
    re.IGNORECASE,
)
_PAREN_RE = re.compile(r"\s*\(([^()]*)\)")
_AKA_RE = re.compile(r"^(?:a\.?k\.?a\.?|also known as)\s+", re.IGNORECASE)
_NON_ALNUM_RE = re.compile(r"[^a-z0-9]+")
_APOSTROPHES = str.maketrans({"'": "", "’": "", "`": "", "´": ""})


def strip_accents(text: str) -> str:
    """Return `text` with accents and other combining marks removed ("Amélie" -> "Amelie")."""
    decomposed = unicodedata.normalize("NFKD", text)
    return "".join(ch for ch in decomposed if not unicodedata.combining(ch))


def move_article_front(title: str) -> str:
    """Turn a catalogue form with a trailing article into natural order.

    >>> move_article_front("Usual Suspects, The")
    'The Usual Suspects'
    >>> move_article_front("Avventura, L'")
    "L'Avventura"
    """
    title = title.strip()
    match = _TRAILING_ARTICLE_RE.match(title)
    if not match:
        return title
    body, article = match.group("body").strip(), match.group("art")
    # "Crouching Tiger, Hidden Dragon" must stay: only a short article word after the comma moves.
    if article.endswith("'"):
        return f"{article}{body}"
    return f"{article} {body}"


def split_alternates(title: str) -> tuple[str, list[str]]:
    """Split a catalogue title into its main part and alternate titles given in parentheses.

    A trailing article that follows the parentheses belongs to the main title
    ("Amants de Montparnasse (Montparnasse 19), Les"). "a.k.a." prefixes are removed from the
    alternates.
    """
    title = (title or "").strip()
    alternates = [_AKA_RE.sub("", alt).strip() for alt in _PAREN_RE.findall(title)]
    main = _PAREN_RE.sub("", title).strip()
    main = re.sub(r"\s+,", ",", main)
    if not main and alternates:  # a title that is only a parenthetical, e.g. "(Haru)"
        main, alternates = alternates[0], alternates[1:]
    return main, [alt for alt in alternates if alt]


def display_title(title: str) -> str:
    """The form a person would write: article in front, alternate titles dropped.

    >>> display_title("City of Lost Children, The (Cité des enfants perdus, La)")
    'The City of Lost Children'
    """
    main, _ = split_alternates(title)
    return move_article_front(main)


def normalize_title(title: str, keep_article: bool = False) -> str:
    """Normalise one title (no parentheses handling) to its key form.

    Lowercase ASCII, "&" as "and", apostrophes dropped ("Schindler's" -> "schindlers"), other
    punctuation as spaces, a leading article removed (unless `keep_article`), whitespace
    collapsed.
    """
    if not title:
        return ""
    text = move_article_front(strip_accents(title)).lower()
    text = text.replace("&", " and ").replace("+", " and ")
    text = re.sub(r"^l'\s*", "l ", text)  # "L'Avventura" -> "l avventura": the article separates
    text = text.translate(_APOSTROPHES)
    text = _NON_ALNUM_RE.sub(" ", text).strip()
    if keep_article:
        return text
    stripped = _LEADING_RE.sub("", text)
    return stripped if stripped else text  # a title that is only an article ("The") keeps it


def title_keys(title: str) -> list[str]:
    """All lookup keys of a catalogue title, main form first, without duplicates or empties."""
    main, alternates = split_alternates(title)
    keys: list[str] = []
    for candidate in [main, *alternates]:
        key = normalize_title(candidate)
        if key and key not in keys:
            keys.append(key)
    return keys


def colon_prefix_key(title: str) -> str | None:
    """The key of the part before a subtitle ("Star Wars: Episode IV - A New Hope" -> "star wars").

    Used only as a low-priority key in entity resolution, where a year window guards it.
    """
    main, _ = split_alternates(title)
    for separator in (":", " - "):
        if separator in main:
            head = normalize_title(main.split(separator, 1)[0])
            if len(head) >= 4:
                return head
    return None
