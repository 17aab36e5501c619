"""Azure AI Search routes: index create/update/get/delete, document upload and stateless search."""

from __future__ import annotations

import math
import re
import uuid
from typing import Any

from tests.emulator import search_filter
from tests.emulator.core import (
    EmulatorState,
    Faults,
    HTTPError,
    Reply,
)

TOKEN = re.compile(r"\w+")


INDEX_PATH = re.compile(r"^/indexes(?:\('([^']+)'\)|/([^/()]+))?(/docs.*)?$")


def route(
    state: EmulatorState,
    method: str,
    path: str,
    query: dict[str, str],
    body: Any,
    fault: Faults | None,
) -> Reply:
    m = INDEX_PATH.match(path)
    if not m:
        raise HTTPError(404, "NotFound", f"no route for {method} {path}")
    name, rest = m.group(1) or m.group(2), m.group(3)
    with state.lock:
        if name is None:
            if method == "POST":
                return _put_index(state, body["name"], body, created_only=True)
            if method == "GET":
                return Reply(200, {"value": list(state.indexes.values())})
        elif rest is None:
            return _index_route(state, method, name, body)
        elif name not in state.indexes:
            raise HTTPError(404, "ResourceNotFound", f"The index '{name}' was not found.")
        elif rest == "/docs/search.index" and method == "POST":
            return _upload(state, name, body)
        elif rest == "/docs/search.post.search" and method == "POST":
            return Reply(200, _run_search(state, name, body or {}))
        elif rest in ("/docs/$count", "/docs/$count()") and method == "GET":
            return Reply(200, raw=str(len(state.documents[name])).encode())
        elif (d := re.match(r"^/docs\('([^']*)'\)$", rest)) and method == "GET":
            doc = state.documents[name].get(d.group(1))
            if doc is None:
                raise HTTPError(404, "NotFound", "Document not found.")
            return Reply(200, doc)
    raise HTTPError(404, "NotFound", f"no route for {method} {path}")


def _index_route(state: EmulatorState, method: str, name: str, body: Any) -> Reply:
    if method == "PUT":
        return _put_index(state, name, body)
    if method == "GET":
        if name not in state.indexes:
            raise HTTPError(404, "ResourceNotFound", f"The index '{name}' was not found.")
        return Reply(200, state.indexes[name])
    if method == "DELETE":
        if name not in state.indexes:
            raise HTTPError(404, "ResourceNotFound", f"The index '{name}' was not found.")
        del state.indexes[name], state.documents[name]
        return Reply(204)
    raise HTTPError(405, "MethodNotAllowed", f"{method} not allowed on an index")


def _put_index(
    state: EmulatorState, name: str, body: dict[str, Any], created_only: bool = False
) -> Reply:
    if not any(f.get("key") for f in body.get("fields", [])):
        raise HTTPError(400, "InvalidRequestParameter", "The index must have a key field.")
    exists = name in state.indexes
    if exists and created_only:
        raise HTTPError(409, "ResourceNameAlreadyInUse", f"Index '{name}' already exists.")
    definition = dict(body, name=name)
    definition["@odata.etag"] = f'"0x{uuid.uuid4().hex[:12].upper()}"'
    state.indexes[name] = definition
    state.documents.setdefault(name, {})
    return Reply(200 if exists else 201, definition)


def _key_field(definition: dict[str, Any]) -> str:
    return next(f["name"] for f in definition["fields"] if f.get("key"))


def _upload(state: EmulatorState, name: str, body: dict[str, Any]) -> Reply:
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
    return Reply(200 if all_ok else 207, {"value": results})


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
