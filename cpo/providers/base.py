"""The provider interface: plain request/result values and a registry of factories.

A provider turns one request into one result for one step kind (``retrieval``, ``generation``,
``safety``). Providers do no caching, retrying, rate limiting or accounting: the call layer
(`cpo.engine.calls`) wraps every provider the same way. Built-in providers register exactly as an
outside one would, with `register_provider`.
"""

from __future__ import annotations

import dataclasses
import hashlib
import importlib
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar, Protocol, Self

from cpo.engine.settings import NonEmptyStr, Section
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


def corpus_fingerprint(documents: Sequence[Document]) -> str:
    """A digest of a document set, in order: equal digests mean the same corpus.

    Retrieval answers depend on the corpus as well as the query, so cache keys of searches and
    of service-side index builds include it, as does a provider's own description of its index.
    """
    digest = hashlib.sha256()
    for document in documents:
        digest.update(repr(document).encode())
    return digest.hexdigest()


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

    def to_cache(self) -> list[dict[str, Any]]:
        """The hits as the cache's JSON: a list of ``{document_id, score}``."""
        return [dataclasses.asdict(hit) for hit in self]

    @classmethod
    def from_cache(cls, data: Any) -> Hits:
        """Hits back from `to_cache`'s JSON."""
        return cls(Hit(**row) for row in data)


class CachedResult:
    """A result dataclass stored in the cache as its fields (`dataclasses.asdict`)."""

    def to_cache(self) -> dict[str, Any]:
        """The result as the cache's JSON."""
        # A mixin: every subclass is a dataclass, which mypy cannot see on `self` here.
        return dataclasses.asdict(self)  # type: ignore[call-overload]

    @classmethod
    def from_cache(cls, data: Any) -> Self:
        """The result back from `to_cache`'s JSON (tuples were stored as lists)."""
        names = {f.name for f in dataclasses.fields(cls)}  # type: ignore[arg-type]  # (as above)
        values = {k: tuple(v) if k in cls._tuples else v for k, v in data.items() if k in names}
        return cls(**values)

    _tuples: ClassVar[tuple[str, ...]] = ()


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
class GenerationResult(CachedResult):
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

    _tuples: ClassVar[tuple[str, ...]] = ("citations",)


@dataclass(frozen=True)
class SafetyRequest:
    """One text to screen, with the blocklists to apply."""

    key: str
    text: str
    blocklists: Mapping[str, tuple[str, ...]] = field(default_factory=dict)
    output_type: str = "EightSeverityLevels"


@dataclass(frozen=True)
class SafetyResult(CachedResult):
    """Severities on Azure's 0-7 scale per harm category, and blocklist hits.

    Only these two fields come back from the cache: a subclass's extras (a judge's reasons and
    tokens) describe the call that paid, not the verdict.
    """

    severities: Mapping[str, int]
    blocklist_matches: tuple[str, ...] = ()

    _tuples: ClassVar[tuple[str, ...]] = ("blocklist_matches",)

    @classmethod
    def from_cache(cls, data: Any) -> Self:
        """The verdict back from the cache's JSON (always a plain `SafetyResult`)."""
        # Deliberately not `cls`: a subclass's verdict comes back as the plain base (docstring).
        verdict = SafetyResult(data["severities"], tuple(data["blocklist_matches"]))
        return verdict  # type: ignore[return-value]


@dataclass(frozen=True)
class GroundednessRequest:
    """Is `text` supported by `sources` (the documents it cites)?"""

    key: str
    text: str
    sources: tuple[str, ...] = ()


@dataclass(frozen=True)
class GroundednessResult(CachedResult):
    """Whether ungrounded text was detected, its share of the text, and what (briefly)."""

    ungrounded: bool
    ungrounded_share: float = 0.0
    details: tuple[str, ...] = ()

    _tuples: ClassVar[tuple[str, ...]] = ("details",)


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
    """Screens texts. It may also define ``prepare(requests)``: the call layer then passes it
    a batch's uncached requests before calling `analyze` on each, so it can score them in one
    go (as the offline screen does); any provider kind may define it."""

    def analyze(self, request: SafetyRequest) -> SafetyResult: ...


def prepare_batch(provider: Any, requests: Sequence[Any]) -> None:
    """Give a provider that batches (an optional ``prepare(requests)``, of any kind) the requests
    before they are called one by one; a provider without one is left alone."""
    prepare = getattr(provider, "prepare", None)
    if requests and callable(prepare):
        prepare(requests)


class CacheCodec(Protocol):
    """A result type the cache can store: JSON out with `to_cache`, back with `from_cache`."""

    def to_cache(self) -> Any: ...

    @classmethod
    def from_cache(cls, data: Any) -> Any: ...


@dataclass(frozen=True)
class ProviderKind:
    """A step kind: the method its providers answer and the result type the cache stores.

    Attributes:
        name: The kind as ``cpo.yml`` names it (``providers.<name>``).
        method: The provider method a step calls (``generate``).
        result: The result type, with `to_cache`/`from_cache` (`CacheCodec`).
        configurable: Whether ``cpo.yml`` names it under ``providers:``; a check that a
            provider of another kind makes (Prompt Shields, by the safety provider) is not.
    """

    name: str
    method: str
    result: type[Any]
    configurable: bool = True

    def encode(self, value: Any) -> Any:
        """A provider's answer as the cache's JSON (a plain list of hits becomes `Hits`)."""
        if not isinstance(value, self.result):
            value = self.result(value)
        return value.to_cache()

    def decode(self, data: Any) -> Any:
        """The answer back from the cache's JSON."""
        return self.result.from_cache(data)


_KINDS: dict[str, ProviderKind] = {}


def register_kind(name: str, method: str, result: type[Any], *, configurable: bool = True) -> None:
    """Declare a step kind: a new kind of provider needs no edit of the call layer.

    Args:
        name: The kind's name in ``cpo.yml`` (``providers.<name>``).
        method: The provider method the call layer calls.
        result: The result type (`CacheCodec`: ``to_cache()`` and ``from_cache(data)``).
        configurable: False for calls that a provider of another kind makes (they go through
            the call layer, but ``cpo.yml`` has no ``providers.<name>`` for them).
    """
    _KINDS[name] = ProviderKind(name, method, result, configurable)


def provider_kinds() -> tuple[str, ...]:
    """The step kinds ``cpo.yml`` can name under ``providers:``, in registration order."""
    return tuple(name for name, kind in _KINDS.items() if kind.configurable)


def kind_for_method(method: str) -> ProviderKind:
    """The kind whose providers answer `method` (``generate`` -> generation).

    Raises:
        KeyError: no registered kind has that method.
    """
    for kind in _KINDS.values():
        if kind.method == method:
            return kind
    raise KeyError(
        f"no provider kind answers {method!r}; known: {sorted(k.method for k in _KINDS.values())}"
    )


register_kind("retrieval", "search", Hits)
register_kind("generation", "generate", GenerationResult)
register_kind("safety", "analyze", SafetyResult)
register_kind("groundedness", "detect", GroundednessResult)


class NoSettings(Section):
    """The settings model of a provider that takes none: only its ``type`` (a typo is an error
    instead of a setting silently ignored)."""

    type: NonEmptyStr | None = None


ProviderFactory = Callable[[Mapping[str, Any], Mapping[str, str]], Provider]
"""A factory takes the provider's settings from ``cpo.yml`` (``providers.<kind>`` of the chosen
target, including ``type``) and the environment (``os.environ`` or a test's dict)."""

_REGISTRY: dict[tuple[str, str], ProviderFactory] = {}
_SETTINGS: dict[tuple[str, str], type[Any] | str] = {}


def register_provider(
    kind: str, name: str, factory: ProviderFactory, *, settings: type[Any] | str | None = None
) -> None:
    """Register a provider factory under a step kind and a name used in ``cpo.yml``.

    Args:
        kind: The step kind (`provider_kinds`).
        name: The provider's ``type`` in ``cpo.yml``.
        factory: Makes the provider from its settings and the environment.
        settings: The pydantic model of its settings (or ``"module:Model"``, imported when first
            needed), validated with the rest of ``cpo.yml`` by `cpo.engine.config_schema`.
    """
    _REGISTRY[(kind, name)] = factory
    if settings is not None:
        _SETTINGS[(kind, name)] = settings


def provider_settings_model(kind: str, name: str) -> type[Any] | None:
    """The registered settings model of a provider, or None when it checks its own settings."""
    _load_builtins()
    model = _SETTINGS.get((kind, name))
    if isinstance(model, str):
        module, _, attribute = model.partition(":")
        model = _SETTINGS[(kind, name)] = getattr(importlib.import_module(module), attribute)
    return model


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
