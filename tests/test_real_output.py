"""Real model output, read robustly: one test per answer shape, through the real ``openai`` SDK
against the loopback emulator, and whole builds whose model answers badly.

Every outcome is a usable answer or a result blocked with a named reason, never an exception;
structured output is negotiated down (json_schema -> json_object -> plain) and remembered; a
server error saying the request is invalid is not retried; at most one repair per variant.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable
from pathlib import Path

import pytest

from cpo.engine.calls import AdaptiveLimit
from cpo.engine.project import Project
from cpo.errors import BudgetExceededError
from cpo.providers.base import Document, GenerationRequest
from cpo.providers.failures import http_failure
from cpo.providers.openai_chat import azure_openai_factory, openai_factory
from tests.emulator import Emulator
from tests.test_azure_build import (
    KEYS,
    azure_env,
    failures,
    make_project,
    query,
)

DOCS = (
    Document("DOC001", "Winter jackets", "Take 20% off all jackets with code WINTER20."),
    Document("DOC002", "Boots", "Trail boots are waterproof and come in three colours."),
)
REQUEST = GenerationRequest(
    key="v_loyal_friendly",
    system="You write marketing emails.",
    prompt="Write one.",
    documents=DOCS,
    params={"max_subject_chars": 60, "merge_tags": ["first_name", "city", "unsubscribe_url"]},
)
GOOD = (
    '{"subject": "Jackets for winter", "body": "Hi {{ first_name }}, take 20% off all jackets '
    'with code WINTER20. [DOC001]", "citations": ["DOC001"]}'
)


@pytest.fixture(scope="module")
def emu(emulators: Callable[..., Emulator]) -> Emulator:
    return emulators(tls=True, keys=KEYS)


@pytest.fixture(autouse=True)
def _clean(emu: Emulator) -> None:
    emu.reset()


def provider(emu: Emulator, **settings):
    env = {
        "AZURE_OPENAI_ENDPOINT": emu.url,
        "AZURE_OPENAI_DEPLOYMENT_NAME": "gpt-4o-mini",
        "AZURE_OPENAI_API_VERSION": "2024-10-21",
        "AZURE_OPENAI_API_KEY": emu.keys.openai,
    }
    return azure_openai_factory({"ca_bundle": emu.ca_pem, **settings}, env)


# -- one test per shape --------------------------------------------------------------------------

SHAPES = {
    "code_fence_with_prose": (f"Sure! Here it is:\n```json\n{GOOD}\n```\nAnything else?", None),
    "json_among_prose": (f"Here is the email you asked for: {GOOD} Hope it helps.", None),
    "missing_citations": (
        '{"subject": "Jackets", "body": "Take 20% off all jackets with code WINTER20. [DOC001] '
        'Trail boots are waterproof. [doc002]"}',
        None,
    ),
    "wrong_citations": (
        '{"subject": "Jackets", "body": "Take 20% off all jackets. [DOC001]", '
        '"citations": ["DOC999", "the documents"]}',
        None,
    ),
    "tag_spacing": (
        '{"subject": "{{first_name}}, jackets", "body": "Hi {{First_Name }}, take 20% off all '
        'jackets. [DOC001]", "citations": ["DOC001"]}',
        None,
    ),
    "capitalised_keys_and_subject_line": (
        '{"Subject": "Subject: Jackets", "Body": "Take 20% off jackets. [DOC001]"}',
        None,
    ),
    "plain_subject_and_text": (
        "Subject: Warm jackets\n\nTake 20% off all jackets with code WINTER20. [DOC001]",
        None,
    ),
    "long_subject": (
        '{"subject": "'
        + "Our biggest winter jacket event with savings on every style " * 2
        + '", "body": "Take 20% off all jackets. [DOC001]", "citations": ["DOC001"]}',
        None,
    ),
    "own_unsubscribe_line": (
        '{"subject": "Jackets", "body": "Take 20% off all jackets. [DOC001]\\n\\nNot for you? '
        'Unsubscribe here: {{ unsubscribe_url }}", "citations": ["DOC001"]}',
        None,
    ),
    "unknown_tag": (
        '{"subject": "Hi {{ nickname }}", "body": "Take 20% off. [DOC001]", "citations": []}',
        "unknown_merge_tag: nickname",
    ),
    "refusal": ("I'm sorry, but I can't help with writing that email.", "refusal: "),
    "empty": ("", "empty_answer: "),
    "empty_body": ('{"subject": "Jackets", "body": "  ", "citations": []}', "empty_answer: "),
    "placeholder_echo": ("no json here, just words", "no_json: "),
}


@pytest.mark.parametrize("api", ["chat", "responses"])
@pytest.mark.parametrize("shape", sorted(SHAPES))
def test_each_answer_shape_is_read_or_blocked_with_a_reason(
    emu: Emulator, shape: str, api: str
) -> None:
    text, blocked = SHAPES[shape]
    emu.set_faults(service="openai", answer_text=text)
    result = provider(emu, api=api).generate(REQUEST)
    generation = [r for r in emu.requests if r.service == "openai"]
    repairable = blocked and blocked.startswith(("no_json", "empty_answer"))
    assert len(generation) == (2 if repairable else 1)  # at most one repair, only if it can help
    assert result.input_tokens > 0 and result.requests == len(generation)
    if blocked:
        assert result.blocked_reason and result.blocked_reason.startswith(blocked)
        assert (result.subject, result.body) == ("", "")
        return
    assert result.blocked_reason is None
    assert result.subject and result.body
    assert len(result.subject) <= 60
    assert "unsubscribe" not in result.body.lower()  # the footer carries it
    assert "{{first_name}}" not in result.body and "{{First_Name" not in result.body
    assert set(result.citations) <= {"DOC001", "DOC002"} and result.citations
    if shape == "missing_citations":
        assert result.citations == ("DOC001", "DOC002")
        assert "[DOC002]" in result.body  # the marker's case is fixed to the document id
    if shape == "tag_spacing":
        assert result.subject.startswith("{{ first_name }},")
        assert result.body.startswith("Hi {{ first_name }},")
    if shape == "capitalised_keys_and_subject_line":
        assert result.subject == "Jackets"
    if shape == "long_subject":
        assert result.subject.startswith("Our biggest winter jacket event")


def test_repair_is_asked_once_and_can_succeed(emu: Emulator) -> None:
    emu.set_faults(service="openai", answer_text="no json", times=1)
    result = provider(emu).generate(REQUEST)
    assert result.blocked_reason is None and result.requests == 2
    assert len(emu.requests) == 2


# -- structured output negotiation ---------------------------------------------------------------


@pytest.mark.parametrize("api", ["chat", "responses"])
def test_format_is_negotiated_down_and_remembered(emu: Emulator, api: str) -> None:
    emu.set_faults(service="openai", reject_formats=["json_schema"])
    chat = provider(emu, api=api)
    assert chat.generate(REQUEST).blocked_reason is None
    assert chat.generate(REQUEST).blocked_reason is None
    formats = [_format(r.body, api) for r in emu.requests]
    # One rejected json_schema request, then json_object for the rest of the build.
    assert formats == ["json_schema", "json_object", "json_object"]
    assert chat.format_fallbacks and "json_schema -> json_object" in chat.format_fallbacks[0]


def test_plain_instructions_when_no_format_is_accepted(emu: Emulator) -> None:
    emu.set_faults(service="openai", reject_formats=["json_schema", "json_object"])
    env = {"OPENAI_API_KEY": emu.keys.openai, "OPENAI_BASE_URL": f"{emu.url}/openai/v1"}
    chat = openai_factory({"model": "local", "ca_bundle": emu.ca_pem}, env)
    assert chat.generate(REQUEST).blocked_reason is None
    assert [_format(r.body, "chat") for r in emu.requests] == ["json_schema", "json_object", None]


def _format(body: dict, api: str) -> str | None:
    if api == "chat":
        return (body.get("response_format") or {}).get("type")
    return ((body.get("text") or {}).get("format") or {}).get("type")


def test_a_server_error_saying_the_request_is_invalid_is_not_retried() -> None:
    invalid = http_failure(
        "llama.cpp",
        500,
        {},
        "1 validation error: Input should be 'text' or 'json_object'",
        auth_fix="",
    )
    assert invalid.retryable is False and "rejected the request" in invalid.message
    busy = http_failure("llama.cpp", 500, {}, "Internal server error", auth_fix="")
    assert busy.retryable is True and "throttling or unavailable" in busy.message


def test_tokens_are_estimated_when_the_server_sends_no_usage(emu: Emulator) -> None:
    emu.set_faults(service="openai", answer_text=GOOD, no_usage=True)
    result = provider(emu).generate(REQUEST)
    assert result.estimated_tokens is True
    assert result.input_tokens > 0 and result.output_tokens >= len(GOOD) // 4


# -- adaptive concurrency ------------------------------------------------------------------------


def test_adaptive_limit_halves_on_congestion_and_grows_back_to_the_ceiling() -> None:
    limit = AdaptiveLimit(8)
    assert limit.limit == 1  # a probe first
    for _ in range(3):
        limit.succeeded()
    assert limit.limit == 8  # doubles while nothing went wrong, never above the ceiling
    limit.congested()
    limit.congested()
    assert limit.limit == 2
    limit.congested()
    limit.congested()
    assert limit.limit == 1  # never below one
    for _ in range(1 + 2 + 3):
        limit.succeeded()
    assert limit.limit == 4  # then grows by one per `limit` successes in a row


def test_a_one_slot_server_is_not_flooded(emu: Emulator, tmp_path: Path) -> None:
    """Timeouts lower the concurrency of the call layer: fewer requests are abandoned."""
    project = make_project(tmp_path / "p", emu)
    text = (project / "cpo.yml").read_text()
    text = text.replace("timeout_s: 30", "timeout_s: 0.4")
    (project / "cpo.yml").write_text(text)
    emu.set_faults(service="openai", path_contains="chat", timeout_s=1.0, times=2)
    run = Project.load(project, target="azure", env=azure_env(emu)).build()
    assert run.success, failures(run)
    calls = query(
        project,
        "select count(*), max(attempts), sum(attempts) from llm_calls where step = 'variants'",
    )
    assert calls[0][0] == 18 and calls[0][1] >= 2  # the timed-out ones were retried


# -- whole builds against a model that answers badly ---------------------------------------------


def test_a_model_whose_every_answer_is_unusable_still_gives_every_customer_the_control(
    emu: Emulator, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    from cpo.engine.cli import main

    project = make_project(tmp_path / "p", emu)
    emu.set_faults(service="openai", answer_text="<the email body>")
    env = azure_env(emu)
    args = ["build", "--project-dir", str(project), "--target", "azure"]
    with pytest.MonkeyPatch.context() as mp:
        for name, value in env.items():
            mp.setenv(name, value)
        assert main(args) == 0
        out = capsys.readouterr().out
        first = len([r for r in emu.requests if r.service == "openai"])
        assert first == 36  # 18 variants, each with exactly one repair request
        # Said first, with the reasons and the query to inspect them.
        assert "Every personalised variant was blocked (18 of 18)" in out
        assert "blocked (no_json)" in out and "cpo show --inline" in out
        rows = query(project, "select count(*), count(*) filter (where arm <> 'control' "
                              "and is_fallback) from assignments")  # fmt: skip
        assert rows[0][0] == query(project, "select count(*) from stg_customers")[0][0]
        assert rows[0][1] > 0
        messages = query(project, "select distinct variant_id from messages")
        assert messages == [("v_control",)]
        ledger = query(
            project,
            "select sum(input_tokens), sum(cost_usd), count(*) filter (where error like "
            "'blocked: no_json%') from llm_calls where step = 'variants'",
        )
        assert ledger[0][0] > 0 and ledger[0][1] > 0 and ledger[0][2] == 18
        errors = query(project, "select count(*) from run_errors where error like 'blocked: %'")
        assert errors == [(18,)]

        emu.reset()
        emu.set_faults(service="openai", answer_text="<the email body>")
        assert main(args) == 0  # unchanged: the blocked answers are cached, nothing is paid
        assert [r for r in emu.requests if r.service == "openai"] == []
        assert "Calls: 0 made" in capsys.readouterr().out

        emu.set_faults(service="openai", answer_text=None)
        assert main([*args, "--retry-failed"]) == 0  # asks again, and now gets good answers
        assert len([r for r in emu.requests if r.service == "openai"]) == 18
        approved = query(project, "select count(*) from approved_variants")
        assert approved == [(19,)]


def test_budget_counts_unusable_answers_and_their_repairs(emu: Emulator, tmp_path: Path) -> None:
    project = make_project(tmp_path / "p", emu)
    emu.set_faults(service="openai", answer_text="not json")
    with pytest.raises(BudgetExceededError, match=r"budget\.max_cost_usd"):
        Project.load(project, target="azure", env=azure_env(emu), max_cost_usd=0.0015).build()
    # What was recorded (tokens of every request, repairs included) stays under the cap.
    with sqlite3.connect(project / ".cpo" / "cache.sqlite") as con:
        total = con.execute("select sum(cost_usd) from llm_calls").fetchone()[0]
    assert 0 < total <= 0.0015
