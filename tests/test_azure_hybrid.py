"""Hybrid Azure AI Search (text + client-side Azure OpenAI vectors) against the emulator.

Everything goes through the real SDKs (``azure-search-documents`` and ``openai``) to the loopback
emulator, which embeds deterministically (hashed bag of words) and fuses text and vector
rankings with Reciprocal Rank Fusion, as Azure does.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from azure.core.credentials import AzureKeyCredential
from azure.core.exceptions import HttpResponseError
from azure.search.documents.indexes import SearchIndexClient
from azure.search.documents.indexes.models import (
    SearchField,
    SearchFieldDataType,
    SearchIndex,
    SimpleField,
)

from cpo.engine.calls import LEDGER_COLUMNS, CallLayer, CallStore
from cpo.engine.config import CallSettings, Price
from cpo.engine.services import StepProvider
from cpo.errors import ConfigurationError, ProviderError
from cpo.providers.azure_search import azure_search_factory
from cpo.providers.base import Document, Hits, RetrievalRequest
from tests.emulator import Emulator, FakeTokenCredential, RecordedRequest
from tests.emulator.vectors import embed_text

DEPLOYMENT = "cpo-embeddings"
DIMS = 64  # small vectors keep the wire and the test fast; the default (1536) is tested too
DOCS = (
    Document("D1", "Spring sale", "Jackets are 20% off this week. Ends Sunday.", "promo", "all"),
    Document("D2", "VIP preview", "Members see new jackets first. Sign in.", "promo", "vip"),
    Document("D3", "Garden tips", "Water roses at dawn. Mulch keeps soil moist.", "howto", "all"),
    Document("D4", "Student deal", "Students get jackets cheaper.", "promo", "student"),
    Document("D5", "Old coats", "Last season coats clearance.", "promo", "all"),
)
EMBED_PATH = f"/openai/deployments/{DEPLOYMENT}/embeddings"
SEARCH_PATH = "/indexes('cpo-content')/docs/search.post.search"


@pytest.fixture(scope="module")
def emu(emulators: Callable[..., Emulator]) -> Emulator:
    return emulators()


@pytest.fixture(autouse=True)
def _clean(emu: Emulator) -> None:
    emu.reset()


def hybrid_env(emu: Emulator, **changes: str | None) -> dict[str, str]:
    """Search and embedding variables for `emu`; a None value leaves a variable out."""
    env = {
        "AZURE_SEARCH_ENDPOINT": emu.url,
        "AZURE_SEARCH_INDEX_NAME": "cpo-content",
        "AZURE_SEARCH_ADMIN_KEY": emu.keys.search_admin,
        "AZURE_SEARCH_QUERY_KEY": emu.keys.search_query,
        "AZURE_OPENAI_ENDPOINT": emu.url,
        "AZURE_OPENAI_API_KEY": emu.keys.openai,
        "AZURE_OPENAI_EMBEDDING_DEPLOYMENT": DEPLOYMENT,
    }
    env.update(changes)  # type: ignore[arg-type]
    return {k: v for k, v in env.items() if v is not None}


def hybrid(emu: Emulator, env: dict[str, str] | None = None, **settings: Any) -> Any:
    """An indexed hybrid provider (emulator requests of the indexing cleared)."""
    provider = azure_search_factory(
        {"mode": "hybrid", "dimensions": DIMS, **settings}, env or hybrid_env(emu)
    )
    provider.index(list(DOCS))
    return provider


def of(requests: list[RecordedRequest], path_end: str) -> list[RecordedRequest]:
    return [r for r in requests if r.path.endswith(path_end)]


def test_index_carries_vector_field_profile_and_document_vectors(emu: Emulator) -> None:
    hybrid(emu, batch_size=3, embedding_batch_size=2)
    (put,) = [r for r in emu.requests if r.method == "PUT"]
    (vector_field,) = [f for f in put.body["fields"] if f["name"] == "body_vector"]
    assert vector_field["type"] == "Collection(Edm.Single)"
    assert vector_field["dimensions"] == DIMS
    assert vector_field["retrievable"] is False
    profiles = {p["name"]: p for p in put.body["vectorSearch"]["profiles"]}
    algorithms = {a["name"]: a for a in put.body["vectorSearch"]["algorithms"]}
    algorithm = algorithms[profiles[vector_field["vectorSearchProfile"]]["algorithm"]]
    assert algorithm["kind"] == "hnsw" and algorithm["hnswParameters"]["metric"] == "cosine"
    assert "semantic" not in put.body or put.body["semantic"] is None  # semantic: false
    # 5 documents, upload batches of 3, embedding batches of 2: [2, 1] then [2].
    embeds = of(emu.requests, "/embeddings")
    assert [len(r.body["input"]) for r in embeds] == [2, 1, 2]
    assert all(r.body["model"] == DEPLOYMENT and r.body["dimensions"] == DIMS for r in embeds)
    uploaded = [doc for r in of(emu.requests, "/docs/search.index") for doc in r.body["value"]]
    assert [d["document_id"] for d in uploaded] == ["D1", "D2", "D3", "D4", "D5"]
    for doc, source in zip(uploaded, DOCS, strict=True):
        expected = embed_text(f"{source.title}\n{source.body}", DIMS)
        assert doc["body_vector"] == pytest.approx(expected, abs=1e-6)


def test_embeddings_use_the_deployment_path_and_api_key(emu: Emulator) -> None:
    hybrid(emu)
    embeds = of(emu.requests, "/embeddings")
    assert embeds and all(r.path == EMBED_PATH for r in embeds)
    assert {r.api_version for r in embeds} == {"2024-10-21"}
    assert all(r.headers["api-key"] == emu.keys.openai for r in embeds)
    search_calls = [r for r in emu.requests if r.service == "search"]
    assert all(r.headers["api-key"] == emu.keys.search_admin for r in search_calls)


def test_hybrid_search_sends_text_and_vector_and_ranks_relevant_first(emu: Emulator) -> None:
    provider = hybrid(emu)
    emu.reset()
    hits = provider.search(RetrievalRequest("seg", "garden roses", top_k=3))
    assert hits[0].document_id == "D3"
    # First in both rankings: 1/61 + 1/61 by Reciprocal Rank Fusion.
    assert hits[0].score == pytest.approx(2 / 61, abs=1e-5)
    embed, query = emu.requests
    assert embed.path == EMBED_PATH and embed.body["input"] == ["garden roses"]
    assert query.path == SEARCH_PATH and query.headers["api-key"] == emu.keys.search_query
    assert query.body["search"] == "garden roses"
    (vq,) = query.body["vectorQueries"]
    assert (vq["kind"], vq["fields"], vq["k"]) == ("vector", "body_vector", 3)
    assert vq["vector"] == pytest.approx(embed_text("garden roses", DIMS), abs=1e-6)
    assert "queryType" not in query.body


def test_vectors_find_what_the_words_alone_miss(emu: Emulator) -> None:
    """'rose' is not a word in any document ('roses' is): full text misses, hybrid finds it."""
    fulltext = azure_search_factory({}, hybrid_env(emu))
    fulltext.index(list(DOCS))
    request = RetrievalRequest("seg", "rose", top_k=2)
    assert fulltext.search(request) == []
    assert [h.document_id for h in hybrid(emu).search(request)][:1] == ["D3"]


def test_hybrid_with_semantic_ranking_and_audience_filter(emu: Emulator) -> None:
    provider = hybrid(emu, semantic=True)
    put = next(r for r in emu.requests if r.method == "PUT")
    assert put.body["semantic"]["configurations"][0]["name"] == "cpo-semantic"
    emu.reset()
    hits = provider.search(RetrievalRequest("seg", "jackets", top_k=5, audience="student"))
    assert {h.document_id for h in hits} <= {"D1", "D4", "D3", "D5"}  # never the VIP's D2
    assert hits[0].score == 4.0  # the reranker score
    query = emu.requests[-1].body
    assert query["queryType"] == "semantic" and query["vectorQueries"][0]["k"] == 5
    assert "audience eq 'student'" in query["filter"]


def test_describe_names_the_embedding_deployment_and_no_secret(emu: Emulator) -> None:
    provider = azure_search_factory({"mode": "hybrid"}, hybrid_env(emu))
    described = provider.describe()
    assert described["embedding_deployment"] == DEPLOYMENT
    assert described["dimensions"] == 1536 and described["vector_field"] == "body_vector"
    for secret in (emu.keys.openai, emu.keys.search_admin, emu.keys.search_query):
        assert secret not in repr(described)
    assert "embedding_deployment" not in azure_search_factory({}, hybrid_env(emu)).describe()


def test_default_dimensions_are_not_sent_and_match_the_field(emu: Emulator) -> None:
    provider = azure_search_factory({"mode": "hybrid"}, hybrid_env(emu))
    provider.index(list(DOCS[:2]))
    put = next(r for r in emu.requests if r.method == "PUT")
    assert next(f for f in put.body["fields"] if f["name"] == "body_vector")["dimensions"] == 1536
    (embed,) = of(emu.requests, "/embeddings")
    assert "dimensions" not in embed.body  # older models (ada-002) reject the parameter
    (upload,) = of(emu.requests, "/docs/search.index")
    assert len(upload.body["value"][0]["body_vector"]) == 1536


@pytest.mark.parametrize("var", ["AZURE_OPENAI_EMBEDDING_DEPLOYMENT", "AZURE_OPENAI_ENDPOINT"])
def test_missing_embedding_variable_fails_before_any_request(emu: Emulator, var: str) -> None:
    with pytest.raises(ConfigurationError, match=f"{var} is not set"):
        azure_search_factory({"mode": "hybrid"}, hybrid_env(emu, **{var: None}))
    assert emu.requests == []
    azure_search_factory({"mode": "semantic"}, hybrid_env(emu, **{var: None}))  # not needed


def test_bad_dimensions_setting_names_the_key(emu: Emulator) -> None:
    with pytest.raises(ConfigurationError, match=r"providers\.retrieval\.dimensions: expected an"):
        azure_search_factory({"mode": "hybrid", "dimensions": "lots"}, hybrid_env(emu))
    with pytest.raises(ConfigurationError, match="expected an integer of at most 4096"):
        azure_search_factory({"mode": "hybrid", "dimensions": 5000}, hybrid_env(emu))


@pytest.mark.parametrize("step", ["index", "search"])
def test_embeddings_429_is_retryable_with_retry_after(emu: Emulator, step: str) -> None:
    provider = azure_search_factory({"mode": "hybrid", "dimensions": DIMS}, hybrid_env(emu))
    emu.set_faults(service="openai", path_contains="/embeddings", status=429, retry_after="2")
    with pytest.raises(ProviderError) as info:
        if step == "index":
            provider.index(list(DOCS))
        else:
            provider.search(RetrievalRequest("s", "roses"))
    e: Any = info.value
    assert (e.retryable, e.retry_after, e.status) == (True, 2.0, 429)
    assert "Azure OpenAI" in str(e) and emu.keys.openai not in str(e)
    assert len(of(emu.requests, "/embeddings")) == 1  # no SDK retry: cpo.engine.calls owns retries
    assert not of(emu.requests, "/docs/search.index")  # nothing uploaded without vectors
    assert not of(emu.requests, "/docs/search.post.search")


def test_retried_index_does_not_embed_twice(emu: Emulator) -> None:
    provider = azure_search_factory({"mode": "hybrid", "dimensions": DIMS}, hybrid_env(emu))
    emu.set_faults(service="search", path_contains="search.index", status=503, times=1)
    with pytest.raises(ProviderError):
        provider.index(list(DOCS))
    provider.index(list(DOCS))  # what the call layer's retry does
    assert len(of(emu.requests, "/embeddings")) == 1
    assert len(of(emu.requests, "/docs/search.index")) == 2


def test_wrong_embedding_key_names_the_variable(emu: Emulator) -> None:
    env = hybrid_env(emu, AZURE_OPENAI_API_KEY="wrong-embed-key-42")
    provider = azure_search_factory({"mode": "hybrid", "dimensions": DIMS}, env)
    with pytest.raises(ProviderError) as info:
        provider.search(RetrievalRequest("s", "roses"))
    assert "AZURE_OPENAI_API_KEY" in str(info.value) and "wrong-embed-key-42" not in str(info.value)
    assert info.value.retryable is False


def test_bearer_tokens_over_tls_for_both_services() -> None:
    with Emulator(tls=True) as tls:
        env = hybrid_env(tls, AZURE_OPENAI_API_KEY=None, AZURE_SEARCH_ADMIN_KEY=None)
        del env["AZURE_SEARCH_QUERY_KEY"]
        credential = FakeTokenCredential(tls.keys.token)
        settings = {"ca_bundle": tls.ca_pem, "_credential": credential}
        provider = hybrid(tls, env, **settings)
        assert provider.search(RetrievalRequest("s", "roses", top_k=1))[0].document_id == "D3"
        assert all(r.headers["authorization"] == f"Bearer {tls.keys.token}" for r in tls.requests)
        assert {
            "https://cognitiveservices.azure.com/.default",
            "https://search.azure.com/.default",
        } <= set(credential.scopes)


def test_emulator_rejects_a_vector_field_without_a_profile(emu: Emulator) -> None:
    client = SearchIndexClient(emu.url, AzureKeyCredential(emu.keys.search_admin), retry_total=0)
    field = SearchField(
        name="v",
        type=SearchFieldDataType.Collection(SearchFieldDataType.Single),
        searchable=True,
        vector_search_dimensions=8,
        vector_search_profile_name="missing",
    )
    key = SimpleField(name="id", type=SearchFieldDataType.String, key=True)
    with pytest.raises(HttpResponseError, match="unknown vector search profile"):
        client.create_or_update_index(SearchIndex(name="bad", fields=[key, field]))


# -- embedding tokens and cost in the ledger ----------------------------------------------------

PRICE = Price(input_per_1m=0.02)  # what text-embedding-3-small lists


def emulated_tokens(text: str) -> int:
    """What the emulator bills an embedding input (about 4 characters a token)."""
    return max(1, math.ceil(len(text) / 4))


def index_tokens() -> int:
    return sum(emulated_tokens(f"{d.title}\n{d.body}") for d in DOCS)


def layer_for(tmp_path: Path, prices: dict[str, Price]) -> CallLayer:
    settings = CallSettings(concurrency=4, backoff_initial_s=0.01, backoff_max_s=0.05)
    layer = CallLayer(
        CallStore(tmp_path / "cache.sqlite"), settings, prices, None, "run", logging.getLogger("t")
    )
    layer.sleep = lambda _s: None
    return layer


def ledger(layer: CallLayer) -> list[dict[str, Any]]:
    return [dict(zip(LEDGER_COLUMNS, row, strict=True)) for row in layer.ledger.rows()]


def test_hits_carry_query_embedding_tokens_and_price_by_the_deployment(emu: Emulator) -> None:
    provider = hybrid(emu)
    assert (provider.model, provider.price_model) == ("azure-ai-search:hybrid", DEPLOYMENT)
    assert provider.index_input_tokens == index_tokens() > 0
    hits = provider.search(RetrievalRequest("seg", "garden roses"))
    assert isinstance(hits, Hits) and hits.input_tokens == emulated_tokens("garden roses")
    assert provider.search(RetrievalRequest("seg", "*")).input_tokens == 0  # nothing embedded
    fulltext = azure_search_factory({}, hybrid_env(emu))
    assert fulltext.price_model == fulltext.model == "azure-ai-search:fulltext"
    assert fulltext.search(RetrievalRequest("seg", "jackets")).input_tokens == 0


def test_ledger_rows_for_index_and_search_carry_embedding_tokens_and_cost(
    emu: Emulator, tmp_path: Path
) -> None:
    provider = azure_search_factory({"mode": "hybrid", "dimensions": DIMS}, hybrid_env(emu))
    layer = layer_for(tmp_path, {DEPLOYMENT: PRICE})
    step = StepProvider("retrieved_content", "retrieval", provider, layer)
    step.index(list(DOCS))
    queries = ["garden roses", "jackets for students this week", "coats"]
    requests = [RetrievalRequest(f"seg{i}", q) for i, q in enumerate(queries)]
    outcomes = step.call_all("search", requests)  # concurrent: each row has its own count
    assert all(o.error is None for o in outcomes)
    step.call_all("search", requests[:1])  # a cache hit: nothing paid
    index, *searches, cached = ledger(layer)
    assert index["item_key"] == "index" and index["input_tokens"] == index_tokens()
    assert index["cost_usd"] == pytest.approx(index_tokens() * 0.02 / 1e6)
    searches.sort(key=lambda row: row["item_key"])  # rows are written as calls finish
    for row, text in zip(searches, queries, strict=True):
        assert row["model"] == "azure-ai-search:hybrid" and row["cache_hit"] == 0
        assert row["input_tokens"] == emulated_tokens(text) > 0
        assert row["cost_usd"] == pytest.approx(emulated_tokens(text) * 0.02 / 1e6)
    assert cached["cache_hit"] == 1 and cached["input_tokens"] == 0 and cached["cost_usd"] == 0
    paid = index_tokens() + sum(emulated_tokens(q) for q in queries)
    assert layer.spent_usd == pytest.approx(paid * 0.02 / 1e6)


def test_retried_index_ledger_row_counts_the_embeddings_paid_once(
    emu: Emulator, tmp_path: Path
) -> None:
    provider = azure_search_factory({"mode": "hybrid", "dimensions": DIMS}, hybrid_env(emu))
    layer = layer_for(tmp_path, {})  # no price: tokens still recorded, cost 0
    emu.set_faults(service="search", path_contains="search.index", status=503, times=1)
    StepProvider("retrieved_content", "retrieval", provider, layer).index(list(DOCS))
    (row,) = ledger(layer)
    assert (row["attempts"], row["input_tokens"], row["cost_usd"]) == (2, index_tokens(), 0.0)
    assert len(of(emu.requests, "/embeddings")) == 1
