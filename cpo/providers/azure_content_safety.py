"""Safety screening through Azure AI Content Safety (``azure-ai-contentsafety``), with blocklists.

``analyze()`` returns severities for Hate, SelfHarm, Sexual and Violence on the 0-7 scale
(``FourSeverityLevels`` answers 0/2/4/6) and blocklist hits as ``name:item``. Blocklists named
in the request are created and filled once per provider instance. Text over the service's
10,000-character limit is split and the worst severity of the parts is kept.
SDK retries are off: `cpo.engine.calls` retries.
"""

from __future__ import annotations

import threading
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal

from pydantic import model_validator

from cpo.engine.settings import PositiveNumber, validate_model
from cpo.errors import ConfigurationError
from cpo.providers.base import (
    HARM_CATEGORIES,
    CachedResult,
    SafetyRequest,
    SafetyResult,
    register_kind,
)
from cpo.providers.credentials import (
    Auth,
    ConnectionSettings,
    azure_credential,
    azure_tls_options,
    check_token_transport,
    endpoint_from_env,
    resolve_auth,
)
from cpo.providers.failures import azure_failure

API_VERSION = "2023-10-01"
SHIELD_API_VERSION = "2024-09-01"
MAX_SHIELD_TEXT = 10_000
MAX_TEXT = 10_000
MAX_ITEMS_PER_CALL = 100  # the service's limit for addOrUpdateBlocklistItems
OUTPUT_TYPES = ("FourSeverityLevels", "EightSeverityLevels")
ENDPOINT_VAR = "AZURE_CONTENT_SAFETY_ENDPOINT"
KEY_VAR = "AZURE_CONTENT_SAFETY_API_KEY"
SETTINGS_KEY = "providers.safety"


class AzureContentSafetyProvider:
    """A safety provider over ``ContentSafetyClient`` and ``BlocklistClient``.

    Args:
        endpoint: The Content Safety resource URL.
        auth: The API key or token credential.
        client_options: azure-core options (TLS, timeouts, ``retry_total=0``).
        halt_on_blocklist_hit: Skip category analysis when a blocklist matches.
    """

    kind = "safety"
    name = "azure_content_safety"
    model = f"content-safety-{API_VERSION}"

    def __init__(
        self,
        *,
        endpoint: str,
        auth: Auth,
        client_options: Mapping[str, Any],
        halt_on_blocklist_hit: bool = False,
        prompt_shields: bool = True,
    ) -> None:
        from azure.ai.contentsafety import BlocklistClient, ContentSafetyClient

        self.endpoint = endpoint
        self.halt_on_blocklist_hit = halt_on_blocklist_hit
        self.prompt_shields = prompt_shields
        self._auth = auth
        self._service = f"Azure AI Content Safety at {endpoint}"
        credential = azure_credential(auth)
        self.client = ContentSafetyClient(endpoint, credential, **client_options)
        self.blocklist_client = BlocklistClient(endpoint, credential, **client_options)
        self._synced: dict[str, frozenset[str]] = {}
        # The call layer screens from many threads: sync each blocklist once, not once per thread.
        self._sync_lock = threading.Lock()

    def describe(self) -> dict[str, Any]:
        """What identifies this provider's answers."""
        return {
            "provider": self.name,
            "model": self.model,
            "endpoint": self.endpoint,
            "halt_on_blocklist_hit": self.halt_on_blocklist_hit,
        }

    def analyze(self, request: SafetyRequest) -> SafetyResult:
        """Screen the text (in parts if long); blocklists are synced first."""
        from azure.core.exceptions import AzureError

        if request.output_type not in OUTPUT_TYPES:
            raise ConfigurationError(
                f"output_type must be one of {', '.join(OUTPUT_TYPES)}, "
                f"got {request.output_type!r}",
                key="safety.output_type",
            )
        try:
            with self._sync_lock:
                self._sync_blocklists(request.blocklists)
            results = [self._analyze_part(p, request) for p in split_text(request.text)]
        except AzureError as e:
            raise azure_failure(e, self._service, auth_fix=self._auth_fix()) from e
        severities = dict.fromkeys(HARM_CATEGORIES, 0)
        matches: dict[str, None] = {}
        for result in results:
            for item in result.categories_analysis or []:
                category = str(item.category)
                severities[category] = max(severities.get(category, 0), item.severity or 0)
            for match in result.blocklists_match or []:
                matches[f"{match.blocklist_name}:{match.blocklist_item_text}"] = None
        return SafetyResult(severities=severities, blocklist_matches=tuple(matches))

    def check_document(self, request: ShieldRequest) -> ShieldVerdict:
        """`shield_document` as the call layer calls it (method of the ``prompt_shield`` kind)."""
        return ShieldVerdict(self.shield_document(request.text))

    def shield_document(self, text: str) -> bool:
        """Prompt Shields (``text:shieldPrompt``) on one document: True when an attack is found.

        The document goes in the ``documents`` field (a document attack: instructions hidden in
        content an LLM will read); the user prompt is empty. A document over the service's
        limit is checked in parts; any flagged part flags the document.

        Raises:
            ProviderError: The service failed or answered something that is not a verdict.
        """
        from azure.core.exceptions import AzureError
        from azure.core.rest import HttpRequest

        from cpo.providers.failures import provider_error

        flagged = False
        for part in split_text(text, MAX_SHIELD_TEXT):
            request = HttpRequest(
                "POST",
                "/text:shieldPrompt",
                params={"api-version": SHIELD_API_VERSION},
                json={"userPrompt": "", "documents": [part]},
            )
            try:
                response = self.client.send_request(request)
                response.raise_for_status()
                data = response.json()
            except AzureError as e:
                raise azure_failure(e, self._service, auth_fix=self._auth_fix()) from e
            except ValueError as e:
                raise provider_error(
                    f"{self._service} sent an unreadable Prompt Shields answer: {e}", retryable=True
                ) from e
            analysis = data.get("documentsAnalysis") if isinstance(data, dict) else None
            if (
                not isinstance(analysis, list)
                or len(analysis) != 1
                or not isinstance(analysis[0], dict)
                or not isinstance(analysis[0].get("attackDetected"), bool)
            ):
                raise provider_error(
                    f"{self._service} answered Prompt Shields without a documentsAnalysis verdict",
                    retryable=False,
                )
            flagged = flagged or analysis[0]["attackDetected"]
        return flagged

    def _analyze_part(self, text: str, request: SafetyRequest) -> Any:
        from azure.ai.contentsafety.models import AnalyzeTextOptions

        options = AnalyzeTextOptions(
            text=text,
            categories=list(HARM_CATEGORIES),
            blocklist_names=sorted(request.blocklists) or None,
            halt_on_blocklist_hit=self.halt_on_blocklist_hit,
            output_type=request.output_type,
        )
        return self.client.analyze_text(options)

    def _sync_blocklists(self, blocklists: Mapping[str, tuple[str, ...]]) -> None:
        """Create each blocklist and add its items, once per provider and item set."""
        from azure.ai.contentsafety.models import (
            AddOrUpdateTextBlocklistItemsOptions,
            TextBlocklist,
            TextBlocklistItem,
        )

        for name, items in sorted(blocklists.items()):
            wanted = frozenset(i.strip() for i in items if i.strip())
            if self._synced.get(name) == wanted:
                continue
            self.blocklist_client.create_or_update_text_blocklist(
                name, TextBlocklist(blocklist_name=name, description="managed by cpo")
            )
            new = sorted(wanted - self._synced.get(name, frozenset()))
            for start in range(0, len(new), MAX_ITEMS_PER_CALL):
                chunk = new[start : start + MAX_ITEMS_PER_CALL]
                self.blocklist_client.add_or_update_blocklist_items(
                    name,
                    AddOrUpdateTextBlocklistItemsOptions(
                        blocklist_items=[TextBlocklistItem(text=t) for t in chunk]
                    ),
                )
            self._synced[name] = wanted

    def _auth_fix(self) -> str:
        if self._auth.key is not None:
            source = self._auth.source
            return f"check {source} (the key or its Key Vault reference) and {ENDPOINT_VAR}."
        return (
            "no key is set, so DefaultAzureCredential was used; give that identity the "
            f"'Cognitive Services User' role on the resource, or set {KEY_VAR}."
        )


def split_text(text: str, limit: int = MAX_TEXT) -> list[str]:
    """Split `text` into parts of at most `limit` characters, at whitespace where possible."""
    if not text.strip():
        return [text or " "]  # the service rejects empty text; a blank screens as clean
    parts = []
    while len(text) > limit:
        cut = text.rfind(" ", limit // 2, limit)
        cut = cut if cut > 0 else limit
        parts.append(text[:cut])
        text = text[cut:].lstrip()
    if text:
        parts.append(text)
    return parts


class ContentSafetyConnection(ConnectionSettings):
    """What every provider on an Azure AI Content Safety resource shares (safety and
    groundedness): TLS, the test credential and the read timeout in seconds."""

    timeout_s: PositiveNumber = 30.0


class ContentSafetySettings(ContentSafetyConnection):
    """``providers.safety`` of ``type: azure_content_safety`` (validated with ``cpo.yml``).

    Attributes:
        halt_on_blocklist_hit: Ask the service to stop analysing at the first blocklist hit.
        prompt_shields: Documents pass Prompt Shields before retrieval (`shield_documents`).
    """

    type: Literal["azure_content_safety"] = "azure_content_safety"
    halt_on_blocklist_hit: bool = False
    prompt_shields: bool = True

    @model_validator(mode="before")
    @classmethod
    def _output_type_is_a_var(cls, data: Any) -> Any:
        # The sample cpo.yml once set it here, where it was silently ignored.
        if isinstance(data, Mapping) and "output_type" in data:
            # "<key>: ..." points the error at that key (`cpo.engine.settings_errors`).
            raise ValueError(
                "output_type: not a provider setting; set vars.safety.output_type "
                "(FourSeverityLevels or EightSeverityLevels) instead"
            )
        return data

    @classmethod
    def from_settings(cls, settings: Mapping[str, Any]) -> ContentSafetySettings:
        """Check the settings, naming the key that is wrong (`validate_model`)."""
        return validate_model(cls, settings, key=SETTINGS_KEY)


def azure_content_safety_factory(
    settings: Mapping[str, Any], env: Mapping[str, str]
) -> AzureContentSafetyProvider:
    """Azure AI Content Safety from ``AZURE_CONTENT_SAFETY_*`` variables and the settings
    (`ContentSafetySettings`)."""
    checked = ContentSafetySettings.from_settings(settings)
    return content_safety_provider(
        checked,
        env,
        halt_on_blocklist_hit=checked.halt_on_blocklist_hit,
        prompt_shields=checked.prompt_shields,
    )


def content_safety_provider(
    settings: ContentSafetyConnection,
    env: Mapping[str, str],
    *,
    halt_on_blocklist_hit: bool = False,
    prompt_shields: bool = True,
) -> AzureContentSafetyProvider:
    """The provider on the resource at ``AZURE_CONTENT_SAFETY_ENDPOINT`` (key, Key Vault
    reference or token), for the safety and the groundedness providers alike."""
    endpoint = endpoint_from_env(env, ENDPOINT_VAR, "azure_content_safety")
    auth = resolve_auth(settings, env, (KEY_VAR,))
    check_token_transport(endpoint, auth, ENDPOINT_VAR, KEY_VAR)
    options = {
        "retry_total": 0,
        "connection_timeout": min(10.0, settings.timeout_s),
        "read_timeout": settings.timeout_s,
        **azure_tls_options(settings),
    }
    return AzureContentSafetyProvider(
        endpoint=endpoint,
        auth=auth,
        client_options=options,
        halt_on_blocklist_hit=halt_on_blocklist_hit,
        prompt_shields=prompt_shields,
    )


@dataclass(frozen=True)
class ShieldRequest:
    """One document for Prompt Shields (its cache identity: the text, not the id)."""

    key: str
    text: str


@dataclass(frozen=True)
class ShieldVerdict(CachedResult):
    """Prompt Shields' answer on one document (cached as its field, like every result)."""

    attack_detected: bool


# Prompt Shields calls go through the call layer like every call (cache, concurrency, retries,
# breaker, ledger); the safety provider makes them, so cpo.yml has no providers.prompt_shield.
register_kind("prompt_shield", "check_document", ShieldVerdict, configurable=False)

FLAGGED = "excluded: Azure Prompt Shields detected a document attack"
UNCHECKED = "excluded: Prompt Shields could not check it (fail-closed): "


def shield_documents(ctx: Any, documents: list[Any]) -> list[Any]:
    """Documents that pass Azure Prompt Shields, for the targets whose safety provider has them.

    Used by the retrieval step before indexing. Each document (title and body) is checked on its
    own, through the call layer; a flagged document is excluded and ``run_errors`` records why;
    a document the shield could not check (unreachable, refused, unreadable answer, after the
    retries) is excluded too (fail-closed), with the error. When ``calls.breaker_failures``
    documents in a row cannot be checked (or the credentials are refused), the breaker opens
    and the step stops instead of retrieving from nothing. Verdicts are cached and recorded in
    ``provider_calls`` like every call. Targets without an Azure Content Safety provider, and
    `plan` (which calls no service), return `documents` unchanged.

    Raises:
        ProviderError: The shield is down (circuit breaker) or refuses the credentials.
    """
    if "safety" not in ctx.services.config.target.providers:
        return documents
    step = ctx.provider("safety")
    if getattr(step, "stand_in", None) is not None:
        return documents
    provider = step.provider
    layers = [p for _, p in getattr(provider, "layers", ())] or [provider]
    shields = [p for p in layers if getattr(p, "prompt_shields", False)]
    reasons: dict[str, str] = {}
    for shield in shields:
        pending = [
            ShieldRequest(d.document_id, f"{d.title}. {d.body}")
            for d in documents
            if d.document_id not in reasons
        ]
        outcomes = step.calls.call_all(
            step.step, shield, "check_document", pending, salt=SHIELD_API_VERSION
        )
        for outcome in outcomes:
            if outcome.error is not None:
                reasons[outcome.key] = UNCHECKED + outcome.error
            elif outcome.result.attack_detected:
                reasons[outcome.key] = FLAGGED
    kept = []
    for document in documents:
        reason = reasons.get(document.document_id)
        if reason:
            ctx.record_error(document.document_id, reason)
        else:
            kept.append(document)
    return kept
