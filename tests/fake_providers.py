"""Test-only providers, registered under the name ``fake`` for each step kind.

Each wraps the real offline provider and misbehaves only for the item keys its settings name, so
a test can inject one bad item into an otherwise normal build:

* generation ``fake``: ``script: {variant_key: action}`` where an action may ``insert`` text
  before the unsubscribe line, ``add_citations`` (ids appended to ``citations``), replace the
  ``subject``, or ``fail`` with a non-retryable provider error carrying that message;
* safety ``fake``: ``fail_for: [variant_key, ...]`` raises for those keys;
* retrieval ``fake``: ``empty_for: [segment_id, ...]`` finds nothing for those segments.

Select them in a copied project with `use_providers` (edits the copy's ``cpo.yml``).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml

from cpo.providers import register_provider
from cpo.providers.base import (
    Document,
    GenerationRequest,
    GenerationResult,
    Hit,
    RetrievalRequest,
    SafetyRequest,
    SafetyResult,
)
from cpo.providers.bm25 import make_bm25
from cpo.providers.failures import provider_error
from cpo.providers.offline_composer import make_offline_composer
from cpo.providers.offline_safety import make_offline_safety

UNSUBSCRIBE = "Unsubscribe:"


def _inner_settings(settings: Mapping[str, Any], *own: str) -> dict[str, Any]:
    return {k: v for k, v in settings.items() if k not in own}


class ScriptedGeneration:
    """The offline composer, with per-key scripted deviations (see the module docstring)."""

    kind = "generation"
    name = "fake"
    model = "fake-composer"

    def __init__(self, script: Mapping[str, Mapping[str, Any]]) -> None:
        self.script = {str(k): dict(v) for k, v in script.items()}
        self.inner = make_offline_composer({"type": "offline"}, {})
        self.calls: list[str] = []

    def describe(self) -> dict[str, Any]:
        """Cache identity: the script changes answers, so it is part of it."""
        return {"name": self.name, "script": self.script, "inner": self.inner.describe()}

    def generate(self, request: GenerationRequest) -> GenerationResult:
        """Compose as the offline composer does, then apply the key's action, if any."""
        self.calls.append(request.key)
        action = self.script.get(request.key)
        if action and "fail" in action:
            raise provider_error(str(action["fail"]), retryable=False, status=400)
        result = self.inner.generate(request)
        if not action:
            return result
        body = result.body
        if "insert" in action:
            head, sep, tail = body.rpartition(UNSUBSCRIBE)
            body = (
                f"{head.rstrip()}\n\n{action['insert']}\n\n{sep}{tail}"
                if sep
                else (f"{body}\n\n{action['insert']}")
            )
        return dataclasses.replace(
            result,
            subject=str(action.get("subject", result.subject)),
            body=body,
            citations=(*result.citations, *(str(c) for c in action.get("add_citations", ()))),
        )


class FailingSafety:
    """The offline safety screen, raising for the keys in ``fail_for``."""

    kind = "safety"
    name = "fake"
    model = "fake-screen"

    def __init__(self, fail_for: list[str], inner_settings: Mapping[str, Any]) -> None:
        self.fail_for = frozenset(str(k) for k in fail_for)
        self.inner = make_offline_safety({**inner_settings, "type": "offline"}, {})

    def describe(self) -> dict[str, Any]:
        """Cache identity."""
        return {
            "name": self.name,
            "fail_for": sorted(self.fail_for),
            "inner": self.inner.describe(),
        }

    def analyze(self, request: SafetyRequest) -> SafetyResult:
        """Screen offline, or raise a non-retryable error for a chosen key."""
        if request.key in self.fail_for:
            raise provider_error(f"fake safety service is down for {request.key}", retryable=False)
        return self.inner.analyze(request)


class EmptyRetrieval:
    """BM25, finding nothing for the segments in ``empty_for``."""

    kind = "retrieval"
    name = "fake"
    model = "fake-bm25"

    def __init__(self, empty_for: list[str], inner_settings: Mapping[str, Any]) -> None:
        self.empty_for = frozenset(str(k) for k in empty_for)
        self.inner = make_bm25({**inner_settings, "type": "bm25"}, {})

    def describe(self) -> dict[str, Any]:
        """Cache identity."""
        return {
            "name": self.name,
            "empty_for": sorted(self.empty_for),
            "inner": self.inner.describe(),
        }

    def index(self, documents: list[Document]) -> None:
        """Index as BM25 does."""
        self.inner.index(documents)

    def search(self, request: RetrievalRequest) -> list[Hit]:
        """Search as BM25 does, except for the chosen segments."""
        if request.key in self.empty_for:
            return []
        return self.inner.search(request)


register_provider(
    "generation", "fake", lambda settings, env: ScriptedGeneration(settings.get("script") or {})
)
register_provider(
    "safety",
    "fake",
    lambda settings, env: FailingSafety(
        settings.get("fail_for") or [], _inner_settings(settings, "type", "fail_for")
    ),
)
register_provider(
    "retrieval",
    "fake",
    lambda settings, env: EmptyRetrieval(
        settings.get("empty_for") or [], _inner_settings(settings, "type", "empty_for")
    ),
)


def edit_config(project_dir: Path, edit: Any) -> None:
    """Load the copied project's ``cpo.yml``, apply ``edit(config_dict)``, write it back."""
    path = project_dir / "cpo.yml"
    config = yaml.safe_load(path.read_text(encoding="utf-8"))
    edit(config)
    path.write_text(yaml.safe_dump(config, sort_keys=False), encoding="utf-8")


def use_providers(project_dir: Path, **providers: Mapping[str, Any]) -> None:
    """Select providers for the offline target of a copied project, e.g.
    ``use_providers(p, safety={"type": "fake", "fail_for": ["v_loyal_urgent"]})``."""

    def edit(config: dict[str, Any]) -> None:
        config["targets"]["offline"]["providers"].update(providers)

    edit_config(project_dir, edit)


def set_var(project_dir: Path, dotted: str, value: Any) -> None:
    """Set ``vars.<dotted>`` in a copied project's ``cpo.yml``."""

    def edit(config: dict[str, Any]) -> None:
        node = config.setdefault("vars", {})
        *parents, last = dotted.split(".")
        for part in parents:
            node = node.setdefault(part, {})
        node[last] = value

    edit_config(project_dir, edit)
