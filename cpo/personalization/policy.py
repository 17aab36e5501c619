"""Screening rules for generated copy: harm thresholds, brand policy, grounding and injection.

Pure functions, no I/O. Nothing here knows a brand: phrases, patterns and limits come from the
``policy`` mapping (``vars.safety.policy`` in ``cpo.yml``), merged over `DEFAULT_POLICY`.

Every function returns `Check` values, one per check name, which become the rows of
``safety_screenings(variant_id, check, severity, passed, reason)``. Severity means:

* ``harm:<Category>``: the category severity on Azure's 0-7 scale;
* every other check: the number of findings (0 when it passed).

The one blocking rule for harm severities lives in `is_blocked`: a severity blocks when it is
greater than or equal to its threshold (default 4, Azure's "medium").
"""

from __future__ import annotations

import fnmatch
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation
from importlib import resources
from typing import Any

import yaml

from cpo.errors import ConfigurationError
from cpo.personalization import grounding as lexical
from cpo.personalization.normalize import normalize
from cpo.providers.base import HARM_CATEGORIES, SafetyResult

DEFAULT_THRESHOLD = 4
POLICY_KEY = "vars.safety.policy"
THRESHOLDS_KEY = "vars.safety.thresholds"

DEFAULT_POLICY: Mapping[str, Any] = {
    "forbidden_phrases": (
        "guaranteed",
        "risk-free",
        "100% free",
        "act now or lose",
        "no strings attached",
        "miracle cure",
        "double your money",
        "get rich quick",
        "once in a lifetime",
        "clinically proven",
    ),
    "required_patterns": {},
    "subject_max_chars": 60,
    "body_min_words": 0,
    "body_max_words": 400,
    "merge_tag_chars": 10,
    "pii_allow": (),
    "grounding": {},  # lexical grounding thresholds: cpo.personalization.grounding.resolve
    "urgency_terms": (
        "last chance",
        "ends soon",
        "ending soon",
        "today only",
        "hurry",
        "act now",
        "limited time",
        "final hours",
        "last day",
        "expires soon",
        "don't miss out",
        "now or never",
        "before it's gone",
    ),
}


def _lexicon(name: str) -> dict[str, Any]:
    """A YAML pattern file shipped in ``cpo/providers/lexicons/``."""
    text = resources.files("cpo.providers").joinpath(f"lexicons/{name}").read_text("utf-8")
    return yaml.safe_load(text) or {}


def _expand(pattern: str, definitions: Mapping[str, str]) -> str:
    for name, alternation in definitions.items():
        pattern = pattern.replace("{" + name + "}", alternation)
    return pattern.replace(" ", r"[\s\-]+")


def _compiled(patterns: Iterable[str], definitions: Mapping[str, str]) -> tuple[re.Pattern, ...]:
    return tuple(
        re.compile(rf"(?<!\w)(?:{_expand(p, definitions)})(?!\w)", re.IGNORECASE) for p in patterns
    )


_INJECTION_DATA = _lexicon("injection.yml")
INJECTION_PATTERNS: tuple[str, ...] = tuple(
    str(p) for group in _INJECTION_DATA["patterns"].values() for p in group
)
"""Instruction-like text aimed at a model (``lexicons/injection.yml``), in every language it
covers. RE2-compatible (no look-around), so SQL can reuse them with
``regexp_matches(text, pattern, 'i')``; apply them case-insensitively to normalised text."""

_CLAIMS = _lexicon("claims.yml")
_CLAIM_DEFINITIONS = {
    str(k): "(?:" + re.sub(r"\s*\|\s*", "|", str(v).strip()) + ")"
    for k, v in (_CLAIMS.get("definitions") or {}).items()
}
HEALTH_CLAIMS = _compiled(_CLAIMS["health_claims"], _CLAIM_DEFINITIONS)
"""Cure and treatment claims for medical conditions (``lexicons/claims.yml``)."""
FINANCIAL_CLAIMS = _compiled(_CLAIMS["financial_claims"], _CLAIM_DEFINITIONS)
"""Promises of money (``double your money``, ``guaranteed returns``)."""
COUNTDOWN = _compiled(_CLAIMS["urgency"]["countdown"], {})
SCARCITY = _compiled(_CLAIMS["urgency"]["scarcity"], {})
SCARCITY_EVIDENCE = _compiled(_CLAIMS["urgency"]["scarcity_evidence"], {})

_INJECTION = tuple(re.compile(p, re.IGNORECASE) for p in INJECTION_PATTERNS)

MERGE_TAG = re.compile(r"\{\{.*?\}\}|\{%.*?%\}", re.DOTALL)
CITATION_BRACKET = re.compile(r"\[[^\]\s]+\]")
URL = re.compile(r"\bhttps?://\S+|\bwww\.\S+", re.IGNORECASE)

_MONTHS = {
    m: i + 1
    for i, names in enumerate(
        (
            ("jan", "january"),
            ("feb", "february"),
            ("mar", "march"),
            ("apr", "april"),
            ("may",),
            ("jun", "june"),
            ("jul", "july"),
            ("aug", "august"),
            ("sep", "sept", "september"),
            ("oct", "october"),
            ("nov", "november"),
            ("dec", "december"),
        )
    )
    for m in names
}
_MONTH_RE = "|".join(sorted(_MONTHS, key=len, reverse=True))
_ISO_DATE = r"\d{4}-\d{2}-\d{2}"
_NAMED_DATE = rf"(?:{_MONTH_RE})\.?\s+\d{{1,2}}(?:st|nd|rd|th)?(?:,?\s+\d{{4}})?"
_SLASH_DATE = r"\d{1,2}/\d{1,2}/\d{2,4}"
_NAMED_DATE_PARTS = re.compile(
    rf"({_MONTH_RE})\.?\s+(\d{{1,2}})(?:st|nd|rd|th)?(?:,?\s+(\d{{4}}))?", re.IGNORECASE
)
DATE = re.compile(rf"\b(?:{_ISO_DATE}|{_NAMED_DATE}|{_SLASH_DATE})\b", re.IGNORECASE)

CLAIM = re.compile(
    rf"(?P<date>\b(?:{_ISO_DATE}|{_NAMED_DATE}|{_SLASH_DATE})\b)"
    r"|(?P<price>[$€£]\s?\d(?:[\d,]*\d)?(?:\.\d+)?)"
    r"|(?P<pct>\b\d+(?:\.\d+)?\s?(?:%|percent\b))"
    r"|(?P<num>\b\d[\d,]*\d(?:\.\d+)?\b)",
    re.IGNORECASE,
)
NUMBER = re.compile(r"\d[\d,]*(?:\.\d+)?")

EMAIL = re.compile(r"\b[\w.+-]+@[\w-]+(?:\.[\w-]+)+\b")
PHONE = re.compile(
    r"(?<![\w/-])(?:\+\d{1,3}[\s.-]?|1[\s.-])?(?:\(\d{2,4}\)\s?|\d{3}[\s.-])\d{3}[\s.-]?\d{4}(?![\w/-])"
    r"|(?<![\w/-])\+\d{1,3}(?:[\s.-]\d{2,4}){2,4}(?![\w/-])"
)
CARD = re.compile(r"(?<![\w-])\d(?:[ -]?\d){12,18}(?![\w-])")
SSN = re.compile(r"(?<![\w-])\d{3}-\d{2}-\d{4}(?![\w-])")


@dataclass(frozen=True)
class Check:
    """One screening verdict: a row of ``safety_screenings`` (without the variant id)."""

    check: str
    severity: int
    passed: bool
    reason: str


def _ok(check: str, reason: str = "ok") -> Check:
    return Check(check, 0, True, reason)


def _findings(check: str, findings: Sequence[str], ok_reason: str = "ok") -> Check:
    if not findings:
        return _ok(check, ok_reason)
    return Check(check, len(findings), False, "; ".join(findings))


# --- harm -------------------------------------------------------------------------------------


def is_blocked(severity: int, threshold: int) -> bool:
    """The one harm rule: a severity blocks when it is at or above its threshold."""
    return severity >= threshold


def validate_thresholds(thresholds: Mapping[str, Any]) -> dict[str, int]:
    """Return a threshold for every harm category, defaulting to `DEFAULT_THRESHOLD`.

    Raises:
        ConfigurationError: A category is unknown or a threshold is not an integer from 0 to 7.
    """
    resolved = dict.fromkeys(HARM_CATEGORIES, DEFAULT_THRESHOLD)
    for category, value in thresholds.items():
        key = f"{THRESHOLDS_KEY}.{category}"
        if category not in HARM_CATEGORIES:
            raise ConfigurationError(
                f"unknown harm category {category!r}; use one of {', '.join(HARM_CATEGORIES)}",
                path="cpo.yml",
                key=key,
            )
        if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= 7:
            raise ConfigurationError(
                f"threshold must be an integer from 0 to 7 (a severity at or above it blocks), "
                f"got {value!r}",
                path="cpo.yml",
                key=key,
            )
        resolved[category] = value
    return resolved


def harm_checks(result: SafetyResult, thresholds: Mapping[str, int]) -> list[Check]:
    """One ``harm:<Category>`` check per category, plus the ``blocklist`` check.

    A category missing from the result fails (fail-closed: unscreened is not safe).
    """
    resolved = validate_thresholds(thresholds)
    checks = []
    for category in HARM_CATEGORIES:
        name = f"harm:{category}"
        threshold = resolved[category]
        severity = result.severities.get(category)
        if severity is None:
            checks.append(Check(name, 0, False, "not_screened: no severity returned"))
        elif is_blocked(severity, threshold):
            checks.append(
                Check(name, severity, False, f"severity {severity} >= threshold {threshold}")
            )
        else:
            checks.append(
                Check(name, severity, True, f"severity {severity} < threshold {threshold}")
            )
    checks.append(_findings("blocklist", [f"blocklisted: {m}" for m in result.blocklist_matches]))
    return checks


# --- brand policy -----------------------------------------------------------------------------


def resolve_policy(policy: Mapping[str, Any]) -> dict[str, Any]:
    """Merge `policy` over `DEFAULT_POLICY` and validate every value.

    Raises:
        ConfigurationError: An unknown key, a value of the wrong type, or an invalid regex;
            the error names the key under ``vars.safety.policy``.
    """
    unknown = sorted(set(policy) - set(DEFAULT_POLICY))
    if unknown:
        raise ConfigurationError(
            f"unknown policy setting {unknown[0]!r}; known: {', '.join(sorted(DEFAULT_POLICY))}",
            path="cpo.yml",
            key=f"{POLICY_KEY}.{unknown[0]}",
        )
    merged = {**DEFAULT_POLICY, **policy}
    for key in ("forbidden_phrases", "pii_allow", "urgency_terms"):
        value = merged[key]
        if isinstance(value, str) or not all(isinstance(v, str) for v in value or ()):
            raise ConfigurationError(
                "must be a list of strings", path="cpo.yml", key=f"{POLICY_KEY}.{key}"
            )
        merged[key] = tuple(value or ())
    for key in ("subject_max_chars", "body_min_words", "body_max_words", "merge_tag_chars"):
        value = merged[key]
        if isinstance(value, bool) or not isinstance(value, int) or value < 0:
            raise ConfigurationError(
                f"must be a non-negative integer, got {value!r}",
                path="cpo.yml",
                key=f"{POLICY_KEY}.{key}",
            )
    merged["required_patterns"] = _required_patterns(merged["required_patterns"])
    merged["grounding"] = lexical.resolve(merged["grounding"])
    return merged


def _required_patterns(value: Any) -> dict[str, re.Pattern[str]]:
    """Accept ``{name: regex}`` or a list of regexes (each named by itself)."""
    items = value.items() if isinstance(value, Mapping) else ((p, p) for p in value or ())
    compiled = {}
    for name, pattern in items:
        key = f"{POLICY_KEY}.required_patterns.{name}"
        try:
            compiled[str(name)] = re.compile(str(pattern), re.IGNORECASE)
        except re.error as e:
            raise ConfigurationError(
                f"invalid regular expression {pattern!r}: {e}", path="cpo.yml", key=key
            ) from e
    return compiled


def phrase_pattern(phrase: str) -> re.Pattern[str]:
    """A case-insensitive whole-phrase regex; spaces and hyphens in `phrase` are interchangeable."""
    words = [re.escape(w) for w in re.split(r"[\s\-]+", phrase.strip()) if w]
    return re.compile(r"(?<!\w)" + r"[\s\-]+".join(words) + r"(?!\w)", re.IGNORECASE)


def _found_phrases(text: str, phrases: Iterable[str]) -> list[str]:
    return [p for p in phrases if p.strip() and phrase_pattern(p).search(text)]


def strip_markup(text: str) -> str:
    """Remove merge tags and citation brackets: neither is copy a reader sees as a claim."""
    return CITATION_BRACKET.sub(" ", MERGE_TAG.sub(" ", text))


def _digits(value: str) -> str:
    digits = re.sub(r"\D", "", value)
    return digits[1:] if len(digits) == 11 and digits.startswith("1") else digits


def pii_allowed(value: str, kind: str, allow: Sequence[str]) -> bool:
    """Whether a found `value` is the sender's own (an entry of ``pii_allow``).

    An entry is one of:

    * an exact value (``support@northwind.example``, ``1-800-555-0142``); phone numbers compare
      by their digits, so ``(800) 555-0142`` and ``+1 800 555 0142`` match ``1-800-555-0142``;
    * a domain (``northwind.example`` or ``@northwind.example``): every address at that domain
      or any of its subdomains (``help@care.northwind.example``);
    * a glob (``*@northwind.example``, ``+1-800-555-*``), matched case-insensitively.
    """
    value_l = value.lower()
    for entry in allow:
        entry_l = entry.strip().lower()
        if not entry_l:
            continue
        if value_l == entry_l:
            return True
        if any(c in entry_l for c in "*?["):
            if fnmatch.fnmatchcase(value_l, entry_l) or (
                kind == "phone" and fnmatch.fnmatchcase(_digits(value), _digits(entry_l) or "-")
            ):
                return True
            continue
        if kind == "email":
            domain = entry_l.lstrip("@")
            host = value_l.rpartition("@")[2]
            if "@" not in domain and (host == domain or host.endswith("." + domain)):
                return True
        elif kind == "phone" and len(_digits(entry_l)) >= 7 and _digits(value) == _digits(entry_l):
            return True
    return False


def find_pii(text: str, allow: Sequence[str] = ()) -> list[str]:
    """Return the kinds of PII found (``email``, ``phone``, ``card_number``, ``ssn``).

    Merge tags are removed first, so ``{{ email }}`` is not PII; the sender's own addresses and
    numbers (`allow`, see `pii_allowed`) are exempt. The values themselves are never returned.
    """
    text = MERGE_TAG.sub(" ", text)
    found = []
    for kind, pattern in (("email", EMAIL), ("ssn", SSN), ("card_number", CARD), ("phone", PHONE)):
        hits = [m.group(0) for m in pattern.finditer(text)]
        found.extend(kind for h in hits if not pii_allowed(h, kind, allow))
        for hit in hits:  # a card number must not also count as a phone number
            text = text.replace(hit, " ")
    return found


def find_health_claims(text: str) -> list[str]:
    """Cure and treatment claims for medical conditions in `text` (normalised first)."""
    norm = normalize(text)
    return [m.group(0) for p in HEALTH_CLAIMS for m in p.finditer(norm)]


def find_financial_claims(text: str) -> list[str]:
    """Promises of money in `text` (normalised first)."""
    norm = normalize(text)
    return [m.group(0) for p in FINANCIAL_CLAIMS for m in p.finditer(norm)]


def find_urgency(text: str, terms: Sequence[str] = ()) -> tuple[list[str], list[str]]:
    """(countdown and deadline phrases, scarcity phrases) in `text`, normalised first.

    `terms` are the configured ``urgency_terms`` (counted as countdown phrases).
    """
    norm = normalize(text)
    countdown = _found_phrases(norm, terms)
    countdown += [m.group(0) for p in COUNTDOWN for m in p.finditer(norm)]
    scarcity = [m.group(0) for p in SCARCITY for m in p.finditer(norm)]
    return _unique(countdown), _unique(scarcity)


def _unique(found: Iterable[str]) -> list[str]:
    """`found` without repeats (case-insensitive), first spelling kept."""
    seen: dict[str, str] = {}
    for f in found:
        seen.setdefault(f.lower(), f)
    return list(seen.values())


def supports_scarcity(texts: Iterable[str]) -> bool:
    """Whether any cited text states a scarcity (limited edition, only N units, ...)."""
    return any(p.search(normalize(t)) for t in texts for p in SCARCITY_EVIDENCE)


MARKUP = re.compile(
    r"</?[a-z][a-z0-9:-]*(?:\s[^<>]*)?/?\s*>|<!--|<!\[cdata\[|<\?xml"
    r"|\bjavascript\s*:|\bvbscript\s*:|\bdata\s*:\s*text/html|\bon[a-z]{3,}\s*=\s*[\"'\w]",
    re.IGNORECASE,
)
"""Markup: any HTML/XML tag (``<b>``, ``<script>``, ``<img src=x onerror=...>``, ``<svg
onload=...>``), comments, ``javascript:`` URLs and inline event handlers (``onerror=``)."""
FORMULA = re.compile(
    r"(?:^|\n)[ \t]*(?:[=@]|[+\-][ \t]*(?:[=@]|\d[\d.,]*[ \t]*[-+*/^&]|[a-z_][a-z0-9_.]*[ \t]*\("
    r"|cmd\b))"
    r"|=[ \t]*(?:hyperlink|importxml|importdata|importhtml|importrange|importfeed|webservice|image"
    r"|cmd|dde|call|exec)[ \t]*\(|\bcmd[ \t]*\|",
    re.IGNORECASE,
)
"""Spreadsheet formulas (OWASP CSV injection): a line starting with ``=`` or ``@``, or with ``+``
or ``-`` followed by a formula (``-2+3``, ``+SUM(``, ``-cmd``); and ``=HYPERLINK(``,
``=IMPORTXML(``, ``=WEBSERVICE(``... or ``cmd|`` (DDE) anywhere. Bullets (``- item``), prices
(``-20%``) and e-mail addresses inside a line are not formulas."""


def find_markup(text: str) -> list[str]:
    """Markup in `text` (merge tags ``{{ }}`` are not markup), normalised first."""
    norm = MERGE_TAG.sub(" ", normalize(text))
    return [m.group(0) for m in MARKUP.finditer(norm)]


def find_formulas(text: str) -> list[str]:
    """Formula-leading lines and formula functions in `text`, normalised first."""
    norm = MERGE_TAG.sub(" ", normalize(text))
    return [m.group(0).strip() for m in FORMULA.finditer(norm)]


def has_deadline(texts: Iterable[str]) -> bool:
    """Whether any text states a date (ISO, ``December 31, 2026``, ``12/31/2026``)."""
    return any(DATE.search(t) for t in texts)


def policy_checks(
    subject: str,
    body: str,
    policy: Mapping[str, Any],
    cited_texts: Sequence[str] = (),
    footer: str = "",
) -> list[Check]:
    """Brand-policy checks: forbidden phrases, required elements, lengths, PII, false urgency.

    Args:
        subject: The subject line (merge tags unrendered).
        body: The body (merge tags unrendered).
        policy: ``vars.safety.policy``; missing keys take `DEFAULT_POLICY`.
        cited_texts: Texts of the documents the copy cites; urgency needs a date in one of them.
        footer: The footer every message ends with: required elements are looked for in the
            rendered message (copy and footer).
    """
    p = resolve_policy(policy)
    copy = f"{subject}\n{body}"
    forbidden = _found_phrases(copy, p["forbidden_phrases"]) or _found_phrases(
        normalize(copy), p["forbidden_phrases"]
    )
    checks = [_findings("policy:forbidden_phrases", [f"forbidden_phrase: {f}" for f in forbidden])]
    for name, pattern in p["required_patterns"].items():
        check = f"policy:required:{name}"
        checks.append(
            _ok(check, "present")
            if pattern.search(f"{copy}\n{footer}")
            else Check(check, 1, False, f"missing_required: {name} (pattern {pattern.pattern!r})")
        )
    checks.append(_subject_length(subject, p["subject_max_chars"], p["merge_tag_chars"]))
    checks.append(_body_length(body, p["body_min_words"], p["body_max_words"]))
    pii = find_pii(normalize(copy), p["pii_allow"])
    checks.append(_findings("policy:pii", [f"pii: {kind}" for kind in dict.fromkeys(pii)]))
    claims = [f"health_claim: {c!r}" for c in dict.fromkeys(find_health_claims(copy))]
    claims += [f"financial_claim: {c!r}" for c in dict.fromkeys(find_financial_claims(copy))]
    checks.append(_findings("policy:claims", claims))
    countdown, scarcity = find_urgency(copy, p["urgency_terms"])
    dated = has_deadline(cited_texts)
    findings = (
        []
        if dated
        else [f"false_urgency: {u!r} with no deadline in cited content" for u in countdown]
    )
    if not dated and not supports_scarcity(cited_texts):
        findings += [f"false_scarcity: {u!r} not stated in cited content" for u in scarcity]
    checks.append(_findings("policy:urgency_deadline", findings))
    markup = find_markup(copy) + find_formulas(copy)
    checks.append(
        _findings("policy:markup", [f"markup: {m[:40]!r}" for m in dict.fromkeys(markup)])
    )
    return checks


def _subject_length(subject: str, max_chars: int, merge_tag_chars: int) -> Check:
    # A merge tag renders per customer; count it at a typical rendered length.
    length = len(MERGE_TAG.sub("x" * merge_tag_chars, subject).strip())
    if length > max_chars:
        return Check(
            "policy:subject_length", 1, False, f"subject_too_long: {length} > {max_chars} chars"
        )
    return _ok("policy:subject_length", f"{length} <= {max_chars} chars")


def _body_length(body: str, min_words: int, max_words: int) -> Check:
    words = len(CITATION_BRACKET.sub(" ", MERGE_TAG.sub("x", body)).split())
    if words < min_words:
        return Check("policy:body_length", 1, False, f"body_too_short: {words} < {min_words} words")
    if max_words and words > max_words:
        return Check("policy:body_length", 1, False, f"body_too_long: {words} > {max_words} words")
    return _ok("policy:body_length", f"{words} words")


# --- grounding --------------------------------------------------------------------------------


def _decimal(text: str) -> Decimal | None:
    try:
        return Decimal(text.replace(",", ""))
    except InvalidOperation:
        return None


def _date_key(text: str) -> tuple[int | None, int, int] | None:
    """(year or None, month, day) of a date claim, so formats compare equal."""
    text = text.strip().lower()
    if m := re.fullmatch(r"(\d{4})-(\d{2})-(\d{2})", text):
        return int(m[1]), int(m[2]), int(m[3])
    if m := _NAMED_DATE_PARTS.fullmatch(text):
        return (int(m[3]) if m[3] else None), _MONTHS[m[1]], int(m[2])
    if m := re.fullmatch(r"(\d{1,2})/(\d{1,2})/(\d{2,4})", text):
        year = int(m[3]) + (2000 if len(m[3]) == 2 else 0)
        return year, int(m[1]), int(m[2])  # month/day: the US order marketing copy uses
    return None


_UNITS = ("zero one two three four five six seven eight nine ten eleven twelve thirteen fourteen "
          "fifteen sixteen seventeen eighteen nineteen twenty")  # fmt: skip
_NUMBER_WORDS = {w: i for i, w in enumerate(_UNITS.split())} | {
    "thirty": 30, "forty": 40, "fifty": 50, "sixty": 60, "seventy": 70, "eighty": 80,
    "ninety": 90, "hundred": 100, "thousand": 1000, "dozen": 12,
}  # fmt: skip
_NUMBER_WORD = re.compile(r"\b(" + "|".join(_NUMBER_WORDS) + r")\b", re.IGNORECASE)


@dataclass(frozen=True)
class _Evidence:
    numbers: frozenset[Decimal]
    percents: frozenset[Decimal]
    dates: frozenset[tuple[int | None, int, int]]


def _evidence(texts: Iterable[str]) -> _Evidence:
    numbers, percents, dates = set(), set(), set()
    for text in texts:
        for m in CLAIM.finditer(text):
            if m["date"] and (key := _date_key(m["date"])):
                dates.add(key)
            elif m["pct"]:
                percents.add(_decimal(NUMBER.search(m["pct"]).group(0)))
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
    value = _decimal(NUMBER.search(match.group(0)).group(0))
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

    Returns:
        ``grounding:citations`` (fails naming each foreign id) and ``grounding:claims`` (fails
        with ``ungrounded_claim: <claim>`` for each claim no cited, retrieved document states).
    """
    retrieved = set(retrieved_ids)
    foreign = [c for c in dict.fromkeys(citations) if c not in retrieved]
    checks = [
        _findings(
            "grounding:citations",
            [f"foreign_citation: {c} was not retrieved for this segment" for c in foreign],
            f"{len(citations)} citations, all retrieved",
        )
    ]
    # Only documents that were both retrieved and cited can ground a claim.
    sources = [cited_texts.get(c, "") for c in dict.fromkeys(citations) if c in retrieved]
    evidence = _evidence(sources)
    claims = extract_claims(f"{subject}\n{body}")
    ungrounded = [m.group(0).strip() for m in claims if not _grounded(m, evidence)]
    prefix = "ungrounded_claim: "
    if ungrounded and not sources:
        prefix = "ungrounded_claim (no retrieved document cited): "
    checks.append(
        _findings(
            "grounding:claims",
            [prefix + c for c in dict.fromkeys(ungrounded)],
            f"{len(claims)} claims, all grounded",
        )
    )
    if (
        sentences is not None
    ):  # cpo.personalization.grounding: words, sentence by sentence; placeholders
        usable = {c: cited_texts.get(c, "") for c in dict.fromkeys(citations) if c in retrieved}
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
    `cpo.personalization.grounding`) and
    ``grounding:placeholders`` (no ``<the email body>``, ``[Your Name]``, ``DOC_ID`` ...)."""
    holes = lexical.find_placeholders(f"{subject}\n{body}")
    checks = [_findings("grounding:placeholders", [f"placeholder: {h!r}" for h in holes][:5])]
    if not settings.enabled:
        return [*checks, _ok("grounding:sentences", "disabled")]
    verdicts = lexical.judge(body, usable, settings, citations)
    failed = [v.reason for v in verdicts if not v.supported]
    ok = f"{len(verdicts)} sentences, all supported"
    return [*checks, _findings("grounding:sentences", failed, ok)]


# --- injection --------------------------------------------------------------------------------


def find_injection(text: str) -> list[str]:
    """Return the instruction-like passages in `text` that address a model.

    The text is normalised first (`cpo.personalization.normalize.normalize`): zero-width
    characters, full-width
    letters, look-alikes, accents and digits-for-letters do not hide an instruction.
    """
    norm = normalize(text)
    return [m.group(0) for p in _INJECTION for m in p.finditer(norm)]


def injection_check(text: str) -> Check:
    """The ``injection`` check: fails when `text` carries instructions aimed at a model."""
    hits = find_injection(text)
    return _findings("injection", [f"injection: {h!r}" for h in dict.fromkeys(hits)])


# --- all together -----------------------------------------------------------------------------


def screen(
    subject: str,
    body: str,
    *,
    citations: Sequence[str],
    retrieved_ids: Sequence[str],
    cited_texts: Mapping[str, str],
    safety_result: SafetyResult | None,
    thresholds: Mapping[str, int],
    policy: Mapping[str, Any],
    footer: str = "",
    written_by_person: bool = False,
) -> list[Check]:
    """Run every check on one variant.

    `footer` is appended to every message (required elements are looked for in it too); copy
    `written_by_person` (the control) is not held to sentence-by-sentence citation.

    `safety_result` is None when the safety provider could not screen the text: the variant then
    gets a failed ``harm:unscreened`` check (fail-closed) instead of the harm checks.
    """
    if safety_result is None:
        checks = [Check("harm:unscreened", 0, False, "not_screened: no safety result")]
    else:
        checks = harm_checks(safety_result, thresholds)
    retrieved = set(retrieved_ids)
    urgency_sources = [cited_texts.get(c, "") for c in citations if c in retrieved]
    checks += policy_checks(subject, body, policy, urgency_sources, footer)
    words = resolve_policy(policy)["grounding"]
    checks += grounding_checks(subject, body, citations, retrieved_ids, cited_texts, words)
    if written_by_person:
        checks = [
            _ok(c.check, "written by a person (prompts/control/)")
            if c.check == "grounding:sentences"
            else c
            for c in checks
        ]
    checks.append(injection_check(f"{subject}\n{body}"))
    return checks


def approved(checks: Iterable[Check]) -> bool:
    """A variant is approved only when it was screened and every check passed."""
    checks = list(checks)
    return bool(checks) and all(c.passed for c in checks)
