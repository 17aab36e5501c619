"""Issue 4 end to end: the sample project built with ``--target azure`` against the emulator.

Every build goes through the real SDK clients (``openai``, ``azure-search-documents``,
``azure-ai-contentsafety``) over TLS to the loopback emulator, with faults injected there.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml

from cpo.engine.project import Project
from cpo.engine.results import RunResult
from tests.conftest import file_hash
from tests.emulator import Emulator, EmulatorKeys, FakeTokenCredential, RecordedRequest
from tests.helpers import query_rows as query  # tuples; also imported by other Azure tests
from tests.sample import copy_sample_project

DEPLOYMENT = "cpo-emulated-gpt"
KEYS = EmulatorKeys(
    openai="fake-openai-key-7f3a9c41",
    search_admin="fake-search-admin-key-2b8e1d57",
    search_query="fake-search-query-key-9c4f7a03",
    safety="fake-safety-key-5d1e8b66",
    token="fake-bearer-token-3a7c2e90",
)
SECRETS = (KEYS.openai, KEYS.search_admin, KEYS.search_query, KEYS.safety, KEYS.token)
WRONG_KEY = "wrong-key-0d9e8f7a6b5c"
ENV_VARS = (
    "AZURE_OPENAI_ENDPOINT",
    "AZURE_OPENAI_DEPLOYMENT_NAME",
    "AZURE_OPENAI_API_VERSION",
    "AZURE_OPENAI_API_KEY",
    "AZURE_SEARCH_ENDPOINT",
    "AZURE_SEARCH_INDEX_NAME",
    "AZURE_SEARCH_ADMIN_KEY",
    "AZURE_SEARCH_QUERY_KEY",
    "AZURE_CONTENT_SAFETY_ENDPOINT",
    "AZURE_CONTENT_SAFETY_API_KEY",
    "AZURE_KEY_VAULT_URL",
)
SAME_ROWS = ("customers", "segments", "assignments", "messages")
GENERATION_PATH = f"/openai/deployments/{DEPLOYMENT}/chat/completions"
ANALYZE_PATH = "/contentsafety/text:analyze"
SHIELD_PATH = "/contentsafety/text:shieldPrompt"
# One variant, picked by what only its prompt contains: its segment id and its tone.
CHAMPIONS_URGENT = ["(champions)", "Tone: urgent"]
LOYAL_FRIENDLY = ["(loyal)", "Tone: friendly"]


# -- helpers -----------------------------------------------------------------------------------


def azure_env(emu: Emulator, **changes: str | None) -> dict[str, str]:
    """The environment of an azure build against `emu`; a None value leaves a variable out."""
    env = {
        "AZURE_OPENAI_ENDPOINT": emu.url,
        "AZURE_OPENAI_DEPLOYMENT_NAME": DEPLOYMENT,
        "AZURE_OPENAI_API_VERSION": "2024-10-21",
        "AZURE_OPENAI_API_KEY": KEYS.openai,
        "AZURE_SEARCH_ENDPOINT": emu.url,
        "AZURE_SEARCH_INDEX_NAME": "cpo-content",
        "AZURE_SEARCH_ADMIN_KEY": KEYS.search_admin,
        "AZURE_SEARCH_QUERY_KEY": KEYS.search_query,
        "AZURE_CONTENT_SAFETY_ENDPOINT": emu.url,
        "AZURE_CONTENT_SAFETY_API_KEY": KEYS.safety,
    }
    env.update(changes)  # type: ignore[arg-type]
    return {k: v for k, v in env.items() if v is not None}


def make_project(destination: Path, emu: Emulator | None) -> Path:
    """A copy of the sample project whose azure target trusts the emulator's CA.

    Also: fast backoff (tests must not sleep), and a price for the emulated deployment.
    """
    project = copy_sample_project(destination)
    config_path = project / "cpo.yml"
    config = yaml.safe_load(config_path.read_text(encoding="utf-8"))
    if emu is not None:
        for settings in config["targets"]["azure"]["providers"].values():
            settings["ca_bundle"] = emu.ca_pem
    config["calls"].update(backoff_initial_s=0.01, backoff_max_s=0.05)
    config.setdefault("prices", {})[DEPLOYMENT] = {"input_per_1m": 0.15, "output_per_1m": 0.60}
    config_path.write_text(yaml.safe_dump(config, sort_keys=False), encoding="utf-8")
    return project


def build(project: Path, env: Mapping[str, str], **load: Any) -> RunResult:
    return Project.load(project, target="azure", env=env, **load).build()


def failures(run: RunResult) -> list[tuple[str, str]]:
    return [(r.name, r.message) for r in run.results if r.failed]


def approved_ids(project: Path) -> set[str]:
    return {r[0] for r in query(project, "select variant_id from approved_variants")}


def paths(requests: list[RecordedRequest]) -> set[str]:
    return {r.path for r in requests}


def use_env(monkeypatch: pytest.MonkeyPatch, env: Mapping[str, str]) -> None:
    """Make `env` the process environment's Azure variables (for the CLI)."""
    for name in ENV_VARS:
        monkeypatch.delenv(name, raising=False)
    for name, value in env.items():
        monkeypatch.setenv(name, value)


def assert_no_secrets(project: Path, *texts: str, secrets: tuple[str, ...] = SECRETS) -> None:
    """No key or token in logs, artifacts, the cache/ledger, llm_calls, run_errors or `texts`."""
    blobs: dict[str, bytes] = {f"text {i}": t.encode() for i, t in enumerate(texts)}
    for folder in ("logs", "target", ".cpo"):
        for path in (project / folder).rglob("*"):
            if path.is_file():
                blobs[str(path.relative_to(project))] = path.read_bytes()
    if (project / "cpo.duckdb").exists():
        for table in ("llm_calls", "run_errors"):
            rows = query(project, f"select * from {table}")
            blobs[table] = repr(rows).encode()
    assert any(name.startswith("logs") for name in blobs), "no log was written"
    for name, blob in blobs.items():
        for secret in secrets:
            assert secret.encode() not in blob, f"a secret leaked into {name}"


# -- fixtures ----------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def emu(emulators: Callable[..., Emulator]) -> Emulator:
    return emulators(tls=True, keys=KEYS)


@pytest.fixture(autouse=True)
def _fresh_emulator(emu: Emulator) -> None:
    emu.reset()


@dataclass(frozen=True)
class AzureBuild:
    project: Path
    first: list[RecordedRequest]
    second: list[RecordedRequest]
    second_run_id: str
    outputs: tuple[str, ...]


@pytest.fixture(scope="module")
def azure_build(emu: Emulator, tmp_path_factory: pytest.TempPathFactory) -> AzureBuild:
    """Built twice with API keys: once from scratch, once more with nothing changed."""
    emu.reset()
    project = make_project(tmp_path_factory.mktemp("azure"), emu)
    run = build(project, azure_env(emu))
    assert run.success, failures(run)
    first = emu.requests
    emu.reset()
    again = build(project, azure_env(emu))
    assert again.success, failures(again)
    messages = tuple(r.message for r in [*run.results, *again.results])
    return AzureBuild(project, first, emu.requests, again.invocation_id, messages)


# -- the whole build ---------------------------------------------------------------------------


def test_azure_build_produces_the_offline_tables(
    azure_build: AzureBuild, sample_build: Path
) -> None:
    project = azure_build.project
    tables = "select table_name from information_schema.tables order by 1"
    assert query(project, tables) == query(sample_build, tables)
    for table in SAME_ROWS:
        count = f"select count(*) from {table}"
        assert query(project, count) == query(sample_build, count), table
    segments = {r[0] for r in query(project, "select segment_id from segment_profiles")}
    tones = yaml.safe_load((project / "cpo.yml").read_text())["vars"]["generation"]["tones"]
    expected = {f"v_{s}_{t}" for s in segments for t in tones} | {"v_control"}
    variants = query(project, "select variant_id, provider, model, status from variants")
    assert {v[0] for v in variants} == expected
    # The control is written by a person (prompts/control/), never generated.
    assert {(v[1], v[2], v[3]) for v in variants if v[0] != "v_control"} == {
        ("azure_openai", DEPLOYMENT, "generated")
    }
    assert {(v[1], v[2]) for v in variants if v[0] == "v_control"} == {
        ("human", "prompts/control/")
    }
    assert approved_ids(project) == expected  # the emulator copies cited sentences: all pass
    grounding = query(
        project,
        'select "check", bool_and(passed) from safety_screenings s join approved_variants a '
        "using (variant_id) where \"check\" like 'grounding:%' group by 1 order by 1",
    )
    assert grounding == [
        ("grounding:citations", True),
        ("grounding:claims", True),
        ("grounding:placeholders", True),
        ("grounding:sentences", True),
    ]
    harm = query(project, "select count(*) from safety_screenings where \"check\" like 'harm:%'")
    assert harm[0][0] >= 4 * len(expected)  # the four categories came from Content Safety
    assert query(project, "select count(*) from messages where variant_id is null") == [(0,)]
    # The emulator words its own unsubscribe line; every message ends with the project's footer.
    footed = query(
        project,
        "select count(*) from messages where contains(body, chr(10) || '--' || chr(10) || "
        "'Northwind Outfitters') and regexp_matches(body, "
        "'\\nUnsubscribe: https://northwind\\.example/unsubscribe/[0-9a-f]{16}$')",
    )
    assert footed == query(project, "select count(*) from stg_customers")
    assert query(project, "select count(*) from messages where body ilike '%prefer fewer%'") == [
        (0,)
    ]


def test_wire_requests_use_keys_paths_and_api_versions(azure_build: AzureBuild) -> None:
    requests = azure_build.first
    generation = [r for r in requests if r.service == "openai"]
    assert paths(generation) == {GENERATION_PATH}
    assert len(generation) == 18  # segments x tones; the control is not generated
    for r in generation:
        assert r.api_version == "2024-10-21"
        assert r.headers["api-key"] == KEYS.openai
        assert "authorization" not in r.headers
        assert r.body["response_format"]["type"] == "json_schema"  # structured output
        assert r.body["model"] == DEPLOYMENT
    search = [r for r in requests if r.service == "search"]
    assert {(r.method, r.path) for r in search} == {
        ("PUT", "/indexes('cpo-content')"),
        ("POST", "/indexes('cpo-content')/docs/search.index"),
        ("POST", "/indexes('cpo-content')/docs/search.post.search"),
    }
    for r in search:
        assert r.api_version, r.path
        writing = not r.path.endswith("search.post.search")
        assert r.headers["api-key"] == (KEYS.search_admin if writing else KEYS.search_query)
    safety = [r for r in requests if r.service == "safety"]
    analyze = [r for r in safety if r.path == ANALYZE_PATH]
    # Tones of one segment may get the same copy: equal texts are screened once (cache).
    texts = {r.body["text"] for r in analyze}
    assert len(texts) <= len(analyze) <= 19
    shields = [r for r in safety if r.path == SHIELD_PATH]  # documents, before retrieval
    assert shields and all(r.api_version == "2024-09-01" for r in shields)
    safety = [r for r in safety if r.path != SHIELD_PATH]
    assert {r.path for r in safety} - {ANALYZE_PATH} == {
        "/contentsafety/text/blocklists/competitors",
        "/contentsafety/text/blocklists/competitors:addOrUpdateBlocklistItems",
    }
    assert len(safety) == len(analyze) + 2  # the blocklist is synced once, not per thread
    for r in safety:
        assert r.api_version == "2023-10-01"
        assert r.headers["ocp-apim-subscription-key"] == KEYS.safety
    assert all(r.body["blocklistNames"] == ["competitors"] for r in analyze)


def test_rebuild_makes_no_generation_or_safety_request(azure_build: AzureBuild) -> None:
    again = azure_build.second
    assert not [r for r in again if r.path in (GENERATION_PATH, ANALYZE_PATH, SHIELD_PATH)]
    assert not [r for r in again if r.path.endswith("search.post.search")]
    # The index lives in the service: an unchanged corpus is not uploaded (or embedded) again.
    assert not [r for r in again if "/indexes" in r.path]
    rows = query(
        azure_build.project,
        "select step, bool_and(cache_hit), count(*), sum(cost_usd) from llm_calls "
        f"where run_id = '{azure_build.second_run_id}' group by 1 order by 1",
    )
    assert rows == [
        # 7 searches, the index, and the Prompt Shields check of each of the 34 documents
        ("retrieved_content", True, 42, 0.0),
        ("safety_screenings", True, 19, 0.0),
        ("variants", True, 18, 0.0),
    ]
    paid = query(azure_build.project, "select sum(cost_usd) from llm_calls where not cache_hit")
    assert paid[0][0] > 0  # the first build's calls were priced


def test_no_secret_in_logs_artifacts_or_tables(azure_build: AzureBuild) -> None:
    assert_no_secrets(azure_build.project, *azure_build.outputs)


def test_token_auth_over_tls_and_one_content_filter_refusal(
    emu: Emulator, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    credential = FakeTokenCredential(KEYS.token)
    monkeypatch.setattr("azure.identity.DefaultAzureCredential", lambda **_: credential)
    project = make_project(tmp_path / "p", emu)
    emu.set_faults(service="openai", content_filter="prompt", body_contains=CHAMPIONS_URGENT)
    no_keys = azure_env(
        emu,
        AZURE_OPENAI_API_KEY=None,
        AZURE_SEARCH_ADMIN_KEY=None,
        AZURE_SEARCH_QUERY_KEY=None,
        AZURE_CONTENT_SAFETY_API_KEY=None,
    )
    run = build(project, no_keys)
    assert run.success, failures(run)
    assert emu.url.startswith("https://")
    services = {r.service for r in emu.requests}
    assert services == {"openai", "search", "safety"}
    for r in emu.requests:
        assert r.headers["authorization"] == f"Bearer {KEYS.token}", r.path
        assert "api-key" not in r.headers and "ocp-apim-subscription-key" not in r.headers
    assert set(credential.scopes) == {
        "https://cognitiveservices.azure.com/.default",
        "https://search.azure.com/.default",
    }
    # The refusal is a blocked variant, recorded, not retried; the other 18 are approved.
    status = query(project, "select status from variants where variant_id = 'v_champions_urgent'")
    assert status == [("content_filtered",)]
    assert "v_champions_urgent" not in approved_ids(project)
    assert len(approved_ids(project)) == 18
    attempts = query(
        project,
        "select attempts from llm_calls where item_key = 'v_champions_urgent' "
        "and step = 'variants'",
    )
    assert attempts == [(1,)]
    errors = query(project, "select error from run_errors where item_key = 'v_champions_urgent'")
    assert errors and "content_filter" in errors[0][0]
    assert_no_secrets(project)


def test_uncited_price_in_an_answer_is_blocked_as_ungrounded(emu: Emulator, tmp_path: Path) -> None:
    project = make_project(tmp_path / "p", emu)
    emu.set_faults(service="openai", uncited_claim="Only $9.99!", body_contains=LOYAL_FRIENDLY)
    run = build(project, azure_env(emu))
    assert run.success, failures(run)
    body = query(project, "select body from variants where variant_id = 'v_loyal_friendly'")
    assert "Only $9.99!" in body[0][0]
    failed = query(
        project,
        "select \"check\", reason from safety_screenings where variant_id = 'v_loyal_friendly' "
        "and not passed",
    )
    assert failed == [("grounding:claims", "ungrounded_claim: $9.99")]
    assert "v_loyal_friendly" not in approved_ids(project)
    assert len(approved_ids(project)) == 18


# -- faults ------------------------------------------------------------------------------------


def test_transient_429_and_503_are_retried_to_the_same_result(
    emu: Emulator, tmp_path: Path, azure_build: AzureBuild
) -> None:
    project = make_project(tmp_path / "p", emu)
    emu.set_faults(failure_rate=0.2, statuses=[429, 503], retry_after_ms="5", seed=7)
    run = build(project, azure_env(emu))
    assert run.success, failures(run)
    injected = [r for r in emu.requests if r.service in ("openai", "search", "safety")]
    assert len(injected) > 45  # some requests were answered 429/503 and repeated
    assert approved_ids(project) == approved_ids(azure_build.project)
    bodies = "select variant_id, subject, body from variants order by 1"
    assert query(project, bodies) == query(azure_build.project, bodies)
    retried = query(project, "select count(*), max(attempts) from llm_calls where attempts > 1")
    assert retried[0][0] > 0 and retried[0][1] >= 2
    assert query(project, "select count(*) from run_errors") == [(0,)]


def test_a_service_down_for_good_stops_the_step_and_keeps_earlier_results(
    emu: Emulator,
    tmp_path: Path,
    azure_build: AzureBuild,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    from cpo.engine.cli import main

    project = make_project(tmp_path / "p", emu)
    (project / "cpo.duckdb").write_bytes((azure_build.project / "cpo.duckdb").read_bytes())
    before = file_hash(project / "cpo.duckdb")
    use_env(monkeypatch, azure_env(emu))
    # Screening's blocklist sync is down (documents' Prompt Shields still answer: a shield down
    # for good stops retrieval instead, tests/test_prompt_shields.py).
    emu.set_faults(service="safety", path_contains="blocklists", down=True)
    code = main(["build", "--project-dir", str(project), "--target", "azure"])
    out, err = capsys.readouterr()
    assert code == 1
    assert "safety_screenings" in out and "circuit breaker opened" in out
    assert "HTTP 503" in out and "Results obtained so far are cached" in out
    assert file_hash(project / "cpo.duckdb") == before
    # The first safety request of an item syncs the blocklist: it is what fails here.
    refused = [r for r in emu.requests if r.service == "safety" and r.path != SHIELD_PATH]
    assert 0 < len(refused) <= 5 * 6  # breaker_failures x max_attempts, one item at a time
    assert_no_secrets(project, out, err)
    # Generation succeeded before safety failed: its answers are cached, not paid again.
    emu.reset()
    run = build(project, azure_env(emu))
    assert run.success, failures(run)
    assert not [r for r in emu.requests if r.path == GENERATION_PATH]
    assert 0 < len([r for r in emu.requests if r.path == ANALYZE_PATH]) <= 19
    assert approved_ids(project) == approved_ids(azure_build.project)


@pytest.mark.parametrize(
    ("variable", "service", "wrong_service", "step"),
    [
        ("AZURE_SEARCH_ADMIN_KEY", "Azure AI Search", "search", "retrieved_content"),
        ("AZURE_OPENAI_API_KEY", "Azure OpenAI", "openai", "variants"),
        # Documents pass Prompt Shields before retrieval: the first step to use the safety key.
        ("AZURE_CONTENT_SAFETY_API_KEY", "Azure AI Content Safety", "safety", "retrieved_content"),
    ],
)
def test_a_wrong_key_fails_clearly_without_a_retry_storm(
    emu: Emulator,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    variable: str,
    service: str,
    wrong_service: str,
    step: str,
) -> None:
    from cpo.engine.cli import main

    project = make_project(tmp_path / "p", emu)
    use_env(monkeypatch, azure_env(emu, **{variable: WRONG_KEY}))
    code = main(["build", "--project-dir", str(project), "--target", "azure"])
    out, err = capsys.readouterr()
    assert code == 1
    failed_line = next(line for line in out.splitlines() if line.strip().startswith(step + ":"))
    assert service in failed_line and variable in failed_line and "HTTP 401" in failed_line
    refused = [r for r in emu.requests if r.service == wrong_service]
    assert 1 <= len(refused) <= 2, [r.path for r in refused]
    assert not (project / "cpo.duckdb").exists()
    assert_no_secrets(project, out, err, secrets=(*SECRETS, WRONG_KEY))


def test_a_missing_endpoint_fails_before_any_call(
    emu: Emulator,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    from cpo.engine.cli import main

    project = make_project(tmp_path / "p", emu)
    use_env(monkeypatch, azure_env(emu, AZURE_CONTENT_SAFETY_ENDPOINT=None))
    code = main(["build", "--project-dir", str(project), "--target", "azure"])
    out, err = capsys.readouterr()
    assert code == 1
    assert "AZURE_CONTENT_SAFETY_ENDPOINT is not set" in out + err
    assert emu.requests == []
    assert not (project / "cpo.duckdb").exists()
    assert_no_secrets(project, out, err)


# -- plan and budget ---------------------------------------------------------------------------


def test_plan_counts_calls_without_calling_and_the_budget_stops_the_build(
    emu: Emulator,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    from cpo.engine.cli import main

    project = make_project(tmp_path / "p", emu)
    use_env(monkeypatch, azure_env(emu))
    plan = Project.load(project, target="azure", env=azure_env(emu)).plan()
    assert plan.run.success, failures(plan.run)
    assert emu.requests == []
    assert plan.target == "azure"
    assert sum(not c.possible for c in plan.calls) == 44
    assert sum(c.possible for c in plan.calls) == 18  # repairs, only if answers are unusable
    steps = ("retrieved_content", "variants", "safety_screenings")
    rows = {
        r["step"]: [r["provider"], r["model"], r["calls"], r["possible_repairs"]]
        for r in plan.by_step()
        if r["step"] in steps
    }
    assert rows == {
        "retrieved_content": ["azure_search", "azure-ai-search:semantic", 7, 0],
        "variants": ["azure_openai", DEPLOYMENT, 18, 18],
        "safety_screenings": ["azure_content_safety", "content-safety-2023-10-01", 19, 0],
    }
    assert plan.cost_usd > 0
    assert sorted(p.name for p in project.glob("*duckdb*")) == []  # a plan writes nothing
    code = main(
        ["build", "--project-dir", str(project), "--target", "azure", "--max-cost", "0.000001"]
    )
    out, err = capsys.readouterr()
    assert code == 1
    assert "budget.max_cost_usd: stopping before a call estimated at $" in err
    assert "--max-cost" in err
    assert not [r for r in emu.requests if r.path == GENERATION_PATH]
    assert sorted(p.name for p in project.glob("*duckdb*")) == []  # nothing committed or left
    assert_no_secrets(project, out, err)


def test_plan_after_a_build_plans_no_call(emu: Emulator, azure_build: AzureBuild) -> None:
    emu.reset()
    plan = Project.load(azure_build.project, target="azure", env=azure_env(emu)).plan()
    assert plan.run.success, failures(plan.run)
    assert plan.calls == [] and plan.cost_usd == 0
    assert emu.requests == []
