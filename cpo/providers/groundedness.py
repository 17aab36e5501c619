"""Groundedness detection: is a generated body supported by its grounding sources?

Two providers of kind ``groundedness`` (method ``detect``), chosen per target in ``cpo.yml``
(``providers.groundedness.type``; a target without one skips the check):

* ``azure_content_safety``: Azure AI Content Safety's ``text:detectGroundedness`` (preview API),
  sent through the ``ContentSafetyClient`` pipeline, so auth (key, Key Vault reference or
  ``DefaultAzureCredential``), TLS and timeouts are those of the safety provider;
* ``offline``: the lexical check of `cpo.personalization.grounding` (also the stand-in ``plan``
uses).

The ``grounding:groundedness`` check fails when the service detects ungrounded text.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Literal

from cpo.engine.settings import validate_model
from cpo.personalization import grounding
from cpo.providers.azure_content_safety import ContentSafetyConnection
from cpo.providers.base import GroundednessRequest, GroundednessResult, NoSettings
from cpo.providers.failures import azure_failure, provider_error

API_VERSION = "2024-09-15-preview"
PATH = "/contentsafety/text:detectGroundedness"
MAX_TEXT = 7_500  # the service's limit for `text`
MAX_SOURCES = 55_000  # ... and for all grounding sources together
SETTINGS_KEY = "providers.groundedness"


class AzureGroundednessSettings(ContentSafetyConnection):
    """``providers.groundedness`` of ``type: azure_content_safety``: the Content Safety
    resource's connection settings (``timeout_s``, TLS) and the service's ``domain``."""

    type: Literal["azure_content_safety"] = "azure_content_safety"
    domain: Literal["Generic", "Medical"] = "Generic"

    @classmethod
    def from_settings(cls, settings: Mapping[str, Any]) -> AzureGroundednessSettings:
        """Check the settings, naming the key that is wrong (`validate_model`)."""
        return validate_model(cls, settings, key=SETTINGS_KEY)


class OfflineGroundedness:
    """`cpo.personalization.grounding`'s sentence check, answering like the service does."""

    kind = "groundedness"
    name = "offline"
    model = "lexical"

    def describe(self) -> dict[str, Any]:
        """Cache identity: the lexical thresholds."""
        return {"provider": self.name, "model": self.model, **grounding.Settings().model_dump()}

    def detect(self, request: GroundednessRequest) -> GroundednessResult:
        """Judge each sentence against the union of the sources."""
        sources = {str(i): s for i, s in enumerate(request.sources)}
        verdicts = grounding.judge(request.text, sources, grounding.Settings(), list(sources))
        bad = [v for v in verdicts if not v.supported]
        share = len(bad) / len(verdicts) if verdicts else 0.0
        return GroundednessResult(bool(bad), share, tuple(v.reason for v in bad))


class AzureGroundedness:
    """``text:detectGroundedness`` on an Azure AI Content Safety resource."""

    kind = "groundedness"
    name = "azure_content_safety"
    model = f"groundedness-{API_VERSION}"

    def __init__(self, safety: Any, domain: str = "Generic") -> None:
        self._safety = safety  # an AzureContentSafetyProvider: its client, auth and endpoint
        self.endpoint = safety.endpoint
        self.domain = domain

    def describe(self) -> dict[str, Any]:
        """What identifies the answers: service, API version, endpoint, domain."""
        return {
            "provider": self.name,
            "model": self.model,
            "endpoint": self.endpoint,
            "domain": self.domain,
        }

    def detect(self, request: GroundednessRequest) -> GroundednessResult:
        """Ask the service whether `request.text` is grounded in `request.sources`."""
        from azure.core.exceptions import AzureError, HttpResponseError
        from azure.core.rest import HttpRequest

        sources, used = [], 0
        for source in request.sources:
            if used + len(source) > MAX_SOURCES:
                break
            sources.append(source)
            used += len(source)
        body = {
            "domain": self.domain,
            "task": "Summarization",
            "text": request.text[:MAX_TEXT] or " ",
            "groundingSources": sources or [" "],
            "reasoning": False,
        }
        service = f"Azure AI Content Safety groundedness at {self.endpoint}"
        http = HttpRequest("POST", f"{self.endpoint}{PATH}", params={"api-version": API_VERSION},
                           json=body)  # fmt: skip
        try:
            response = self._safety.client.send_request(http)
            if response.status_code >= 400:
                raise HttpResponseError(response=response)
            answer = response.json()
        except AzureError as e:
            raise azure_failure(e, service, auth_fix=self._safety._auth_fix()) from e
        except ValueError as e:
            raise provider_error(f"{service} sent an unreadable answer: {e}", retryable=True) from e
        details = tuple(str(d.get("text", ""))[:80] for d in answer.get("ungroundedDetails") or ())
        return GroundednessResult(
            bool(answer.get("ungroundedDetected")),
            float(answer.get("ungroundedPercentage") or 0.0),
            details,
        )


def offline_groundedness_factory(
    settings: Mapping[str, Any], env: Mapping[str, str]
) -> OfflineGroundedness:
    """The lexical groundedness provider: it takes no settings but its ``type``."""
    validate_model(NoSettings, settings, key=SETTINGS_KEY)
    return OfflineGroundedness()


def azure_groundedness_factory(
    settings: Mapping[str, Any], env: Mapping[str, str]
) -> AzureGroundedness:
    """From the ``AZURE_CONTENT_SAFETY_*`` variables, like the safety provider
    (`AzureGroundednessSettings`)."""
    from cpo.providers.azure_content_safety import content_safety_provider

    checked = AzureGroundednessSettings.from_settings(settings)
    return AzureGroundedness(content_safety_provider(checked, env), checked.domain)
