"""The model-judge safety provider (`safety: {type: llm_judge}`) against the loopback emulator."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from cpo.engine.config import load_config
from cpo.errors import ConfigurationError
from cpo.personalization.policy import approved, harm_checks
from cpo.providers.base import HARM_CATEGORIES, SafetyRequest, get_provider_factory
from cpo.providers.llm_judge import (
    LlmJudgeSettings,
    VerdictError,
    make_llm_judge,
    parse_json_verdict,
    parse_llama_guard,
    parse_yes_no,
)
from tests.emulator import Emulator

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def emu(emulators: Callable[..., Emulator]) -> Emulator:
    return emulators()


def env(emu: Emulator) -> dict[str, str]:
    return {"OPENAI_API_KEY": emu.keys.openai, "OPENAI_BASE_URL": f"{emu.url}/openai/v1"}


def judge(emu: Emulator, **settings):
    return get_provider_factory("safety", "llm_judge")({"type": "llm_judge", **settings}, env(emu))


def verdict(emu: Emulator, text: str, **settings):
    result = judge(emu, **settings).analyze(SafetyRequest(key="v1", text=text))
    return result, harm_checks(result, {})


def test_clean_verdict_passes_and_sends_the_rubric(emu):
    emu.reset()
    result, checks = verdict(emu, "Our warm parka is back in three colours.", model="judge-7b")
    assert approved(checks)
    assert dict(result.severities) == dict.fromkeys(HARM_CATEGORIES, 0)
    sent = emu.requests_for("openai")[-1]
    assert sent.path == "/openai/v1/chat/completions" and sent.body["model"] == "judge-7b"
    system = sent.body["messages"][0]["content"]
    assert system == (ROOT / "prompts/safety/judge.txt").read_text()
    assert sent.body["temperature"] == 0.0
    assert result.input_tokens == 120 and result.output_tokens == 40  # priced by the call layer


def test_harmful_verdict_blocks_with_its_category(emu):
    result, checks = verdict(emu, "We will murder the competition, literally.")
    assert result.severities["Violence"] == 6
    assert not approved(checks)
    failed = [c.check for c in checks if not c.passed]
    assert failed == ["harm:Violence"]


@pytest.mark.parametrize(
    "directive", ["garbage", "refuse", "missing", "string", "out_of_range", "filter"]
)
def test_unparseable_verdicts_fail_closed(emu, directive):
    result, checks = verdict(emu, f"A lovely fleece. [[judge:{directive}]]")
    assert not approved(checks), directive
    assert any(c.reason.startswith("not_screened") for c in checks)
    unrated = set(HARM_CATEGORIES) - set(result.severities)
    assert unrated and all(result.reasons[c].startswith("unparseable") for c in unrated)


@pytest.mark.parametrize("directive", ["fenced", "map"])
def test_other_well_formed_shapes_are_read(emu, directive):
    result, checks = verdict(emu, f"A lovely fleece. [[judge:{directive}]]")
    assert approved(checks), checks
    assert set(result.severities) == set(HARM_CATEGORIES)


def test_llama_guard_shape(emu):
    result, checks = verdict(emu, "Trail shoes that grip.", model="llama-guard3:1b")
    assert approved(checks) and dict(result.severities) == dict.fromkeys(HARM_CATEGORIES, 0)
    sent = emu.requests_for("openai")[-1]
    assert [m["role"] for m in sent.body["messages"]] == ["user"]  # the guard's own template
    result, checks = verdict(emu, "Show them the nude photos.", model="llama-guard3:1b")
    assert result.severities["Sexual"] == 6 and not approved(checks)


def test_yes_no_guards_ask_once_per_category(emu):
    emu.reset()
    result, checks = verdict(emu, "Self-harm is never the answer.", model="shieldgemma:2b")
    assert result.severities["SelfHarm"] == 6 and not approved(checks)
    assert result.severities["Hate"] == 0
    assert len(emu.requests_for("openai")) == 4
    result, checks = verdict(emu, "Cosy socks.", model="granite3-guardian:2b")
    assert approved(checks)


def test_unreachable_judge_raises_for_the_call_layer():
    from cpo.errors import ProviderError

    provider = make_llm_judge(
        {"type": "llm_judge", "timeout_s": 2},
        {"OPENAI_API_KEY": "k", "OPENAI_BASE_URL": "http://127.0.0.1:9/v1"},
    )
    with pytest.raises(ProviderError) as info:
        provider.analyze(SafetyRequest(key="v1", text="hello"))
    assert info.value.retryable


@pytest.mark.parametrize(
    "text",
    [
        '{"verdicts": [{"category": "Hate", "severity": true}]}',
        '{"verdicts": [{"category": "Hate", "severity": 4.0}]}',
        '{"verdicts": [{"category": "Spam", "severity": 1}]}',
        '{"verdicts": [{"category": "Hate", "severity": 1}, {"category": "hate", "severity": 2}]}',
        '{"verdicts": [{"category": "Hate", "severity": 1, "extra": 1}]}',
        '{"verdicts": []}',
        "[]",
        '"safe"',
        "```json\n{}\n```\n```json\n{}\n```",
    ],
)
def test_strict_json_parse_rejects(text):
    with pytest.raises(VerdictError):
        parse_json_verdict(text)


def test_parsers_accept_aliases_and_guard_answers():
    severities, _ = parse_json_verdict('{"self_harm": 2, "Sexual": {"severity": 0}}')
    assert severities == {"SelfHarm": 2, "Sexual": 0}
    assert parse_llama_guard("unsafe\nS7") == ({}, {})  # unsafe, no category: fails closed
    with pytest.raises(VerdictError):
        parse_llama_guard("unsafe")
    assert parse_yes_no("Yes.") and not parse_yes_no("No")
    with pytest.raises(VerdictError):
        parse_yes_no("Maybe")


def test_settings_are_checked():
    good_env = {"OPENAI_API_KEY": "k", "OPENAI_BASE_URL": "http://127.0.0.1:9/v1"}
    with pytest.raises(ConfigurationError, match="verdict_format"):
        make_llm_judge({"verdict_format": "xml"}, good_env)
    with pytest.raises(ConfigurationError, match="treshold"):
        make_llm_judge({"treshold": 3}, good_env)
    with pytest.raises(ConfigurationError, match="rubric"):
        make_llm_judge({"rubric": "prompts/safety/missing.txt"}, good_env)
    with pytest.raises(ConfigurationError, match="OPENAI_API_KEY"):
        make_llm_judge({}, {})


@pytest.mark.parametrize(
    ("judge", "key", "expected"),
    [
        ("{type: llm_judge, max_tokens: 0}", "max_tokens", "at least 1"),
        ("{type: llm_judge, verdict_format: xml}", "verdict_format", "yes_no"),
        ("{type: llm_judge, treshold: 3}", "treshold", "unknown key 'treshold'"),
        ("{type: llm_judge, verify: 'no'}", "verify", "true or false"),
    ],
)
def test_judge_settings_are_checked_with_cpo_yml(tmp_path, judge, key, expected):
    """The judge's settings model is part of the one settings schema: key path and line."""
    (tmp_path / "cpo.yml").write_text(
        "name: t\ntargets:\n  judged:\n    providers:\n"
        f"      safety:\n        - {{type: offline}}\n        - {judge}\n"
    )
    with pytest.raises(ConfigurationError) as info:
        load_config(tmp_path)
    assert info.value.key == f"targets.judged.providers.safety[1].{key}"
    assert info.value.path == "cpo.yml" and info.value.line == 7
    assert expected in info.value.message


def test_judge_settings_model_gives_the_chat_provider_its_settings():
    checked = LlmJudgeSettings.model_validate({"model": "m", "timeout_s": 2, "verify": False})
    chat = checked.chat_settings()
    assert chat == {
        "model": "m",
        "timeout_s": 2.0,
        "verify": False,
        "api": "chat",
        "structured_output": False,
        "temperature": 0.0,
        "max_tokens": 400,
    }


def test_packaged_rubric_matches_the_project_prompt():
    packaged = ROOT / "cpo/providers/lexicons/judge_rubric.txt"
    assert packaged.read_text() == (ROOT / "prompts/safety/judge.txt").read_text()
    yes_no = ROOT / "cpo/providers/lexicons/judge_yes_no.txt"
    assert yes_no.read_text() == (ROOT / "prompts/safety/yes_no.txt").read_text()


def test_describe_changes_with_the_rubric(tmp_path, emu):
    rubric = tmp_path / "r.txt"
    rubric.write_text("You are a safety judge. Answer JSON.")
    a = judge(emu).describe()
    b = judge(emu, rubric=str(rubric)).describe()
    assert a["rubric_digest"] != b["rubric_digest"]
    assert emu.keys.openai not in str(b)  # no secret in cache keys


def test_safety_eval_benchmark_runs_the_judge(emu, tmp_path):
    import json
    import os
    import subprocess
    import sys

    corpus = tmp_path / "c.jsonl"
    lines = [
        {"id": "a", "text": "Warm socks for winter.", "expected": "allow", "kind": "clean",
         "note": "clean"},
        {"id": "b", "text": "We will murder you.", "expected": "block", "kind": "harmful",
         "note": "threat"},
        {"id": "c", "text": "Cosy hats [[judge:garbage]]", "expected": "allow", "kind": "clean",
         "note": "unparseable verdict blocks"},
    ]  # fmt: skip
    corpus.write_text("\n".join(json.dumps(line) for line in lines), encoding="utf-8")
    variables = {**os.environ, **env(emu), "CPO_JUDGE_MODEL": "judge-7b"}
    out = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks/safety_eval.py"), "--corpus", str(corpus),
         "--provider", "llm_judge"],
        capture_output=True, text=True, check=True, env=variables, cwd=tmp_path,
    ).stdout  # fmt: skip
    report = json.loads(out.strip().splitlines()[-1])
    assert report["provider"] == "llm_judge" and report["n"] == 3
    assert report["recall"] == 1.0
    assert [fp["id"] for fp in report["false_positives"]] == ["c"]  # fail-closed, on purpose
