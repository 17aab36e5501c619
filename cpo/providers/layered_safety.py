"""Layered screening: several safety providers on one target, every one must pass.

``cpo.yml``::

    safety: {type: layered, providers: [{type: offline}, {type: llm_judge, model: llama-guard3}]}
    # or, where the configuration accepts a list for `safety:`, the same list directly:
    safety: [{type: offline}, {type: azure_content_safety}]

Each layer is built by its own registered factory with its own settings, and each is called
through the call layer separately by the ``safety_screenings`` step (its own cache entries,
prices and ledger rows), which records one ``harm:<layer>:<Category>`` check per layer, so the
table says which provider blocked what. A variant is approved only when every layer passes it.
Called directly, `LayeredSafety.analyze` combines the layers the same way: the highest severity
per category, a category any layer left unrated stays unrated (fail-closed), blocklist hits
from every layer.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, Field

from cpo.engine.config_schema import ProviderSettings
from cpo.engine.settings import Section, custom_error, validate_model
from cpo.providers.base import (
    HARM_CATEGORIES,
    SafetyRequest,
    SafetyResult,
    get_provider_factory,
    prepare_batch,
)

KEY = "providers.safety"


class LayeredSafety:
    """SafetyProvider made of `layers`: ``(label, provider)`` pairs, in the configured order."""

    kind = "safety"
    name = "layered"

    def __init__(self, layers: Sequence[tuple[str, Any]]) -> None:
        self.layers = tuple(layers)
        self.model = "+".join(p.model for _, p in self.layers)

    def describe(self) -> dict[str, Any]:
        """Every layer's own description, in order."""
        return {"name": self.name, "layers": [[label, p.describe()] for label, p in self.layers]}

    def prepare(self, requests: Sequence[SafetyRequest]) -> None:
        """Let every layer that batches see the requests first (see `SafetyProvider.prepare`)."""
        for _, provider in self.layers:
            prepare_batch(provider, requests)

    def analyze(self, request: SafetyRequest) -> SafetyResult:
        """Screen with every layer and keep the worst: see the module docstring."""
        return combine([p.analyze(request) for _, p in self.layers])


def combine(results: Sequence[SafetyResult]) -> SafetyResult:
    """The highest severity per category; a category missing from any result stays missing."""
    severities: dict[str, int] = {}
    for category in HARM_CATEGORIES:
        values = [r.severities.get(category) for r in results]
        if values and all(v is not None for v in values):
            severities[category] = max(v for v in values if v is not None)
    matches = tuple(dict.fromkeys(m for r in results for m in r.blocklist_matches))
    return SafetyResult(severities=severities, blocklist_matches=matches)


def _flat(layer: ProviderSettings) -> ProviderSettings:
    if layer.type == "layered":
        raise custom_error(
            "layered",
            "a layered safety screen cannot contain another layered screen; list the providers "
            "directly",
        )
    return layer


class LayeredSettings(Section):
    """``providers.safety`` of ``type: layered`` (validated with the rest of ``cpo.yml``).

    Only the shape is checked here: each layer's own settings are checked against its own
    provider's model (by `cpo.engine.config_schema` when ``cpo.yml`` loads, by its factory when
    it is built).
    """

    type: Literal["layered"] = "layered"
    providers: Annotated[
        list[Annotated[ProviderSettings, AfterValidator(_flat)]], Field(min_length=1)
    ]


def layer_settings(settings: Any) -> list[dict[str, Any]]:
    """The list of layer settings from ``{type: layered, providers: [...]}`` or a bare list.

    Raises:
        ConfigurationError: Not a non-empty list of mappings with a ``type``, or a nested layer.
    """
    if not isinstance(settings, Mapping):
        settings = {"type": "layered", "providers": settings}
    checked = validate_model(LayeredSettings, settings, key=KEY)
    return [layer.model_dump() for layer in checked.providers]


def make_layered_safety(settings: Any, env: Mapping[str, str]) -> LayeredSafety:
    """Build every layer with its registered factory; labels are the provider types (a type
    used twice gets ``#2``, ``#3``)."""
    layers = []
    seen: dict[str, int] = {}
    for layer in layer_settings(settings):
        kind = str(layer["type"])
        seen[kind] = seen.get(kind, 0) + 1
        label = kind if seen[kind] == 1 else f"{kind}#{seen[kind]}"
        layers.append((label, get_provider_factory("safety", kind)(layer, env)))
    return LayeredSafety(layers)
