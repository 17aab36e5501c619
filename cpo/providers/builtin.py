"""The built-in providers, registered exactly as an outside provider would register itself.

Each entry imports its module only when a target uses it, so the Azure SDKs never load for an
offline build.
"""

from __future__ import annotations

import importlib
from collections.abc import Mapping
from typing import Any

from cpo.providers.base import Provider, register_provider

BUILTINS = {
    ("retrieval", "bm25"): ("cpo.providers.bm25", "make_bm25"),
    ("generation", "offline"): ("cpo.providers.offline_composer", "make_offline_composer"),
    ("safety", "offline"): ("cpo.providers.offline_safety", "make_offline_safety"),
    ("retrieval", "azure_search"): ("cpo.providers.azure_search", "azure_search_factory"),
    ("generation", "azure_openai"): ("cpo.providers.openai_chat", "azure_openai_factory"),
    ("generation", "openai"): ("cpo.providers.openai_chat", "openai_factory"),
    ("safety", "llm_judge"): ("cpo.providers.llm_judge", "make_llm_judge"),
    ("safety", "layered"): ("cpo.providers.layered_safety", "make_layered_safety"),
    ("safety", "azure_content_safety"): (
        "cpo.providers.azure_content_safety",
        "azure_content_safety_factory",
    ),
    ("groundedness", "offline"): ("cpo.providers.groundedness", "offline_groundedness_factory"),
    ("groundedness", "azure_content_safety"): (
        "cpo.providers.groundedness",
        "azure_groundedness_factory",
    ),
}
# Providers whose settings are a pydantic model, validated with the rest of cpo.yml.
SETTINGS_MODELS = {
    ("retrieval", "bm25"): "cpo.providers.bm25:Bm25Settings",
    ("retrieval", "azure_search"): "cpo.providers.azure_search:SearchSettings",
    ("generation", "offline"): "cpo.providers.base:NoSettings",
    ("generation", "azure_openai"): "cpo.providers.openai_chat:ChatSettings",
    ("generation", "openai"): "cpo.providers.openai_chat:ChatSettings",
    ("safety", "offline"): "cpo.providers.offline_safety:OfflineSafetySettings",
    ("safety", "llm_judge"): "cpo.providers.llm_judge:LlmJudgeSettings",
    ("safety", "layered"): "cpo.providers.layered_safety:LayeredSettings",
    ("safety", "azure_content_safety"): "cpo.providers.azure_content_safety:ContentSafetySettings",
    ("groundedness", "offline"): "cpo.providers.base:NoSettings",
    ("groundedness", "azure_content_safety"): (
        "cpo.providers.groundedness:AzureGroundednessSettings"
    ),
}
# The offline provider that stands in for each kind when `plan` must not call a service.
STAND_INS = {
    "retrieval": "bm25",
    "generation": "offline",
    "safety": "offline",
    "groundedness": "offline",
}


def _lazy(module: str, function: str):
    def factory(settings: Mapping[str, Any], env: Mapping[str, str]) -> Provider:
        return getattr(importlib.import_module(module), function)(settings, env)

    return factory


for (kind, name), (module_name, function_name) in BUILTINS.items():
    register_provider(
        kind,
        name,
        _lazy(module_name, function_name),
        settings=SETTINGS_MODELS.get((kind, name)),
    )
