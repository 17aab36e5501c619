"""What a build offers its Python steps: providers behind the call layer, prompts, run errors."""

from __future__ import annotations

import os
import threading
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from cpo.calls import CallLayer, CallOutcome
from cpo.config import ProjectConfig
from cpo.errors import ConfigurationError
from cpo.providers.base import get_provider_factory


@dataclass
class StepProvider:
    """A provider as one step sees it: each call goes through the call layer."""

    step: str
    kind: str
    provider: Any
    calls: CallLayer

    @property
    def name(self) -> str:
        """The provider's registered name (``offline``, ``azure_openai``, ...)."""
        return self.provider.name

    @property
    def model(self) -> str:
        """The model or deployment answering."""
        return self.provider.model

    def index(self, documents: Sequence[Any]) -> None:
        """Build the retrieval index (not cached: indexes are cheap or idempotent)."""
        self.provider.index(list(documents))

    def call_all(self, method: str, requests: Sequence[Any], *, salt: str = "") -> list[CallOutcome]:
        """Call the provider for every request through cache, limits, retries and ledger."""
        return self.calls.call_all(self.step, self.provider, method, requests, salt=salt)


class Services:
    """Created once per build; providers are made on first use so unused SDKs never load."""

    def __init__(
        self,
        config: ProjectConfig,
        calls: CallLayer,
        env: Mapping[str, str] | None = None,
    ) -> None:
        self.config = config
        self.calls = calls
        self.env = env if env is not None else os.environ
        self._providers: dict[str, Any] = {}
        self._prompts: Any = None
        self._lock = threading.Lock()
        self.errors: list[tuple[str, str, str, str]] = []

    def provider(self, kind: str, *, step: str) -> StepProvider:
        """The target's provider for `kind`, wrapped for `step`.

        Raises:
            ConfigurationError: the target names no provider for `kind`, or an unknown one.
        """
        with self._lock:
            if kind not in self._providers:
                settings = self.config.target.providers.get(kind)
                if settings is None:
                    raise ConfigurationError(
                        f"target {self.config.target.name!r} has no {kind} provider; add "
                        f"providers.{kind}.type",
                        path="cpo.yml",
                        key=f"targets.{self.config.target.name}.providers",
                    )
                factory = get_provider_factory(kind, str(settings["type"]))
                self._providers[kind] = factory(settings, self.env)
        return StepProvider(step, kind, self._providers[kind], self.calls)

    @property
    def prompts(self) -> Any:
        """The sandboxed renderer of ``prompts/``."""
        if self._prompts is None:
            from cpo.prompting import PromptRenderer

            self._prompts = PromptRenderer(self.config.path("prompts"))
        return self._prompts

    def record_error(self, step: str, item_key: str, error: str) -> None:
        """Remember a failed item for the ``run_errors`` table."""
        with self._lock:
            self.errors.append((step, item_key, error, datetime.now(UTC).isoformat()))
