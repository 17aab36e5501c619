"""Azure OpenAI routes: chat, Responses and embeddings (classic and v1), deterministic."""

from __future__ import annotations

import base64
import json
import math
import re
import struct
import time
import uuid
from typing import Any

from tests.emulator import judge_routes
from tests.emulator.core import (
    EmulatorState,
    Faults,
    HTTPError,
    Reply,
    chat_completion,
)
from tests.emulator.vectors import DEFAULT_DIMENSIONS, embed_text

DOC_LINE = re.compile(r"^\s*\[([A-Za-z0-9_.:\-]+)\]\s*([^:\n]*):\s*(.+?)\s*$", re.MULTILINE)
SENTENCE_END = re.compile(r"(?<=[.!?])\s+")
TONE_LINE = re.compile(r"^Tone:\s*([\w-]+)\s*$", re.MULTILINE)
# A model words the unsubscribe line its own way (the project's footer carries the real one).
OWN_UNSUBSCRIBE = "Prefer fewer emails? You can unsubscribe at any time with the link below."


CHAT_PATH = re.compile(r"^/openai/deployments/([^/]+)/chat/completions$")
EMBEDDINGS_PATH = re.compile(r"^/openai/deployments/([^/]+)/embeddings$")
MAX_EMBEDDING_INPUTS = 2048


def route(
    state: EmulatorState,
    method: str,
    path: str,
    query: dict[str, str],
    body: Any,
    fault: Faults | None,
) -> Reply:
    if method != "POST" or not isinstance(body, dict):
        raise HTTPError(404, "NotFound", f"no route for {method} {path}")
    m = CHAT_PATH.match(path)
    if m or path == "/openai/v1/chat/completions":
        if m and "api-version" not in query:
            raise HTTPError(404, "404", "Resource not found (api-version missing).")
        if judge_routes.is_judge(body):  # a safety judge's verdict (tests/emulator/judge_routes.py)
            return judge_routes.chat(state, body, m.group(1) if m else body.get("model", ""))
        return _chat(body, m.group(1) if m else body.get("model", ""), fault or Faults())
    e = EMBEDDINGS_PATH.match(path)
    if e or path == "/openai/v1/embeddings":
        if e and "api-version" not in query:
            raise HTTPError(404, "404", "Resource not found (api-version missing).")
        return _embeddings(body, e.group(1) if e else str(body.get("model", "")))
    if path in ("/openai/responses", "/openai/v1/responses"):
        if path == "/openai/responses" and "api-version" not in query:
            raise HTTPError(404, "404", "Resource not found (api-version missing).")
        return _responses(body, fault or Faults())
    raise HTTPError(404, "404", f"Resource not found: {path}")


def _prompt_filter_error(message: str = "The prompt was filtered.") -> Reply:
    verdict = {"filtered": True, "severity": "high"}
    return Reply(
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


def compose_answer(prompt_text: str, uncited_claim: str | None = None) -> dict[str, Any]:
    """The deterministic answer: sentences copied verbatim from the documents in the prompt.

    Like a model that follows its instructions, it opens with a line naming the prompt's
    ``Tone:`` (so tones differ) and ends with an unsubscribe line in its own words, as real
    models do whatever they are told. `uncited_claim` is a sentence added without a
    citation, as a model that makes things up would.
    """
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
    if uncited_claim:
        sentences.append(uncited_claim)
    body = " ".join(sentences)
    tone = TONE_LINE.search(prompt_text)
    if tone and tone.group(1) != "control":  # each tone opens differently, as a model would
        body = f"Hello {{{{ first_name }}}}, a {tone.group(1)} note from us.\n\n{body}"
    body = f"{body}\n\n{OWN_UNSUBSCRIBE}"
    title = chosen[0][1][0] or chosen[0][0]
    subject = title if len(title) <= 60 else title[:57].rstrip() + "..."
    return {"subject": subject, "body": body, "citations": [d for d, _ in chosen]}


def _answer_text(prompt_text: str, f: Faults) -> str:
    if f.answer_text is not None:
        # A literal answer; {doc1} and {doc2} name the first two documents of the prompt.
        ids = [d for d, _, _ in DOC_LINE.findall(prompt_text)] + ["D1", "D2"]
        return f.answer_text.replace("{doc1}", ids[0]).replace("{doc2}", ids[1])
    if f.malformed_json:
        return "Sure! Here is your message: subject: Hello, body: no JSON today"
    text = json.dumps(compose_answer(prompt_text, f.uncited_claim))
    if f.fenced_json:
        return f"Here you go:\n```json\n{text}\n```\nAnything else?"
    return text


def _tokens(text: str) -> int:
    return max(1, math.ceil(len(text) / 4))


def _rejected_format(requested: Any, f: Faults) -> Reply | None:
    """llama.cpp's answer to a response format it cannot do: HTTP 500 saying so."""
    kind = requested.get("type") if isinstance(requested, dict) else None
    if kind and kind in (f.reject_formats or []):
        message = f"response_format type {kind!r} is not supported by this server"
        return Reply(500, {"error": {"code": 500, "message": message, "type": "server_error"}})
    return None


def _chat(body: dict[str, Any], model: str, f: Faults) -> Reply:
    prompt_text = "\n".join(_texts_of(body.get("messages", [])))
    if f.content_filter == "prompt":
        return _prompt_filter_error()
    if rejected := _rejected_format(body.get("response_format"), f):
        return rejected
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
    usage = {
        "prompt_tokens": prompt,
        "completion_tokens": completion,
        "total_tokens": prompt + completion,
    }
    return chat_completion(
        model,
        content,
        finish=finish,
        usage=None if f.no_usage else usage,
        choice={"content_filter_results": filters},
        extra={"prompt_filter_results": [{"prompt_index": 0, "content_filter_results": filters}]},
        headers={"x-ratelimit-remaining-requests": "999", "x-ratelimit-remaining-tokens": "99999"},
    )


def _responses(body: dict[str, Any], f: Faults) -> Reply:
    prompt_text = "\n".join(_texts_of(body.get("instructions")) + _texts_of(body.get("input")))
    if f.content_filter == "prompt":
        return _prompt_filter_error()
    if rejected := _rejected_format((body.get("text") or {}).get("format"), f):
        return rejected
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
    return Reply(
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


def _embedding_inputs(value: Any) -> list[str]:
    """The texts of an embeddings `input`: a string or a list of strings (token arrays as text)."""
    items = (
        value if isinstance(value, list) and not all(isinstance(v, int) for v in value) else [value]
    )
    texts = []
    for item in items:
        text = " ".join(map(str, item)) if isinstance(item, list) else item
        if not isinstance(text, str) or not text:
            raise HTTPError(400, "invalid_request", "'input' must be non-empty strings.")
        texts.append(text)
    if not texts or len(texts) > MAX_EMBEDDING_INPUTS:
        raise HTTPError(400, "invalid_request", f"'input' must hold 1 to {MAX_EMBEDDING_INPUTS}.")
    return texts


def _embeddings(body: dict[str, Any], model: str) -> Reply:
    """Deterministic vectors (hashed bag of words) of the requested or default dimensions."""
    texts = _embedding_inputs(body.get("input"))
    dimensions = body.get("dimensions") or DEFAULT_DIMENSIONS
    if not isinstance(dimensions, int) or not 1 <= dimensions <= 3072:
        raise HTTPError(400, "invalid_request", f"dimensions must be 1 to 3072, got {dimensions}")
    as_base64 = body.get("encoding_format") == "base64"  # what the openai SDK asks for by default
    data = []
    for i, text in enumerate(texts):
        vector: Any = embed_text(text, dimensions)
        if as_base64:
            vector = base64.b64encode(struct.pack(f"<{dimensions}f", *vector)).decode()
        data.append({"object": "embedding", "index": i, "embedding": vector})
    tokens = sum(_tokens(t) for t in texts)
    return Reply(
        200,
        {
            "object": "list",
            "data": data,
            "model": model,
            "usage": {"prompt_tokens": tokens, "total_tokens": tokens},
        },
        headers={"x-ratelimit-remaining-requests": "999", "x-ratelimit-remaining-tokens": "99999"},
    )
