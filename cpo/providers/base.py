"""The provider interface: plain request/result values and a registry of factories.

A provider turns one request into one result for one step kind (``retrieval``, ``generation``,
``safety``). Providers do no caching, retrying, rate limiting or accounting: the call layer
(`cpo.engine.calls`) wraps every provider the same way. Built-in providers register exactly as an
outside one would, with `register_provider`.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

from cpo.errors import ConfigurationError

HARM_CATEGORIES = ("Hate", "SelfHarm", "Sexual", "Violence")


@dataclass(frozen=True)
class Document:
    """An approved content document handed to retrieval indexes and generators."""

    document_id: str
    title: str
    body: str
    category: str = ""
    audience: str = ""
    keywords: str = ""
    expires_at: str | None = None


@dataclass(frozen=True)
class RetrievalRequest:
    """One search: a free-text query, how many hits, and an optional audience."""

    key: str
    query: str
    top_k: int = 5
    audience: str | None = None
    min_score: float = 0.0


@dataclass(frozen=True)
class Hit:
    """One retrieved document and its score (higher is better)."""

    document_id: str
    score: float


class Hits(list[Hit]):
    """Search results, best first, with the tokens the search paid for (query embeddings).

    A plain list in every other respect: the cache stores hits as a list, and a cached answer
    costs nothing, so `input_tokens` need not survive caching.
    """

    def __init__(self, hits: Iterable[Hit] = (), *, input_tokens: int = 0) -> None:
        super().__init__(hits)
        self.input_tokens = input_tokens


@dataclass(frozen=True)
class GenerationRequest:
    """One generation: prompts, grounding documents and sampling parameters.

    Attributes:
        key: The item this request is for (e.g. ``segment_id|tone``), used in errors and ledgers.
        system: The rendered system prompt.
        prompt: The rendered user prompt.
        documents: The documents the answer may use and must cite.
        params: Provider parameters that change the answer (temperature, max_tokens, tone,
            composition template for the offline composer, word limits, ...).
    """

    key: str
    system: str
    prompt: str
    documents: tuple[Document, ...] = ()
    params: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class GenerationResult:
    """A generated message. ``finish_reason == "content_filter"`` means the service refused.

    Attributes:
        blocked_reason: Set when the answer could not be used (``no_json: ...``,
            ``unknown_merge_tag: ...``): the variant is blocked with this reason, and the result
            is cached like any other, so an unchanged rebuild does not pay for it again.
        requests: HTTP requests the answer took (a repair request makes it 2).
        estimated_tokens: The service reported no usage; tokens were estimated from the text.
    """

    subject: str
    body: str
    citations: tuple[str, ...]
    input_tokens: int = 0
    output_tokens: int = 0
    finish_reason: str = "stop"
    blocked_reason: str | None = None
    requests: int = 1
    estimated_tokens: bool = False


@dataclass(frozen=True)
class SafetyRequest:
    """One text to screen, with the blocklists to apply."""

    key: str
    text: str
    blocklists: Mapping[str, tuple[str, ...]] = field(default_factory=dict)
    output_type: str = "EightSeverityLevels"


@dataclass(frozen=True)
class SafetyResult:
    """Severities on Azure's 0-7 scale per harm category, and blocklist hits."""

    severities: Mapping[str, int]
    blocklist_matches: tuple[str, ...] = ()


@dataclass(frozen=True)
class GroundednessRequest:
    """Is `text` supported by `sources` (the documents it cites)?"""

    key: str
    text: str
    sources: tuple[str, ...] = ()


@dataclass(frozen=True)
class GroundednessResult:
    """Whether ungrounded text was detected, its share of the text, and what (briefly)."""

    ungrounded: bool
    ungrounded_share: float = 0.0
    details: tuple[str, ...] = ()


class Provider(Protocol):
    """What every provider exposes; the step-specific method is one of the three below."""

    kind: str
    name: str
    model: str

    def describe(self) -> dict[str, Any]:
        """Return what identifies this provider's answers (name, model, version) for cache keys."""


class RetrievalProvider(Provider, Protocol):
    def index(self, documents: list[Document]) -> None: ...

    def search(self, request: RetrievalRequest) -> list[Hit]: ...


class GenerationProvider(Provider, Protocol):
    def generate(self, request: GenerationRequest) -> GenerationResult: ...


class SafetyProvider(Provider, Protocol):
    def analyze(self, request: SafetyRequest) -> SafetyResult: ...


ProviderFactory = Callable[[Mapping[str, Any], Mapping[str, str]], Provider]
"""A factory takes the provider's settings from ``cpo.yml`` (``providers.<kind>`` of the chosen
target, including ``type``) and the environment (``os.environ`` or a test's dict)."""

_REGISTRY: dict[tuple[str, str], ProviderFactory] = {}


def register_provider(kind: str, name: str, factory: ProviderFactory) -> None:
    """Register a provider factory under a step kind and a name used in ``cpo.yml``."""
    _REGISTRY[(kind, name)] = factory


def get_provider_factory(kind: str, name: str) -> ProviderFactory:
    """Look a provider up by kind and name, saying what exists when it is unknown."""
    _load_builtins()
    try:
        return _REGISTRY[(kind, name)]
    except KeyError:
        known = sorted(n for k, n in _REGISTRY if k == kind)
        raise ConfigurationError(
            f"unknown {kind} provider {name!r}; known: {', '.join(known) or 'none'}",
            path="cpo.yml",
            key=f"providers.{kind}.type",
        ) from None


def _load_builtins() -> None:
    # Providers of every plugin (`cpo.engine.plugins`: the built-in ones are
    # cpo.providers.plugin's); a factory imports its module, and SDK, only when it is used.
    # `register_provider` wins over a plugin's provider of the same kind and name.
    from cpo.engine.plugins import hooks, merged

    for key, factory in merged(hooks().cpo_providers()).items():
        _REGISTRY.setdefault(key, factory)
