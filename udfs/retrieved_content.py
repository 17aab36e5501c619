"""Retrieve approved content per segment (offline BM25 or Azure AI Search, per the target).

Grain: segment x rank, plus the control message's documents (``segment_id`` NULL). Only
approved, unexpired documents are indexed; documents flagged as prompt injection are left
out unless ``vars.retrieval.exclude_flagged`` is false. A segment with no hit is recorded in
``run_errors`` and gets no personalised variant (control is used).
"""

from __future__ import annotations

import pandas as pd
from _content import active_documents, segment_query

from cpo.providers.azure_content_safety import shield_documents
from cpo.providers.base import RetrievalRequest

COLUMNS = ["segment_id", "rank", "document_id", "score", "query"]
CONTROL_KEY = "__control__"


def model(ctx):
    provider = ctx.provider("retrieval")
    ctx.ref("stg_content")  # read by active_documents: declared here so the DAG orders it first
    exclude_flagged = ctx.var("retrieval.exclude_flagged", True, expect=bool)
    documents = active_documents(ctx, exclude_flagged=exclude_flagged)
    if exclude_flagged:  # Azure Prompt Shields, when the target screens with Azure (fail-closed)
        documents = shield_documents(ctx, documents)
    provider.index(documents)
    top_k = ctx.var("retrieval.top_k", 4, expect=int)
    min_score = ctx.var("retrieval.min_score", 0.0, expect=(int, float))
    keywords = ctx.var("retrieval.keywords", "", expect=str)
    profiles = ctx.ref("segment_profiles").df().to_dict("records")
    # The control message is grounded too: its documents come from a generic query (key "").
    control = {"segment_id": CONTROL_KEY, "segment_name": "", "dominant_tier": "all"}
    requests = [
        RetrievalRequest(
            key=str(p["segment_id"]),
            query=segment_query(p, keywords),
            top_k=top_k,
            # NULL (no tier mapped) arrives as NaN in pandas 3's string columns: not a tier.
            audience=(p["dominant_tier"] or None)
            if isinstance(p.get("dominant_tier"), str)
            else None,
            min_score=float(min_score),
        )
        for p in [*profiles, control]
    ]
    outcomes = provider.call_all("search", requests)  # cached per indexed corpus
    rows = []
    for request, outcome in zip(requests, outcomes, strict=True):
        if outcome.error:
            ctx.record_error(request.key, f"retrieval failed: {outcome.error}")
            continue
        if not outcome.result:
            ctx.record_error(request.key, "no_documents: retrieval found nothing for this segment")
            continue
        for rank, hit in enumerate(outcome.result, start=1):
            segment = None if request.key == CONTROL_KEY else request.key
            rows.append([segment, rank, hit.document_id, float(hit.score), request.query])
    ctx.log.info("retrieval done", extra={"segments": len(requests), "rows": len(rows)})
    return pd.DataFrame(rows, columns=COLUMNS).astype(
        {
            "segment_id": "string",
            "rank": "int32",
            "document_id": "string",
            "score": "float64",
            "query": "string",
        }
    )
