"""Reading a real model's answer into ``subject``, ``body`` and ``citations``, or a named reason.

Models do not answer like the prompt's example. What is accepted and how it is normalised:

* JSON in a code fence, among prose, with keys in any case, ``citations`` missing, a string, or
  wrong: citations are taken from the ``[DOC_ID]`` markers in the body (ids matched to the
  request's documents regardless of case), falling back to the listed ids that are documents.
* No JSON at all but a ``Subject:`` line followed by the text: read as subject and body.
* Merge tags with other spacing or case (``{{first_name}}``, ``{{ First_Name }}``) are written the
  canonical way; a tag the project does not know blocks the answer (it would reach a customer
  unrendered); lines the model wrote about unsubscribing are dropped (the footer has them).
* A subject over the limit is cut at a word boundary (merge tags are never cut).
* Empty answers and refusals ("I'm sorry, but I can't ...") are blocked with their reason.

`read_answer` returns an `Answer` or a `Problem`; a problem is ``repairable`` when one more request
asking for the JSON object could help.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

FENCE = re.compile(r"```(?:json|JSON)?\s*(.*?)```", re.DOTALL)
TAG = re.compile(r"\{\{\s*([A-Za-z_][A-Za-z0-9_]*)\s*\}\}")
# Single-brace or bracketed known tags a model may write instead: {first_name}, [first_name].
LOOSE_TAG = re.compile(r"(?<!\{)\{\s*([A-Za-z_]+)\s*\}(?!\})|\[\s*([A-Za-z_]+)\s*\]")
MARKER = re.compile(r"\[([A-Za-z0-9_.:\- ,]+)\]")
SUBJECT_LINE = re.compile(r"^\s*\**\s*subject\s*(?:line)?\s*\**\s*[:\-]\s*(.+)$", re.I | re.M)
BODY_PREFIX = re.compile(r"^\s*\**\s*(?:body|email|message)\s*\**\s*:\s*", re.I)
REFUSAL = re.compile(
    r"^\s*(?:I'm sorry|I am sorry|Sorry|I apologi[sz]e)?[, ]*(?:but )?(?:I|As an AI)[^.]{0,40}"
    r"\b(?:can(?:no|')t|can not|unable to|won't|will not)\b",
    re.IGNORECASE,
)
COMPLIANCE_LINE = re.compile(
    r"unsubscribe|opt[ -]out|manage (?:your )?preferences|fewer emails|stop receiving", re.I
)
UNSUBSCRIBE = "unsubscribe_url"
SENTENCE = re.compile(r"(?<=[.!?])\s+(?!\[)")


@dataclass(frozen=True)
class Answer:
    """A usable answer, normalised."""

    subject: str
    body: str
    citations: tuple[str, ...]


@dataclass(frozen=True)
class Problem:
    """Why an answer cannot be used: ``reason`` starts with a short code (``no_json: ...``)."""

    reason: str
    repairable: bool = False


def read_answer(
    text: str,
    *,
    document_ids: Sequence[str],
    merge_tags: Iterable[str],
    max_subject_chars: int = 60,
) -> Answer | Problem:
    """Read one answer text; never raises on what a model wrote.

    Args:
        text: The model's text.
        document_ids: The ids of the request's documents (what a marker may cite).
        merge_tags: The merge tags the project fills in per customer.
        max_subject_chars: Subjects are cut to this many characters at a word boundary.
    """
    if not text or not text.strip():
        return Problem("empty_answer: the model returned no text", repairable=True)
    raw = _find_object(text)
    if raw is None:
        raw = _plain_answer(text)
    if raw is None:
        if REFUSAL.match(text):
            return Problem("refusal: the model declined to write this message")
        return Problem(
            "no_json: the answer was neither a JSON object with subject and body nor a "
            "'Subject:' line followed by the text",
            repairable=True,
        )
    subject, body, listed = raw
    tags = tuple(merge_tags)
    subject, unknown_s = _tags(_one_line(subject), tags)
    body, unknown_b = _tags(_drop_compliance(BODY_PREFIX.sub("", body.strip())), tags)
    unknown = list(dict.fromkeys(unknown_s + unknown_b))
    if unknown:
        return Problem(f"unknown_merge_tag: {', '.join(unknown)} (known: {', '.join(tags)})")
    body = _canonical_markers(body, document_ids)
    if not subject.strip() or not body.strip():
        return Problem("empty_answer: the subject or the body is empty", repairable=True)
    if REFUSAL.match(body) and not MARKER.search(body):
        return Problem("refusal: the model declined to write this message")
    citations = _citations(body, listed, document_ids)
    return Answer(_cut_subject(subject, max_subject_chars), body.strip(), citations)


def _find_object(text: str) -> tuple[str, str, Any] | None:
    candidates = [m.group(1) for m in FENCE.finditer(text)] + [text]
    decoder = json.JSONDecoder()
    for candidate in candidates:
        for start in (i for i, ch in enumerate(candidate) if ch == "{"):
            try:
                value, _ = decoder.raw_decode(candidate, start)
            except ValueError:
                continue
            found = _fields(value)
            if found is not None:
                return found
    return None


def _fields(value: Any) -> tuple[str, str, Any] | None:
    if not isinstance(value, dict):
        return None
    lowered = {str(k).strip().lower(): v for k, v in value.items()}
    subject = lowered.get("subject") or lowered.get("subject_line") or lowered.get("title")
    body = lowered.get("body") or lowered.get("email") or lowered.get("message")
    if isinstance(body, list) and all(isinstance(p, str) for p in body):
        body = "\n\n".join(body)
    if not isinstance(subject, str) or not isinstance(body, str):
        return None
    return subject, body, lowered.get("citations")


def _plain_answer(text: str) -> tuple[str, str, Any] | None:
    m = SUBJECT_LINE.search(text)
    if not m:
        return None
    body = text[m.end() :].strip()
    return m.group(1), body, None


def _one_line(subject: str) -> str:
    subject = " ".join(subject.split()).strip().strip("*").strip()
    subject = re.sub(r"^subject\s*(?:line)?\s*:\s*", "", subject, flags=re.IGNORECASE)
    if len(subject) >= 2 and subject[0] == subject[-1] and subject[0] in "\"'":
        subject = subject[1:-1]
    return subject.strip()


def _tags(text: str, known: tuple[str, ...]) -> tuple[str, list[str]]:
    by_lower = {t.lower(): t for t in known}
    unknown: list[str] = []

    def canonical(match: re.Match[str]) -> str:
        name = by_lower.get(match.group(1).lower())
        if name is None:
            unknown.append(match.group(1))
            return match.group(0)
        return "{{ " + name + " }}"

    def loose(match: re.Match[str]) -> str:
        name = by_lower.get((match.group(1) or match.group(2)).lower())
        return match.group(0) if name is None else "{{ " + name + " }}"

    text = TAG.sub(canonical, text)
    # Loose forms only for known tags; other bracketed text is a citation or copy.
    text = LOOSE_TAG.sub(loose, text)
    return text, unknown


def _drop_compliance(body: str) -> str:
    """Drop uncited sentences about unsubscribing: the footer appended to every message carries
    the real line. A sentence citing a document is copy, kept whatever it says."""
    lines = []
    for line in body.splitlines():
        kept = [
            s
            for s in SENTENCE.split(line)
            if MARKER.search(s)
            or not (COMPLIANCE_LINE.search(s) or ("{{" in s and UNSUBSCRIBE in s))
        ]
        if kept or not line.strip():
            lines.append(" ".join(kept))
    return re.sub(r"\n{3,}", "\n\n", "\n".join(lines)).strip()


def _canonical_markers(body: str, document_ids: Sequence[str]) -> str:
    """``[doc001]`` -> ``[DOC001]``, ``[D1, D2]`` -> ``[D1] [D2]``; other brackets unchanged."""
    by_lower = {d.lower(): d for d in document_ids}

    def fix(match: re.Match[str]) -> str:
        parts = [p.strip() for p in re.split(r"[,\s]+", match.group(1)) if p.strip()]
        if parts and all(p.lower() in by_lower for p in parts):
            return " ".join(f"[{by_lower[p.lower()]}]" for p in parts)
        return match.group(0)

    return MARKER.sub(fix, body)


def _citations(body: str, listed: Any, document_ids: Sequence[str]) -> tuple[str, ...]:
    """Ids cited by markers in the body, in order; else the listed ids that are documents."""
    marked = [m.group(1).strip() for m in MARKER.finditer(body)]
    marked = [m for m in marked if " " not in m and "," not in m and not m.startswith("{")]
    known = set(document_ids)
    ids = [m for m in marked if m in known or _looks_like_id(m)]
    if ids:
        return tuple(dict.fromkeys(ids))
    if isinstance(listed, str):
        listed = re.split(r"[,\s]+", listed)
    if isinstance(listed, list):
        by_lower = {d.lower(): d for d in document_ids}
        cleaned = [str(c).strip("[] ") for c in listed if isinstance(c, str | int)]
        if not document_ids:  # nothing to check against: keep what was listed
            return tuple(dict.fromkeys(c for c in cleaned if c))
        found = [by_lower.get(c.lower()) for c in cleaned]
        return tuple(dict.fromkeys(c for c in found if c))
    return ()


def _looks_like_id(text: str) -> bool:
    """A marker naming no document of the request but shaped like an id (kept, so the
    grounding check names it as a foreign citation)."""
    return bool(re.fullmatch(r"[A-Z][A-Z0-9_.\-]*\d[A-Z0-9_.\-]*", text))


def _cut_subject(subject: str, limit: int) -> str:
    if limit <= 0 or len(subject) <= limit:
        return subject
    # Count merge tags as written; cut before a tag rather than through it.
    words, out = subject.split(" "), ""
    for word in words:
        candidate = f"{out} {word}".strip()
        if len(candidate) > limit:
            break
        out = candidate
    out = out.rstrip(" ,;:-")
    if TAG.sub("", out).count("{{") or not out:
        out = TAG.split(subject)[0][:limit].rsplit(" ", 1)[0]
    return out.strip()
