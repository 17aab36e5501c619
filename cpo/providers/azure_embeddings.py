"""Embeddings from an Azure OpenAI deployment: client-side vectors for hybrid search.

`cpo.providers.azure_search` (``mode: hybrid``) embeds documents and queries with it. Failures
are classified like generation's (`cpo.providers.failures`); SDK retries are off: the call layer
retries.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Annotated, Any

from pydantic import Field

from cpo.engine.settings import NonEmptyStr
from cpo.providers.credentials import (
    ConnectionSettings,
    check_token_transport,
    endpoint_from_env,
    require_env,
    resolve_auth,
)
from cpo.providers.failures import http_failure, provider_error
from cpo.providers.openai_chat import azure_openai_client, credentials_fix, error_detail

EMBEDDING_DEPLOYMENT_VAR = "AZURE_OPENAI_EMBEDDING_DEPLOYMENT"
EMBEDDING_API_VERSION = "2024-10-21"


class EmbeddingSettings(ConnectionSettings):
    """The embedding keys of ``providers.retrieval`` (``azure_search``, ``mode: hybrid``).

    Attributes:
        embedding_deployment: Overrides ``AZURE_OPENAI_EMBEDDING_DEPLOYMENT``.
        embedding_api_version: Overrides ``AZURE_OPENAI_API_VERSION``.
        embedding_batch_size: Texts per embeddings request (Azure OpenAI takes at most 2048).
    """

    embedding_deployment: NonEmptyStr | None = None
    embedding_api_version: NonEmptyStr | None = None
    embedding_batch_size: Annotated[int, Field(ge=1, le=2048)] = 64


@dataclass(frozen=True)
class Embedded:
    """Vectors for some texts, in order, and the prompt tokens the service billed for them."""

    vectors: list[list[float]]
    input_tokens: int


class AzureEmbeddings:
    """Embeddings from one Azure OpenAI deployment; failures classified like generation's.

    Args:
        client: The SDK client, with ``max_retries=0``.
        deployment: The embedding deployment, sent as ``model``.
        dimensions: The vector length every answer must have.
        send_dimensions: Ask for `dimensions` explicitly (``text-embedding-3`` models only).
        batch_size: Texts per request.
        service: Where the service is, for messages.
        auth_fix: What to fix when the credentials are refused.
        identity: Values that identify the vectors (endpoint, api version), no secrets.
        secrets: Values that must never appear in messages.
    """

    def __init__(
        self,
        *,
        client: Any,
        deployment: str,
        dimensions: int,
        send_dimensions: bool,
        batch_size: int,
        service: str,
        auth_fix: str,
        identity: Mapping[str, Any],
        secrets: tuple[str, ...] = (),
    ) -> None:
        self.client = client
        self.deployment = deployment
        self.dimensions = dimensions
        self._send_dimensions = send_dimensions
        self._batch_size = batch_size
        self._service = service
        self._auth_fix = auth_fix
        self._identity = dict(identity)
        self._secrets = secrets

    def describe(self) -> dict[str, Any]:
        """The deployment, dimensions, endpoint and api version (no secrets)."""
        return {
            "embedding_deployment": self.deployment,
            "dimensions": self.dimensions,
            **{f"embedding_{k}": v for k, v in self._identity.items()},
        }

    def embed(self, texts: list[str]) -> Embedded:
        """One vector per text, in order, `batch_size` texts per request, and the tokens billed."""
        vectors: list[list[float]] = []
        tokens = 0
        for start in range(0, len(texts), self._batch_size):
            batch = self._embed_batch(texts[start : start + self._batch_size])
            vectors += batch.vectors
            tokens += batch.input_tokens
        return Embedded(vectors, tokens)

    def _embed_batch(self, texts: list[str]) -> Embedded:
        import openai

        kwargs: dict[str, Any] = {"model": self.deployment, "input": texts}
        if self._send_dimensions:
            kwargs["dimensions"] = self.dimensions
        try:
            response = self.client.embeddings.create(**kwargs)
        except openai.APIStatusError as e:
            raise http_failure(
                self._service,
                e.status_code,
                e.response.headers,
                error_detail(e),
                auth_fix=self._auth_fix,
                secrets=self._secrets,
            ) from e
        except openai.APIConnectionError as e:  # includes APITimeoutError
            raise provider_error(
                f"{self._service} could not be reached or timed out (embeddings): {e}",
                retryable=True,
                secrets=self._secrets,
            ) from e
        except (openai.OpenAIError, ValueError) as e:
            raise provider_error(
                f"{self._service} sent an unreadable embeddings response: {e}",
                retryable=True,
                secrets=self._secrets,
            ) from e
        rows = sorted(response.data, key=lambda d: d.index)
        usage = getattr(response, "usage", None)
        return Embedded(
            [self._checked(list(row.embedding)) for row in rows],
            int(getattr(usage, "prompt_tokens", 0) or 0),
        )

    def _checked(self, vector: list[float]) -> list[float]:
        if len(vector) != self.dimensions:
            raise provider_error(
                f"{self._service}: embedding deployment {self.deployment!r} returned "
                f"{len(vector)}-dimensional vectors, but dimensions is {self.dimensions}; set "
                f"providers.retrieval.dimensions: {len(vector)} in cpo.yml.",
                retryable=False,
                secrets=self._secrets,
            )
        return vector


def azure_embeddings_factory(
    settings: EmbeddingSettings,
    env: Mapping[str, str],
    *,
    dimensions: int,
    send_dimensions: bool,
    timeout_s: float,
) -> AzureEmbeddings:
    """Embeddings from ``AZURE_OPENAI_ENDPOINT`` and ``AZURE_OPENAI_EMBEDDING_DEPLOYMENT``.

    Auth as for generation (``AZURE_OPENAI_API_KEY``, Key Vault reference or token), TLS and
    the test credential from `settings`; `dimensions` is sent only when `send_dimensions` (it
    was set: older models reject it).
    """
    who = "azure_search (mode: hybrid) embeddings"
    endpoint = endpoint_from_env(env, "AZURE_OPENAI_ENDPOINT", who)
    deployment = settings.embedding_deployment or require_env(env, EMBEDDING_DEPLOYMENT_VAR, who)
    version = (
        settings.embedding_api_version
        or env.get("AZURE_OPENAI_API_VERSION")
        or EMBEDDING_API_VERSION
    )
    auth = resolve_auth(settings, env, ("AZURE_OPENAI_API_KEY",))
    check_token_transport(endpoint, auth, "AZURE_OPENAI_ENDPOINT", "AZURE_OPENAI_API_KEY")
    return AzureEmbeddings(
        client=azure_openai_client(endpoint, version, auth, timeout_s, settings),
        deployment=deployment,
        dimensions=dimensions,
        send_dimensions=send_dimensions,
        batch_size=settings.embedding_batch_size,
        service=f"Azure OpenAI at {endpoint}",
        auth_fix=credentials_fix(auth, "AZURE_OPENAI_API_KEY", "Cognitive Services OpenAI User"),
        identity={"endpoint": endpoint, "api_version": version},
        secrets=auth.secrets,
    )
