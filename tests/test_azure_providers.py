"""The Azure and OpenAI providers against the loopback emulator, through the real SDKs."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from cpo.errors import ConfigurationError, ProviderError
from cpo.providers.azure_content_safety import azure_content_safety_factory, split_text
from cpo.providers.azure_search import azure_search_factory
from cpo.providers.base import Document, GenerationRequest, RetrievalRequest, SafetyRequest
from cpo.providers.failures import retry_after_seconds
from cpo.providers.openai_chat import azure_openai_factory, openai_factory, parse_answer
from tests.emulator import Emulator, FakeTokenCredential

DOCS = (
    Document("D1", "Spring sale", "Jackets are 20% off this week. Ends Sunday.", "promo", "all"),
    Document("D2", "VIP preview", "Members see new jackets first. Sign in.", "promo", "vip"),
    Document("D3", "Garden tips", "Water roses at dawn. Mulch keeps soil moist.", "howto", "all"),
    Document("D4", "Student deal", "Students get jackets cheaper.", "promo", "student"),
    Document(
        "D5", "Old jackets", "Last season jackets clearance.", "promo", "all", "", "2020-01-01"
    ),
)
REQUEST = GenerationRequest(
    key="seg-1|friendly",
    system="You write marketing emails.",
    prompt="Write one.",
    documents=DOCS[:2],
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


def openai_env(emu: Emulator, **extra: str) -> dict[str, str]:
    return {
        "AZURE_OPENAI_ENDPOINT": emu.url,
        "AZURE_OPENAI_DEPLOYMENT_NAME": "gpt-4o-mini",
        "AZURE_OPENAI_API_VERSION": "2024-10-21",
        "AZURE_OPENAI_API_KEY": emu.keys.openai,
        **extra,
    }


def token_settings(emu: Emulator, **extra: Any) -> dict[str, Any]:
    return {"ca_bundle": emu.ca_pem, "_credential": FakeTokenCredential(emu.keys.token), **extra}


def failure(excinfo: pytest.ExceptionInfo[ProviderError]) -> tuple[bool, float | None, int | None]:
    e = excinfo.value
    return e.retryable, e.retry_after, e.status


# -- generation --------------------------------------------------------------------------------


def test_chat_generation_wire_and_answer(emu: Emulator) -> None:
    provider = azure_openai_factory({"type": "azure_openai", "max_tokens": 300}, openai_env(emu))
    result = provider.generate(REQUEST)
    assert result.subject == "Spring sale"
    assert result.body == "Jackets are 20% off this week. [D1] Members see new jackets first. [D2]"
    assert result.citations == ("D1", "D2")
    assert result.finish_reason == "stop" and result.input_tokens > 0 and result.output_tokens > 0
    (req,) = emu.requests
    assert req.path == "/openai/deployments/gpt-4o-mini/chat/completions"
    assert req.api_version == "2024-10-21"
    assert req.headers["api-key"] == emu.keys.openai
    assert req.body["response_format"]["type"] == "json_schema"
    assert req.body["max_tokens"] == 300 and req.body["temperature"] == 0.7
    user = req.body["messages"][1]["content"]
    assert "Documents:\n[D1] Spring sale: Jackets are 20% off" in user
    assert provider.describe()["model"] == "gpt-4o-mini"
    assert emu.keys.openai not in str(provider.describe())


def test_documents_already_in_prompt_are_not_repeated(emu: Emulator) -> None:
    prompt = "Use these:\n[D1] Spring sale: Jackets are 20% off this week."
    request = GenerationRequest("k", "", prompt, documents=DOCS[:1])
    azure_openai_factory({}, openai_env(emu)).generate(request)
    assert emu.requests[0].body["messages"] == [{"role": "user", "content": prompt}]


def test_responses_api_with_bearer_token_over_tls(tls_emu: Emulator) -> None:
    env = openai_env(tls_emu)
    del env["AZURE_OPENAI_API_KEY"], env["AZURE_OPENAI_API_VERSION"]
    settings = token_settings(tls_emu, api="responses")
    result = azure_openai_factory(settings, env).generate(REQUEST)
    assert result.citations == ("D1", "D2")
    (req,) = tls_emu.requests
    assert req.path == "/openai/responses"
    assert req.api_version == "2025-04-01-preview"
    assert req.headers["authorization"] == f"Bearer {tls_emu.keys.token}"
    assert "api-key" not in req.headers
    assert req.body["text"]["format"]["type"] == "json_schema"
    assert req.body["model"] == "gpt-4o-mini"
    assert settings["_credential"].scopes == ["https://cognitiveservices.azure.com/.default"]


def test_token_auth_over_plain_http_is_a_configuration_error(emu: Emulator) -> None:
    env = openai_env(emu)
    del env["AZURE_OPENAI_API_KEY"]
    with pytest.raises(ConfigurationError, match=r"AZURE_OPENAI_ENDPOINT .* needs https"):
        azure_openai_factory({"_credential": FakeTokenCredential()}, env)


def test_wrong_key_names_the_variable_and_hides_the_key(emu: Emulator) -> None:
    env = openai_env(emu, AZURE_OPENAI_API_KEY="wrong-key-123")
    with pytest.raises(ProviderError) as info:
        azure_openai_factory({}, env).generate(REQUEST)
    assert "AZURE_OPENAI_API_KEY" in str(info.value) and "HTTP 401" in str(info.value)
    assert "wrong-key-123" not in str(info.value)
    assert failure(info) == (False, None, 401)


@pytest.mark.parametrize(
    ("headers", "expected"),
    [
        ({"retry_after_ms": "1500", "retry_after": "7"}, 1.5),
        ({"retry_after": "7"}, 7.0),
        ({}, None),
    ],
)
def test_429_is_retryable_with_retry_after(
    emu: Emulator, headers: dict[str, str], expected: float | None
) -> None:
    emu.set_faults(status=429, **headers)
    with pytest.raises(ProviderError) as info:
        azure_openai_factory({}, openai_env(emu)).generate(REQUEST)
    assert failure(info) == (True, expected, 429)
    assert len(emu.requests) == 1  # no SDK-internal retry: cpo.engine.calls owns retries


@pytest.mark.parametrize("where", ["prompt", "completion"])
def test_content_filter_is_a_blocked_result(emu: Emulator, where: str) -> None:
    emu.set_faults(content_filter=where)
    for api in ("chat", "responses"):
        result = azure_openai_factory({"api": api}, openai_env(emu)).generate(REQUEST)
        assert result.finish_reason == "content_filter"
        assert (result.subject, result.body, result.citations) == ("", "", ())


def test_invalid_json_gets_one_repair_then_is_blocked_with_its_reason(emu: Emulator) -> None:
    emu.set_faults(malformed_json=True)
    result = azure_openai_factory({}, openai_env(emu)).generate(REQUEST)
    assert result.blocked_reason.startswith("no_json: ")
    assert "after one repair request" in result.blocked_reason
    assert result.requests == 2 and result.input_tokens > 0  # both requests were paid for
    first, repair = emu.requests
    assert repair.body["messages"][:-2] == first.body["messages"]
    assert repair.body["messages"][-2]["role"] == "assistant"
    assert "JSON object" in repair.body["messages"][-1]["content"]


def test_repair_succeeds_and_counts_both_calls(emu: Emulator) -> None:
    emu.set_faults(malformed_json=True, times=1)
    result = azure_openai_factory({}, openai_env(emu)).generate(REQUEST)
    assert result.citations == ("D1", "D2")
    assert len(emu.requests) == 2
    single = azure_openai_factory({}, openai_env(emu)).generate(REQUEST)
    assert result.input_tokens > single.input_tokens


def test_unstructured_answers_are_parsed_from_fences(emu: Emulator) -> None:
    emu.set_faults(fenced_json=True)
    result = azure_openai_factory({"structured_output": False}, openai_env(emu)).generate(REQUEST)
    assert result.subject == "Spring sale"
    assert len(emu.requests) == 1 and "response_format" not in emu.requests[0].body


def test_parse_answer_reads_incomplete_objects_and_rejects_others() -> None:
    assert parse_answer('{"subject": "s"}') is None
    # Missing citations are taken from the body's markers.
    assert parse_answer('{"subject": "s", "body": "b [X]"}', ("X",)) == {
        "subject": "s",
        "body": "b [X]",
        "citations": ["X"],
    }
    assert parse_answer('noise {"a": 1} {"subject": "s", "body": "b", "citations": ["X"]}') == {
        "subject": "s",
        "body": "b",
        "citations": ["X"],
    }


def test_timeout_5xx_and_broken_bodies_are_retryable(emu: Emulator) -> None:
    provider = azure_openai_factory({"timeout_s": 0.3}, openai_env(emu))
    for faults in (
        {"timeout_s": 2.0, "times": 1},
        {"status": 503},
        {"down": True},
        {"malformed_body": True},
    ):
        emu.set_faults(**faults)
        with pytest.raises(ProviderError) as info:
            provider.generate(REQUEST)
        assert failure(info)[0] is True, faults


def test_missing_endpoint_fails_before_any_request(emu: Emulator) -> None:
    env = openai_env(emu)
    del env["AZURE_OPENAI_ENDPOINT"]
    with pytest.raises(ConfigurationError, match="AZURE_OPENAI_ENDPOINT is not set"):
        azure_openai_factory({}, env)
    with pytest.raises(ConfigurationError, match="api: expected one of: chat, responses"):
        azure_openai_factory({"api": "completions"}, openai_env(emu))
    assert emu.requests == []


def test_key_vault_reference_resolves_the_key(tls_emu: Emulator) -> None:
    tls_emu.state.secrets["openai-key"] = tls_emu.keys.openai
    env = openai_env(
        tls_emu, AZURE_OPENAI_API_KEY="keyvault:openai-key", AZURE_KEY_VAULT_URL=tls_emu.url
    )
    settings = token_settings(tls_emu)
    azure_openai_factory(settings, env).generate(REQUEST)
    challenge, secret_req = tls_emu.requests_for("keyvault")
    assert "authorization" not in challenge.headers
    assert secret_req.path == "/secrets/openai-key/"
    assert secret_req.headers["authorization"] == f"Bearer {tls_emu.keys.token}"
    (chat_req,) = tls_emu.requests_for("openai")
    assert chat_req.headers["api-key"] == tls_emu.keys.openai
    del env["AZURE_KEY_VAULT_URL"]
    with pytest.raises(ConfigurationError, match="AZURE_KEY_VAULT_URL is not set"):
        azure_openai_factory(settings, env)
    env = openai_env(tls_emu, AZURE_OPENAI_API_KEY="keyvault:nope", AZURE_KEY_VAULT_URL=tls_emu.url)
    with pytest.raises(ConfigurationError, match="secret 'nope'"):
        azure_openai_factory(settings, env)


def test_openai_compatible_and_azure_v1(emu: Emulator) -> None:
    env = {"OPENAI_API_KEY": emu.keys.openai, "OPENAI_BASE_URL": f"{emu.url}/openai/v1"}
    result = openai_factory({"model": "local-model"}, env).generate(REQUEST)
    assert result.citations == ("D1", "D2")
    v1 = azure_openai_factory({"api_version": "v1", "api": "responses"}, openai_env(emu))
    v1.generate(REQUEST)
    first, second = emu.requests
    assert (first.path, first.body["model"]) == ("/openai/v1/chat/completions", "local-model")
    assert first.headers["authorization"] == f"Bearer {emu.keys.openai}"
    assert second.path == "/openai/v1/responses"
    with pytest.raises(ConfigurationError, match="OPENAI_API_KEY"):
        openai_factory({}, {})


# -- retrieval ---------------------------------------------------------------------------------


def search_env(emu: Emulator, **extra: str) -> dict[str, str]:
    return {
        "AZURE_SEARCH_ENDPOINT": emu.url,
        "AZURE_SEARCH_INDEX_NAME": "cpo-content",
        "AZURE_SEARCH_ADMIN_KEY": emu.keys.search_admin,
        "AZURE_SEARCH_QUERY_KEY": emu.keys.search_query,
        **extra,
    }


def test_search_index_and_fulltext_query(emu: Emulator) -> None:
    provider = azure_search_factory({"batch_size": 2}, search_env(emu))
    provider.index(list(DOCS))
    put, *uploads = emu.requests
    assert (put.method, put.path) == ("PUT", "/indexes('cpo-content')")
    assert {f["name"] for f in put.body["fields"]} == {
        "document_id", "title", "body", "category", "audience", "keywords", "expires_at",
    }  # fmt: skip
    assert [r.path for r in uploads] == ["/indexes('cpo-content')/docs/search.index"] * 3
    assert all(r.headers["api-key"] == emu.keys.search_admin for r in emu.requests)
    hits = provider.search(RetrievalRequest("seg-1", "jackets", top_k=2, audience="vip"))
    assert [h.document_id for h in hits] == ["D5", "D2"]
    assert hits[0].score >= hits[1].score > 0
    query = emu.requests[-1]
    assert query.path.endswith("/docs/search.post.search")
    assert query.headers["api-key"] == emu.keys.search_query
    assert query.body["filter"] == (
        "(audience eq 'vip' or audience eq 'all' or audience eq '' or audience eq null)"
    )
    assert query.api_version


def test_search_semantic_mode_and_expiry_filter(emu: Emulator) -> None:
    settings = {"mode": "semantic", "as_of": "2025-06-01"}
    provider = azure_search_factory(settings, search_env(emu))
    provider.index(list(DOCS))
    hits = provider.search(RetrievalRequest("seg", "jackets", top_k=5, audience="student"))
    assert [h.document_id for h in hits] == ["D4", "D1"]
    assert hits[0].score == 4.0  # the reranker score, not BM25
    body = emu.requests[-1].body
    assert body["queryType"] == "semantic" and body["semanticConfiguration"] == "cpo-semantic"
    assert emu.requests[0].body["semantic"]["configurations"][0]["name"] == "cpo-semantic"


def test_search_bearer_over_tls(tls_emu: Emulator) -> None:
    env = search_env(tls_emu)
    del env["AZURE_SEARCH_ADMIN_KEY"], env["AZURE_SEARCH_QUERY_KEY"]
    settings = token_settings(tls_emu)
    provider = azure_search_factory(settings, env)
    provider.index(list(DOCS[:3]))
    assert provider.search(RetrievalRequest("s", "roses", top_k=3))[0].document_id == "D3"
    assert all(r.headers["authorization"] == "Bearer test-bearer-token" for r in tls_emu.requests)
    assert set(settings["_credential"].scopes) == {"https://search.azure.com/.default"}


def test_search_failures_are_classified(emu: Emulator) -> None:
    provider = azure_search_factory({}, search_env(emu))
    provider.index(list(DOCS))
    request = RetrievalRequest("s", "jackets")
    for faults, expected in [
        ({"status": 429}, (True, None, 429)),  # azure-core would not retry this POST itself
        ({"status": 429, "retry_after": "3"}, (True, 3.0, 429)),
        ({"status": 503}, (True, None, 503)),
        ({"status": 400}, (False, None, 400)),
    ]:
        emu.reset()
        emu.set_faults(**faults)
        with pytest.raises(ProviderError) as info:
            provider.search(request)
        assert failure(info) == expected
        assert len(emu.requests) == 1
    emu.reset()
    bad = azure_search_factory({}, search_env(emu, AZURE_SEARCH_QUERY_KEY="leaky-key"))
    with pytest.raises(ProviderError) as info:
        bad.search(request)
    assert "AZURE_SEARCH_QUERY_KEY" in str(info.value) and "leaky-key" not in str(info.value)
    assert failure(info) == (False, None, 401)


def test_search_timeout_is_retryable(emu: Emulator) -> None:
    provider = azure_search_factory({"timeout_s": 0.3}, search_env(emu))
    emu.set_faults(timeout_s=2.0, times=1)
    with pytest.raises(ProviderError) as info:
        provider.search(RetrievalRequest("s", "x"))
    assert failure(info)[0] is True


def test_search_configuration_errors_before_any_request(emu: Emulator) -> None:
    for var in ("AZURE_SEARCH_ENDPOINT", "AZURE_SEARCH_INDEX_NAME"):
        env = search_env(emu)
        del env[var]
        with pytest.raises(ConfigurationError, match=var):
            azure_search_factory({}, env)
    with pytest.raises(ConfigurationError, match=r"providers\.retrieval\.mode: expected one of"):
        azure_search_factory({"mode": "vector-only"}, search_env(emu))
    assert emu.requests == []


# -- safety ------------------------------------------------------------------------------------


def safety_env(emu: Emulator, **extra: str) -> dict[str, str]:
    return {
        "AZURE_CONTENT_SAFETY_ENDPOINT": emu.url,
        "AZURE_CONTENT_SAFETY_API_KEY": emu.keys.safety,
        **extra,
    }


def test_safety_analyze_levels_and_wire(emu: Emulator) -> None:
    provider = azure_content_safety_factory({}, safety_env(emu))
    text = "We despise losing and will fight for you."
    eight = provider.analyze(SafetyRequest("v1", text))
    assert eight.severities == {"Hate": 3, "SelfHarm": 0, "Sexual": 0, "Violence": 2}
    four = provider.analyze(SafetyRequest("v1", text, output_type="FourSeverityLevels"))
    assert four.severities["Hate"] == 2
    req = emu.requests[0]
    assert (req.path, req.api_version) == ("/contentsafety/text:analyze", "2023-10-01")
    assert req.headers["ocp-apim-subscription-key"] == emu.keys.safety
    assert req.body["outputType"] == "EightSeverityLevels"
    assert req.body["categories"] == ["Hate", "SelfHarm", "Sexual", "Violence"]


def test_safety_blocklists_sync_once_and_match(tls_emu: Emulator) -> None:
    env = safety_env(tls_emu)
    del env["AZURE_CONTENT_SAFETY_API_KEY"]
    provider = azure_content_safety_factory(token_settings(tls_emu), env)
    lists = {"brand": ("MegaCorp", "cheap knockoff")}
    first = provider.analyze(SafetyRequest("v1", "Better than MegaCorp!", blocklists=lists))
    second = provider.analyze(SafetyRequest("v2", "A calm message.", blocklists=lists))
    assert first.blocklist_matches == ("brand:MegaCorp",)
    assert second.blocklist_matches == ()
    calls = [(r.method, r.path) for r in tls_emu.requests]
    assert calls == [
        ("PATCH", "/contentsafety/text/blocklists/brand"),
        ("POST", "/contentsafety/text/blocklists/brand:addOrUpdateBlocklistItems"),
        ("POST", "/contentsafety/text:analyze"),
        ("POST", "/contentsafety/text:analyze"),
    ]
    assert tls_emu.requests[2].body["blocklistNames"] == ["brand"]
    assert all(r.headers["authorization"] == "Bearer test-bearer-token" for r in tls_emu.requests)


def test_safety_long_text_is_split_and_max_taken(emu: Emulator) -> None:
    text = "calm words " * 1000 + "then murder"  # 11,011 characters
    result = azure_content_safety_factory({}, safety_env(emu)).analyze(SafetyRequest("v", text))
    assert result.severities["Violence"] == 6
    assert [len(r.body["text"]) <= 10_000 for r in emu.requests] == [True, True]
    assert all(len(p) <= 100 for p in split_text("a " * 300, limit=100))


def test_safety_failures_and_configuration(emu: Emulator) -> None:
    bad = azure_content_safety_factory({}, safety_env(emu, AZURE_CONTENT_SAFETY_API_KEY="k-999"))
    with pytest.raises(ProviderError) as info:
        bad.analyze(SafetyRequest("v", "hello"))
    assert "AZURE_CONTENT_SAFETY_API_KEY" in str(info.value) and "k-999" not in str(info.value)
    provider = azure_content_safety_factory({"timeout_s": 0.3}, safety_env(emu))
    for faults, retryable in [
        ({"status": 503}, True),
        ({"timeout_s": 2.0, "times": 1}, True),
        ({"malformed_body": True}, True),
    ]:
        emu.set_faults(**faults)
        with pytest.raises(ProviderError) as info:
            provider.analyze(SafetyRequest("v", "hello"))
        assert failure(info)[0] is retryable, faults
    emu.reset()
    with pytest.raises(ConfigurationError, match="AZURE_CONTENT_SAFETY_ENDPOINT"):
        azure_content_safety_factory({}, {"AZURE_CONTENT_SAFETY_API_KEY": "x"})
    assert emu.requests == []


def test_retry_after_parsing() -> None:
    assert retry_after_seconds({"Retry-After-Ms": "250"}) == 0.25
    assert retry_after_seconds({"Retry-After": "Wed, 21 Oct 2015 07:28:00 GMT"}) == 0.0
    assert retry_after_seconds({"Retry-After": "soon"}) is None
