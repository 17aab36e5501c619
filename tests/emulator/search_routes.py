"""Azure AI Search routes: index create/update/get/delete, document upload and stateless search.

Searches score text with BM25; ``vectorQueries`` of kind ``vector`` rank documents by cosine
similarity over the stored vector field (k nearest), and a query with both is fused by
Reciprocal Rank Fusion (k=60), as Azure does for hybrid queries.
"""

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
from tests.emulator.vectors import cosine

TOKEN = re.compile(r"\w+")
VECTOR_TYPE = "Collection(Edm.Single)"
RRF_K = 60  # Azure's Reciprocal Rank Fusion constant


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
    _check_vector_fields(body)
    exists = name in state.indexes
    if exists and created_only:
        raise HTTPError(409, "ResourceNameAlreadyInUse", f"Index '{name}' already exists.")
    definition = dict(body, name=name)
    definition["@odata.etag"] = f'"0x{uuid.uuid4().hex[:12].upper()}"'
    state.indexes[name] = definition
    state.documents.setdefault(name, {})
    return Reply(200 if exists else 201, definition)


def _check_vector_fields(body: dict[str, Any]) -> None:
    """Vector fields need dimensions and a profile whose algorithm exists, as on Azure."""
    config = body.get("vectorSearch") or {}
    algorithms = {a.get("name"): a for a in config.get("algorithms") or []}
    profiles = {p.get("name"): p for p in config.get("profiles") or []}
    for a in algorithms.values():
        if a.get("kind") not in ("hnsw", "exhaustiveKnn"):
            raise HTTPError(400, "InvalidRequestParameter", f"Unknown algorithm kind {a!r}.")
    for p in profiles.values():
        if p.get("algorithm") not in algorithms:
            raise HTTPError(
                400,
                "InvalidRequestParameter",
                f"Vector profile '{p.get('name')}' refers to unknown algorithm "
                f"'{p.get('algorithm')}'.",
            )
    for f in _vector_fields(body):
        dims = f.get("dimensions")
        if not isinstance(dims, int) or not 2 <= dims <= 4096:
            raise HTTPError(
                400, "InvalidRequestParameter", f"Vector field '{f['name']}' needs dimensions."
            )
        if f.get("vectorSearchProfile") not in profiles:
            raise HTTPError(
                400,
                "InvalidRequestParameter",
                f"Vector field '{f['name']}' refers to unknown vector search profile "
                f"'{f.get('vectorSearchProfile')}'.",
            )


def _vector_fields(definition: dict[str, Any]) -> list[dict[str, Any]]:
    return [f for f in definition.get("fields", []) if f.get("type") == VECTOR_TYPE]


def _key_field(definition: dict[str, Any]) -> str:
    return next(f["name"] for f in definition["fields"] if f.get("key"))


def _upload(state: EmulatorState, name: str, body: dict[str, Any]) -> Reply:
    definition = state.indexes[name]
    key_name = _key_field(definition)
    store = state.documents[name]
    results = []
    actions = body.get("value", [])
    _check_vectors(definition, actions)
    for action in actions:
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


def _check_vectors(definition: dict[str, Any], actions: list[dict[str, Any]]) -> None:
    """A vector of the wrong length fails the whole request (HTTP 400), as on Azure."""
    for f in _vector_fields(definition):
        for action in actions:
            vector = action.get(f["name"])
            if vector is not None and len(vector) != f["dimensions"]:
                raise HTTPError(
                    400,
                    "InvalidDocument",
                    f"The vector field '{f['name']}' dimensionality must match the field "
                    f"definition's 'dimensions' property. Expected: '{f['dimensions']}'. "
                    f"Actual: '{len(vector)}'.",
                )


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
    vector_queries = []
    for vq in body.get("vectorQueries") or []:
        if vq.get("kind") == "text":  # an integrated vectorizer: treat as more keywords
            text = f"{text} {vq.get('text', '')}".strip()
        elif vq.get("kind") == "vector":
            vector_queries.append(vq)
        else:
            raise HTTPError(400, "InvalidRequestParameter", f"Unknown vector query {vq!r}.")
    fields_ = _searchable(definition)
    if body.get("searchFields"):
        fields_ = [f.strip() for f in body["searchFields"].split(",")]
    scored = _score(definition, docs, text, fields_, vector_queries)
    count = len(scored)
    skip, top = int(body.get("skip") or 0), int(body.get("top") or 50)
    page = scored[skip : skip + top]
    select = [s.strip() for s in body["select"].split(",")] if body.get("select") else None
    semantic = body.get("queryType") == "semantic"
    best = max((s for s, _ in page), default=1.0) or 1.0
    values = []
    hidden = {f["name"] for f in definition["fields"] if f.get("retrievable") is False}
    for score, doc in page:
        row = {
            k: v for k, v in doc.items() if (k in select if select is not None else k not in hidden)
        }
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


def _score(
    definition: dict[str, Any],
    docs: list[dict[str, Any]],
    text: str,
    fields_: list[str],
    vector_queries: list[dict[str, Any]],
) -> list[tuple[float, dict[str, Any]]]:
    """Text alone: BM25. Vectors alone: similarity. Both (hybrid): RRF over every ranking."""
    key = _key_field(definition)
    has_text = bool(text) and text != "*"
    if not vector_queries:
        return _ranked(_bm25(docs, text, fields_) if has_text else [(1.0, d) for d in docs], key)
    rankings = [
        (float(vq.get("weight") or 1.0), _knn(definition, docs, vq, key)) for vq in vector_queries
    ]
    if has_text:
        rankings.append((1.0, _ranked(_bm25(docs, text, fields_), key)))
    if len(rankings) == 1:
        return rankings[0][1]  # one vector query alone keeps its similarity scores
    return _rrf(rankings, key)


def _ranked(
    scored: list[tuple[float, dict[str, Any]]], key: str
) -> list[tuple[float, dict[str, Any]]]:
    """Best first; ties broken by key so answers are deterministic."""
    return sorted(scored, key=lambda sd: (-sd[0], str(sd[1].get(key))))


def _knn(
    definition: dict[str, Any], docs: list[dict[str, Any]], vq: dict[str, Any], key: str
) -> list[tuple[float, dict[str, Any]]]:
    """The `k` nearest documents by cosine, scored ``1 / (1 + (1 - cosine))`` as Azure does."""
    names = [f.strip() for f in str(vq.get("fields") or "").split(",") if f.strip()]
    known = {f["name"]: f for f in _vector_fields(definition)}
    unknown = [n for n in names if n not in known]
    if not names or unknown:
        raise HTTPError(
            400, "InvalidRequestParameter", f"Unknown vector field(s) {unknown or names!r}."
        )
    vector = vq.get("vector") or []
    for n in names:
        if len(vector) != known[n]["dimensions"]:
            raise HTTPError(
                400,
                "InvalidRequestParameter",
                f"The vector query's dimensions ({len(vector)}) do not match field '{n}' "
                f"({known[n]['dimensions']}).",
            )
    scored = []
    for doc in docs:
        sims = [cosine(vector, doc[n]) for n in names if doc.get(n)]
        if sims:
            scored.append((1.0 / (2.0 - max(sims)), doc))
    k = int(vq.get("k") or 50)
    return _ranked(scored, key)[:k]


def _rrf(
    rankings: list[tuple[float, list[tuple[float, dict[str, Any]]]]], key: str
) -> list[tuple[float, dict[str, Any]]]:
    """Reciprocal Rank Fusion: each ranking adds ``weight / (60 + rank)`` (ranks from 1)."""
    fused: dict[str, float] = {}
    docs: dict[str, dict[str, Any]] = {}
    for weight, ranking in rankings:
        for rank, (_, doc) in enumerate(ranking, start=1):
            k = str(doc.get(key))
            fused[k] = fused.get(k, 0.0) + weight / (RRF_K + rank)
            docs[k] = doc
    return _ranked([(score, docs[k]) for k, score in fused.items()], key)
