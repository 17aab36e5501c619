"""A model-judge safety provider (``safety: {type: llm_judge}``) over any OpenAI-compatible API.

It asks a chat model to classify a text per harm category (Hate, SelfHarm, Sexual, Violence) on
Azure's 0-7 scale, with a rubric prompt (``prompts/safety/judge.txt``), and parses a **strict**
verdict. Calls go through the same call layer as generation (cache, rate limits, retries,
budget: the tokens the judge spends are priced under ``prices.<model>``).

Verdict formats (``verdict_format``):

* ``json`` (general models): ``{"verdicts": [{"category", "severity", "reason"}, ...]}``, or the
  same as ``{"Hate": {"severity", "reason"}, ...}``; a JSON object in a Markdown fence is read.
  A category must be one of the four, a severity an integer 0-7 (not a string, float or bool).
* ``llama_guard`` (Llama Guard 3 served by Ollama or vLLM): ``safe``, or ``unsafe`` and a line of
  hazard codes (``S1,S10``); hazards map onto the four categories at severity `UNSAFE_SEVERITY`.
* ``yes_no`` (ShieldGemma, Granite Guardian and other yes/no guards): one question per category
  (``prompts/safety/yes_no.txt``); ``Yes`` is `UNSAFE_SEVERITY`, ``No`` is 0.
* ``auto`` (default): ``json``, or ``llama_guard`` when the model name says so.

Fail-closed: an answer that cannot be parsed (a refusal, prose, a severity out of range, an
unknown or repeated category, a content filter) yields **no severity** for the categories it
does not rate, so the policy's harm checks fail them (``not_screened``) and the variant is not
approved. Network, authentication and quota failures are raised for the call layer to retry or
report, like any provider.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any, Literal, get_args

from cpo.engine.settings import (
    NonEmptyStr,
    NonNegativeNumber,
    PositiveInt,
    validate_model,
)
from cpo.errors import ConfigurationError
from cpo.providers.base import HARM_CATEGORIES, GenerationRequest, SafetyRequest, SafetyResult
from cpo.providers.credentials import ConnectionSettings

VerdictFormat = Literal["auto", "json", "llama_guard", "yes_no"]
Endpoint = Literal["openai", "azure_openai"]
FORMATS: tuple[str, ...] = get_args(VerdictFormat)
ENDPOINTS: tuple[str, ...] = get_args(Endpoint)
UNSAFE_SEVERITY = 6
"""Severity given to a category a guard model calls unsafe without a severity (Azure: high)."""
DEFAULT_RUBRIC = "prompts/safety/judge.txt"
DEFAULT_YES_NO = "prompts/safety/yes_no.txt"
_PACKAGED = {DEFAULT_RUBRIC: "judge_rubric.txt", DEFAULT_YES_NO: "judge_yes_no.txt"}
KEY = "providers.safety"

_ALIASES = {
    "hate": "Hate", "hateful": "Hate", "harassment": "Hate", "selfharm": "SelfHarm",
    "self_harm": "SelfHarm", "self-harm": "SelfHarm", "suicide": "SelfHarm", "sexual": "Sexual",
    "sex": "Sexual", "violence": "Violence", "violent": "Violence",
}  # fmt: skip
LLAMA_GUARD_HAZARDS = {
    "S1": "Violence", "S2": "Violence", "S3": "Sexual", "S4": "Sexual", "S5": "Hate",
    "S9": "Violence", "S10": "Hate", "S11": "SelfHarm", "S12": "Sexual",
}  # fmt: skip
"""Llama Guard 3 hazard codes that fall in a harm category. Others (specialised advice,
privacy, IP, elections, code abuse) have no category here: an ``unsafe`` verdict naming only
those leaves every category unrated, which fails closed."""
CATEGORY_DEFINITIONS = {
    "Hate": "No attacks on, exclusion of, or dehumanising statements about people for a protected "
    "attribute (race, ethnicity, nationality, religion, gender, sexual orientation, disability, "
    "age), and no slurs or strong profanity aimed at someone.",
    "SelfHarm": "No encouragement or description of suicide, self-injury, starving, purging or "
    "extreme dieting.",
    "Sexual": "No sexual content, nudity, sexual solicitation or adult services.",
    "Violence": "No threats (including threats stated as a consequence), incitement, or weapons "
    "used against people.",
}
_FENCE = re.compile(r"```(?:json)?\s*(.*?)```", re.DOTALL | re.IGNORECASE)


class LlmJudgeSettings(ConnectionSettings):
    """``providers.safety`` of ``type: llm_judge`` (validated with the rest of ``cpo.yml``)."""

    type: Literal["llm_judge"] = "llm_judge"
    endpoint: Endpoint = "openai"
    model: NonEmptyStr | None = None
    deployment: NonEmptyStr | None = None
    base_url: NonEmptyStr | None = None
    api_version: NonEmptyStr | None = None
    timeout_s: NonNegativeNumber | None = None
    max_tokens: PositiveInt = 400
    rubric: NonEmptyStr | None = None
    yes_no_rubric: NonEmptyStr | None = None
    verdict_format: VerdictFormat = "auto"

    def chat_settings(self) -> dict[str, Any]:
        """The settings of the chat provider that asks for verdicts."""
        chat = self.model_dump(
            include={"model", "deployment", "base_url", "api_version", "timeout_s", "ca_bundle"},
            exclude_none=True,
        )
        if self.verify is not None:
            chat["verify"] = self.verify
        if self.credential is not None:
            chat["_credential"] = self.credential
        chat.update(api="chat", structured_output=False, temperature=0.0)
        chat["max_tokens"] = self.max_tokens
        return chat


class VerdictError(ValueError):
    """The judge's answer is not a verdict in the expected shape."""


@dataclass(frozen=True)
class JudgedResult(SafetyResult):
    """A `SafetyResult` that also carries the judge's reasons and the tokens it spent.

    The call layer prices `input_tokens`/`output_tokens`; the cache keeps the severities.
    """

    reasons: Mapping[str, str] | None = None
    input_tokens: int = 0
    output_tokens: int = 0


def _category(value: Any) -> str:
    if not isinstance(value, str):
        raise VerdictError(f"category must be a string, got {type(value).__name__}")
    key = value.strip().replace(" ", "").lower()
    name = next((c for c in HARM_CATEGORIES if c.lower() == key), None) or _ALIASES.get(key)
    if name is None:
        raise VerdictError(f"unknown category {value!r}")
    return name


def _severity(value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= 7:
        raise VerdictError(f"severity must be an integer from 0 to 7, got {value!r}")
    return value


def parse_json_verdict(text: str) -> tuple[dict[str, int], dict[str, str]]:
    """Parse a JSON verdict strictly: (severities, reasons) for the categories it rates.

    Raises:
        VerdictError: Not one JSON object of the documented shape.
    """
    body = text.strip()
    fenced = _FENCE.findall(body)
    if fenced:
        if len(fenced) != 1:
            raise VerdictError("more than one fenced block")
        body = fenced[0].strip()
    try:
        data = json.loads(body)
    except json.JSONDecodeError as e:
        raise VerdictError(f"not JSON ({e.msg})") from None
    if isinstance(data, dict) and "verdicts" in data:
        if set(data) != {"verdicts"}:
            raise VerdictError(f"unexpected keys {sorted(set(data) - {'verdicts'})}")
        data = data["verdicts"]
    if isinstance(data, dict):
        items = [
            {"category": k, **(v if isinstance(v, dict) else {"severity": v})}
            for k, v in data.items()
        ]
    elif isinstance(data, list):
        items = data
    else:
        raise VerdictError("expected an object or a list of verdicts")
    severities: dict[str, int] = {}
    reasons: dict[str, str] = {}
    for item in items:
        if not isinstance(item, dict) or "category" not in item or "severity" not in item:
            raise VerdictError("each verdict needs a category and a severity")
        unknown = set(item) - {"category", "severity", "reason"}
        if unknown:
            raise VerdictError(f"unexpected verdict keys {sorted(unknown)}")
        category = _category(item["category"])
        if category in severities:
            raise VerdictError(f"category {category} rated twice")
        severities[category] = _severity(item["severity"])
        reason = item.get("reason", "")
        if not isinstance(reason, str):
            raise VerdictError("reason must be a string")
        reasons[category] = reason.strip()[:200]
    if not severities:
        raise VerdictError("no verdicts")
    return severities, reasons


def parse_llama_guard(text: str) -> tuple[dict[str, int], dict[str, str]]:
    """Parse Llama Guard's ``safe`` / ``unsafe\\nS1,S10`` answer.

    Raises:
        VerdictError: Neither ``safe`` nor ``unsafe`` with hazard codes.
    """
    lines = [line.strip() for line in text.strip().splitlines() if line.strip()]
    if lines == ["safe"]:
        return dict.fromkeys(HARM_CATEGORIES, 0), {}
    if not lines or lines[0] != "unsafe" or len(lines) > 2:
        raise VerdictError("expected 'safe' or 'unsafe' and hazard codes")
    codes = [c.strip().upper() for c in (lines[1] if len(lines) > 1 else "").split(",")]
    if not all(re.fullmatch(r"S\d{1,2}", c) for c in codes):
        raise VerdictError("unsafe without valid hazard codes")
    hit = {LLAMA_GUARD_HAZARDS[c] for c in codes if c in LLAMA_GUARD_HAZARDS}
    if not hit:
        return {}, {}  # unsafe, but not in a category we rate: every category fails closed
    severities = {c: (UNSAFE_SEVERITY if c in hit else 0) for c in HARM_CATEGORIES}
    return severities, {c: f"llama guard: {','.join(codes)}" for c in hit}


def parse_yes_no(text: str) -> bool:
    """``Yes`` (violates) or ``No``; anything else raises `VerdictError`."""
    word = re.sub(r"[^a-z]", "", text.strip().split()[0].lower()) if text.strip() else ""
    if word not in ("yes", "no"):
        raise VerdictError("expected Yes or No")
    return word == "yes"


class LlmJudge:
    """SafetyProvider that asks a chat model for a verdict (see the module docstring).

    Args:
        chat: An `OpenAIChatProvider` (``openai`` or ``azure_openai``) with SDK retries off.
        rubric: The system prompt of the ``json`` and ``llama_guard``-less formats.
        yes_no_rubric: The per-category question of the ``yes_no`` format.
        verdict_format: One of `FORMATS` (``auto`` resolved here).
        max_tokens: Cap on the judge's answer.
    """

    kind = "safety"
    name = "llm_judge"

    def __init__(
        self,
        chat: Any,
        rubric: str,
        yes_no_rubric: str,
        verdict_format: str = "auto",
        max_tokens: int = 400,
    ) -> None:
        self.chat = chat
        self.model = chat.model
        self.rubric = rubric
        self.yes_no_rubric = yes_no_rubric
        if verdict_format == "auto":
            model = chat.model.lower()
            verdict_format = (
                "llama_guard"
                if "llama-guard" in model or "llama_guard" in model
                else (
                    "yes_no"
                    if any(
                        g in model for g in ("shieldgemma", "granite-guardian", "granite3-guardian")
                    )
                    else "json"
                )
            )
        self.verdict_format = verdict_format
        self.max_tokens = max_tokens

    def describe(self) -> dict[str, Any]:
        """Model, endpoint, verdict format and the rubric's digest: what changes a verdict."""
        prompt = self.rubric if self.verdict_format != "yes_no" else self.yes_no_rubric
        return {
            "name": self.name,
            "model": self.model,
            "verdict_format": self.verdict_format,
            "rubric_digest": hashlib.sha256(prompt.encode()).hexdigest()[:16],
            "max_tokens": self.max_tokens,
            "chat": self.chat.describe(),
        }

    def analyze(self, request: SafetyRequest) -> SafetyResult:
        """Ask for a verdict; unparseable answers leave categories unrated (fail-closed).

        Raises:
            ProviderError: The endpoint failed (network, auth, quota, timeout).
        """
        if self.verdict_format == "yes_no":
            return self._yes_no(request)
        if self.verdict_format == "llama_guard":
            messages = [{"role": "user", "content": request.text}]
        else:
            messages = [
                {"role": "system", "content": self.rubric},
                {"role": "user", "content": f"<text>\n{request.text}\n</text>"},
            ]
        reply = self._ask(request.key, messages)
        try:
            if reply.finish_reason == "content_filter":
                raise VerdictError("the endpoint's content filter refused to answer")
            parse = (
                parse_llama_guard if self.verdict_format == "llama_guard" else parse_json_verdict
            )
            severities, reasons = parse(reply.text)
        except VerdictError as e:
            severities, reasons = {}, {c: f"unparseable verdict: {e}" for c in HARM_CATEGORIES}
        for category in HARM_CATEGORIES:
            if category not in severities:
                reasons.setdefault(category, "unparseable verdict: category not rated")
        return JudgedResult(
            severities=severities,
            reasons=reasons,
            input_tokens=reply.input_tokens,
            output_tokens=reply.output_tokens,
        )

    def _yes_no(self, request: SafetyRequest) -> SafetyResult:
        severities: dict[str, int] = {}
        reasons: dict[str, str] = {}
        tokens_in = tokens_out = 0
        for category in HARM_CATEGORIES:
            system = self.yes_no_rubric.replace("{category}", category).replace(
                "{definition}", CATEGORY_DEFINITIONS[category]
            )
            messages = [
                {"role": "system", "content": system},
                {"role": "user", "content": f"<text>\n{request.text}\n</text>"},
            ]
            reply = self._ask(f"{request.key}|{category}", messages)
            tokens_in += reply.input_tokens
            tokens_out += reply.output_tokens
            try:
                if reply.finish_reason == "content_filter":
                    raise VerdictError("the endpoint's content filter refused to answer")
                severities[category] = UNSAFE_SEVERITY if parse_yes_no(reply.text) else 0
            except VerdictError as e:
                reasons[category] = f"unparseable verdict: {e}"
        return JudgedResult(
            severities=severities, reasons=reasons, input_tokens=tokens_in, output_tokens=tokens_out
        )

    def _ask(self, key: str, messages: list[dict[str, str]]) -> Any:
        request = GenerationRequest(
            key=key,
            system="",
            prompt="",
            params={"temperature": 0.0, "max_tokens": self.max_tokens},
        )
        return self.chat._complete(messages, request)


def _read_prompt(setting: Any, default: str, env: Mapping[str, str], key: str) -> str:
    """A rubric file: absolute, or relative to ``CPO_PROJECT_DIR`` or the working directory;
    the default falls back to the copy shipped with CPO when the project has none."""
    path = Path(str(setting or default))
    candidates = (
        [path]
        if path.is_absolute()
        else [Path(env.get("CPO_PROJECT_DIR") or os.getcwd()) / path, Path.cwd() / path]
    )
    for candidate in candidates:
        if candidate.is_file():
            return candidate.read_text(encoding="utf-8")
    if setting is None and default in _PACKAGED:
        return (
            resources.files("cpo.providers")
            .joinpath(f"lexicons/{_PACKAGED[default]}")
            .read_text(encoding="utf-8")
        )
    raise ConfigurationError(
        f"rubric file {path} not found; create it (see prompts/safety/ in the sample project) or "
        "fix the path",
        path="cpo.yml",
        key=f"{KEY}.{key}",
    )


def make_llm_judge(settings: Mapping[str, Any], env: Mapping[str, str]) -> LlmJudge:
    """Build the judge from ``providers.safety`` settings.

    Settings (all optional): ``endpoint`` (``openai``, default, or ``azure_openai``: the same
    variables as the generation providers, ``OPENAI_BASE_URL``/``OPENAI_API_KEY`` or
    ``AZURE_OPENAI_*``), ``model``, ``deployment``, ``base_url``, ``api_version``, ``timeout_s``,
    ``max_tokens`` (default 400), ``rubric`` and ``yes_no_rubric`` (paths), ``verdict_format``
    (``auto``, ``json``, ``llama_guard``, ``yes_no``), ``ca_bundle``/``verify`` (TLS).

    Raises:
        ConfigurationError: An unknown setting or value, a missing rubric or credentials.
    """
    checked = validate_model(LlmJudgeSettings, settings, key=KEY)
    from cpo.providers.openai_chat import azure_openai_factory, openai_factory

    factory = openai_factory if checked.endpoint == "openai" else azure_openai_factory
    return LlmJudge(
        chat=factory(checked.chat_settings(), env),
        rubric=_read_prompt(checked.rubric, DEFAULT_RUBRIC, env, "rubric"),
        yes_no_rubric=_read_prompt(checked.yes_no_rubric, DEFAULT_YES_NO, env, "yes_no_rubric"),
        verdict_format=checked.verdict_format,
        max_tokens=checked.max_tokens,
    )
