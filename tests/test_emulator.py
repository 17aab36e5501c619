"""The loopback emulator, driven by the real SDK clients (openai, azure-search, content safety)."""

from __future__ import annotations

import json
import ssl
import urllib.request
from collections.abc import Callable

import openai
import pytest
from azure.ai.contentsafety import BlocklistClient, ContentSafetyClient
from azure.ai.contentsafety.models import (
    AddOrUpdateTextBlocklistItemsOptions,
    AnalyzeTextOptions,
    AnalyzeTextOutputType,
    RemoveTextBlocklistItemsOptions,
    TextBlocklist,
    TextBlocklistItem,
)
from azure.core.credentials import AzureKeyCredential
from azure.core.exceptions import ClientAuthenticationError, HttpResponseError
from azure.keyvault.secrets import SecretClient
from azure.search.documents import SearchClient
from azure.search.documents.indexes import SearchIndexClient
from azure.search.documents.indexes.models import (
    SearchableField,
    SearchFieldDataType,
    SearchIndex,
    SimpleField,
)

from tests.emulator import Emulator, FakeTokenCredential, Faults, compose_answer
from tests.emulator.openai_routes import OWN_UNSUBSCRIBE

API_VERSION = "2024-10-21"
PROMPT = (
    "Write an email.\n"
    "[DOC-1] Spring sale: Everything is 20% off this week. Offer ends Sunday.\n"
    "[DOC-2] Free shipping: Orders over $50 ship free. Some exclusions apply.\n"
)


@pytest.fixture(scope="module")
def emu(emulators: Callable[..., Emulator]) -> Emulator:
    return emulators()


@pytest.fixture(scope="module")
def tls_emu(emulators: Callable[..., Emulator]) -> Emulator:
    return emulators(tls=True)


@pytest.fixture(autouse=True)
def _clean(emu: Emulator, tls_emu: Emulator) -> None:
    emu.reset()
    tls_emu.reset()


def azure_openai(emu: Emulator, **kwargs: object) -> openai.AzureOpenAI:
    return openai.AzureOpenAI(
        azure_endpoint=emu.url,
        api_version=API_VERSION,
        max_retries=0,
        timeout=5,
        **({"api_key": emu.keys.openai} | kwargs),  # type: ignore[arg-type]
    )


# -- generation --------------------------------------------------------------------------------


def test_chat_completion_answers_from_documents_with_usage(emu: Emulator) -> None:
    client = azure_openai(emu)
    resp = client.chat.completions.create(
        model="gpt-4o-mini", messages=[{"role": "user", "content": PROMPT}]
    )
    answer = json.loads(resp.choices[0].message.content or "")
    assert answer == {
        "subject": "Spring sale",
        # Like a real model, it words an unsubscribe line its own way (the footer has the real one).
        "body": "Everything is 20% off this week. [DOC-1] Orders over $50 ship free. [DOC-2]"
        f"\n\n{OWN_UNSUBSCRIBE}",
        "citations": ["DOC-1", "DOC-2"],
    }
    assert resp.choices[0].finish_reason == "stop"
    assert resp.usage is not None and resp.usage.prompt_tokens == -(-len(PROMPT) // 4)
    (req,) = emu.requests
    assert req.path == "/openai/deployments/gpt-4o-mini/chat/completions"
    assert req.api_version == API_VERSION
    assert req.headers["api-key"] == emu.keys.openai


def test_subject_is_at_most_60_characters() -> None:
    answer = compose_answer("[D1] " + "Very long title " * 10 + ": Body text. More.")
    assert len(answer["subject"]) <= 60
    assert answer["citations"] == ["D1"]


def test_responses_api_and_v1_routes(emu: Emulator) -> None:
    resp = azure_openai(emu).responses.create(model="dep", input=PROMPT)
    assert json.loads(resp.output_text)["citations"] == ["DOC-1", "DOC-2"]
    assert resp.usage is not None and resp.usage.output_tokens > 0
    v1 = openai.OpenAI(base_url=f"{emu.url}/openai/v1/", api_key=emu.keys.openai, max_retries=0)
    chat = v1.chat.completions.create(model="dep", messages=[{"role": "user", "content": PROMPT}])
    assert json.loads(chat.choices[0].message.content or "")["subject"] == "Spring sale"
    assert json.loads(v1.responses.create(model="dep", input=PROMPT).output_text)["body"]
    paths = [r.path for r in emu.requests]
    assert paths == ["/openai/responses", "/openai/v1/chat/completions", "/openai/v1/responses"]
    assert emu.requests[0].body["model"] == "dep"
    assert emu.requests[1].headers["authorization"] == f"Bearer {emu.keys.openai}"


def test_bearer_token_over_tls(tls_emu: Emulator) -> None:
    client = azure_openai(
        tls_emu,
        api_key=None,
        azure_ad_token_provider=lambda: tls_emu.keys.token,
        http_client=openai.DefaultHttpxClient(
            verify=ssl.create_default_context(cafile=tls_emu.ca_pem)
        ),
    )
    resp = client.chat.completions.create(model="d", messages=[{"role": "user", "content": "hi"}])
    assert json.loads(resp.choices[0].message.content or "")["citations"] == []
    assert tls_emu.requests[0].headers["authorization"] == f"Bearer {tls_emu.keys.token}"


def test_wrong_key_is_401(emu: Emulator) -> None:
    with pytest.raises(openai.AuthenticationError):
        azure_openai(emu, api_key="nope").chat.completions.create(
            model="d", messages=[{"role": "user", "content": "hi"}]
        )


def test_429_carries_retry_after_headers(emu: Emulator) -> None:
    emu.set_faults(status=429, retry_after="7", retry_after_ms="1500", times=1)
    with pytest.raises(openai.RateLimitError) as info:
        azure_openai(emu).chat.completions.create(
            model="d", messages=[{"role": "user", "content": "hi"}]
        )
    assert info.value.response.headers["retry-after"] == "7"
    assert info.value.response.headers["retry-after-ms"] == "1500"
    # `times=1`: the next call succeeds.
    azure_openai(emu).chat.completions.create(
        model="d", messages=[{"role": "user", "content": "x"}]
    )


def test_content_filter_prompt_and_completion(emu: Emulator) -> None:
    emu.set_faults(content_filter="prompt")
    with pytest.raises(openai.BadRequestError) as info:
        azure_openai(emu).chat.completions.create(
            model="d", messages=[{"role": "user", "content": "hi"}]
        )
    assert info.value.code == "content_filter"
    emu.set_faults(content_filter="completion")
    resp = azure_openai(emu).chat.completions.create(
        model="d", messages=[{"role": "user", "content": "hi"}]
    )
    assert resp.choices[0].finish_reason == "content_filter"


def test_timeout_5xx_down_and_malformed(emu: Emulator) -> None:
    client = openai.AzureOpenAI(
        azure_endpoint=emu.url, api_key=emu.keys.openai, api_version="v", max_retries=0, timeout=0.3
    )
    msgs = [{"role": "user", "content": "hi"}]
    emu.set_faults(timeout_s=2, times=1)
    with pytest.raises(openai.APITimeoutError):
        client.chat.completions.create(model="d", messages=msgs)  # type: ignore[arg-type]
    for faults, error in [
        (Faults(status=503), openai.InternalServerError),
        (Faults(down=True), openai.InternalServerError),
        (Faults(malformed_body=True), ValueError),  # openai lets JSONDecodeError through
    ]:
        emu.faults = faults
        with pytest.raises(error):
            client.chat.completions.create(model="d", messages=msgs)  # type: ignore[arg-type]
    emu.set_faults(malformed_json=True)
    resp = client.chat.completions.create(model="d", messages=msgs)  # type: ignore[arg-type]
    with pytest.raises(ValueError):
        json.loads(resp.choices[0].message.content or "")


def test_failure_rate_is_deterministic(emu: Emulator) -> None:
    def outcomes() -> list[bool]:
        emu.set_faults(every=5)
        out = []
        for _ in range(10):
            try:
                azure_openai(emu).chat.completions.create(
                    model="d", messages=[{"role": "user", "content": "hi"}]
                )
                out.append(True)
            except openai.InternalServerError:
                out.append(False)
        return out

    assert outcomes() == [True] * 4 + [False] + [True] * 4 + [False]
    emu.set_faults(failure_rate=0.5, seed=3)
    first = [emu.state.fails_now(emu.faults) for _ in range(20)]
    emu.set_faults(failure_rate=0.5, seed=3)
    assert [emu.state.fails_now(emu.faults) for _ in range(20)] == first
    assert 0 < sum(first) < 20


def test_control_route_sets_faults_and_lists_requests(emu: Emulator) -> None:
    def call(method: str, path: str, body: object = None) -> object:
        data = None if body is None else json.dumps(body).encode()
        req = urllib.request.Request(f"{emu.url}{path}", data=data, method=method)
        with urllib.request.urlopen(req) as resp:
            return json.loads(resp.read())

    call("POST", "/_emulator/faults", {"status": 503, "service": "search"})
    assert emu.faults.status == 503 and emu.faults.service == "search"
    azure_openai(emu).chat.completions.create(
        model="d", messages=[{"role": "user", "content": "x"}]
    )
    recorded = call("GET", "/_emulator/requests")
    assert isinstance(recorded, list) and recorded[0]["service"] == "openai"


# -- search ------------------------------------------------------------------------------------

DOCS = [
    {
        "document_id": "D1",
        "title": "Spring sale",
        "body": "Shoes and jackets on sale for spring.",
        "audience": "all",
        "expires_at": "2030-01-01T00:00:00Z",
    },
    {
        "document_id": "D2",
        "title": "VIP jackets",
        "body": "Members get early access to jackets.",
        "audience": "vip",
        "expires_at": "2030-01-01T00:00:00Z",
    },
    {
        "document_id": "D3",
        "title": "Old jackets",
        "body": "Last year's jackets sale jackets.",
        "audience": "all",
        "expires_at": "2020-01-01T00:00:00Z",
    },
]


def make_index(name: str) -> SearchIndex:
    return SearchIndex(
        name=name,
        fields=[
            SimpleField(name="document_id", type=SearchFieldDataType.String, key=True),
            SearchableField(name="title"),
            SearchableField(name="body"),
            SimpleField(name="audience", type=SearchFieldDataType.String, filterable=True),
            SimpleField(name="expires_at", type=SearchFieldDataType.String, filterable=True),
        ],
    )


def test_search_index_lifecycle_upload_and_query(emu: Emulator) -> None:
    cred = AzureKeyCredential(emu.keys.search_admin)
    indexes = SearchIndexClient(emu.url, cred, retry_total=0)
    indexes.create_or_update_index(make_index("content"))
    assert indexes.get_index("content").name == "content"
    client = SearchClient(emu.url, "content", cred, retry_total=0)
    results = client.upload_documents(DOCS)
    assert all(r.succeeded for r in results)
    hits = list(client.search("jackets", top=2, select=["document_id"]))
    assert [h["document_id"] for h in hits] == ["D3", "D2"]
    assert set(hits[0]) >= {"document_id", "@search.score"} and "title" not in hits[0]
    filtered = client.search(
        "jackets",
        filter="audience eq 'all' and expires_at ge 2025-01-01T00:00:00Z",
        include_total_count=True,
        query_type="semantic",
        semantic_configuration_name="default",
    )
    rows = list(filtered)
    assert filtered.get_count() == 1
    assert [r["document_id"] for r in rows] == ["D1"]
    assert rows[0]["@search.reranker_score"] == 4.0
    search_req = next(r for r in emu.requests if r.path.endswith("search.post.search"))
    assert search_req.path == "/indexes('content')/docs/search.post.search"
    assert search_req.headers["api-key"] == emu.keys.search_admin
    assert search_req.api_version
    indexes.delete_index("content")
    assert emu.requests[-1].method == "DELETE"
    with pytest.raises(HttpResponseError):
        indexes.get_index("content")


def test_search_query_key_cannot_write_and_bearer_over_tls(
    emu: Emulator, tls_emu: Emulator
) -> None:
    query_only = SearchClient(
        emu.url, "x", AzureKeyCredential(emu.keys.search_query), retry_total=0
    )
    SearchIndexClient(
        emu.url, AzureKeyCredential(emu.keys.search_admin), retry_total=0
    ).create_or_update_index(make_index("x"))
    with pytest.raises(ClientAuthenticationError):
        query_only.upload_documents(DOCS)
    assert list(query_only.search("*")) == []
    cred = FakeTokenCredential()
    indexes = SearchIndexClient(tls_emu.url, cred, connection_verify=tls_emu.ca_pem, retry_total=0)
    indexes.create_or_update_index(make_index("y"))
    assert tls_emu.requests[0].headers["authorization"] == "Bearer test-bearer-token"
    assert cred.scopes == ["https://search.azure.com/.default"]


# -- content safety ----------------------------------------------------------------------------


def test_analyze_severities_four_and_eight_levels(emu: Emulator) -> None:
    client = ContentSafetyClient(emu.url, AzureKeyCredential(emu.keys.safety), retry_total=0)
    text = "They despise us and want to murder the vibe."
    eight = client.analyze_text(
        AnalyzeTextOptions(text=text, output_type=AnalyzeTextOutputType.EIGHT_SEVERITY_LEVELS)
    )
    four = client.analyze_text(AnalyzeTextOptions(text=text))
    by = {c.category: c.severity for c in eight.categories_analysis}
    assert by == {"Hate": 3, "SelfHarm": 0, "Sexual": 0, "Violence": 6}
    assert {c.category: c.severity for c in four.categories_analysis}["Hate"] == 2
    req = emu.requests[0]
    assert req.path == "/contentsafety/text:analyze"
    assert req.api_version == "2023-10-01"
    assert req.headers["ocp-apim-subscription-key"] == emu.keys.safety
    with pytest.raises(ClientAuthenticationError):
        ContentSafetyClient(emu.url, AzureKeyCredential("bad"), retry_total=0).analyze_text(
            AnalyzeTextOptions(text="hi")
        )


def test_blocklists_round_trip_and_match(tls_emu: Emulator) -> None:
    cred = FakeTokenCredential()
    kw = {"connection_verify": tls_emu.ca_pem, "retry_total": 0}
    blocklists = BlocklistClient(tls_emu.url, cred, **kw)
    blocklists.create_or_update_text_blocklist(
        "brand", TextBlocklist(blocklist_name="brand", description="competitors")
    )
    added = blocklists.add_or_update_blocklist_items(
        "brand",
        AddOrUpdateTextBlocklistItemsOptions(
            blocklist_items=[TextBlocklistItem(text="MegaCorp"), TextBlocklistItem(text="cheap")]
        ),
    )
    assert len(added.blocklist_items) == 2
    assert blocklists.get_text_blocklist("brand").description == "competitors"
    client = ContentSafetyClient(tls_emu.url, cred, **kw)
    result = client.analyze_text(
        AnalyzeTextOptions(text="Better than megacorp!", blocklist_names=["brand"])
    )
    assert [m.blocklist_item_text for m in result.blocklists_match] == ["MegaCorp"]
    ids = [i.blocklist_item_id for i in blocklists.list_text_blocklist_items("brand")]
    blocklists.remove_blocklist_items(
        "brand", RemoveTextBlocklistItemsOptions(blocklist_item_ids=ids[:1])
    )
    assert len(list(blocklists.list_text_blocklist_items("brand"))) == 1
    blocklists.delete_text_blocklist("brand")
    assert "https://cognitiveservices.azure.com/.default" in cred.scopes
    statuses = {(r.method, r.path.rsplit("/", 1)[-1]) for r in tls_emu.requests}
    assert ("PATCH", "brand") in statuses and ("DELETE", "brand") in statuses


# -- key vault ---------------------------------------------------------------------------------


def test_key_vault_secret_with_challenge_auth(tls_emu: Emulator) -> None:
    tls_emu.state.secrets["openai-key"] = "s3cret"
    cred = FakeTokenCredential()
    client = SecretClient(
        tls_emu.url,
        cred,
        connection_verify=tls_emu.ca_pem,
        retry_total=0,
        verify_challenge_resource=False,
    )
    assert client.get_secret("openai-key").value == "s3cret"
    assert cred.scopes == ["https://vault.azure.net/.default"]
