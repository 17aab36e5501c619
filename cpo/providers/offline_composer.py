"""Offline generation: compose a message from document sentences, with no language model.

The composer is deterministic: the same request always gives the same message. Every factual
sentence of the body is a sentence copied from one of ``request.documents`` and is followed by
its citation `` [DOC_ID]``; all other text comes from the tone's composition template
(``prompts/tones/<tone>/compose.txt``), which the pipeline passes in ``request.params``.

``request.params`` (what the pipeline passes):

- ``template`` (required): the composition template text. Variables: ``sentences`` (the cited
  sentences as one paragraph), ``sentence_list`` (the same, one string per sentence), ``title``
  (the top document's title), ``tone``, the merge tags (printed verbatim, see
  `cpo.personalization.prompting`)
  and anything in ``variables``.
- ``template_name``: the template's file, named in errors (default ``<template>``).
- ``subject_template``: the subject pattern text, same variables (default ``{{ title }}``);
  ``subject_template_name`` names it in errors.
- ``min_words``, ``max_words``: the body's word range (default 40 and 120). A word is a
  whitespace-separated token of the final body, citations and merge tags included, so anyone can
  recount it with ``len(body.split())``.
- ``max_subject_chars``: the subject's length cap (default 60), trimmed at a word boundary.
- ``focus_terms``: a string or list of strings; sentences sharing more of these words rank first.
- ``tone``: the tone name, available to templates.
- ``variables``: a mapping of extra template variables (e.g. ``segment_name``).

A sentence stating a condition of its document (an end date, "while stocks last") is never left
out when another sentence of that document is used, so an offer is not quoted without its
deadline.

Failures the pipeline records per item are `ProviderError` whose message starts with a reason:
``no_documents``, ``no_usable_sentences`` or ``insufficient_content``. A broken template raises
`ModelError` naming the template file and line.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from cpo.engine.settings import validate_model
from cpo.errors import ConfigurationError, ProviderError
from cpo.personalization.checks import data_file
from cpo.personalization.injection import about_a_model
from cpo.personalization.prompting import render_template_text
from cpo.providers.base import Document, GenerationRequest, GenerationResult, NoSettings

VERSION = "1"
DEFAULT_SUBJECT_TEMPLATE = "{{ title }}"
_TERMINAL = ".!?"
_MIN_SENTENCE_WORDS = 3
_NEAR_DUPLICATE = 0.8

# Template syntax inside content would reach the merge-tag stage; such sentences are skipped.
_TEMPLATE_SYNTAX = re.compile(r"\{\{|\}\}|\{%|%\}|\{#|#\}")
# The English phrase lists (conditions, back-references, stop words): lexicons/composer.yml.
_PHRASES = data_file("cpo.providers", "lexicons/composer.yml")
# A sentence stating when or under which condition an offer holds ("Offer ends 2026-12-31.")
# travels with the other sentences of its document, so an offer is never quoted without it.
_CONDITION = re.compile(
    "|".join([rf"\b({'|'.join(_PHRASES['conditions'])})\b", *_PHRASES["condition_dates"]]),
    re.IGNORECASE,
)
# A sentence opening with a pronoun ("It weighs 340 g.") only makes sense after the sentence
# before it in its document; it is used only together with that sentence.
_REFERS_BACK = re.compile(rf"({'|'.join(_PHRASES['refers_back'])})\b", re.IGNORECASE)
_SENTENCE_END = re.compile(r"(?<=[.!?])\s+(?=[\"'(\[]?[A-Z0-9$£€])")
_WORD = re.compile(r"[a-z0-9]+")
_WORD_KEEPING_MERGE_TAGS = re.compile(r"(?:\{\{.*?\}\}|\S)+")
_STOPWORDS = frozenset(str(w) for w in _PHRASES["stopwords"])


@dataclass(frozen=True)
class Sentence:
    """A candidate sentence: its text, source document and position, and focus overlap.

    ``condition`` marks a sentence stating when or under which condition an offer holds (an end
    date, "while stocks last"): it is always used together with its document's other sentences.
    """

    document_id: str
    text: str
    doc_index: int
    index: int
    overlap: int
    condition: bool = False

    @property
    def cited(self) -> str:
        """The sentence followed by its citation."""
        return f"{self.text} [{self.document_id}]"


@dataclass(frozen=True)
class ComposeParams:
    """The composer's parameters, read and validated from ``request.params``."""

    template: str
    template_name: str
    subject_template: str
    subject_template_name: str
    min_words: int
    max_words: int
    max_subject_chars: int
    focus_terms: tuple[str, ...]
    tone: str
    variables: Mapping[str, Any]
    merge_tags: tuple[str, ...] = ()  # the project's configured tags (vars.messages.merge_tags)

    @classmethod
    def from_params(cls, params: Mapping[str, Any]) -> ComposeParams:
        """Validate ``params``; raises ConfigurationError naming the bad parameter."""
        template = params.get("template")
        if not isinstance(template, str) or not template.strip():
            raise ConfigurationError(
                "offline composer: params['template'] must be the composition template text "
                "(e.g. the source of prompts/tones/<tone>/compose.txt)"
            )
        min_words = _int_param(params, "min_words", 40)
        max_words = _int_param(params, "max_words", 120)
        if min_words > max_words:
            raise ConfigurationError(
                f"offline composer: min_words ({min_words}) is greater than max_words ({max_words})"
            )
        focus = params.get("focus_terms") or ()
        variables = params.get("variables") or {}
        if not isinstance(variables, Mapping):
            raise ConfigurationError("offline composer: params['variables'] must be a mapping")
        return cls(
            template=template,
            template_name=str(params.get("template_name", "<template>")),
            subject_template=str(params.get("subject_template") or DEFAULT_SUBJECT_TEMPLATE),
            subject_template_name=str(params.get("subject_template_name", "<subject template>")),
            min_words=min_words,
            max_words=max_words,
            max_subject_chars=_int_param(params, "max_subject_chars", 60),
            focus_terms=(focus,) if isinstance(focus, str) else tuple(str(t) for t in focus),
            tone=str(params.get("tone", "")),
            variables=dict(variables),
            merge_tags=tuple(str(t) for t in params.get("merge_tags") or ()),
        )


class OfflineComposer:
    """The deterministic, model-free generation provider."""

    kind = "generation"
    name = "offline"
    model = "composer-v1"

    def describe(self) -> dict[str, Any]:
        """Identify this provider's answers for cache keys."""
        return {"kind": self.kind, "name": self.name, "model": self.model, "version": VERSION}

    def generate(self, request: GenerationRequest) -> GenerationResult:
        """Compose a subject and a cited body from ``request.documents``.

        Raises:
            ProviderError: ``no_documents``, ``no_usable_sentences`` or ``insufficient_content``.
            ConfigurationError: ``request.params`` is invalid.
            ModelError: A template is broken (names the file and line).
        """
        if not request.documents:
            raise ProviderError(
                f"no_documents: nothing was retrieved for {request.key!r}; the offline composer "
                "only uses sentences of retrieved documents: add approved content for this "
                "segment or lower the retrieval min_score"
            )
        params = ComposeParams.from_params(request.params)
        candidates = rank_sentences(request.documents, params.focus_terms)
        if not candidates:
            raise ProviderError(
                f"no_usable_sentences: the documents retrieved for {request.key!r} "
                f"({', '.join(d.document_id for d in request.documents)}) have no sentence the "
                "composer may use (too short, or addressed to a model)"
            )
        chosen, body = _fill_body(candidates, params, request.documents[0].title)
        words = count_words(body)
        if words < params.min_words:
            raise ProviderError(
                f"insufficient_content: the documents retrieved for {request.key!r} give a "
                f"{words}-word body, below min_words={params.min_words}; add content, retrieve "
                "more documents (top_k) or lower min_words"
            )
        return GenerationResult(
            subject=self._subject(params, request.documents[0].title),
            body=body,
            citations=tuple(dict.fromkeys(s.document_id for s in chosen)),
        )

    def _subject(self, params: ComposeParams, title: str) -> str:
        text = _render(params, params.subject_template, params.subject_template_name, title, [])
        subject = trim_at_word(" ".join(text.split()), params.max_subject_chars)
        return subject or trim_at_word(" ".join(title.split()), params.max_subject_chars)


def make_offline_composer(settings: Mapping[str, Any], env: Mapping[str, str]) -> OfflineComposer:
    """Build the offline composer; it takes no settings but its ``type`` and reads no
    environment."""
    validate_model(NoSettings, settings, key="providers.generation")
    return OfflineComposer()


def split_sentences(text: str) -> list[str]:
    """Split text into sentences at terminal punctuation followed by a capital, and at lines."""
    sentences: list[str] = []
    for line in text.splitlines():
        sentences.extend(s.strip() for s in _SENTENCE_END.split(line.strip()) if s.strip())
    return sentences


def is_usable(sentence: str) -> bool:
    """Whether a sentence may go into a message: long enough, no template syntax, no injection."""
    return (
        len(sentence.split()) >= _MIN_SENTENCE_WORDS
        and not _TEMPLATE_SYNTAX.search(sentence)
        and not about_a_model(sentence)
    )


def rank_sentences(documents: Sequence[Document], focus_terms: Sequence[str]) -> list[Sentence]:
    """Return the usable, de-duplicated sentences of ``documents``, best first.

    Sentences sharing more distinct focus words rank first; ties keep document order, then
    sentence order within the document.
    """
    focus = set().union(*(_terms(t) for t in focus_terms)) if focus_terms else set()
    found = []
    for doc_index, doc in enumerate(documents):
        for index, text in enumerate(split_sentences(doc.body)):
            if not is_usable(text):
                continue
            if text[-1] not in _TERMINAL:
                text += "."
            overlap = len(focus & _terms(text))
            condition = bool(_CONDITION.search(text))
            found.append(Sentence(doc.document_id, text, doc_index, index, overlap, condition))
    found.sort(key=lambda s: (-s.overlap, s.doc_index, s.index))
    return _dedupe(found)


def count_words(text: str) -> int:
    """Count words as whitespace-separated tokens (citations and merge-tag parts included)."""
    return len(text.split())


def trim_at_word(text: str, limit: int) -> str:
    """Trim ``text`` to at most ``limit`` characters at a word boundary, keeping merge tags whole.

    Trailing separators (``,:;-``) and connector words left by the cut are removed; a single
    word longer than ``limit`` is cut hard.
    """
    if len(text) <= limit:
        return text
    kept: list[str] = []
    for token in _WORD_KEEPING_MERGE_TAGS.findall(text):
        if len(" ".join([*kept, token])) > limit:
            break
        kept.append(token)
    # A subject should not end on a dangling connector ("... shoes are").
    while len(kept) > 1 and kept[-1].lower() in _STOPWORDS:
        kept.pop()
    trimmed = " ".join(kept).rstrip(" ,:;-–—")
    return trimmed or text[:limit].rstrip()


def _fill_body(
    candidates: list[Sentence], params: ComposeParams, title: str
) -> tuple[list[Sentence], str]:
    # Greedy in rank order, measuring the rendered body itself so that any template layout
    # (paragraph, bullets, extra lines) is counted exactly; a unit that does not fit is skipped
    # and shorter ones further down may still fill the budget.
    units = _Units(candidates)
    chosen: list[Sentence] = []
    body = _render(params, params.template, params.template_name, title, chosen)
    if count_words(body) > params.max_words:
        raise ConfigurationError(
            f"offline composer: the template alone has {count_words(body)} words, more than "
            f"max_words={params.max_words}; shorten it or raise max_words",
            path=params.template_name,
        )
    for sentence in candidates:
        if sentence.condition or sentence in chosen:
            continue  # a condition only ever comes along with its document's other sentences
        unit = units.unit(sentence, chosen)
        if not unit:
            continue
        trial_chosen = _in_reading_order([*chosen, *unit])
        trial = _render(params, params.template, params.template_name, title, trial_chosen)
        if count_words(trial) <= params.max_words:
            chosen, body = trial_chosen, trial
    return chosen, body


class _Units:
    """What must accompany a sentence: the sentences it refers back to, and its conditions."""

    def __init__(self, candidates: list[Sentence]) -> None:
        self._at = {(s.document_id, s.index): s for s in candidates}
        self._conditions: dict[str, list[Sentence]] = {}
        for s in sorted(candidates, key=lambda s: (s.doc_index, s.index)):
            if s.condition:
                self._conditions.setdefault(s.document_id, []).append(s)

    def unit(self, sentence: Sentence, chosen: list[Sentence]) -> list[Sentence]:
        """The sentences to add with ``sentence``, or [] when it cannot stand (lost referent)."""
        chain = [sentence]
        while _REFERS_BACK.match(chain[0].text):
            previous = self._at.get((chain[0].document_id, chain[0].index - 1))
            if previous is None:
                return []
            chain.insert(0, previous)
        extra = self._conditions.get(sentence.document_id, [])
        return [s for s in dict.fromkeys([*chain, *extra]) if s not in chosen]


def _in_reading_order(sentences: list[Sentence]) -> list[Sentence]:
    # Documents appear in the order they were first chosen (best first); within a document,
    # sentences keep their original order so that the text reads as written.
    first: dict[str, int] = {}
    for s in sentences:
        first.setdefault(s.document_id, len(first))
    return sorted(sentences, key=lambda s: (first[s.document_id], s.index))


def _render(
    params: ComposeParams, source: str, name: str, title: str, chosen: list[Sentence]
) -> str:
    cited = [s.cited for s in chosen]
    variables = {
        **params.variables,
        "sentences": " ".join(cited),
        "sentence_list": cited,
        "title": title,
        "tone": params.tone,
    }
    return _tidy(
        render_template_text(source, template_name=name, merge_tags=params.merge_tags, **variables)
    )


def _tidy(text: str) -> str:
    lines = [line.rstrip() for line in text.strip().splitlines()]
    return re.sub(r"\n{3,}", "\n\n", "\n".join(lines))


def _terms(text: str) -> set[str]:
    return {_stem(w) for w in _WORD.findall(text.lower()) if w not in _STOPWORDS and len(w) > 2}


def _stem(word: str) -> str:
    # A crude suffix strip is enough to match "shoes"/"shoe" or "jackets"/"jacket" for ranking.
    for suffix in ("ing", "ed"):
        if word.endswith(suffix) and len(word) - len(suffix) >= 3:
            return word[: -len(suffix)]
    if word.endswith("ies") and len(word) > 4:
        return word[:-3] + "y"
    if word.endswith(("sses", "shes", "ches", "xes", "zes")):
        return word[:-2]
    if word.endswith("s") and not word.endswith("ss") and len(word) > 3:
        return word[:-1]
    return word


def _dedupe(sentences: list[Sentence]) -> list[Sentence]:
    kept: list[Sentence] = []
    kept_terms: list[set[str]] = []
    conditions_seen: set[tuple[str, str]] = set()
    for sentence in sentences:
        if sentence.condition:
            # "Offer ends 2026-12-31." in two documents states two offers' deadlines: keep both.
            if (sentence.document_id, sentence.text) not in conditions_seen:
                conditions_seen.add((sentence.document_id, sentence.text))
                kept.append(sentence)
            continue
        terms = _terms(sentence.text)
        if any(_jaccard(terms, other) >= _NEAR_DUPLICATE for other in kept_terms):
            continue
        kept.append(sentence)
        kept_terms.append(terms)
    return kept


def _jaccard(a: set[str], b: set[str]) -> float:
    if not a and not b:
        return 1.0
    return len(a & b) / len(a | b)


def _int_param(params: Mapping[str, Any], name: str, default: int) -> int:
    value = params.get(name, default)
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ConfigurationError(
            f"offline composer: params[{name!r}] must be a positive integer, got {value!r}"
        )
    return value
