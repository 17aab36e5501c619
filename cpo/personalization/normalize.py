"""One text normaliser for every screen: the harm screen, the policy checks and injection checks.

Screens match patterns on `normalize(text)`, never on the raw text, so the usual tricks for
slipping a word past a filter do not work:

1. Unicode NFKC: full-width ``Ｉｇｎｏｒｅ`` and ligatures become plain ASCII letters.
2. Zero-width and control characters (``\\u200b``, ``\\u2060``, soft hyphens, bidi marks, C0/C1
   controls except newline and tab) are removed: ``Ign\\u200bore`` is ``Ignore``.
3. Look-alike letters from Cyrillic and Greek (``а``, ``е``, ``о``, ``р``, ``ѕ``, ...) become their
   Latin twins; accents are dropped (``précédentes`` -> ``precedentes``), so one pattern covers
   accented and unaccented spellings.
4. Digits and symbols standing for letters inside a word (``Ign0re``, ``prev1ous``,
   ``1nstruct10ns``, ``sh1t``, ``b!tch``, ``a$$``) are folded back to letters. Numbers, prices,
   sizes (``20L``, ``500ml``, ``4th``) and e-mail addresses are left alone.
5. Masked profanity is spelled out again: wildcards (``f*ck``, ``f***ing``, ``f#ck``) when the
   word, letter for letter, spells a known profane word, and spaced-out letters (``b-i-t-c-h``,
   ``f u c k``).

The result is for matching only; nothing stores or shows it.
"""

from __future__ import annotations

import re
import unicodedata

ZERO_WIDTH = re.compile(
    "[\u00ad\u034f\u061c\u115f\u1160\u17b4\u17b5\u180b-\u180f\u200b-\u200f\u202a-\u202e"
    "\u2060-\u206f\u3164\ufe00-\ufe0f\ufeff\uffa0]"
)
"""Invisible characters that can hide inside a word."""

_CONFUSABLES = str.maketrans(
    {
        # Cyrillic
        "а": "a", "в": "b", "е": "e", "ё": "e", "к": "k", "м": "m", "н": "h", "о": "o",
        "р": "p", "с": "c", "т": "t", "у": "y", "х": "x", "і": "i", "ї": "i", "ј": "j",
        "ѕ": "s", "ԁ": "d", "ԛ": "q", "ԝ": "w", "һ": "h", "ӏ": "l", "ɡ": "g",
        "А": "A", "В": "B", "Е": "E", "К": "K", "М": "M", "Н": "H", "О": "O", "Р": "P",
        "С": "C", "Т": "T", "У": "Y", "Х": "X", "І": "I", "Ј": "J", "Ѕ": "S",
        # Greek
        "α": "a", "ε": "e", "ι": "i", "κ": "k", "ν": "v", "ο": "o", "ρ": "p", "τ": "t",
        "υ": "u", "χ": "x", "Α": "A", "Β": "B", "Ε": "E", "Η": "H", "Ι": "I", "Κ": "K",
        "Μ": "M", "Ν": "N", "Ο": "O", "Ρ": "P", "Τ": "T", "Υ": "Y", "Χ": "X", "Ζ": "Z",
        # Typographic look-alikes
        "ı": "i", "ł": "l", "ø": "o", "ß": "ss", "æ": "ae", "œ": "oe",
        "‘": "'", "’": "'", "ʼ": "'", "“": '"', "”": '"', "–": "-", "—": "-", "‐": "-",
    }
)  # fmt: skip

LEET = {"0": "o", "1": "i", "3": "e", "4": "a", "5": "s", "7": "t", "@": "a", "$": "s", "!": "i"}
"""Digits and symbols that stand for one particular letter inside a word."""
WILDCARDS = "*#%&^"
"""Symbols that stand for any one letter ("f***ing", "f#ck")."""

PROFANE_WORDS: tuple[str, ...] = (
    "motherfuckers", "motherfucker", "motherfucking", "fucking", "fucked", "fucker", "fuckers",
    "fucks", "fuck", "fck", "bullshit", "shitty", "shits", "shit", "asshole", "assholes",
    "dumbass", "jackass", "arse", "ass", "bitches", "bitching", "bitchy", "bitch", "bastards",
    "bastard", "goddamn", "damned", "damn", "dammit", "crappy", "crap", "cunts", "cunt",
    "dickhead", "dick", "cocksucker", "cock", "pussy", "pissed", "piss", "sluts", "slut",
    "whores", "whore", "twat", "wankers", "wanker", "bollocks", "hell",
)  # fmt: skip
"""Words masked spellings are restored to; where a masked word fits several, the first wins."""

# A run of letters, digits and masking symbols not glued to other word characters. A hashtag or
# an e-mail's "@" cannot start one; a trailing "!" is punctuation ("sh*t!"), not a letter.
_MASKED_WORD = re.compile(
    # The lookahead skips words of letters only (most of a text) before any Python runs.
    r"(?<![\w*#@$%&^.])(?=[a-z]*[0-9*#@$!%&^])[a-z@$][a-z0-9*#@$!%&^]*[a-z0-9*#@$%&^]",
    re.IGNORECASE,
)
# Digits inside a word: "ign0re", "prev1ous", "1nstruct10ns" (a letter on both sides of a digit,
# or a digit opening a word of letters that is no ordinal or unit).
_DIGIT_WORD = re.compile(r"(?<![\w.@])(?=[a-z0-9]*[a-z])(?=[a-z0-9]*\d)[a-z0-9]{3,}(?![\w@])", re.I)
_UNITS = re.compile(
    r"\d+(?:st|nd|rd|th|s|l|ml|cl|g|kg|lb|lbs|oz|mm|cm|m|km|mi|ft|in|k|x|d|h|hr|hrs|min|mins|"
    r"pm|am|gb|mb|tb|mp|p|v|w|mah|wd|xl|xs)",
    re.IGNORECASE,
)
# Single letters joined by one separator, the same each time: "b-i-t-c-h", "f.u.c.k", "f u c k".
_SPACED = re.compile(r"(?<![\w])[a-z]([-._*]\s?|\s)[a-z](?:\1[a-z]){2,}(?![\w])", re.IGNORECASE)
_CONTROL = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f]")
_MARKS = re.compile(r"[\u0300-\u036f]")


def strip_invisible(text: str) -> str:
    """Remove zero-width, bidi and control characters (newlines and tabs stay)."""
    return _CONTROL.sub("", ZERO_WIDTH.sub("", text))


def fold_confusables(text: str) -> str:
    """Map Cyrillic/Greek look-alikes to Latin letters and drop accents."""
    text = text.translate(_CONFUSABLES)
    return _MARKS.sub("", unicodedata.normalize("NFKD", text))


def _unmask_word(word: str) -> str | None:
    """The profane word `word` spells with symbols standing for letters, or None."""
    if all(c.isalpha() for c in word):
        return None
    if word[0].isupper() and len(word) < 4 and all(c in WILDCARDS for c in word[1:]):
        return None  # "A*", "A**": grades and ratings, too short to read as a word
    parts = []
    for c in word.lower():
        if c in WILDCARDS:
            parts.append("[a-z]")
        elif c == "1":
            parts.append("[il]")
        elif c in LEET:
            parts.append(LEET[c])
        else:
            parts.append(re.escape(c))
    pattern = re.compile("".join(parts))
    return next((w for w in PROFANE_WORDS if pattern.fullmatch(w)), None)


def unmask_profanity(text: str) -> str:
    """Spell out symbol-masked profanity ("sh*t" -> "shit", "a$$" -> "ass", "f#ck" -> "fuck").

    Only words that, letter for letter, spell one of `PROFANE_WORDS` are rewritten; everything
    else (prices, e-mail addresses, hashtags, "A*" grades) is left as it is.
    """
    return _MASKED_WORD.sub(lambda m: _unmask_word(m.group(0)) or m.group(0), text)


def _fold_digits(match: re.Match[str]) -> str:
    word = match.group(0)
    if _UNITS.fullmatch(word) or word.isdigit():
        return word
    return "".join(LEET.get(c, c) for c in word)


def fold_leet(text: str) -> str:
    """Fold digits standing for letters inside words ("Ign0re prev1ous" -> "Ignore previous")."""
    return _DIGIT_WORD.sub(_fold_digits, text)


def _join_spaced(match: re.Match[str]) -> str:
    letters = re.sub(r"[^a-z]", "", match.group(0), flags=re.IGNORECASE)
    if letters.lower() in PROFANE_WORDS:
        return letters
    if letters[1:].lower() in PROFANE_WORDS:  # "a s h i t show": an article in front
        return f"{letters[0]} {letters[1:]}"
    if len(letters) >= 5:
        return letters
    return match.group(0)


def normalize(text: str) -> str:
    """The form of `text` every screen matches on (see the module docstring for the steps)."""
    if not text:
        return ""
    text = strip_invisible(unicodedata.normalize("NFKC", text))
    text = fold_confusables(text)
    text = unmask_profanity(text)
    text = fold_leet(text)
    text = _SPACED.sub(_join_spaced, text)
    return unicodedata.normalize("NFC", text)
