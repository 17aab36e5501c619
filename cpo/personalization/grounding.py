"""Lexical grounding: every sentence of a body must be supported by the document it cites.

The numbers-and-dates check in `cpo.personalization.policy` catches invented figures; this module
reads the
words. A body is split into sentences; each sentence's citation markers (``[DOC_ID]``) say which
documents it claims to come from. Its **support** is the share of its content words (lower-cased,
crudely stemmed, stop words and merge tags removed) that appear in those documents.

* A cited sentence passes when its support is at least ``min_support``.
* An uncited sentence passes when the cited documents support it just as well, or when it is
  connective copy ("Hi {{ first_name }},", "Thanks for being with us.") with at most
  ``max_uncited_words`` content words outside a small vocabulary of greetings and sign-offs.
* Placeholders and template echoes (``<the email body>``, ``[Your Name]``, ``Lorem ipsum``,
  ``DOC_ID``) are blocked wherever they appear, subject included.

Settings live in ``vars.safety.policy.grounding`` (`resolve`); check reasons never quote the copy,
only sentence numbers, ids and scores, so they are safe to print and log.
Pure functions, no I/O.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from cpo.personalization.checks import MERGE_TAG, data_file
from cpo.personalization.settings import GROUNDING_KEY, GroundingVars, grounding_settings

SETTINGS_KEY = GROUNDING_KEY
Settings = GroundingVars
"""The grounding thresholds: ``enabled``, ``min_support``, ``max_uncited_words`` (the model of
``vars.safety.policy.grounding``, `cpo.personalization.settings.GroundingVars`)."""

CITATION = re.compile(r"\[([A-Za-z0-9_.:\-]+)\]")
WORD = re.compile(r"[a-z0-9]+(?:'[a-z]+)?")
# A sentence ends at . ! ? (and any closing quote) followed by space, or at a line break.
_SENTENCE_BREAK = re.compile(r"(?<=[.!?])[\"')\]]*\s+|\n+")
_LEADING_CITATIONS = re.compile(r"^((?:\[[A-Za-z0-9_.:\-]+\]\s*)+)")

_WORDS = data_file("cpo.personalization", "rules/grounding_words.yml")
STOP_WORDS = frozenset(str(w) for w in _WORDS["stop_words"])
"""Words with no content (``rules/grounding_words.yml``)."""
PHATIC_WORDS = frozenset(str(w) for w in _WORDS["phatic_words"])
"""Greetings, sign-offs and connectives (``rules/grounding_words.yml``)."""
_PLACEHOLDERS = (
    re.compile(r"<[^<>\n]{1,60}>"),  # <the email body>, <DOC_ID>, <subject>
    re.compile(
        r"\[(?:your|insert|name|company|brand|link|date|recipient|customer|first name|"
        r"product|url|address|sender)[^\]\n]{0,40}\]",
        re.IGNORECASE,
    ),
    re.compile(r"(?<!\{)\{(?:subject|body|citations|name|first_name|date)\}(?!\})", re.I),
    re.compile(r"\blorem ipsum\b", re.IGNORECASE),
    re.compile(r"\bDOC_ID\b"),
    re.compile(r"\b(?:TODO|TBD|FIXME|XXX)\b"),
    re.compile(r"\b(?:the email body|the subject line|document ids? cited)\b", re.IGNORECASE),
    re.compile(r'"(?:subject|body|citations)"\s*:'),  # a JSON answer echoed as copy
)


@dataclass(frozen=True)
class Sentence:
    """One sentence of a body: its text without citation markers, and the ids it cites."""

    text: str
    citations: tuple[str, ...]


@dataclass(frozen=True)
class Verdict:
    """Whether one sentence is supported, and why (no copy quoted)."""

    index: int
    supported: bool
    support: float
    reason: str


def resolve(settings: Mapping[str, Any] | None) -> Settings:
    """``vars.safety.policy.grounding`` as `Settings` (its one model), defaults filled in.

    Raises:
        ConfigurationError: An unknown key, or a value of the wrong type or range, named under
            ``vars.safety.policy.grounding``.
    """
    return grounding_settings(settings)


def split_sentences(body: str) -> list[Sentence]:
    """Sentences of `body`, each with the citation markers written in or right after it.

    ``"Members earn points. [D1] Shop now."`` gives ``Members earn points.`` citing ``D1`` and
    ``Shop now.`` citing nothing: a marker opening a sentence belongs to the one before.
    """
    pieces = [p.strip() for p in _SENTENCE_BREAK.split(body) if p and p.strip()]
    sentences: list[list[Any]] = []
    for piece in pieces:
        lead = _LEADING_CITATIONS.match(piece)
        if lead and sentences:
            sentences[-1][1].extend(CITATION.findall(lead.group(1)))
            piece = piece[lead.end() :].strip()
        if not piece:
            continue
        sentences.append([piece, CITATION.findall(piece)])
    out = []
    for text, cited in sentences:
        clean = " ".join(CITATION.sub(" ", text).split())
        if clean:
            out.append(Sentence(clean, tuple(dict.fromkeys(cited))))
    return out


def stem(word: str) -> str:
    """A crude English stem, enough to match ``jackets`` with ``jacket`` and ``earned``/``earn``."""
    word = word.removesuffix("'s")
    for suffix, keep in (("ies", "y"), ("sses", "ss"), ("ing", ""), ("ed", ""), ("es", "")):
        if word.endswith(suffix) and len(word) - len(suffix) >= 3:
            return word[: -len(suffix)] + keep
    if word.endswith("s") and not word.endswith("ss") and len(word) > 3:
        return word[:-1]
    return word


def content_words(text: str) -> list[str]:
    """Stemmed content words of `text`: no merge tags, citations, stop words or 1-2 letter words."""
    text = CITATION.sub(" ", MERGE_TAG.sub(" ", text)).lower().replace("\u2019", "'")
    return [
        stem(w) for w in WORD.findall(text) if w not in STOP_WORDS and (len(w) > 2 or w.isdigit())
    ]


def vocabulary(texts: Iterable[str]) -> frozenset[str]:
    """The stemmed content words of some documents."""
    return frozenset(w for t in texts for w in content_words(t))


def support(sentence: str, evidence: frozenset[str]) -> float:
    """Share of a sentence's content words found in `evidence` (1.0 for no content words)."""
    words = content_words(sentence)
    if not words:
        return 1.0
    return sum(w in evidence for w in words) / len(words)


_PHATIC = frozenset(stem(w) for w in PHATIC_WORDS)


def judge(
    body: str,
    cited_texts: Mapping[str, str],
    settings: Settings,
    citations: Sequence[str] = (),
) -> list[Verdict]:
    """A verdict for every sentence of `body`.

    Args:
        body: The body, with citation markers and merge tags.
        cited_texts: Document id -> text of the documents the variant may rely on (retrieved and
            cited); a marker naming any other id supports nothing.
        settings: The thresholds.
        citations: The variant's cited ids: an uncited sentence may lean on any of them.
    """
    everything = vocabulary(cited_texts.get(c, "") for c in citations if c in cited_texts)
    verdicts = []
    for number, sentence in enumerate(split_sentences(body), start=1):
        if sentence.citations:
            known = [c for c in sentence.citations if c in cited_texts]
            score = support(sentence.text, vocabulary(cited_texts[c] for c in known))
            ids = ", ".join(sentence.citations)
            if not known:
                reason = f"unsupported_sentence: sentence {number} cites {ids}, no usable document"
                verdicts.append(Verdict(number, False, 0.0, reason))
                continue
            verdict = "supported"
            why = (
                f"unsupported_sentence: sentence {number} cites {ids} but only "
                f"{score:.0%} of its content words are in it (min {settings.min_support:.0%})"
            )
        else:
            score = support(sentence.text, everything) if everything else 0.0
            extra = [w for w in content_words(sentence.text) if w not in _PHATIC]
            if len(extra) <= settings.max_uncited_words:
                verdicts.append(Verdict(number, True, score, "connective"))
                continue
            verdict = "supported_uncited"
            why = (
                f"uncited_sentence: sentence {number} ({len(extra)} content words) cites no "
                f"document and only {score:.0%} of it is in the cited documents"
            )
        supported = score + 1e-9 >= settings.min_support
        verdicts.append(Verdict(number, supported, score, verdict if supported else why))
    return verdicts


def find_placeholders(text: str) -> list[str]:
    """Placeholder and template-echo fragments in `text` (merge tags excepted)."""
    text = MERGE_TAG.sub(" ", text)
    return [m.group(0) for p in _PLACEHOLDERS for m in p.finditer(text)]


def supported_share(verdicts: Sequence[Verdict]) -> float:
    """Share of sentences that carry a citation and are supported by it (for evaluation)."""
    if not verdicts:
        return 0.0
    return sum(v.supported and v.reason == "supported" for v in verdicts) / len(verdicts)
