"""What a build offers its Python steps: providers behind the call layer, prompts, run errors."""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from cpo.engine.calls import (
    CallLayer,
    CallOutcome,
    cache_key,
    decode,
    estimate_tokens,
    price_model,
    retry_call,
)
from cpo.engine.config import ProjectConfig
from cpo.errors import ConfigurationError
from cpo.providers.base import corpus_fingerprint, get_provider_factory

PromptsFactory = Callable[[ProjectConfig], Any]
"""Makes the renderer of a project's prompts (``ctx.render``) from its configuration; supplied
by whoever builds `Services` (the domain's prompt language is not the engine's)."""


@dataclass(frozen=True)
class _Corpus:
    """What an index cache key hashes: the fingerprint of the documents indexed."""

    fingerprint: str


@dataclass(frozen=True)
class PlannedCall:
    """A call `plan` found the build would make (a cache miss), with its estimates."""

    step: str
    provider: str
    model: str
    item_key: str
    input_tokens: int
    output_tokens: int
    cost_usd: float
    possible: bool = False
    """A repair request, made only if the first answer cannot be used."""


@dataclass
class StepProvider:
    """A provider as one step sees it: each call goes through the call layer.

    In a dry run (`plan`), cache hits are served as usual, and each miss is recorded as a
    `PlannedCall` and answered by the offline `stand_in` instead of the real service.
    """

    step: str
    kind: str
    provider: Any
    calls: CallLayer
    stand_in: Any = None
    planned: list[PlannedCall] | None = None
    reindex: bool = False
    # Fingerprint of the corpus last indexed: searches are cached per corpus, so a changed
    # document set never reuses an answer computed over the old one.
    corpus: str = ""

    @property
    def name(self) -> str:
        """The provider's registered name (``offline``, ``azure_openai``, ...)."""
        return self.provider.name

    @property
    def model(self) -> str:
        """The model or deployment answering."""
        return self.provider.model

    def index(self, documents: Sequence[Any]) -> None:
        """Build the retrieval index.

        A provider whose index lives in a service (``persistent_index = True``, e.g. Azure AI
        Search, where indexing may pay for embeddings) is indexed once per corpus: an unchanged
        corpus is a cache hit and nothing is sent. In-process indexes (BM25) are always built.
        Throttling, 5xx and timeouts are retried with the call layer's backoff settings.
        """
        target = self.stand_in or self.provider
        documents = list(documents)
        persistent = self.stand_in is None and getattr(target, "persistent_index", False)
        self.corpus = corpus_fingerprint(documents)
        key = cache_key(target.describe(), "index", _Corpus(self.corpus), "")
        if persistent and not self.reindex and self.calls.cache.get(key) is not None:
            self.calls.record_index(self.step, target, cache_hit=True)
            return
        started = time.perf_counter()
        # Tokens paid while indexing (embeddings), counted across retries by the provider.
        tokens_before = getattr(target, "index_input_tokens", 0)
        attempts = self._index_with_retries(target, documents)
        if persistent:
            self.calls.cache.put(key, target.name, target.model, {"documents": len(documents)})
            latency = (time.perf_counter() - started) * 1000
            tokens = getattr(target, "index_input_tokens", 0) - tokens_before
            self.calls.record_index(
                self.step, target, attempts=attempts, latency_ms=latency, input_tokens=tokens
            )

    def _index_with_retries(self, target: Any, documents: list[Any]) -> int:
        """Index through the call layer's retry rule; returns the attempts it took."""

        def attempt(number: int) -> int:
            target.index(documents)
            return number

        return retry_call(attempt, self.calls.settings, sleep=lambda s: self.calls.sleep(s))

    def call_all(
        self, method: str, requests: Sequence[Any], *, salt: str = ""
    ) -> list[CallOutcome]:
        """Call the provider for every request through cache, limits, retries and ledger.

        Retrieval answers depend on the indexed corpus as well as the request, so the corpus
        fingerprint is part of every cache key after `index`.
        """
        salt = f"{self.corpus}{salt}"
        if self.stand_in is None:
            return self.calls.call_all(self.step, self.provider, method, requests, salt=salt)
        return [self._plan_one(method, request, salt) for request in requests]

    def _plan_one(self, method: str, request: Any, salt: str) -> CallOutcome:
        key = cache_key(self.provider.describe(), method, request, salt)
        cached = self.calls.cache.get(key)
        if cached is not None:
            return CallOutcome(request.key, decode(method, cached), cache_hit=True)
        input_tokens, output_tokens = estimate_tokens(request)
        cost = self.calls.cost(price_model(self.provider), input_tokens, output_tokens)
        assert self.planned is not None
        # An unusable answer gets one repair request: planned as a possible extra call.
        repeats = int(getattr(self.provider, "max_requests_per_item", 1) or 1)
        for extra in range(repeats):
            self.planned.append(
                PlannedCall(
                    self.step,
                    self.provider.name,
                    self.provider.model,
                    request.key if extra == 0 else f"{request.key} (repair, if needed)",
                    input_tokens,
                    output_tokens,
                    cost,
                    possible=extra > 0,
                )
            )
        try:
            return CallOutcome(request.key, getattr(self.stand_in, method)(request))
        except Exception as e:  # the stand-in failing only means later steps see fewer items
            return CallOutcome(request.key, error=f"plan stand-in: {e}")


class Services:
    """Created once per build; providers are made on first use so unused SDKs never load.

    Args:
        config: The project's configuration.
        calls: The build's call layer.
        env: The environment providers read (default ``os.environ``).
        dry_run: ``plan``: cache misses are answered by offline stand-ins and recorded.
        full_refresh: Rebuild service-side indexes even when their corpus is unchanged.
        prompts: Makes the prompt renderer behind ``ctx.render`` (see `PromptsFactory`).
    """

    def __init__(
        self,
        config: ProjectConfig,
        calls: CallLayer,
        env: Mapping[str, str] | None = None,
        *,
        dry_run: bool = False,
        full_refresh: bool = False,
        prompts: PromptsFactory | None = None,
    ) -> None:
        self.config = config
        self._prompts_factory = prompts
        self.calls = calls
        self.env = env if env is not None else os.environ
        self.dry_run = dry_run
        self.full_refresh = full_refresh
        self.planned: list[PlannedCall] = []
        self._stand_ins: dict[str, Any] = {}
        self._providers: dict[str, Any] = {}
        self._prompts: Any = None
        self._lock = threading.Lock()
        self.errors: list[tuple[str, str, str, str]] = []
        self.summary: dict[str, Any] | None = None  # cpo.reporting.summary, once the build has run

    def provider(self, kind: str, *, step: str) -> StepProvider:
        """The target's provider for `kind`, wrapped for `step`.

        Raises:
            ConfigurationError: the target names no provider for `kind`, or an unknown one.
        """
        with self._lock:
            if kind not in self.config.target.providers:
                raise ConfigurationError(
                    f"target {self.config.target.name!r} has no {kind} provider; add "
                    f"providers.{kind}.type",
                    path="cpo.yml",
                    key=f"targets.{self.config.target.name}.providers",
                )
            # Every provider of the target is made on the first request, so a missing endpoint
            # or key of a later step fails the build before an earlier step calls (and pays).
            for name, settings in self.config.target.providers.items():
                if name not in self._providers:
                    factory = get_provider_factory(name, str(settings["type"]))
                    self._providers[name] = self._make(name, settings, factory, step)
                    if self.dry_run:
                        self._stand_ins[name] = self._stand_in(name, settings)
        return StepProvider(
            step,
            kind,
            self._providers[kind],
            self.calls,
            self._stand_ins.get(kind),
            self.planned if self.dry_run else None,
            reindex=self.full_refresh,
        )

    def _make(self, kind: str, settings: Mapping[str, Any], factory: Any, step: str) -> Any:
        """Create one provider; a setting or variable it lacks is reported against its own
        kind and key, even when an earlier step (which starts every provider) hit it first."""
        try:
            return factory(settings, self.env)
        except ConfigurationError as error:
            target = self.config.target.name
            raise ConfigurationError(
                f"the {kind} provider ({settings['type']}) of target {target!r} cannot start: "
                f"{error.message} (checked before step {step!r} runs, so nothing is paid "
                f"for until every provider of the target can start)",
                path=error.path or "cpo.yml",
                key=error.key or f"targets.{target}.providers.{kind}",
            ) from None

    def _stand_in(self, kind: str, settings: Mapping[str, Any]) -> Any:
        from cpo.engine.plugins import hooks, merged

        name = merged(hooks().cpo_stand_ins())[kind]
        if settings["type"] == name:
            return self._providers[kind]  # already offline: it is its own stand-in
        return get_provider_factory(kind, name)({"type": name}, self.env)

    @property
    def prompts(self) -> Any:
        """The renderer of the project's prompts, made on first use by the `prompts` factory.

        Raises:
            ConfigurationError: nothing supplied a prompt renderer.
        """
        if self._prompts is None:
            if self._prompts_factory is None:
                raise ConfigurationError(
                    "this build has no prompt renderer: the project's steps render prompts, "
                    "so build through cpo.engine.project.Project (which supplies one)"
                )
            self._prompts = self._prompts_factory(self.config)
        return self._prompts

    def record_error(self, step: str, item_key: str, error: str) -> None:
        """Remember a failed item for the ``run_errors`` table."""
        with self._lock:
            self.errors.append((step, item_key, error, datetime.now(UTC).isoformat()))
