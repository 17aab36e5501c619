"""A loopback emulator of Azure OpenAI, Azure AI Search, Azure AI Content Safety and Key Vault.

It speaks just enough of each wire protocol (see ``reference/azure-wire-protocol.md``) for the real
SDK clients to work against ``127.0.0.1`` over HTTP or HTTPS, answers deterministically, records
every request, and injects faults on demand. Test code only: nothing under ``cpo/`` imports it.
"""

from __future__ import annotations

import json
import math
import random
import re
import ssl
import tempfile
import threading
import time
import uuid
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, field, fields
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

from tests.emulator import search_filter

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
DOC_LINE = re.compile(r"^\s*\[([A-Za-z0-9_.:\-]+)\]\s*([^:\n]*):\s*(.+?)\s*$", re.MULTILINE)
SENTENCE_END = re.compile(r"(?<=[.!?])\s+")
TOKEN = re.compile(r"\w+")


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
        service: Restrict faults to ``openai``, ``search``, ``safety`` or ``keyvault`` (None: all).
        path_contains: Restrict faults to paths containing this text.
        times: How many requests the fault applies to before it clears itself (None: forever).
        latency_s: Added delay before answering.
        timeout_s: Sleep this long before answering (longer than the client's timeout).
        status: Answer with this HTTP status (429, 500, 503, 401, ...) and a service error body.
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
    """

    service: str | None = None
    path_contains: str | None = None
    times: int | None = None
    latency_s: float = 0.0
    timeout_s: float = 0.0
    status: int | None = None
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
class _Reply:
    status: int
    body: Any = None
    headers: dict[str, str] = field(default_factory=dict)
    raw: bytes | None = None


class _HTTPError(Exception):
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

    def fault_for(self, service: str, path: str) -> Faults | None:
        """Return the active faults if they apply to this request, counting it."""
        with self.lock:
            f = self.faults
            if f.service and f.service != service:
                return None
            if f.path_contains and f.path_contains not in path:
                return None
            if f.times is not None:
                if f.times <= 0:
                    return None
                f.times -= 1
            self._calls += 1
            return f

    def fails_now(self, f: Faults) -> bool:
        """Decide (deterministically) whether this request hits a failure-rate or every-k fault."""
        with self.lock:
            if f.every and self._calls % f.every == 0:
                return True
            return bool(f.failure_rate) and self._rng.random() < f.failure_rate


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: _Server

    def log_message(self, format: str, *args: Any) -> None:
        pass  # quiet: tests assert on `emu.requests`, not on stderr

    def do_GET(self) -> None:
        self._handle()

    def do_POST(self) -> None:
        self._handle()

    def do_PUT(self) -> None:
        self._handle()

    def do_PATCH(self) -> None:
        self._handle()

    def do_DELETE(self) -> None:
        self._handle()

    def _handle(self) -> None:
        state = self.server.state
        parts = urlsplit(self.path)
        path = unquote(parts.path)
        query = {k: v[-1] for k, v in parse_qs(parts.query, keep_blank_values=True).items()}
        length = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(length) if length else b""
        try:
            body = json.loads(raw) if raw else None
        except ValueError:
            body = raw.decode("utf-8", "replace")
        if path.startswith("/_emulator/"):
            self._send(_control(state, self.command, path, body))
            return
        service = _service_of(path)
        headers = {k.lower(): v for k, v in self.headers.items()}
        with state.lock:
            state.requests.append(
                RecordedRequest(self.command, path, query, headers, body, service)
            )
        try:
            reply = _dispatch(state, service, self.command, path, query, headers, body)
        except _HTTPError as e:
            reply = _error_reply(service, e.status, e.code, e.message)
        self._send(reply)

    def _send(self, reply: _Reply) -> None:
        data = reply.raw
        if data is None:
            data = b"" if reply.body is None else json.dumps(reply.body).encode()
        try:
            self.send_response(reply.status)
            if data:
                self.send_header("Content-Type", "application/json; charset=utf-8")
            for k, v in reply.headers.items():
                self.send_header(k, v)
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)
        except (BrokenPipeError, ConnectionResetError, ssl.SSLError):
            pass  # the client gave up (a timeout fault): nothing to answer


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True

    def __init__(self, port: int, state: EmulatorState, ssl_context: ssl.SSLContext | None):
        super().__init__(("127.0.0.1", port), _Handler)
        self.state = state
        self.ssl_context = ssl_context

    def get_request(self) -> tuple[Any, Any]:
        sock, addr = super().get_request()
        if self.ssl_context is not None:
            # Handshake lazily, in the handler thread, so a slow client never blocks accept().
            sock = self.ssl_context.wrap_socket(
                sock, server_side=True, do_handshake_on_connect=False
            )
        return sock, addr

    def handle_error(self, request: Any, client_address: Any) -> None:
        pass  # a client that hangs up mid-handshake is not a test failure


def _service_of(path: str) -> str:
    if path.startswith("/openai/"):
        return "openai"
    if path.startswith("/indexes"):
        return "search"
    if path.startswith("/contentsafety/"):
        return "safety"
    if path.startswith("/secrets"):
        return "keyvault"
    return "unknown"


def _control(state: EmulatorState, method: str, path: str, body: Any) -> _Reply:
    if path == "/_emulator/faults" and method == "POST":
        try:
            state.set_faults(Faults.from_dict(body or {}))
        except (TypeError, ValueError) as e:
            return _Reply(400, {"error": str(e)})
        return _Reply(200, asdict(state.faults))
    if path == "/_emulator/faults" and method == "GET":
        return _Reply(200, asdict(state.faults))
    if path == "/_emulator/requests" and method == "GET":
        with state.lock:
            return _Reply(200, [asdict(r) for r in state.requests])
    if path == "/_emulator/reset" and method == "POST":
        state.reset()
        return _Reply(200, {})
    return _Reply(404, {"error": f"unknown control route {method} {path}"})


def _dispatch(
    state: EmulatorState,
    service: str,
    method: str,
    path: str,
    query: dict[str, str],
    headers: dict[str, str],
    body: Any,
) -> _Reply:
    fault = state.fault_for(service, path)
    if fault is not None:
        reply = _apply_faults(state, fault, service)
        if reply is not None:
            return reply
    if service == "keyvault" and "authorization" not in headers:
        return _keyvault_challenge(state)
    _check_auth(state.keys, service, method, path, headers)
    routes: dict[str, Callable[..., _Reply]] = {
        "openai": _openai,
        "search": _search,
        "safety": _safety,
        "keyvault": _keyvault,
    }
    if service not in routes:
        raise _HTTPError(404, "NotFound", f"no route for {method} {path}")
    reply = routes[service](state, method, path, query, body, fault)
    if fault is not None and fault.malformed_body and reply.body is not None:
        reply.raw = json.dumps(reply.body).encode()[:-7]
    return reply


def _apply_faults(state: EmulatorState, f: Faults, service: str) -> _Reply | None:
    if f.latency_s:
        state.stop.wait(f.latency_s)
    if f.timeout_s:
        state.stop.wait(f.timeout_s)
    if f.down:
        return _error_reply(service, 503, "ServiceUnavailable", "The service is down.")
    failing = f.every or f.failure_rate
    if failing and not state.fails_now(f):
        return None
    status = f.status or (500 if failing else None)
    if status is None:
        return None
    reply = _error_reply(service, status, _code_for(status), f"Injected HTTP {status}.")
    if f.retry_after is not None:
        reply.headers["Retry-After"] = f.retry_after
    if f.retry_after_ms is not None:
        reply.headers["retry-after-ms"] = f.retry_after_ms
    return reply


def _code_for(status: int) -> str:
    return {
        401: "401",
        403: "Forbidden",
        408: "Timeout",
        429: "429",
        500: "InternalServerError",
        503: "ServiceUnavailable",
    }.get(status, str(status))


def _error_reply(service: str, status: int, code: str, message: str) -> _Reply:
    if service == "openai":
        kind = "invalid_request_error" if status < 500 else "server_error"
        error = {"message": message, "type": kind, "param": None, "code": code}
    else:
        error = {"code": code, "message": message, "details": []}
    return _Reply(status, {"error": error})


def _check_auth(
    keys: EmulatorKeys, service: str, method: str, path: str, headers: dict[str, str]
) -> None:
    bearer = headers.get("authorization", "")
    token = bearer[7:] if bearer.lower().startswith("bearer ") else None
    if token == keys.token:
        return
    if service == "openai":
        # The v1 route sends the API key as a bearer token.
        ok = headers.get("api-key") == keys.openai or token == keys.openai
    elif service == "search":
        key = headers.get("api-key")
        reading = path.endswith("/docs/search.post.search") or (method == "GET" and "/docs" in path)
        ok = key == keys.search_admin or (reading and key == keys.search_query)
    elif service == "safety":
        ok = headers.get("ocp-apim-subscription-key") == keys.safety
    else:
        ok = False
    if not ok:
        raise _HTTPError(
            401,
            "401" if service == "openai" else "Unauthorized",
            "Access denied due to invalid subscription key or wrong API endpoint.",
        )


# -- Azure OpenAI ---------------------------------------------------------------------------

CHAT_PATH = re.compile(r"^/openai/deployments/([^/]+)/chat/completions$")


def _openai(
    state: EmulatorState,
    method: str,
    path: str,
    query: dict[str, str],
    body: Any,
    fault: Faults | None,
) -> _Reply:
    if method != "POST" or not isinstance(body, dict):
        raise _HTTPError(404, "NotFound", f"no route for {method} {path}")
    m = CHAT_PATH.match(path)
    if m or path == "/openai/v1/chat/completions":
        if m and "api-version" not in query:
            raise _HTTPError(404, "404", "Resource not found (api-version missing).")
        return _chat(body, m.group(1) if m else body.get("model", ""), fault or Faults())
    if path in ("/openai/responses", "/openai/v1/responses"):
        if path == "/openai/responses" and "api-version" not in query:
            raise _HTTPError(404, "404", "Resource not found (api-version missing).")
        return _responses(body, fault or Faults())
    raise _HTTPError(404, "404", f"Resource not found: {path}")


def _prompt_filter_error(message: str = "The prompt was filtered.") -> _Reply:
    verdict = {"filtered": True, "severity": "high"}
    return _Reply(
        400,
        {
            "error": {
                "message": message,
                "type": None,
                "param": "prompt",
                "code": "content_filter",
                "status": 400,
                "innererror": {
                    "code": "ResponsibleAIPolicyViolation",
                    "content_filter_result": {
                        "hate": {"filtered": False, "severity": "safe"},
                        "self_harm": {"filtered": False, "severity": "safe"},
                        "sexual": {"filtered": False, "severity": "safe"},
                        "violence": verdict,
                    },
                },
            }
        },
    )


def _texts_of(value: Any) -> list[str]:
    """All text in a chat message list or a Responses `input`, in order."""
    if isinstance(value, str):
        return [value]
    if isinstance(value, list):
        return [t for item in value for t in _texts_of(item)]
    if isinstance(value, dict):
        out: list[str] = []
        for key in ("content", "text"):
            if key in value:
                out += _texts_of(value[key])
        return out
    return []


def compose_answer(prompt_text: str) -> dict[str, Any]:
    """The deterministic answer: sentences copied verbatim from the documents in the prompt."""
    docs: dict[str, tuple[str, str]] = {}
    for doc_id, title, text in DOC_LINE.findall(prompt_text):
        docs.setdefault(doc_id, (title.strip(), text.strip()))
    if not docs:
        return {"subject": "Hello", "body": "No documents were provided.", "citations": []}
    chosen = list(docs.items())[:2]
    sentences = []
    for doc_id, (_, text) in chosen:
        first = SENTENCE_END.split(text)[0].strip()
        sentences.append(f"{first} [{doc_id}]")
    title = chosen[0][1][0] or chosen[0][0]
    subject = title if len(title) <= 60 else title[:57].rstrip() + "..."
    return {"subject": subject, "body": " ".join(sentences), "citations": [d for d, _ in chosen]}


def _answer_text(prompt_text: str, f: Faults) -> str:
    if f.malformed_json:
        return "Sure! Here is your message: subject: Hello, body: no JSON today"
    text = json.dumps(compose_answer(prompt_text))
    if f.fenced_json:
        return f"Here you go:\n```json\n{text}\n```\nAnything else?"
    return text


def _tokens(text: str) -> int:
    return max(1, math.ceil(len(text) / 4))


def _chat(body: dict[str, Any], model: str, f: Faults) -> _Reply:
    prompt_text = "\n".join(_texts_of(body.get("messages", [])))
    if f.content_filter == "prompt":
        return _prompt_filter_error()
    content: str | None = _answer_text(prompt_text, f)
    finish = "stop"
    if f.content_filter == "completion":
        finish, content = "content_filter", None
    safe = {"filtered": False, "severity": "safe"}
    filters = {k: safe for k in ("hate", "self_harm", "sexual", "violence")}
    if finish == "content_filter":
        filters["violence"] = {"filtered": True, "severity": "high"}
    completion = _tokens(content or "")
    prompt = _tokens(prompt_text)
    return _Reply(
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
                    "content_filter_results": filters,
                }
            ],
            "usage": {
                "prompt_tokens": prompt,
                "completion_tokens": completion,
                "total_tokens": prompt + completion,
            },
            "prompt_filter_results": [{"prompt_index": 0, "content_filter_results": filters}],
        },
        headers={"x-ratelimit-remaining-requests": "999", "x-ratelimit-remaining-tokens": "99999"},
    )


def _responses(body: dict[str, Any], f: Faults) -> _Reply:
    prompt_text = "\n".join(_texts_of(body.get("instructions")) + _texts_of(body.get("input")))
    if f.content_filter == "prompt":
        return _prompt_filter_error()
    content = _answer_text(prompt_text, f)
    status, incomplete = "completed", None
    output: list[dict[str, Any]] = [
        {
            "type": "message",
            "id": f"msg_{uuid.uuid4().hex[:12]}",
            "status": "completed",
            "role": "assistant",
            "content": [{"type": "output_text", "text": content, "annotations": []}],
        }
    ]
    if f.content_filter == "completion":
        status, incomplete, output, content = "incomplete", {"reason": "content_filter"}, [], ""
    inp, out = _tokens(prompt_text), _tokens(content)
    return _Reply(
        200,
        {
            "id": f"resp_{uuid.uuid4().hex[:12]}",
            "object": "response",
            "created_at": int(time.time()),
            "status": status,
            "incomplete_details": incomplete,
            "model": body.get("model", ""),
            "output": output,
            "parallel_tool_calls": True,
            "tool_choice": "auto",
            "tools": [],
            "usage": {
                "input_tokens": inp,
                "output_tokens": out,
                "total_tokens": inp + out,
                "input_tokens_details": {"cached_tokens": 0},
                "output_tokens_details": {"reasoning_tokens": 0},
            },
        },
    )


# -- Azure AI Search -------------------------------------------------------------------------

INDEX_PATH = re.compile(r"^/indexes(?:\('([^']+)'\)|/([^/()]+))?(/docs.*)?$")


def _search(
    state: EmulatorState,
    method: str,
    path: str,
    query: dict[str, str],
    body: Any,
    fault: Faults | None,
) -> _Reply:
    m = INDEX_PATH.match(path)
    if not m:
        raise _HTTPError(404, "NotFound", f"no route for {method} {path}")
    name, rest = m.group(1) or m.group(2), m.group(3)
    with state.lock:
        if name is None:
            if method == "POST":
                return _put_index(state, body["name"], body, created_only=True)
            if method == "GET":
                return _Reply(200, {"value": list(state.indexes.values())})
        elif rest is None:
            return _index_route(state, method, name, body)
        elif name not in state.indexes:
            raise _HTTPError(404, "ResourceNotFound", f"The index '{name}' was not found.")
        elif rest == "/docs/search.index" and method == "POST":
            return _upload(state, name, body)
        elif rest == "/docs/search.post.search" and method == "POST":
            return _Reply(200, _run_search(state, name, body or {}))
        elif rest in ("/docs/$count", "/docs/$count()") and method == "GET":
            return _Reply(200, raw=str(len(state.documents[name])).encode())
        elif (d := re.match(r"^/docs\('([^']*)'\)$", rest)) and method == "GET":
            doc = state.documents[name].get(d.group(1))
            if doc is None:
                raise _HTTPError(404, "NotFound", "Document not found.")
            return _Reply(200, doc)
    raise _HTTPError(404, "NotFound", f"no route for {method} {path}")


def _index_route(state: EmulatorState, method: str, name: str, body: Any) -> _Reply:
    if method == "PUT":
        return _put_index(state, name, body)
    if method == "GET":
        if name not in state.indexes:
            raise _HTTPError(404, "ResourceNotFound", f"The index '{name}' was not found.")
        return _Reply(200, state.indexes[name])
    if method == "DELETE":
        if name not in state.indexes:
            raise _HTTPError(404, "ResourceNotFound", f"The index '{name}' was not found.")
        del state.indexes[name], state.documents[name]
        return _Reply(204)
    raise _HTTPError(405, "MethodNotAllowed", f"{method} not allowed on an index")


def _put_index(
    state: EmulatorState, name: str, body: dict[str, Any], created_only: bool = False
) -> _Reply:
    if not any(f.get("key") for f in body.get("fields", [])):
        raise _HTTPError(400, "InvalidRequestParameter", "The index must have a key field.")
    exists = name in state.indexes
    if exists and created_only:
        raise _HTTPError(409, "ResourceNameAlreadyInUse", f"Index '{name}' already exists.")
    definition = dict(body, name=name)
    definition["@odata.etag"] = f'"0x{uuid.uuid4().hex[:12].upper()}"'
    state.indexes[name] = definition
    state.documents.setdefault(name, {})
    return _Reply(200 if exists else 201, definition)


def _key_field(definition: dict[str, Any]) -> str:
    return next(f["name"] for f in definition["fields"] if f.get("key"))


def _upload(state: EmulatorState, name: str, body: dict[str, Any]) -> _Reply:
    key_name = _key_field(state.indexes[name])
    store = state.documents[name]
    results = []
    for action in body.get("value", []):
        doc = {k: v for k, v in action.items() if not k.startswith("@search.")}
        kind = action.get("@search.action", "upload")
        key = str(doc.get(key_name))
        ok, status, err = True, 200, None
        if kind == "delete":
            store.pop(key, None)
        elif kind == "merge" and key not in store:
            ok, status, err = False, 404, "Document not found."
        elif kind in ("merge", "mergeOrUpload") and key in store:
            store[key] = {**store[key], **doc}
        else:
            status = 200 if key in store else 201
            store[key] = doc
        results.append({"key": key, "status": ok, "errorMessage": err, "statusCode": status})
    all_ok = all(r["status"] for r in results)
    return _Reply(200 if all_ok else 207, {"value": results})


def _searchable(definition: dict[str, Any]) -> list[str]:
    return [
        f["name"]
        for f in definition["fields"]
        if f.get("type") == "Edm.String" and f.get("searchable", False)
    ]


def _run_search(state: EmulatorState, name: str, body: dict[str, Any]) -> dict[str, Any]:
    definition = state.indexes[name]
    docs = list(state.documents[name].values())
    if body.get("filter"):
        predicate = search_filter.parse(body["filter"])
        docs = [d for d in docs if predicate(d)]
    text = (body.get("search") or "").strip()
    for vq in body.get("vectorQueries") or []:
        if vq.get("kind") == "text":  # an integrated vectorizer: treat as more keywords
            text = f"{text} {vq.get('text', '')}".strip()
    fields_ = _searchable(definition)
    if body.get("searchFields"):
        fields_ = [f.strip() for f in body["searchFields"].split(",")]
    scored = _bm25(docs, text, fields_) if text and text != "*" else [(1.0, d) for d in docs]
    scored.sort(key=lambda sd: (-sd[0], str(sd[1].get(_key_field(definition)))))
    count = len(scored)
    skip, top = int(body.get("skip") or 0), int(body.get("top") or 50)
    page = scored[skip : skip + top]
    select = [s.strip() for s in body["select"].split(",")] if body.get("select") else None
    semantic = body.get("queryType") == "semantic"
    best = max((s for s, _ in page), default=1.0) or 1.0
    values = []
    for score, doc in page:
        row = {k: v for k, v in doc.items() if select is None or k in select}
        row["@search.score"] = round(score, 6)
        if semantic:
            row["@search.rerankerScore"] = round(4.0 * score / best, 6)
        values.append(row)
    result: dict[str, Any] = {"value": values}
    if body.get("count"):
        result["@odata.count"] = count
    return result


def _bm25(
    docs: list[dict[str, Any]], text: str, fields_: list[str], k1: float = 1.2, b: float = 0.75
) -> list[tuple[float, dict[str, Any]]]:
    terms = {t.lower() for t in TOKEN.findall(text)}
    bags = [
        [t.lower() for f in fields_ for t in TOKEN.findall(str(doc.get(f) or ""))] for doc in docs
    ]
    avg = sum(map(len, bags)) / max(1, len(bags)) or 1.0
    df = {t: sum(1 for bag in bags if t in bag) for t in terms}
    out = []
    for doc, bag in zip(docs, bags, strict=True):
        score = 0.0
        for t in terms:
            tf = bag.count(t)
            if tf:
                idf = math.log(1 + (len(docs) - df[t] + 0.5) / (df[t] + 0.5))
                score += idf * tf * (k1 + 1) / (tf + k1 * (1 - b + b * len(bag) / avg))
        if score > 0:
            out.append((score, doc))
    return out


# -- Azure AI Content Safety -------------------------------------------------------------------

BLOCKLIST_PATH = re.compile(
    r"^/contentsafety/text/blocklists(?:/([^/:]+))?(?::(addOrUpdateBlocklistItems|"
    r"removeBlocklistItems))?(?:/blocklistItems(?:/([^/]+))?)?$"
)


def _safety(
    state: EmulatorState,
    method: str,
    path: str,
    query: dict[str, str],
    body: Any,
    fault: Faults | None,
) -> _Reply:
    if path == "/contentsafety/text:analyze" and method == "POST":
        return _Reply(200, _analyze(state, body or {}))
    m = BLOCKLIST_PATH.match(path)
    if not m:
        raise _HTTPError(404, "NotFound", f"no route for {method} {path}")
    name, action, item_id = m.groups()
    items_route = path.endswith("/blocklistItems") or item_id is not None
    with state.lock:
        if name is None:
            return _Reply(200, {"value": list(state.blocklists.values())})
        if method == "PATCH" and not action and not items_route:
            existed = name in state.blocklists
            state.blocklists[name] = {
                "blocklistName": name,
                "description": (body or {}).get("description", ""),
            }
            state.blocklist_items.setdefault(name, {})
            return _Reply(200 if existed else 201, state.blocklists[name])
        if name not in state.blocklists:
            raise _HTTPError(404, "NotFound", f"Blocklist '{name}' does not exist.")
        return _blocklist_route(state, method, name, action, item_id, items_route, body)


def _blocklist_route(
    state: EmulatorState,
    method: str,
    name: str,
    action: str | None,
    item_id: str | None,
    items_route: bool,
    body: Any,
) -> _Reply:
    items = state.blocklist_items[name]
    if action == "addOrUpdateBlocklistItems" and method == "POST":
        added = []
        for item in (body or {}).get("blocklistItems", []):
            existing = next((i for i in items.values() if i["text"] == item["text"]), None)
            iid = item.get("blocklistItemId") or (existing or {}).get("blocklistItemId")
            iid = iid or str(uuid.uuid4())
            items[iid] = {
                "blocklistItemId": iid,
                "text": item["text"],
                "description": item.get("description", ""),
            }
            added.append(items[iid])
        return _Reply(200, {"blocklistItems": added})
    if action == "removeBlocklistItems" and method == "POST":
        for iid in (body or {}).get("blocklistItemIds", []):
            items.pop(iid, None)
        return _Reply(204)  # a 200 here makes the SDK raise
    if items_route and item_id and method == "GET":
        if item_id not in items:
            raise _HTTPError(404, "NotFound", f"Blocklist item '{item_id}' does not exist.")
        return _Reply(200, items[item_id])
    if items_route and method == "GET":
        return _Reply(200, {"value": list(items.values())})
    if method == "GET":
        return _Reply(200, state.blocklists[name])
    if method == "DELETE":
        del state.blocklists[name], state.blocklist_items[name]
        return _Reply(204)
    raise _HTTPError(405, "MethodNotAllowed", f"{method} not allowed here")


def _analyze(state: EmulatorState, body: dict[str, Any]) -> dict[str, Any]:
    text = body.get("text", "")
    if not text or len(text) > 10_000:
        raise _HTTPError(400, "InvalidRequestBody", "Text must be 1 to 10000 characters long.")
    lowered = text.lower()
    matches = []
    for name in body.get("blocklistNames") or []:
        if name not in state.blocklists:
            raise _HTTPError(404, "NotFound", f"Blocklist '{name}' does not exist.")
        for item in state.blocklist_items[name].values():
            if re.search(rf"(?<!\w){re.escape(item['text'].lower())}(?!\w)", lowered):
                matches.append(
                    {
                        "blocklistName": name,
                        "blocklistItemId": item["blocklistItemId"],
                        "blocklistItemText": item["text"],
                    }
                )
    if matches and body.get("haltOnBlocklistHit"):
        return {"blocklistsMatch": matches, "categoriesAnalysis": []}
    severities = dict.fromkeys(CATEGORIES, 0)
    words = set(re.findall(r"[\w-]+", lowered))
    for word, (category, severity) in state.safety_terms.items():
        if word in words:
            severities[category] = max(severities[category], severity)
    four = body.get("outputType", "FourSeverityLevels") == "FourSeverityLevels"
    wanted = body.get("categories") or list(CATEGORIES)
    analysis = [
        {"category": c, "severity": severities[c] - severities[c] % 2 if four else severities[c]}
        for c in CATEGORIES
        if c in wanted
    ]
    return {"blocklistsMatch": matches, "categoriesAnalysis": analysis}


# -- Key Vault ---------------------------------------------------------------------------------


def _keyvault_challenge(state: EmulatorState) -> _Reply:
    # Challenge auth as Key Vault does it; clients must pass `verify_challenge_resource=False`
    # since 127.0.0.1 is not a subdomain of vault.azure.net.
    challenge = (
        'Bearer authorization="https://login.microsoftonline.com/00000000-0000-0000-0000-'
        '000000000000", resource="https://vault.azure.net"'
    )
    reply = _error_reply("keyvault", 401, "Unauthorized", "AKV10000: Request is missing a token.")
    reply.headers["WWW-Authenticate"] = challenge
    return reply


def _keyvault(
    state: EmulatorState,
    method: str,
    path: str,
    query: dict[str, str],
    body: Any,
    fault: Faults | None,
) -> _Reply:
    m = re.match(r"^/secrets/([^/]+)/?([^/]*)$", path)
    if not m or method != "GET":
        raise _HTTPError(404, "NotFound", f"no route for {method} {path}")
    name = m.group(1)
    if name not in state.secrets:
        raise _HTTPError(404, "SecretNotFound", f"A secret with (name/id) {name} was not found.")
    version = m.group(2) or "0" * 32
    return _Reply(
        200,
        {
            "value": state.secrets[name],
            "id": f"{state.base_url}/secrets/{name}/{version}",
            "attributes": {"enabled": True, "created": 1700000000, "updated": 1700000000},
        },
    )


# -- the public handle -------------------------------------------------------------------------


class Emulator:
    """Run the emulator on an ephemeral port; use as a context manager.

    Example:
        >>> with Emulator(tls=True) as emu:
        ...     client = SearchIndexClient(emu.url, cred, connection_verify=emu.ca_pem)

    Args:
        tls: Serve HTTPS with a self-signed certificate (SAN ``IP:127.0.0.1``).
        port: The port to listen on (0: any free port).
        keys: The credentials to accept.
    """

    def __init__(self, tls: bool = False, port: int = 0, keys: EmulatorKeys | None = None):
        self.tls = tls
        self.keys = keys or EmulatorKeys()
        self.state = EmulatorState(self.keys)
        self._tmp = tempfile.TemporaryDirectory(prefix="cpo-emulator-")
        self.ca_pem: str | None = None
        self._server = _Server(port, self.state, self._ssl_context() if tls else None)
        scheme = "https" if tls else "http"
        self.port = self._server.server_address[1]
        self.url = f"{scheme}://127.0.0.1:{self.port}"
        self.state.base_url = self.url
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    def _ssl_context(self) -> ssl.SSLContext:
        import trustme

        ca = trustme.CA()
        cert = ca.issue_cert("127.0.0.1", "localhost")
        self.ca_pem = str(Path(self._tmp.name) / "ca.pem")
        ca.cert_pem.write_to_path(self.ca_pem)
        ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        cert.configure_cert(ctx)
        return ctx

    def start(self) -> Emulator:
        self._thread.start()
        return self

    def close(self) -> None:
        self.state.stop.set()  # wake sleeping timeout faults
        self._server.shutdown()
        self._server.server_close()
        self._tmp.cleanup()

    def __enter__(self) -> Emulator:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()

    @property
    def faults(self) -> Faults:
        return self.state.faults

    @faults.setter
    def faults(self, value: Faults) -> None:
        self.state.set_faults(value)

    def set_faults(self, **kwargs: Any) -> Faults:
        """Replace the faults (``emu.set_faults(status=429, retry_after="2")``)."""
        self.state.set_faults(Faults(**kwargs))
        return self.state.faults

    @property
    def requests(self) -> list[RecordedRequest]:
        with self.state.lock:
            return list(self.state.requests)

    def requests_for(self, service: str) -> list[RecordedRequest]:
        """The recorded requests of one service (``openai``, ``search``, ``safety``, ...)."""
        return [r for r in self.requests if r.service == service]

    def reset(self) -> None:
        """Clear faults and recorded requests (indexes, blocklists and secrets stay)."""
        self.state.reset()
