"""Brand policy for e-mail copy: forbidden phrases, required elements, lengths, PII, health and
financial claims, false urgency, markup and spreadsheet formulas.

Nothing here knows a brand: phrases, patterns and limits come from the ``policy`` mapping
(``vars.safety.policy`` in ``cpo.yml``), merged over `DEFAULT_POLICY`, the built-in rules in
``rules/copy_rules.yml``. Claim and urgency patterns are ``cpo/providers/lexicons/claims.yml``.
Pure functions, no I/O beyond reading those files once.
"""

from __future__ import annotations

import fnmatch
import re
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from cpo.personalization import grounding as lexical
from cpo.personalization.checks import (
    CITATION_BRACKET,
    MERGE_TAG,
    Check,
    data_file,
    findings,
    ok,
    unique,
)
from cpo.personalization.facts import has_deadline
from cpo.personalization.normalize import normalize
from cpo.personalization.settings import POLICY_KEY as POLICY_KEY
from cpo.personalization.settings import PolicyVars, policy_settings

_RULES = data_file("cpo.personalization", "rules/copy_rules.yml")["defaults"]
policy_settings(_RULES)  # the shipped rules pass the same model as cpo.yml's
DEFAULT_POLICY: Mapping[str, Any] = {
    k: tuple(v) if isinstance(v, list) else v for k, v in _RULES.items()
}
"""The built-in copy rules (``rules/copy_rules.yml``); ``vars.safety.policy`` overrides them."""
_LISTS = ("forbidden_phrases", "pii_allow", "urgency_terms", "required_patterns")


def _lexicon(name: str) -> dict[str, Any]:
    """A YAML pattern file shipped in ``cpo/providers/lexicons/``."""
    return data_file("cpo.providers", f"lexicons/{name}")


def _expand(pattern: str, definitions: Mapping[str, str]) -> str:
    for name, alternation in definitions.items():
        pattern = pattern.replace("{" + name + "}", alternation)
    return pattern.replace(" ", r"[\s\-]+")


def _compiled(patterns: Iterable[str], definitions: Mapping[str, str]) -> tuple[re.Pattern, ...]:
    return tuple(
        re.compile(rf"(?<!\w)(?:{_expand(p, definitions)})(?!\w)", re.IGNORECASE) for p in patterns
    )


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


EMAIL = re.compile(r"\b[\w.+-]+@[\w-]+(?:\.[\w-]+)+\b")
PHONE = re.compile(
    r"(?<![\w/-])(?:\+\d{1,3}[\s.-]?|1[\s.-])?(?:\(\d{2,4}\)\s?|\d{3}[\s.-])\d{3}[\s.-]?\d{4}(?![\w/-])"
    r"|(?<![\w/-])\+\d{1,3}(?:[\s.-]\d{2,4}){2,4}(?![\w/-])"
)
CARD = re.compile(r"(?<![\w-])\d(?:[ -]?\d){12,18}(?![\w-])")
SSN = re.compile(r"(?<![\w-])\d{3}-\d{2}-\d{4}(?![\w-])")


def resolve_policy(policy: Mapping[str, Any] | PolicyVars) -> dict[str, Any]:
    """`policy` (``vars.safety.policy``, checked by its model) over `DEFAULT_POLICY`.

    Lists become tuples, ``required_patterns`` compiled regexes (name -> pattern; a list names
    each pattern by itself) and ``grounding`` the grounding `Settings`.

    Raises:
        ConfigurationError: An unknown key, a value of the wrong type, or an invalid regex;
            the error names the key under ``vars.safety.policy``.
    """
    given = policy if isinstance(policy, PolicyVars) else policy_settings(policy)
    merged = dict(DEFAULT_POLICY)
    for key, value in given.model_dump(exclude_unset=True).items():
        if value is not None or key in _LISTS:  # null: an empty list; the default number
            merged[key] = value
    for key in ("forbidden_phrases", "pii_allow", "urgency_terms"):
        merged[key] = tuple(merged[key] or ())
    patterns = merged["required_patterns"] or {}
    items = patterns.items() if isinstance(patterns, Mapping) else ((p, p) for p in patterns)
    merged["required_patterns"] = {str(n): re.compile(p, re.IGNORECASE) for n, p in items}
    merged["grounding"] = lexical.resolve(merged["grounding"])
    return merged


def phrase_pattern(phrase: str) -> re.Pattern[str]:
    """A case-insensitive whole-phrase regex; spaces and hyphens in `phrase` are interchangeable."""
    words = [re.escape(w) for w in re.split(r"[\s\-]+", phrase.strip()) if w]
    return re.compile(r"(?<!\w)" + r"[\s\-]+".join(words) + r"(?!\w)", re.IGNORECASE)


def _found_phrases(text: str, phrases: Iterable[str]) -> list[str]:
    return [p for p in phrases if p.strip() and phrase_pattern(p).search(text)]


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
    found: list[str] = []
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
    return unique(countdown), unique(scarcity)


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


def policy_checks(
    subject: str,
    body: str,
    policy: Mapping[str, Any] | PolicyVars,
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
    checks = [findings("policy:forbidden_phrases", [f"forbidden_phrase: {f}" for f in forbidden])]
    for name, pattern in p["required_patterns"].items():
        check = f"policy:required:{name}"
        checks.append(
            ok(check, "present")
            if pattern.search(f"{copy}\n{footer}")
            else Check(check, 1, False, f"missing_required: {name} (pattern {pattern.pattern!r})")
        )
    checks.append(_subject_length(subject, p["subject_max_chars"], p["merge_tag_chars"]))
    checks.append(_body_length(body, p["body_min_words"], p["body_max_words"]))
    pii = find_pii(normalize(copy), p["pii_allow"])
    checks.append(findings("policy:pii", [f"pii: {kind}" for kind in dict.fromkeys(pii)]))
    claims = [f"health_claim: {c!r}" for c in dict.fromkeys(find_health_claims(copy))]
    claims += [f"financial_claim: {c!r}" for c in dict.fromkeys(find_financial_claims(copy))]
    checks.append(findings("policy:claims", claims))
    countdown, scarcity = find_urgency(copy, p["urgency_terms"])
    dated = has_deadline(cited_texts)
    urgency = (
        []
        if dated
        else [f"false_urgency: {u!r} with no deadline in cited content" for u in countdown]
    )
    if not dated and not supports_scarcity(cited_texts):
        urgency += [f"false_scarcity: {u!r} not stated in cited content" for u in scarcity]
    checks.append(findings("policy:urgency_deadline", urgency))
    markup = find_markup(copy) + find_formulas(copy)
    checks.append(findings("policy:markup", [f"markup: {m[:40]!r}" for m in dict.fromkeys(markup)]))
    return checks


def _subject_length(subject: str, max_chars: int, merge_tag_chars: int) -> Check:
    # A merge tag renders per customer; count it at a typical rendered length.
    length = len(MERGE_TAG.sub("x" * merge_tag_chars, subject).strip())
    if length > max_chars:
        return Check(
            "policy:subject_length", 1, False, f"subject_too_long: {length} > {max_chars} chars"
        )
    return ok("policy:subject_length", f"{length} <= {max_chars} chars")


def _body_length(body: str, min_words: int, max_words: int) -> Check:
    words = len(CITATION_BRACKET.sub(" ", MERGE_TAG.sub("x", body)).split())
    if words < min_words:
        return Check("policy:body_length", 1, False, f"body_too_short: {words} < {min_words} words")
    if max_words and words > max_words:
        return Check("policy:body_length", 1, False, f"body_too_long: {words} > {max_words} words")
    return ok("policy:body_length", f"{words} words")
