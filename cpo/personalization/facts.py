"""Grounding of facts: every number, price, percentage and date in copy must be in a cited
document, and citations must come from retrieval.

How dates and numbers are spelled (month names, the order of ``12/31/2026``, number words) is
data: ``rules/dates.yml``. Sentence-by-sentence word support is `cpo.personalization.grounding`;
`grounding_checks` runs both. Pure functions, no I/O beyond reading that file once.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation

from cpo.personalization import grounding as lexical
from cpo.personalization.checks import Check, data_file, findings, ok, strip_markup

_DATES = data_file("cpo.personalization", "rules/dates.yml")
_MONTHS = {str(m): i + 1 for i, names in enumerate(_DATES["months"]) for m in names}
_MONTH_FIRST = _DATES.get("slash_date_order", "month_first") == "month_first"
_NUMBER_WORDS = {str(w): int(n) for w, n in _DATES["number_words"].items()}

_MONTH_RE = "|".join(sorted(_MONTHS, key=len, reverse=True))
_ISO_DATE = r"\d{4}-\d{2}-\d{2}"
_NAMED_DATE = rf"(?:{_MONTH_RE})\.?\s+\d{{1,2}}(?:st|nd|rd|th)?(?:,?\s+\d{{4}})?"
_SLASH_DATE = r"\d{1,2}/\d{1,2}/\d{2,4}"
_NAMED_DATE_PARTS = re.compile(
    rf"({_MONTH_RE})\.?\s+(\d{{1,2}})(?:st|nd|rd|th)?(?:,?\s+(\d{{4}}))?", re.IGNORECASE
)
DATE = re.compile(rf"\b(?:{_ISO_DATE}|{_NAMED_DATE}|{_SLASH_DATE})\b", re.IGNORECASE)
"""A date: ISO, ``December 31, 2026`` or ``12/31/2026``."""

CLAIM = re.compile(
    rf"(?P<date>\b(?:{_ISO_DATE}|{_NAMED_DATE}|{_SLASH_DATE})\b)"
    r"|(?P<price>[$€£]\s?\d(?:[\d,]*\d)?(?:\.\d+)?)"
    r"|(?P<pct>\b\d+(?:\.\d+)?\s?(?:%|percent\b))"
    r"|(?P<num>\b\d[\d,]*\d(?:\.\d+)?\b)",
    re.IGNORECASE,
)
NUMBER = re.compile(r"\d[\d,]*(?:\.\d+)?")
URL = re.compile(r"\bhttps?://\S+|\bwww\.\S+", re.IGNORECASE)
_NUMBER_WORD = re.compile(r"\b(" + "|".join(_NUMBER_WORDS) + r")\b", re.IGNORECASE)


def has_deadline(texts: Iterable[str]) -> bool:
    """Whether any text states a date (ISO, ``December 31, 2026``, ``12/31/2026``)."""
    return any(DATE.search(t) for t in texts)


def _decimal(text: str) -> Decimal | None:
    try:
        return Decimal(text.replace(",", ""))
    except InvalidOperation:
        return None


def _first_number(text: str) -> Decimal | None:
    match = NUMBER.search(text)
    return _decimal(match.group(0)) if match else None


def _date_key(text: str) -> tuple[int | None, int, int] | None:
    """(year or None, month, day) of a date claim, so formats compare equal."""
    text = text.strip().lower()
    if m := re.fullmatch(r"(\d{4})-(\d{2})-(\d{2})", text):
        return int(m[1]), int(m[2]), int(m[3])
    if m := _NAMED_DATE_PARTS.fullmatch(text):
        return (int(m[3]) if m[3] else None), _MONTHS[m[1]], int(m[2])
    if m := re.fullmatch(r"(\d{1,2})/(\d{1,2})/(\d{2,4})", text):
        year = int(m[3]) + (2000 if len(m[3]) == 2 else 0)
        month, day = (int(m[1]), int(m[2])) if _MONTH_FIRST else (int(m[2]), int(m[1]))
        return year, month, day
    return None


@dataclass(frozen=True)
class _Evidence:
    numbers: frozenset[Decimal]
    percents: frozenset[Decimal]
    dates: frozenset[tuple[int | None, int, int]]


def _evidence(texts: Iterable[str]) -> _Evidence:
    numbers: set[Decimal] = set()
    percents: set[Decimal] = set()
    dates: set[tuple[int | None, int, int]] = set()
    for text in texts:
        for m in CLAIM.finditer(text):
            if m["date"] and (key := _date_key(m["date"])):
                dates.add(key)
            elif m["pct"] and (pct := _first_number(m["pct"])) is not None:
                percents.add(pct)
        numbers.update(d for n in NUMBER.findall(text) if (d := _decimal(n)) is not None)
        # A document saying "ten" grounds copy saying "10".
        numbers.update(Decimal(_NUMBER_WORDS[w.lower()]) for w in _NUMBER_WORD.findall(text))
    return _Evidence(frozenset(numbers), frozenset(percents), frozenset(dates))


def _grounded(match: re.Match[str], evidence: _Evidence) -> bool:
    if match["date"]:
        key = _date_key(match["date"])
        if key is None:
            return False
        year, month, day = key
        return any(
            (m, d) == (month, day) and (year is None or y is None or y == year)
            for y, m, d in evidence.dates
        )
    value = _first_number(match.group(0))
    if match["pct"]:
        return value in evidence.percents
    return value in evidence.numbers


def extract_claims(text: str) -> list[re.Match[str]]:
    """Numbers, percentages, prices and dates stated in copy, outside merge tags, citation
    brackets and URLs."""
    return list(CLAIM.finditer(URL.sub(" ", strip_markup(text))))


def grounding_checks(
    subject: str,
    body: str,
    citations: Sequence[str],
    retrieved_ids: Sequence[str],
    cited_texts: Mapping[str, str],
    sentences: lexical.Settings | None = None,
) -> list[Check]:
    """Citations must come from retrieval; every stated fact must appear in a cited document.

    Args:
        subject: The subject line.
        body: The body.
        citations: The ``document_id`` values the variant cites.
        retrieved_ids: The ids retrieved for the variant's segment.
        cited_texts: ``document_id`` -> text (title and body) of at least the cited documents.
        sentences: Lexical grounding settings; None skips the sentence and placeholder checks.

    Returns:
        ``grounding:citations`` (fails naming each foreign id) and ``grounding:claims`` (fails
        with ``ungrounded_claim: <claim>`` for each claim no cited, retrieved document states),
        then `lexical_checks` when `sentences` is given.
    """
    retrieved = set(retrieved_ids)
    foreign = [c for c in dict.fromkeys(citations) if c not in retrieved]
    checks = [
        findings(
            "grounding:citations",
            [f"foreign_citation: {c} was not retrieved for this segment" for c in foreign],
            f"{len(citations)} citations, all retrieved",
        )
    ]
    # Only documents that were both retrieved and cited can ground a claim.
    usable = {c: cited_texts.get(c, "") for c in dict.fromkeys(citations) if c in retrieved}
    claims = extract_claims(f"{subject}\n{body}")
    evidence = _evidence(usable.values())
    ungrounded = [m.group(0).strip() for m in claims if not _grounded(m, evidence)]
    prefix = "ungrounded_claim: "
    if ungrounded and not usable:
        prefix = "ungrounded_claim (no retrieved document cited): "
    checks.append(
        findings(
            "grounding:claims",
            [prefix + c for c in dict.fromkeys(ungrounded)],
            f"{len(claims)} claims, all grounded",
        )
    )
    if sentences is not None:  # words, sentence by sentence; placeholders
        checks += lexical_checks(subject, body, citations, usable, sentences)
    return checks


def lexical_checks(
    subject: str,
    body: str,
    citations: Sequence[str],
    usable: Mapping[str, str],
    settings: lexical.Settings,
) -> list[Check]:
    """``grounding:sentences`` (each sentence supported by what it cites;
    `cpo.personalization.grounding`) and ``grounding:placeholders`` (no ``<the email body>``,
    ``[Your Name]``, ``DOC_ID`` ...)."""
    holes = lexical.find_placeholders(f"{subject}\n{body}")
    checks = [findings("grounding:placeholders", [f"placeholder: {h!r}" for h in holes][:5])]
    if not settings.enabled:
        return [*checks, ok("grounding:sentences", "disabled")]
    verdicts = lexical.judge(body, usable, settings, citations)
    failed = [v.reason for v in verdicts if not v.supported]
    supported = f"{len(verdicts)} sentences, all supported"
    return [*checks, findings("grounding:sentences", failed, supported)]
