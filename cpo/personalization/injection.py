"""Prompt injection: text aimed at a language model, from one pattern file.

The patterns live in ``cpo/providers/lexicons/injection.yml`` and are read here only
(`patterns`). The screen's ``injection`` check and stg_content's ``injection_flag``
(``udfs/text_checks.py``) use `find_injection`; the offline composer drops every sentence
`about_a_model` finds, a stricter filter that adds the file's ``about_a_model`` patterns.

Text is normalised first (`cpo.personalization.normalize.normalize`): zero-width characters,
full-width letters, look-alikes, accents and digits-for-letters do not hide an instruction.
"""

from __future__ import annotations

import re
from functools import cache

from cpo.personalization.checks import Check, data_file, findings
from cpo.personalization.normalize import normalize

LEXICON = ("cpo.providers", "lexicons/injection.yml")


@cache
def patterns(about_a_model: bool = False) -> tuple[str, ...]:
    """The patterns of ``injection.yml``: every group of ``patterns``, then (when
    `about_a_model`) the ``about_a_model`` list. RE2-compatible (no look-around), so SQL can
    reuse them with ``regexp_matches(text, pattern, 'i')``; apply them case-insensitively to
    normalised text."""
    data = data_file(*LEXICON)
    found = [str(p) for group in data["patterns"].values() for p in group]
    if about_a_model:
        found += [str(p) for p in data.get("about_a_model") or ()]
    return tuple(found)


@cache
def _compiled(about_a_model: bool) -> tuple[re.Pattern[str], ...]:
    return tuple(re.compile(p, re.IGNORECASE) for p in patterns(about_a_model))


INJECTION_PATTERNS: tuple[str, ...] = patterns()
"""Instruction-like text aimed at a model, in every language ``injection.yml`` covers."""


def find_injection(text: str) -> list[str]:
    """Return the instruction-like passages in `text` (normalised first) that address a model."""
    norm = normalize(text)
    return [m.group(0) for p in _compiled(False) for m in p.finditer(norm)]


def about_a_model(sentence: str) -> bool:
    """Whether `sentence` talks to or about a model (the composer's filter): any pattern of
    ``injection.yml`` matches it, as written or normalised."""
    norm = normalize(sentence)
    return any(p.search(sentence) or p.search(norm) for p in _compiled(True))


def injection_check(text: str) -> Check:
    """The ``injection`` check: fails when `text` carries instructions aimed at a model."""
    hits = find_injection(text)
    return findings("injection", [f"injection: {h!r}" for h in dict.fromkeys(hits)])
