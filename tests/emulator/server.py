"""A loopback emulator of Azure OpenAI, Azure AI Search, Azure AI Content Safety and Key Vault.

It speaks just enough of each wire protocol (see ``reference/azure-wire-protocol.md``) for the real
SDK clients to work against ``127.0.0.1`` over HTTP or HTTPS, answers deterministically, records
every request, and injects faults on demand. Test code only: nothing under ``cpo/`` imports it.
"""

from __future__ import annotations

import json
import ssl
import tempfile
import threading
from collections.abc import Callable
from dataclasses import asdict
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

from tests.emulator import openai_routes, safety_routes, search_routes
from tests.emulator.core import (
    DEFAULT_SAFETY_TERMS,
    EmulatorKeys,
    EmulatorState,
    Faults,
    HTTPError,
    RecordedRequest,
    Reply,
    error_reply,
)
from tests.emulator.openai_routes import compose_answer

__all__ = [
    "DEFAULT_SAFETY_TERMS",
    "Emulator",
    "EmulatorKeys",
    "Faults",
    "RecordedRequest",
    "compose_answer",
]


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
        except HTTPError as e:
            reply = error_reply(service, e.status, e.code, e.message)
        self._send(reply)

    def _send(self, reply: Reply) -> None:
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


def _control(state: EmulatorState, method: str, path: str, body: Any) -> Reply:
    if path == "/_emulator/faults" and method == "POST":
        try:
            state.set_faults(Faults.from_dict(body or {}))
        except (TypeError, ValueError) as e:
            return Reply(400, {"error": str(e)})
        return Reply(200, asdict(state.faults))
    if path == "/_emulator/faults" and method == "GET":
        return Reply(200, asdict(state.faults))
    if path == "/_emulator/requests" and method == "GET":
        with state.lock:
            return Reply(200, [asdict(r) for r in state.requests])
    if path == "/_emulator/reset" and method == "POST":
        state.reset()
        return Reply(200, {})
    return Reply(404, {"error": f"unknown control route {method} {path}"})


def _dispatch(
    state: EmulatorState,
    service: str,
    method: str,
    path: str,
    query: dict[str, str],
    headers: dict[str, str],
    body: Any,
) -> Reply:
    body_text = json.dumps(body, ensure_ascii=False) if body is not None else ""
    fault = state.fault_for(service, path, body_text)
    if fault is not None:
        reply = _apply_faults(state, fault, service)
        if reply is not None:
            return reply
    if service == "keyvault" and "authorization" not in headers:
        return safety_routes.keyvault_challenge(state)
    _check_auth(state.keys, service, method, path, headers)
    routes: dict[str, Callable[..., Reply]] = {
        "openai": openai_routes.route,
        "search": search_routes.route,
        "safety": safety_routes.route,
        "keyvault": safety_routes.keyvault_route,
    }
    if service not in routes:
        raise HTTPError(404, "NotFound", f"no route for {method} {path}")
    reply = routes[service](state, method, path, query, body, fault)
    if fault is not None and fault.malformed_body and reply.body is not None:
        reply.raw = json.dumps(reply.body).encode()[:-7]
    return reply


def _apply_faults(state: EmulatorState, f: Faults, service: str) -> Reply | None:
    if f.latency_s:
        state.stop.wait(f.latency_s)
    if f.timeout_s:
        state.stop.wait(f.timeout_s)
    if f.down:
        return error_reply(service, 503, "ServiceUnavailable", "The service is down.")
    failing = f.every or f.failure_rate
    if failing and not state.fails_now(f):
        return None
    status = state.status_now(f) or (500 if failing else None)
    if status is None:
        return None
    reply = error_reply(service, status, _code_for(status), f"Injected HTTP {status}.")
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
        raise HTTPError(
            401,
            "401" if service == "openai" else "Unauthorized",
            "Access denied due to invalid subscription key or wrong API endpoint.",
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
