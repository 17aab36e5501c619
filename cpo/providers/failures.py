"""How a provider call failed, told to the call layer as the fields of a `ProviderError`.

`cpo.engine.calls` retries, waits and records; it decides from ``retryable``, ``retry_after``,
``status`` and ``timeout`` on the error, so every provider classifies its failures the same way.
"""

from __future__ import annotations

import email.utils
import re
import time
from collections.abc import Iterable, Mapping

from cpo.errors import ProviderError

# Statuses worth retrying: timeouts, throttling and server-side failures.
RETRYABLE_STATUSES = frozenset({408, 429})


def provider_error(
    message: str,
    *,
    retryable: bool,
    status: int | None = None,
    retry_after: float | None = None,
    timeout: bool = False,
    secrets: Iterable[str] = (),
) -> ProviderError:
    """Build a classified `ProviderError` with any secret scrubbed out of its message.

    ``timeout`` marks a request the service did not answer in time (the call layer lowers its
    concurrency on timeouts and 429s).
    """
    for secret in secrets:
        if secret:
            message = message.replace(secret, "***")
    return ProviderError(
        message, retryable=retryable, status=status, retry_after=retry_after, timeout=timeout
    )


def is_retryable_status(status: int | None) -> bool:
    """408, 429 and 5xx are worth another try; other statuses will fail the same way again."""
    return status is not None and (status in RETRYABLE_STATUSES or status >= 500)


def retry_after_seconds(headers: Mapping[str, str] | None) -> float | None:
    """The server's requested delay: ``retry-after-ms`` first, then ``Retry-After``."""
    if not headers:
        return None
    lowered = {k.lower(): v for k, v in headers.items()}
    ms = lowered.get("retry-after-ms")
    if ms:
        try:
            return max(0.0, float(ms) / 1000.0)
        except ValueError:
            pass
    value = lowered.get("retry-after")
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        parsed = email.utils.parsedate_tz(value)  # an HTTP date
        return None if parsed is None else max(0.0, email.utils.mktime_tz(parsed) - time.time())


# A server error whose message says the request itself is wrong: retrying sends the same request.
_INVALID_REQUEST = re.compile(
    r"invalid|not supported|unsupported|not implemented|unrecognized|unknown (?:parameter|field)"
    r"|must be|is required|missing required|response_format|json_schema|bad request"
    r"|validation error",
    re.IGNORECASE,
)


def says_invalid_request(detail: str) -> bool:
    """Whether a 5xx answer's text says the request is invalid (llama.cpp answers an unsupported
    ``response_format`` with HTTP 500), so it is not retried as throttling."""
    return bool(_INVALID_REQUEST.search(detail or ""))


def http_failure(
    service: str,
    status: int | None,
    headers: Mapping[str, str] | None,
    detail: str,
    *,
    auth_fix: str,
    secrets: Iterable[str] = (),
) -> ProviderError:
    """Classify an HTTP error answer from `service` into a `ProviderError`.

    Args:
        service: The service's name for the message (``Azure AI Search at https://...``).
        status: The HTTP status.
        headers: The response headers (for ``Retry-After``).
        detail: The service's own error message.
        auth_fix: What the user must fix when the credentials are refused (names the env var).
        secrets: Values that must never appear in the message (keys).
    """
    if status in (401, 403):
        message = f"{service} refused the credentials (HTTP {status}): {auth_fix}"
        return provider_error(message, retryable=False, status=status, secrets=secrets)
    if is_retryable_status(status) and not says_invalid_request(detail):
        message = f"{service} is throttling or unavailable (HTTP {status}): {detail}"
        return provider_error(
            message,
            retryable=True,
            status=status,
            retry_after=retry_after_seconds(headers),
            secrets=secrets,
        )
    message = f"{service} rejected the request (HTTP {status}): {detail}"
    return provider_error(message, retryable=False, status=status, secrets=secrets)


def azure_failure(
    error: Exception, service: str, *, auth_fix: str, secrets: Iterable[str] = ()
) -> ProviderError:
    """Classify an azure-core exception (search, content safety, key vault)."""
    from azure.core.exceptions import (
        ClientAuthenticationError,
        DecodeError,
        HttpResponseError,
        ServiceRequestError,
        ServiceResponseError,
    )

    if isinstance(error, DecodeError):
        return provider_error(
            f"{service} sent an unreadable answer: {error}", retryable=True, secrets=secrets
        )
    if isinstance(error, ClientAuthenticationError) and error.status_code is None:
        # No HTTP status: obtaining a token failed (DefaultAzureCredential found no identity).
        message = f"{service}: could not obtain an Azure AD token ({error.message}); {auth_fix}"
        return provider_error(message, retryable=False, secrets=secrets)
    if isinstance(error, HttpResponseError) and error.status_code is not None:
        headers = dict(getattr(error.response, "headers", None) or {}) or None
        detail = getattr(error.error, "message", None) or error.reason or str(error)
        return http_failure(
            service, error.status_code, headers, detail, auth_fix=auth_fix, secrets=secrets
        )
    if isinstance(error, ServiceRequestError | ServiceResponseError):
        return provider_error(
            f"{service} could not be reached or timed out: {error}",
            retryable=True,
            secrets=secrets,
        )
    return provider_error(f"{service} failed: {error}", retryable=False, secrets=secrets)
