"""Endpoints, keys, tokens and TLS options for the Azure providers, read from the environment.

A key variable may hold the key itself or a Key Vault reference ``keyvault:<secret-name>``,
resolved from the vault at ``AZURE_KEY_VAULT_URL``. Without a key, providers authenticate with
``DefaultAzureCredential`` (or the ``_credential`` object a test puts in the settings).

`ConnectionSettings` holds the settings every such provider shares (TLS, the test credential);
each provider's settings model derives from it, and the functions here read it.
"""

from __future__ import annotations

import ssl
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from pydantic import Field

from cpo.engine.settings import NonEmptyStr, Section
from cpo.errors import ConfigurationError
from cpo.providers.failures import azure_failure

KEY_VAULT_PREFIX = "keyvault:"
KEY_VAULT_URL_VAR = "AZURE_KEY_VAULT_URL"
LOOPBACK_HOSTS = frozenset({"127.0.0.1", "localhost", "::1"})


class ConnectionSettings(Section):
    """The settings of every provider that calls a service: TLS and an injected credential.

    Attributes:
        ca_bundle: A PEM file of the certificate authorities to trust (a private CA, a proxy).
        verify: ``false`` turns TLS certificate checks off (never in production).
        credential: A token credential object (tests only, given as ``_credential``; never in
            ``cpo.yml``), used instead of ``DefaultAzureCredential``.
    """

    ca_bundle: NonEmptyStr | None = None
    verify: bool | None = None
    credential: Any = Field(default=None, alias="_credential")


@dataclass(frozen=True)
class Auth:
    """How a client authenticates: an API key, or else a token credential.

    Attributes:
        key: The API key, if one was configured.
        credential: An azure-core ``TokenCredential`` when there is no key.
        source: Where it came from, for messages (an env var name or ``DefaultAzureCredential``).
    """

    key: str | None
    credential: Any | None
    source: str

    @property
    def secrets(self) -> tuple[str, ...]:
        """Values that must never appear in messages or logs."""
        return (self.key,) if self.key else ()


def require_env(env: Mapping[str, str], name: str, service: str) -> str:
    """Return ``env[name]``, or raise a `ConfigurationError` that says how to set it."""
    value = (env.get(name) or "").strip()
    if not value:
        raise ConfigurationError(
            f"{name} is not set: the {service} provider needs it. Set it in the environment "
            f"(see .env.example), or choose an offline provider in cpo.yml.",
        )
    return value


def endpoint_from_env(env: Mapping[str, str], name: str, service: str) -> str:
    """An endpoint URL from the environment, checked and without a trailing slash."""
    value = require_env(env, name, service).rstrip("/")
    if urlsplit(value).scheme not in ("http", "https"):
        raise ConfigurationError(
            f"{name} must be an http(s) URL such as https://NAME.example.azure.com, got {value!r}",
        )
    return value


def resolve_auth(
    settings: ConnectionSettings, env: Mapping[str, str], key_vars: tuple[str, ...]
) -> Auth:
    """Use the first key variable that is set (resolving Key Vault references), else a token."""
    for var in key_vars:
        value = (env.get(var) or "").strip()
        if value:
            return Auth(resolve_secret(value, var, settings, env), None, var)
    return Auth(None, token_credential(settings), "DefaultAzureCredential")


def token_credential(settings: ConnectionSettings) -> Any:
    """The injected ``_credential`` (tests), else ``DefaultAzureCredential``."""
    if settings.credential is not None:
        return settings.credential
    from azure.identity import DefaultAzureCredential

    return DefaultAzureCredential()


def resolve_secret(
    value: str, var: str, settings: ConnectionSettings, env: Mapping[str, str]
) -> str:
    """Return `value`, or the Key Vault secret it refers to (``keyvault:<secret-name>``)."""
    if not value.startswith(KEY_VAULT_PREFIX):
        return value
    name = value[len(KEY_VAULT_PREFIX) :].strip()
    vault = endpoint_from_env(env, KEY_VAULT_URL_VAR, f"Key Vault reference in {var}")
    from azure.core.exceptions import AzureError, ResourceNotFoundError
    from azure.keyvault.secrets import SecretClient

    client = SecretClient(
        vault,
        token_credential(settings),
        retry_total=0,
        # A loopback vault (the test emulator) cannot be a subdomain of vault.azure.net.
        verify_challenge_resource=urlsplit(vault).hostname not in LOOPBACK_HOSTS,
        **azure_tls_options(settings),
    )
    try:
        secret = client.get_secret(name).value
    except ResourceNotFoundError:
        raise ConfigurationError(
            f"{var} refers to Key Vault secret {name!r}, which {vault} does not have; "
            f"create the secret or fix {var}",
        ) from None
    except AzureError as e:
        raise azure_failure(
            e,
            f"Key Vault at {vault}",
            auth_fix=f"grant the identity 'get' on secrets in {KEY_VAULT_URL_VAR}, or put the key "
            f"itself in {var}",
        ) from e
    if not secret:
        raise ConfigurationError(f"Key Vault secret {name!r} (from {var}) is empty", key=var)
    return secret


def azure_tls_options(settings: ConnectionSettings) -> dict[str, Any]:
    """azure-core transport options: ``ca_bundle`` (a PEM path) or ``verify: false``."""
    if settings.ca_bundle:
        return {"connection_verify": settings.ca_bundle}
    if settings.verify is False:
        return {"connection_verify": False}
    return {}


def httpx_verify(settings: ConnectionSettings) -> ssl.SSLContext | bool | None:
    """The ``verify`` argument for openai's httpx client, or None for the default."""
    if settings.ca_bundle:
        return ssl.create_default_context(cafile=settings.ca_bundle)
    if settings.verify is False:
        return False
    return None


def check_token_transport(endpoint: str, auth: Auth, endpoint_var: str, key_var: str) -> None:
    """Fail early, clearly, where azure-core would refuse a bearer token over plain HTTP."""
    if auth.key is None and urlsplit(endpoint).scheme != "https":
        raise ConfigurationError(
            f"{endpoint_var} is {endpoint!r}: token authentication needs https. Use an https "
            f"endpoint or set {key_var}.",
        )


def azure_credential(auth: Auth) -> Any:
    """The azure-core credential object: ``AzureKeyCredential`` for a key, else the token one."""
    if auth.key is not None:
        from azure.core.credentials import AzureKeyCredential

        return AzureKeyCredential(auth.key)
    return auth.credential
