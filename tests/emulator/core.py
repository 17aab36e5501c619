"""The emulator's values and state, shared by its route modules."""

from __future__ import annotations

import random
import re
import threading
import time
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from typing import Any

# Words mapped to (category, severity on the 0-7 scale) for `text:analyze`.
DEFAULT_SAFETY_TERMS: dict[str, tuple[str, int]] = {
    "despise": ("Hate", 3),
    "vermin": ("Hate", 6),
    "stupid": ("Hate", 2),
    "suicide": ("SelfHarm", 6),
    "self-harm": ("SelfHarm", 4),
    "starve": ("SelfHarm", 3),
    "explicit": ("Sexual", 3),
    "nude": ("Sexual", 5),
    "fight": ("Violence", 2),
    "kill": ("Violence", 4),
    "murder": ("Violence", 6),
}
CATEGORIES = ("Hate", "SelfHarm", "Sexual", "Violence")


@dataclass(frozen=True)
class EmulatorKeys:
    """The credentials the emulator accepts; anything else gets a 401."""

    openai: str = "test-openai-key"
    search_admin: str = "test-search-admin-key"
    search_query: str = "test-search-query-key"
    safety: str = "test-safety-key"
    token: str = "test-bearer-token"


@dataclass
class Faults:
    """What to break, settable from Python (``emu.faults.status = 429``) or over HTTP.

    Attributes:
        service: Restrict faults to ``openai``, ``search``, ``safety`` or ``keyvault``, or a list
            of them (None: all).
        path_contains: Restrict faults to paths containing this text.
        body_contains: Restrict faults to requests whose JSON body contains every one of these
            texts (a string or a list), e.g. one segment's name and one tone, to hit one item.
        times: How many requests the fault applies to before it clears itself (None: forever).
        latency_s: Added delay before answering.
        timeout_s: Sleep this long before answering (longer than the client's timeout).
        status: Answer with this HTTP status (429, 500, 503, 401, ...) and a service error body.
        statuses: Failing requests cycle through these statuses (e.g. ``[429, 503]``) instead of
            answering `status`.
        retry_after: ``Retry-After`` header value sent with `status`.
        retry_after_ms: ``retry-after-ms`` header value sent with `status`.
        failure_rate: Fraction of requests that fail with `status` (default 500), seeded.
        every: Every k-th request fails with `status` (default 500).
        seed: Seed of the RNG used by `failure_rate`.
        down: Every request gets a 503, for good.
        content_filter: ``prompt`` (HTTP 400 ``content_filter``) or ``completion`` (200 with
            ``finish_reason: content_filter``), for generation routes.
        malformed_json: The model's answer text is not JSON (the HTTP body is still valid).
        malformed_body: The HTTP response body itself is truncated JSON.
        fenced_json: The model's answer is wrapped in a Markdown code fence with chatter.
        uncited_claim: A sentence the model adds to the body with no citation (e.g.
            ``"Only $9.99!"``), to exercise the grounding check.
        answer_text: The model's answer, literally (``{doc1}``/``{doc2}``: the prompt's first
            two document ids), to exercise each shape real models answer in.
        reject_formats: Response format types answered with HTTP 500 "not supported", as
            llama.cpp does for ``json_schema``.
        no_usage: Answers carry no ``usage`` (some OpenAI-compatible servers).
    """

    service: str | list[str] | None = None
    path_contains: str | None = None
    body_contains: str | list[str] | None = None
    times: int | None = None
    latency_s: float = 0.0
    timeout_s: float = 0.0
    status: int | None = None
    statuses: list[int] | None = None
    retry_after: str | None = None
    retry_after_ms: str | None = None
    failure_rate: float = 0.0
    every: int = 0
    seed: int = 0
    down: bool = False
    content_filter: str | None = None
    malformed_json: bool = False
    malformed_body: bool = False
    fenced_json: bool = False
    uncited_claim: str | None = None
    answer_text: str | None = None
    reject_formats: list[str] | None = None
    no_usage: bool = False

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Faults:
        """Build faults from a JSON object, rejecting unknown names."""
        names = {f.name for f in fields(cls)}
        unknown = set(data) - names
        if unknown:
            raise ValueError(f"unknown fault(s): {sorted(unknown)}; known: {sorted(names)}")
        return cls(**data)


@dataclass(frozen=True)
class RecordedRequest:
    """One request as the emulator saw it (headers lower-cased)."""

    method: str
    path: str
    query: dict[str, str]
    headers: dict[str, str]
    body: Any
    service: str

    @property
    def api_version(self) -> str | None:
        return self.query.get("api-version")


@dataclass
class Reply:
    status: int
    body: Any = None
    headers: dict[str, str] = field(default_factory=dict)
    raw: bytes | None = None


class HTTPError(Exception):
    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(message)
        self.status, self.code, self.message = status, code, message


class EmulatorState:
    """Everything the emulator knows: indexes, blocklists, secrets, faults and recorded requests."""

    def __init__(self, keys: EmulatorKeys) -> None:
        self.keys = keys
        self.faults = Faults()
        self.requests: list[RecordedRequest] = []
        self.indexes: dict[str, dict[str, Any]] = {}
        self.documents: dict[str, dict[str, dict[str, Any]]] = {}
        self.blocklists: dict[str, dict[str, Any]] = {}
        self.blocklist_items: dict[str, dict[str, dict[str, str]]] = {}
        self.secrets: dict[str, str] = {}
        self.safety_terms = dict(DEFAULT_SAFETY_TERMS)
        self.base_url = ""
        self.lock = threading.RLock()
        self.stop = threading.Event()
        self._calls = 0
        self._rng = random.Random(0)

    def set_faults(self, faults: Faults) -> None:
        with self.lock:
            self.faults = faults
            self._calls = 0
            self._rng = random.Random(faults.seed)

    def reset(self) -> None:
        with self.lock:
            self.set_faults(Faults())
            self.requests.clear()

    # -- faults -------------------------------------------------------------------------------

    def fault_for(self, service: str, path: str, body_text: str = "") -> Faults | None:
        """Return the active faults if they apply to this request, counting it."""
        with self.lock:
            f = self.faults
            services = [f.service] if isinstance(f.service, str) else f.service
            if services and service not in services:
                return None
            if f.path_contains and f.path_contains not in path:
                return None
            wanted = [f.body_contains] if isinstance(f.body_contains, str) else f.body_contains
            if wanted and not all(w in body_text for w in wanted):
                return None
            if f.times is not None:
                if f.times <= 0:
                    return None
                f.times -= 1
            self._calls += 1
            return f

    def status_now(self, f: Faults) -> int | None:
        """The status of this failing request: the next of `statuses`, else `status`."""
        with self.lock:
            if f.statuses:
                return f.statuses[self._calls % len(f.statuses)]
            return f.status

    def fails_now(self, f: Faults) -> bool:
        """Decide (deterministically) whether this request hits a failure-rate or every-k fault."""
        with self.lock:
            if f.every and self._calls % f.every == 0:
                return True
            return bool(f.failure_rate) and self._rng.random() < f.failure_rate


def error_reply(service: str, status: int, code: str, message: str) -> Reply:
    if service == "openai":
        kind = "invalid_request_error" if status < 500 else "server_error"
        error = {"message": message, "type": kind, "param": None, "code": code}
    else:
        error = {"code": code, "message": message, "details": []}
    return Reply(status, {"error": error})


def rate_text(state: EmulatorState, text: str) -> dict[str, int]:
    """Per-category severity of a text from the emulator's safety terms (0 when none appear).

    The one rating behind ``text:analyze`` and the safety judge's verdicts.
    """
    words = set(re.findall(r"[\w-]+", text.lower()))
    found = dict.fromkeys(CATEGORIES, 0)
    for word, (category, severity) in state.safety_terms.items():
        if word in words:
            found[category] = max(found[category], severity)
    return found


def chat_completion(
    model: str,
    content: str | None,
    *,
    finish: str = "stop",
    usage: dict[str, int] | None,
    choice: dict[str, Any] | None = None,
    extra: dict[str, Any] | None = None,
    headers: dict[str, str] | None = None,
) -> Reply:
    """A ``chat.completion`` answer with one choice (the envelope every chat route sends)."""
    return Reply(
        200,
        {
            "id": f"chatcmpl-{uuid.uuid4().hex[:12]}",
            "object": "chat.completion",
            "created": int(time.time()),
            "model": model,
            "choices": [
                {
                    "index": 0,
                    "finish_reason": finish,
                    "message": {"role": "assistant", "content": content},
                    **(choice or {}),
                }
            ],
            "usage": usage,
            **(extra or {}),
        },
        headers=headers or {},
    )
