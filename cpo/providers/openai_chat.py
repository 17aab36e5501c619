"""Generation through the ``openai`` SDK: Azure OpenAI and any OpenAI-compatible endpoint.

Both speak chat completions or the Responses API and answer a JSON object
``{"subject", "body", "citations"}``. Structured output is negotiated once per build: a
``json_schema`` response format, then ``json_object``, then plain instructions, each step taken
when the server rejects the previous one (llama.cpp answers HTTP 500); the provider remembers what
the server accepts. Answers are read by `cpo.providers.answers` (code fences, prose, missing
citations, tag spacing...); an unusable one gets at most one repair request, then becomes a
result with ``blocked_reason`` set, never an exception. SDK retries are off: `cpo.engine.calls`
retries,
using the classification on the `ProviderError`.
"""

from __future__ import annotations

import re
import threading
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Annotated, Any, Literal

from pydantic import Field

from cpo.engine.settings import (
    NonEmptyStr,
    Number,
    PositiveInt,
    PositiveNumber,
    validate_model,
)
from cpo.errors import ProviderError
from cpo.providers.answers import Answer, Problem, read_answer
from cpo.providers.base import Document, GenerationRequest, GenerationResult
from cpo.providers.credentials import (
    Auth,
    ConnectionSettings,
    check_token_transport,
    endpoint_from_env,
    httpx_verify,
    require_env,
    resolve_auth,
    resolve_secret,
)
from cpo.providers.failures import http_failure, provider_error

COGNITIVE_SCOPE = "https://cognitiveservices.azure.com/.default"
SETTINGS_KEY = "providers.generation"
DEFAULT_API_VERSIONS = {"chat": "2024-10-21", "responses": "2025-04-01-preview"}
ANSWER_SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {
        "subject": {"type": "string"},
        "body": {"type": "string"},
        "citations": {"type": "array", "items": {"type": "string"}},
    },
    "required": ["subject", "body", "citations"],
    "additionalProperties": False,
}
REPAIR_PROMPT = (
    "Your previous answer could not be used. Reply again with only a JSON object with exactly "
    'these keys: "subject" (string), "body" (string, citing documents as [DOC_ID]) and '
    '"citations" (list of document ids), and no other text.'
)
BLOCKED = "content_filter"
JSON_SCHEMA, JSON_OBJECT, PLAIN = "json_schema", "json_object", "plain"
FORMATS = (JSON_SCHEMA, JSON_OBJECT, PLAIN)


class ChatSettings(ConnectionSettings):
    """``providers.generation`` of ``type: azure_openai`` or ``openai`` (validated with the rest
    of ``cpo.yml``; the llm_judge builds one for its own chat provider)."""

    type: Literal["azure_openai", "openai"] | None = None
    api: Literal["chat", "responses"] = "chat"
    temperature: Annotated[Number, Field(ge=0, le=2)] | None = 0.7
    max_tokens: PositiveInt | None = 400
    timeout_s: PositiveNumber = 30.0
    structured_output: bool = True
    model: NonEmptyStr | None = None
    """The model name (``openai``; default ``gpt-4o-mini``)."""
    base_url: NonEmptyStr | None = None
    """The server (``openai``; default ``OPENAI_BASE_URL``, else OpenAI's)."""
    deployment: NonEmptyStr | None = None
    """The deployment (``azure_openai``; default ``AZURE_OPENAI_DEPLOYMENT_NAME``)."""
    api_version: NonEmptyStr | None = None
    """The API version (``azure_openai``; default ``AZURE_OPENAI_API_VERSION``)."""

    @classmethod
    def from_settings(cls, settings: Mapping[str, Any]) -> ChatSettings:
        """Check the settings, naming the key that is wrong (`validate_model`)."""
        return validate_model(cls, settings, key=SETTINGS_KEY)


@dataclass(frozen=True)
class _Reply:
    text: str
    input_tokens: int
    output_tokens: int
    finish_reason: str
    estimated: bool = False


class OpenAIChatProvider:
    """A generation provider over an ``openai`` client (``AzureOpenAI`` or ``OpenAI``).

    Args:
        name: The provider name in ``cpo.yml`` (``azure_openai`` or ``openai``).
        client: The SDK client, with ``max_retries=0``.
        model: The deployment (Azure) or model name sent as ``model``.
        settings: The checked settings.
        service: Where the service is, for messages (``Azure OpenAI at https://...``).
        auth_fix: What to fix when the credentials are refused.
        identity: Extra values that identify answers (endpoint, api version).
        secrets: Values that must never appear in messages.
    """

    kind = "generation"

    def __init__(
        self,
        *,
        name: str,
        client: Any,
        model: str,
        settings: ChatSettings,
        service: str,
        auth_fix: str,
        identity: Mapping[str, Any],
        secrets: tuple[str, ...] = (),
    ) -> None:
        self.name = name
        self.model = model
        self.client = client
        self.settings = settings
        self._service = service
        self._auth_fix = auth_fix
        self._identity = dict(identity)
        self._secrets = secrets
        # Structured output negotiated for this build: json_schema, json_object, then plain.
        self._mode = JSON_SCHEMA if settings.structured_output else PLAIN
        self._lock = threading.Lock()
        self.format_fallbacks: list[str] = []

    max_requests_per_item = 2
    """A first request and at most one repair request per variant (for plans and budgets)."""

    def describe(self) -> dict[str, Any]:
        """Name, model, api and the settings that change answers (no secrets)."""
        s = self.settings
        return {
            "provider": self.name,
            "model": self.model,
            "api": s.api,
            "temperature": s.temperature,
            "max_tokens": s.max_tokens,
            "structured_output": s.structured_output,
            **self._identity,
        }

    def generate(self, request: GenerationRequest) -> GenerationResult:
        """Ask for the answer, read it robustly, repair at most once; never raise on its content.

        Every outcome is a usable result or one with ``blocked_reason`` set (cached like any
        answer, so an unchanged rebuild pays nothing). Tokens of every request that reached the
        service are counted, repairs included; when the service sends no ``usage`` they are
        estimated from the text (4 characters a token).
        """
        messages = build_messages(request)
        first = self._complete(messages, request)
        if first.finish_reason == BLOCKED:
            return _blocked(first)
        outcome = self._read(first, request)
        if isinstance(outcome, Answer):
            return _result(outcome, first)
        if not outcome.repairable:
            return _unusable(outcome.reason, first)
        repair = [
            *messages,
            {"role": "assistant", "content": first.text},
            {"role": "user", "content": REPAIR_PROMPT},
        ]
        try:
            second = self._complete(repair, request)
        except ProviderError as error:
            # The first answer was paid for: keep its tokens, block with both reasons.
            return _unusable(f"{outcome.reason}; the repair request failed: {error.message}", first)
        if second.finish_reason == BLOCKED:
            return _blocked(first, second)
        repaired = self._read(second, request)
        if isinstance(repaired, Answer):
            return _result(repaired, first, second)
        return _unusable(f"{repaired.reason} (after one repair request)", first, second)

    def _read(self, reply: _Reply, request: GenerationRequest) -> Answer | Problem:
        params = request.params
        if reply.finish_reason == "length" and not reply.text.strip():
            return Problem("truncated: the answer hit max_tokens before any text", True)
        return read_answer(
            reply.text,
            document_ids=[d.document_id for d in request.documents],
            merge_tags=params.get("merge_tags") or (),
            max_subject_chars=int(params.get("max_subject_chars", 60) or 60),
        )

    def _complete(self, messages: list[dict[str, str]], request: GenerationRequest) -> _Reply:
        """One answer, negotiating structured output: a server that rejects the format asked
        for is asked again with the next one, and the build remembers what it accepts."""
        while True:
            mode = self._mode
            try:
                return self._complete_once(messages, request, mode)
            except ProviderError as error:
                if mode == PLAIN or not _rejects_format(error):
                    raise
                with self._lock:
                    if self._mode == mode:
                        self._mode = FORMATS[FORMATS.index(mode) + 1]
                        self.format_fallbacks.append(f"{mode} -> {self._mode}: {error.message}")

    def _complete_once(
        self, messages: list[dict[str, str]], request: GenerationRequest, mode: str
    ) -> _Reply:
        import openai

        params = {**_defaults(self.settings), **dict(request.params)}
        try:
            if self.settings.api == "responses":
                reply = self._responses(messages, params, mode)
            else:
                reply = self._chat(messages, params, mode)
        except openai.APIStatusError as e:
            if _is_content_filter(e):
                return _Reply("", 0, 0, BLOCKED)
            raise http_failure(
                self._service,
                e.status_code,
                e.response.headers,
                error_detail(e),
                auth_fix=self._auth_fix,
                secrets=self._secrets,
            ) from e
        except openai.APITimeoutError as e:
            raise provider_error(
                f"{self._service} did not answer within {self.settings.timeout_s:g} s "
                f"(timeout_s) for {request.key}",
                retryable=True,
                timeout=True,
                secrets=self._secrets,
            ) from e
        except openai.APIConnectionError as e:
            raise provider_error(
                f"{self._service} could not be reached: {e}", retryable=True, secrets=self._secrets
            ) from e
        except (openai.OpenAIError, ValueError) as e:
            # openai lets a truncated or non-JSON HTTP body through as a bare JSONDecodeError.
            raise provider_error(
                f"{self._service} sent an unreadable response: {e}",
                retryable=True,
                secrets=self._secrets,
            ) from e
        if reply.input_tokens or reply.output_tokens:
            return reply
        # A server that sends no usage: estimate, so the ledger and the budget stay honest.
        prompt = sum(len(m["content"]) for m in messages)
        return _Reply(
            reply.text, prompt // 4 + 1, len(reply.text) // 4 + 1, reply.finish_reason, True
        )

    def _chat(self, messages: list[dict[str, str]], params: Mapping[str, Any], mode: str) -> _Reply:
        kwargs: dict[str, Any] = {"model": self.model, "messages": messages}
        if params.get("temperature") is not None:
            kwargs["temperature"] = params["temperature"]
        if params.get("max_tokens") is not None:
            kwargs["max_tokens"] = params["max_tokens"]
        if mode == JSON_SCHEMA:
            kwargs["response_format"] = {
                "type": "json_schema",
                "json_schema": {"name": "message", "strict": True, "schema": ANSWER_SCHEMA},
            }
        elif mode == JSON_OBJECT:
            kwargs["response_format"] = {"type": "json_object"}
        response = self.client.chat.completions.create(**kwargs)
        if not response.choices:
            return _Reply("", *_usage(response.usage, "prompt_tokens", "completion_tokens"), "stop")
        choice = response.choices[0]
        text = choice.message.content if choice.message else None
        return _Reply(
            text or "",
            *_usage(response.usage, "prompt_tokens", "completion_tokens"),
            choice.finish_reason or "stop",
        )

    def _responses(
        self, messages: list[dict[str, str]], params: Mapping[str, Any], mode: str
    ) -> _Reply:
        kwargs: dict[str, Any] = {"model": self.model, "input": messages}
        if params.get("temperature") is not None:
            kwargs["temperature"] = params["temperature"]
        if params.get("max_tokens") is not None:
            kwargs["max_output_tokens"] = params["max_tokens"]
        if mode == JSON_SCHEMA:
            kwargs["text"] = {
                "format": {
                    "type": "json_schema",
                    "name": "message",
                    "strict": True,
                    "schema": ANSWER_SCHEMA,
                }
            }
        elif mode == JSON_OBJECT:
            kwargs["text"] = {"format": {"type": "json_object"}}
        response = self.client.responses.create(**kwargs)
        usage = response.usage
        finish = "stop"
        if response.status == "incomplete":
            reason = getattr(response.incomplete_details, "reason", None)
            finish = BLOCKED if reason == BLOCKED else "length"
        return _Reply(
            response.output_text or "", *_usage(usage, "input_tokens", "output_tokens"), finish
        )


def _defaults(settings: ChatSettings) -> dict[str, Any]:
    return {"temperature": settings.temperature, "max_tokens": settings.max_tokens}


def _usage(usage: Any, input_name: str, output_name: str) -> tuple[int, int]:
    if usage is None:
        return 0, 0
    return int(getattr(usage, input_name, 0) or 0), int(getattr(usage, output_name, 0) or 0)


def _spent(replies: tuple[_Reply, ...]) -> dict[str, Any]:
    return {
        "input_tokens": sum(r.input_tokens for r in replies),
        "output_tokens": sum(r.output_tokens for r in replies),
        "requests": len(replies),
        "estimated_tokens": any(r.estimated for r in replies),
    }


def _blocked(*replies: _Reply) -> GenerationResult:
    return GenerationResult(
        subject="", body="", citations=(), finish_reason=BLOCKED, **_spent(replies)
    )


def _unusable(reason: str, *replies: _Reply) -> GenerationResult:
    return GenerationResult(
        subject="",
        body="",
        citations=(),
        finish_reason=replies[-1].finish_reason,
        blocked_reason=reason,
        **_spent(replies),
    )


def _result(answer: Answer, *replies: _Reply) -> GenerationResult:
    return GenerationResult(
        subject=answer.subject,
        body=answer.body,
        citations=answer.citations,
        finish_reason=replies[-1].finish_reason,
        **_spent(replies),
    )


# What a server says when it rejects the requested answer format (llama.cpp answers HTTP 500).
_FORMAT_REJECTED = re.compile(
    r"response_format|json_schema|json_object|schema|grammar|structured|format|not supported|"
    r"unsupported|not implemented|invalid",
    re.IGNORECASE,
)


def _rejects_format(error: ProviderError) -> bool:
    status = error.status
    if status in (400, 415, 422, 501):
        return True
    return status == 500 and bool(_FORMAT_REJECTED.search(error.message))


def _is_content_filter(error: Any) -> bool:
    body = error.body if isinstance(error.body, dict) else {}
    inner = body.get("innererror") or {}
    return error.status_code == 400 and (
        error.code == BLOCKED or inner.get("code") == "ResponsibleAIPolicyViolation"
    )


def error_detail(error: Any) -> str:
    """The service's own message in an ``openai`` SDK error (for a `ProviderError`)."""
    body = error.body if isinstance(error.body, dict) else {}
    return str(body.get("message") or error.message)


def document_line(doc: Document) -> str:
    """The one-line form of a document in prompts: ``[DOC_ID] title: body``."""
    body = " ".join(doc.body.split())
    return f"[{doc.document_id}] {doc.title}: {body}"


def build_messages(request: GenerationRequest) -> list[dict[str, str]]:
    """System and user messages; documents the prompt does not show are appended to it."""
    prompt = request.prompt
    missing = [d for d in request.documents if f"[{d.document_id}]" not in prompt]
    if missing:
        lines = "\n".join(document_line(d) for d in request.documents)
        prompt = f"{prompt.rstrip()}\n\nDocuments:\n{lines}\n"
    messages = [{"role": "system", "content": request.system}] if request.system else []
    return [*messages, {"role": "user", "content": prompt}]


def parse_answer(
    text: str, document_ids: tuple[str, ...] = (), merge_tags: tuple[str, ...] = ()
) -> dict[str, Any] | None:
    """The answer in `text` as ``{"subject", "body", "citations"}``, or None when unusable.

    A thin wrapper over `cpo.providers.answers.read_answer` (which also says why).
    """
    answer = read_answer(text, document_ids=document_ids, merge_tags=merge_tags)
    if not isinstance(answer, Answer):
        return None
    return {"subject": answer.subject, "body": answer.body, "citations": list(answer.citations)}


def _http_client(settings: ConnectionSettings) -> Any:
    verify = httpx_verify(settings)
    if verify is None:
        return None
    import openai

    return openai.DefaultHttpxClient(verify=verify)


def azure_openai_factory(settings: Mapping[str, Any], env: Mapping[str, str]) -> OpenAIChatProvider:
    """Azure OpenAI from ``AZURE_OPENAI_*`` variables: API key, Key Vault reference or token.

    Settings: ``api`` (chat|responses), ``temperature``, ``max_tokens``, ``timeout_s``,
    ``structured_output``, ``deployment`` and ``api_version`` (override the env), ``ca_bundle``
    or ``verify`` (TLS), ``_credential`` (a token credential, for tests).
    """
    chat = ChatSettings.from_settings(settings)
    endpoint = endpoint_from_env(env, "AZURE_OPENAI_ENDPOINT", "azure_openai")
    deployment = chat.deployment or require_env(env, "AZURE_OPENAI_DEPLOYMENT_NAME", "azure_openai")
    version = str(
        chat.api_version or env.get("AZURE_OPENAI_API_VERSION") or DEFAULT_API_VERSIONS[chat.api]
    )
    auth = resolve_auth(chat, env, ("AZURE_OPENAI_API_KEY",))
    check_token_transport(endpoint, auth, "AZURE_OPENAI_ENDPOINT", "AZURE_OPENAI_API_KEY")
    return OpenAIChatProvider(
        name="azure_openai",
        client=azure_openai_client(endpoint, version, auth, chat.timeout_s, chat),
        model=deployment,
        settings=chat,
        service=f"Azure OpenAI at {endpoint}",
        auth_fix=credentials_fix(auth, "AZURE_OPENAI_API_KEY", "Cognitive Services OpenAI User"),
        identity={"endpoint": endpoint, "api_version": version},
        secrets=auth.secrets,
    )


def azure_openai_client(
    endpoint: str, version: str, auth: Auth, timeout_s: float, settings: ConnectionSettings
) -> Any:
    """An ``AzureOpenAI`` client (or ``OpenAI`` on the v1 surface) with SDK retries off."""
    import openai

    common: dict[str, Any] = {
        "max_retries": 0,
        "timeout": timeout_s,
        "http_client": _http_client(settings),
    }
    common.update(_azure_auth_kwargs(auth))
    if version == "v1":
        # The v1 surface: a plain OpenAI client on {endpoint}/openai/v1/ (key as bearer).
        key = common.pop("api_key", None) or common.pop("azure_ad_token_provider")
        return openai.OpenAI(base_url=f"{endpoint}/openai/v1/", api_key=key, **common)
    return openai.AzureOpenAI(azure_endpoint=endpoint, api_version=version, **common)


def _azure_auth_kwargs(auth: Auth) -> dict[str, Any]:
    if auth.key is not None:
        return {"api_key": auth.key}
    from azure.identity import get_bearer_token_provider

    assert auth.credential is not None, "an Auth holds a key or else a token credential"
    return {"azure_ad_token_provider": get_bearer_token_provider(auth.credential, COGNITIVE_SCOPE)}


def credentials_fix(auth: Auth, key_var: str, role: str) -> str:
    """What to fix when the service refuses `auth` (names the variable or the role needed)."""
    if auth.key is not None:
        return f"check {auth.source} (the key or its Key Vault reference) and the endpoint."
    return (
        f"no {key_var} is set, so DefaultAzureCredential was used; give that identity the "
        f"'{role}' role on the resource, or set {key_var}."
    )


def openai_factory(settings: Mapping[str, Any], env: Mapping[str, str]) -> OpenAIChatProvider:
    """OpenAI or any OpenAI-compatible server (``base_url`` setting or ``OPENAI_BASE_URL``).

    Settings: as for Azure, plus ``model`` (default ``gpt-4o-mini``) and ``base_url``.
    ``OPENAI_API_KEY`` is required (may be a Key Vault reference).
    """
    chat = ChatSettings.from_settings(settings)
    key = resolve_secret(require_env(env, "OPENAI_API_KEY", "openai"), "OPENAI_API_KEY", chat, env)
    base_url = (chat.base_url or env.get("OPENAI_BASE_URL") or "").rstrip("/")
    model = chat.model or "gpt-4o-mini"
    import openai

    client = openai.OpenAI(
        api_key=key,
        base_url=base_url or None,
        max_retries=0,
        timeout=chat.timeout_s,
        http_client=_http_client(chat),
    )
    where = base_url or "https://api.openai.com/v1"
    return OpenAIChatProvider(
        name="openai",
        client=client,
        model=model,
        settings=chat,
        service=f"OpenAI-compatible API at {where}",
        auth_fix="check OPENAI_API_KEY (the key or its Key Vault reference) and the base URL.",
        identity={"base_url": where},
        secrets=(key,),
    )


__all__ = [
    "ChatSettings",
    "OpenAIChatProvider",
    "azure_openai_factory",
    "build_messages",
    "openai_factory",
    "parse_answer",
]
