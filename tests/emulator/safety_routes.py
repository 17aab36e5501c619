"""Azure AI Content Safety (text:analyze, blocklists) and Key Vault secret routes."""

from __future__ import annotations

import re
import uuid
from typing import Any

from tests.emulator.core import (
    CATEGORIES,
    EmulatorState,
    Faults,
    HTTPError,
    Reply,
    error_reply,
    rate_text,
)

BLOCKLIST_PATH = re.compile(
    r"^/contentsafety/text/blocklists(?:/([^/:]+))?(?::(addOrUpdateBlocklistItems|"
    r"removeBlocklistItems))?(?:/blocklistItems(?:/([^/]+))?)?$"
)


def route(
    state: EmulatorState,
    method: str,
    path: str,
    query: dict[str, str],
    body: Any,
    fault: Faults | None,
) -> Reply:
    if path == "/contentsafety/text:analyze" and method == "POST":
        return Reply(200, _analyze(state, body or {}))
    if path == "/contentsafety/text:detectGroundedness" and method == "POST":
        if query.get("api-version") != "2024-09-15-preview":
            raise HTTPError(404, "NotFound", "groundedness needs api-version 2024-09-15-preview")
        return Reply(200, _groundedness(body or {}))
    if path == "/contentsafety/text:shieldPrompt" and method == "POST":
        return Reply(200, _shield_prompt(body or {}))
    m = BLOCKLIST_PATH.match(path)
    if not m:
        raise HTTPError(404, "NotFound", f"no route for {method} {path}")
    name, action, item_id = m.groups()
    items_route = path.endswith("/blocklistItems") or item_id is not None
    with state.lock:
        if name is None:
            return Reply(200, {"value": list(state.blocklists.values())})
        if method == "PATCH" and not action and not items_route:
            existed = name in state.blocklists
            state.blocklists[name] = {
                "blocklistName": name,
                "description": (body or {}).get("description", ""),
            }
            state.blocklist_items.setdefault(name, {})
            return Reply(200 if existed else 201, state.blocklists[name])
        if name not in state.blocklists:
            raise HTTPError(404, "NotFound", f"Blocklist '{name}' does not exist.")
        return _blocklist_route(state, method, name, action, item_id, items_route, body)


def _blocklist_route(
    state: EmulatorState,
    method: str,
    name: str,
    action: str | None,
    item_id: str | None,
    items_route: bool,
    body: Any,
) -> Reply:
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
        return Reply(200, {"blocklistItems": added})
    if action == "removeBlocklistItems" and method == "POST":
        for iid in (body or {}).get("blocklistItemIds", []):
            items.pop(iid, None)
        return Reply(204)  # a 200 here makes the SDK raise
    if items_route and item_id and method == "GET":
        if item_id not in items:
            raise HTTPError(404, "NotFound", f"Blocklist item '{item_id}' does not exist.")
        return Reply(200, items[item_id])
    if items_route and method == "GET":
        return Reply(200, {"value": list(items.values())})
    if method == "GET":
        return Reply(200, state.blocklists[name])
    if method == "DELETE":
        del state.blocklists[name], state.blocklist_items[name]
        return Reply(204)
    raise HTTPError(405, "MethodNotAllowed", f"{method} not allowed here")


_WORD = re.compile(r"[a-z0-9]{4,}")


def _groundedness(body: dict[str, Any]) -> dict[str, Any]:
    """A stand-in verdict: a sentence of 5+ long words (4+ letters) is ungrounded when under half
    of them appear in the sources. Not the service's model; the wire shape is the service's."""
    text = body.get("text")
    sources = body.get("groundingSources")
    if not isinstance(text, str) or not isinstance(sources, list) or not sources:
        raise HTTPError(400, "InvalidRequestBody", "text and groundingSources are required.")
    known = set(_WORD.findall(" ".join(map(str, sources)).lower()))
    details, ungrounded_chars = [], 0
    for sentence in re.split(r"(?<=[.!?])\s+|\n+", text):
        words = _WORD.findall(sentence.lower())
        if len(words) >= 5 and sum(w in known for w in words) / len(words) < 0.5:
            details.append({"text": sentence, "offset": {"utf8": text.find(sentence)}})
            ungrounded_chars += len(sentence)
    return {
        "ungroundedDetected": bool(details),
        "ungroundedPercentage": round(ungrounded_chars / max(1, len(text)), 4),
        "ungroundedDetails": details,
    }


def _analyze(state: EmulatorState, body: dict[str, Any]) -> dict[str, Any]:
    text = body.get("text", "")
    if not text or len(text) > 10_000:
        raise HTTPError(400, "InvalidRequestBody", "Text must be 1 to 10000 characters long.")
    lowered = text.lower()
    matches = []
    for name in body.get("blocklistNames") or []:
        if name not in state.blocklists:
            raise HTTPError(404, "NotFound", f"Blocklist '{name}' does not exist.")
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
    severities = rate_text(state, text)
    four = body.get("outputType", "FourSeverityLevels") == "FourSeverityLevels"
    wanted = body.get("categories") or list(CATEGORIES)
    analysis = [
        {"category": c, "severity": severities[c] - severities[c] % 2 if four else severities[c]}
        for c in CATEGORIES
        if c in wanted
    ]
    return {"blocklistsMatch": matches, "categoriesAnalysis": analysis}


SHIELD_MARKERS = (
    "ignore previous instructions",
    "ignore all previous instructions",
    "system prompt",
    "[[attack]]",
    "assistant, please",
)
"""Texts the emulated Prompt Shields flag as attacks (case-insensitive substrings)."""


def _shield_prompt(body: dict[str, Any]) -> dict[str, Any]:
    """Prompt Shields: ``userPromptAnalysis`` and one ``documentsAnalysis`` entry per document."""
    prompt = body.get("userPrompt")
    documents = body.get("documents") or []
    if not isinstance(prompt, str) or not isinstance(documents, list):
        raise HTTPError(400, "InvalidRequestBody", "userPrompt must be a string, documents a list.")
    if len(prompt) > 10_000 or any(not isinstance(d, str) or len(d) > 10_000 for d in documents):
        raise HTTPError(400, "InvalidRequestBody", "Each text must be at most 10000 characters.")

    def attacked(text: str) -> bool:
        lowered = text.lower()
        return any(marker in lowered for marker in SHIELD_MARKERS)

    return {
        "userPromptAnalysis": {"attackDetected": attacked(prompt)},
        "documentsAnalysis": [{"attackDetected": attacked(d)} for d in documents],
    }


# -- Key Vault ---------------------------------------------------------------------------------


def keyvault_challenge(state: EmulatorState) -> Reply:
    # Challenge auth as Key Vault does it; clients must pass `verify_challenge_resource=False`
    # since 127.0.0.1 is not a subdomain of vault.azure.net.
    challenge = (
        'Bearer authorization="https://login.microsoftonline.com/00000000-0000-0000-0000-'
        '000000000000", resource="https://vault.azure.net"'
    )
    reply = error_reply("keyvault", 401, "Unauthorized", "AKV10000: Request is missing a token.")
    reply.headers["WWW-Authenticate"] = challenge
    return reply


def keyvault_route(
    state: EmulatorState,
    method: str,
    path: str,
    query: dict[str, str],
    body: Any,
    fault: Faults | None,
) -> Reply:
    m = re.match(r"^/secrets/([^/]+)/?([^/]*)$", path)
    if not m or method != "GET":
        raise HTTPError(404, "NotFound", f"no route for {method} {path}")
    name = m.group(1)
    if name not in state.secrets:
        raise HTTPError(404, "SecretNotFound", f"A secret with (name/id) {name} was not found.")
    version = m.group(2) or "0" * 32
    return Reply(
        200,
        {
            "value": state.secrets[name],
            "id": f"{state.base_url}/secrets/{name}/{version}",
            "attributes": {"enabled": True, "created": 1700000000, "updated": 1700000000},
        },
    )
