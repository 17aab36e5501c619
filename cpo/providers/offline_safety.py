"""The offline safety screen: category lexicons and a profanity model on Azure's 0-7 scale.

It answers the same question as Azure AI Content Safety's ``text:analyze`` (severities for Hate,
SelfHarm, Sexual and Violence, plus blocklist hits) with no network:

* The text is first normalised (`cpo.personalization.normalize.normalize`, the same normaliser as
the injection
  check): NFKC, zero-width and control characters stripped, look-alike letters and digits standing
  for letters folded, masked profanity ("sh*t", "f***ing", "b-i-t-c-h") spelled out again, so
  none of these hides a word from the lexicon or the model.
* Each category has a lexicon of weighted terms (``lexicons/harm_lexicon.yml``). A category's
  severity is the weight of its strongest hit, plus one for each further non-overlapping hit of
  weight 3 or more (at most +2), capped at 7. A category may lower that escalation weight
  (``escalation_min_weight``; Sexual uses 2, so suggestive terms pile onto an explicit one), but
  only a hit of weight 3 or more is ever escalated.
* Marketing idioms listed in the lexicon ("killer deal", "shoot us an email", "dying to see you")
  are masked out first, so figurative copy does not read as violence.
* The ``alt-profanity-check`` model scores each sentence; its highest probability is mapped onto
  Hate (p >= 0.9 -> 4, >= 0.7 -> 3, >= 0.5 -> 2), because Azure reports insults and slurs there.
* ``FourSeverityLevels`` rounds down to 0, 2, 4 or 6, as Azure does.
"""

from __future__ import annotations

import hashlib
import re
import threading
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from importlib import metadata, resources
from pathlib import Path
from typing import Any, ClassVar, Literal

import yaml

from cpo.engine.settings import NonEmptyStr, Section, validate_model
from cpo.errors import ConfigurationError, ProviderError
from cpo.personalization.normalize import PROFANE_WORDS, normalize, unmask_profanity  # noqa: F401 (re-exported)
from cpo.providers.base import HARM_CATEGORIES, SafetyRequest, SafetyResult

OUTPUT_TYPES = ("EightSeverityLevels", "FourSeverityLevels")
SETTINGS_KEY = "providers.safety"
PROFANITY_BANDS = ((0.9, 4), (0.7, 3), (0.5, 2))
"""(minimum probability, Hate severity), strongest first."""
ESCALATION_MIN_WEIGHT = 3
ESCALATION_MAX = 2
MAX_SEVERITY = 7

_SENTENCE_SPLIT = re.compile(r"(?<=[.!?])\s+|\n+")
_MASK = " "


@dataclass(frozen=True)
class Term:
    """One weighted lexicon entry, compiled."""

    pattern: re.Pattern[str]
    weight: int


@dataclass(frozen=True)
class Lexicon:
    """Compiled idioms and per-category terms, and the digest of the source they came from."""

    version: int
    digest: str
    idioms: tuple[re.Pattern[str], ...]
    categories: Mapping[str, tuple[Term, ...]]
    escalation_min_weight: Mapping[str, int] = field(default_factory=dict)


def _phrase_regex(term: str, definitions: Mapping[str, str]) -> str:
    """Turn a lexicon term into a regex: definitions substituted, spaces matching ``[\\s-]+``."""
    for name, alternation in definitions.items():
        term = term.replace("{" + name + "}", alternation)
    term = term.replace(" ?", r"[\s\-]*")
    term = term.replace(" ", r"[\s\-]+")
    return rf"(?<!\w)(?:{term})(?!\w)"


def _compile(term: str, definitions: Mapping[str, str], where: str, source: str) -> re.Pattern:
    try:
        return re.compile(_phrase_regex(term, definitions), re.IGNORECASE)
    except re.error as e:
        raise ConfigurationError(
            f"invalid regular expression {term!r}: {e}; fix the term or escape its special "
            "characters",
            path=source,
            key=where,
        ) from e


def parse_lexicon(text: str, source: str = "harm_lexicon.yml") -> Lexicon:
    """Parse and compile a lexicon document (the format of ``lexicons/harm_lexicon.yml``).

    Args:
        text: The YAML text.
        source: Where it came from, named in errors.

    Returns:
        The compiled lexicon.

    Raises:
        ConfigurationError: The YAML is malformed, a category is unknown, a weight is not an
            integer from 0 to 7, or a term is not a valid regular expression.
    """
    try:
        data = yaml.safe_load(text) or {}
    except yaml.YAMLError as e:
        raise ConfigurationError(f"lexicon is not valid YAML: {e}", path=source) from e
    if not isinstance(data, dict):
        raise ConfigurationError("lexicon must be a mapping with `categories`", path=source)
    definitions = {
        str(name): "(?:" + re.sub(r"\s*\|\s*", "|", str(value).strip()) + ")"
        for name, value in (data.get("definitions") or {}).items()
    }
    idioms = tuple(
        _compile(str(idiom), definitions, f"idioms.{i}", source)
        for i, idiom in enumerate(data.get("idioms") or [])
    )
    categories: dict[str, tuple[Term, ...]] = {c: () for c in HARM_CATEGORIES}
    for category, entries in (data.get("categories") or {}).items():
        if category not in HARM_CATEGORIES:
            raise ConfigurationError(
                f"unknown harm category {category!r}; use one of {', '.join(HARM_CATEGORIES)}",
                path=source,
                key=f"categories.{category}",
            )
        categories[category] = tuple(
            _term(entry, definitions, f"categories.{category}.{i}", source)
            for i, entry in enumerate(entries or [])
        )
    return Lexicon(
        version=int(data.get("version", 1)),
        digest=hashlib.sha256(text.encode("utf-8")).hexdigest()[:16],
        idioms=idioms,
        categories=categories,
        escalation_min_weight=_escalation_weights(data.get("escalation_min_weight"), source),
    )


def _escalation_weights(value: Any, source: str) -> dict[str, int]:
    """Validate ``escalation_min_weight: {Category: weight}`` (optional)."""
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise ConfigurationError(
            "escalation_min_weight must be a mapping like {Sexual: 2}",
            path=source,
            key="escalation_min_weight",
        )
    weights = {}
    for category, weight in value.items():
        where = f"escalation_min_weight.{category}"
        if category not in HARM_CATEGORIES:
            raise ConfigurationError(
                f"unknown harm category {category!r}; use one of {', '.join(HARM_CATEGORIES)}",
                path=source,
                key=where,
            )
        if isinstance(weight, bool) or not isinstance(weight, int) or not 1 <= weight <= 7:
            raise ConfigurationError(
                f"escalation weight must be an integer from 1 to 7, got {weight!r}",
                path=source,
                key=where,
            )
        weights[str(category)] = weight
    return weights


def _term(entry: Any, definitions: Mapping[str, str], where: str, source: str) -> Term:
    if not isinstance(entry, dict) or "term" not in entry:
        raise ConfigurationError(
            "each lexicon entry must be a mapping like {term: 'kill you', weight: 6}",
            path=source,
            key=where,
        )
    weight = entry.get("weight")
    if not isinstance(weight, int) or not 0 <= weight <= MAX_SEVERITY:
        raise ConfigurationError(
            f"weight must be an integer from 0 to 7, got {weight!r}", path=source, key=where
        )
    return Term(_compile(str(entry["term"]), definitions, where, source), weight)


def load_builtin_lexicon() -> Lexicon:
    """Load the lexicon shipped with CPO as package data."""
    text = (
        resources.files("cpo.providers")
        .joinpath("lexicons/harm_lexicon.yml")
        .read_text(encoding="utf-8")
    )
    return parse_lexicon(text, "cpo/providers/lexicons/harm_lexicon.yml")


def mask_idioms(text: str, lexicon: Lexicon) -> str:
    """Blank out the lexicon's marketing idioms so they cannot match a harm term."""
    for idiom in lexicon.idioms:
        text = idiom.sub(lambda m: _MASK * len(m.group(0)), text)
    return text


def lexicon_severity(
    text: str, terms: Sequence[Term], min_weight: int = ESCALATION_MIN_WEIGHT
) -> int:
    """Score one category: strongest hit plus escalation for further distinct hits.

    Hits are taken strongest first and must not overlap one already taken, so a threat phrase
    and the verb inside it count once. Further hits of weight `min_weight` or more escalate,
    but only when the strongest hit weighs `ESCALATION_MIN_WEIGHT` or more: mild terms alone
    ("sexy lingerie") never add up to a blocking severity.
    """
    hits = [(t.weight, i, m.span()) for i, t in enumerate(terms) for m in t.pattern.finditer(text)]
    hits.sort(key=lambda h: -h[0])
    taken: list[tuple[int, int, tuple[int, int]]] = []
    for weight, index, (start, end) in hits:
        if all(end <= s or start >= e for _, _, (s, e) in taken):
            taken.append((weight, index, (start, end)))
    if not taken:
        return 0
    strongest = taken[0]
    if strongest[0] < ESCALATION_MIN_WEIGHT:
        return strongest[0]
    # Repeats of one term do not escalate: only further distinct terms do.
    others = {index for weight, index, _ in taken[1:] if weight >= min_weight}
    others.discard(strongest[1])
    return min(MAX_SEVERITY, strongest[0] + min(ESCALATION_MAX, len(others)))


def profanity_severity(probability: float) -> int:
    """Map a profanity probability onto Azure's Hate severity scale."""
    for minimum, severity in PROFANITY_BANDS:
        if probability >= minimum:
            return severity
    return 0


def to_four_levels(severity: int) -> int:
    """Round a 0-7 severity down to Azure's FourSeverityLevels output (0, 2, 4, 6)."""
    return severity - severity % 2


def blocklist_matches(text: str, blocklists: Mapping[str, Sequence[str]]) -> tuple[str, ...]:
    """Return ``"listname:term"`` for every blocklist term found as a whole word or phrase.

    Matching is case-insensitive; spaces in a term match any run of whitespace.
    """
    matches = []
    for name, terms in blocklists.items():
        for term in terms:
            words = [re.escape(w) for w in str(term).split()]
            if not words:
                continue
            pattern = r"(?<!\w)" + r"\s+".join(words) + r"(?!\w)"
            if re.search(pattern, text, re.IGNORECASE):
                matches.append(f"{name}:{term}")
    return tuple(matches)


class _ProfanityModel:
    """The ``alt-profanity-check`` model, imported once per process on first use.

    Importing it unpickles a scikit-learn model (seconds), so it is deferred until a text is
    actually screened, and guarded by a lock so concurrent screening threads import it once.
    Each model call costs milliseconds of scikit-learn input checks whatever its size, so
    `remember` scores many sentences in one call and keeps their probabilities for
    `predict_prob` (each sentence is scored on its own either way: the same numbers).
    """

    _lock = threading.Lock()
    _predict: Callable[[list[str]], Any] | None = None
    _known: ClassVar[dict[str, float]] = {}
    MAX_KNOWN: ClassVar[int] = 100_000  # sentences kept; beyond that the memory starts afresh

    @classmethod
    def predict_prob(cls, texts: list[str]) -> list[float]:
        known = cls._known  # a dict is only ever replaced whole, never emptied in place
        missing = [t for t in dict.fromkeys(texts) if t not in known]
        fresh = cls.remember(missing) if missing else {}
        return [fresh[t] if t in fresh else known[t] for t in texts]

    @classmethod
    def remember(cls, texts: list[str]) -> dict[str, float]:
        """Score `texts` in one model call, keep the probabilities and return them."""
        if cls._predict is None:
            with cls._lock:
                if cls._predict is None:
                    cls._predict = cls._load()
        try:
            probabilities = [float(p) for p in cls._predict(texts)]
        except Exception as e:  # the model is third-party code: wrap whatever it raises
            raise ProviderError(f"the profanity model failed on a text: {e}") from e
        scored = dict(zip(texts, probabilities, strict=True))
        with cls._lock:
            if len(cls._known) + len(scored) > cls.MAX_KNOWN:
                cls._known = {}
            cls._known.update(scored)
        return scored

    @staticmethod
    def _load() -> Callable[[list[str]], Any]:
        try:
            from profanity_check import predict_prob
        except ImportError as e:
            raise ProviderError(
                "the offline safety screen needs `alt-profanity-check`; install it with "
                "`pip install alt-profanity-check`, or set `profanity_model: false` under "
                "providers.safety in cpo.yml"
            ) from e
        return predict_prob


def _sentences(text: str) -> list[str]:
    parts = [s.strip() for s in _SENTENCE_SPLIT.split(text)]
    return [s for s in parts if s]


@dataclass(frozen=True)
class OfflineSafety:
    """Offline SafetyProvider (``providers.safety.type: offline``).

    Attributes:
        lexicon: The compiled harm lexicon.
        profanity_model: Whether to run the profanity model (off only to save its import time).
    """

    lexicon: Lexicon
    profanity_model: bool = True
    kind: str = "safety"
    name: str = "offline"
    model: str = "lexicon-v1"

    def describe(self) -> dict[str, Any]:
        """Identify this screen's answers for cache keys: lexicon digest and model versions."""
        try:
            profanity_version = metadata.version("alt-profanity-check")
        except metadata.PackageNotFoundError:
            profanity_version = "missing"
        return {
            "name": self.name,
            "model": self.model,
            "lexicon_version": self.lexicon.version,
            "lexicon_digest": self.lexicon.digest,
            "profanity_model": (
                f"alt-profanity-check=={profanity_version}" if self.profanity_model else "off"
            ),
        }

    def prepare(self, requests: Sequence[SafetyRequest]) -> None:
        """Score the sentences of every request in one profanity-model call (the call layer
        calls this with a batch's uncached requests; `analyze` then finds them scored)."""
        if not self.profanity_model:
            return
        sentences = [s for r in requests for s in _sentences(self._masked(r.text)[1])]
        # At most what the memory keeps: beyond it, `analyze` scores the rest itself.
        distinct = list(dict.fromkeys(sentences))[: _ProfanityModel.MAX_KNOWN]
        if distinct:
            _ProfanityModel.remember(distinct)

    def _masked(self, text: str) -> tuple[str, str]:
        """The text normalised, and normalised with the lexicon's idioms masked."""
        unmasked = normalize(text)
        return unmasked, mask_idioms(unmasked, self.lexicon)

    def analyze(self, request: SafetyRequest) -> SafetyResult:
        """Score a text on the four harm categories and apply its blocklists.

        Raises:
            ProviderError: The output type is unknown or the profanity model failed.
        """
        if request.output_type not in OUTPUT_TYPES:
            raise ProviderError(
                f"unknown safety output type {request.output_type!r} for {request.key}; "
                f"use one of {', '.join(OUTPUT_TYPES)}"
            )
        unmasked, masked = self._masked(request.text)
        severities = {
            category: lexicon_severity(
                masked,
                self.lexicon.categories.get(category, ()),
                self.lexicon.escalation_min_weight.get(category, ESCALATION_MIN_WEIGHT),
            )
            for category in HARM_CATEGORIES
        }
        if self.profanity_model:
            sentences = _sentences(masked)
            if sentences:
                probability = max(_ProfanityModel.predict_prob(sentences))
                severities["Hate"] = max(severities["Hate"], profanity_severity(probability))
        if request.output_type == "FourSeverityLevels":
            severities = {c: to_four_levels(s) for c, s in severities.items()}
        # Blocklists see the text before idiom masking: a brand's banned term is banned even
        # inside an idiom, and (unmasked) even when spelled with symbols.
        matches = blocklist_matches(request.text, request.blocklists)
        if unmasked != request.text:
            matches += blocklist_matches(unmasked, request.blocklists)
        return SafetyResult(severities=severities, blocklist_matches=tuple(dict.fromkeys(matches)))


class OfflineSafetySettings(Section):
    """``providers.safety`` of ``type: offline`` (validated with the rest of ``cpo.yml``).

    Attributes:
        lexicon: Path to a lexicon YAML replacing the built-in one (same format).
        profanity_model: ``false`` to skip the profanity model (default ``true``).
    """

    type: Literal["offline"] = "offline"
    lexicon: NonEmptyStr | None = None
    profanity_model: bool = True


def make_offline_safety(settings: Mapping[str, Any], env: Mapping[str, str]) -> OfflineSafety:
    """Build the offline screen from ``providers.safety`` settings (`OfflineSafetySettings`).

    Raises:
        ConfigurationError: A setting is invalid, or the lexicon cannot be read or is invalid.
    """
    del env  # the offline screen needs no credentials
    checked = validate_model(OfflineSafetySettings, settings, key=SETTINGS_KEY)
    if checked.lexicon is None:
        return OfflineSafety(lexicon=_builtin_lexicon(), profanity_model=checked.profanity_model)
    path = Path(checked.lexicon)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as e:
        raise ConfigurationError(
            f"cannot read lexicon file {path}: {e.strerror}; fix the path or remove the setting "
            "to use the built-in lexicon",
            path="cpo.yml",
            key=f"{SETTINGS_KEY}.lexicon",
        ) from e
    return OfflineSafety(
        lexicon=parse_lexicon(text, str(path)), profanity_model=checked.profanity_model
    )


_BUILTIN: list[Lexicon] = []
_BUILTIN_LOCK = threading.Lock()


def _builtin_lexicon() -> Lexicon:
    # Compiled once per process: every provider instance shares the same immutable lexicon.
    with _BUILTIN_LOCK:
        if not _BUILTIN:
            _BUILTIN.append(load_builtin_lexicon())
        return _BUILTIN[0]
