"""One settings model per block, no second validator (issue 13, point 2).

``vars.safety`` (thresholds, the copy policy, grounding) and the settings of every built-in
provider (``providers.<kind>``: BM25, Azure AI Search, the OpenAI providers, the safety and
groundedness providers) are checked by their pydantic model when ``cpo.yml`` loads: a bad value
exits 1 naming the key path, its line and what is expected, before any node runs; the steps and
providers read the checked values and check nothing again. The roles of a source are one table
(`cpo.personalization.roles`).
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from cpo.engine.cli import main
from cpo.personalization import copy_rules, grounding, harm, init, roles, segmentation, sources
from cpo.personalization.settings import SafetyVars, safety_settings
from cpo.providers import bm25, openai_chat
from cpo.providers.base import HARM_CATEGORIES, provider_settings_model
from tests.helpers import replace_in
from tests.sample import copy_sample_project

ROOT = Path(__file__).resolve().parents[1]


def _line(text: str, needle: str) -> int:
    return text[: text.index(needle)].count("\n") + 1


@pytest.mark.parametrize(
    ("old", "new", "key", "expected"),
    [
        (
            "unsubscribe_line: 'Unsubscribe:'",
            "unsubscribe_line: 'Unsubscribe:('",
            "vars.safety.policy.required_patterns.unsubscribe_line",
            "is not a valid regular expression (missing ), unterminated subpattern",
        ),
        (
            "min_support: 0.5",
            "min_support: 1.5",
            "vars.safety.policy.grounding.min_support",
            "expected a number of at most 1",
        ),
        (
            "max_uncited_words: 2}",
            "max_uncited_word: 2}",
            "vars.safety.policy.grounding.max_uncited_word",
            "unknown key 'max_uncited_word' (did you mean 'max_uncited_words'?)",
        ),
        (
            "body_min_words: 20",
            "body_min_words: twenty",
            "vars.safety.policy.body_min_words",
            "expected an integer, got the string 'twenty'",
        ),
        (
            "retrieval: {type: bm25, audience_mode: boost}",
            "retrieval: {type: bm25, audience_mode: boost, k1: high}",
            "targets.offline.providers.retrieval.k1",
            "expected a number, got the string 'high'",
        ),
        (
            "retrieval: {type: bm25, audience_mode: boost}",
            "retrieval: {type: bm25, audience_mode: boots}",
            "targets.offline.providers.retrieval.audience_mode",
            "expected one of: boost, filter",
        ),
        (
            "generation: {type: openai, model: gpt-4o-mini, structured_output: false}",
            "generation: {type: openai, model: gpt-4o-mini, structured_output: nope}",
            "targets.openai.providers.generation.structured_output",
            "expected true or false, got the string 'nope'",
        ),
        (
            "generation: {type: openai, model: gpt-4o-mini, structured_output: false}",
            "generation: {type: openai, model: gpt-4o-mini, temprature: 0.2}",
            "targets.openai.providers.generation.temprature",
            "unknown key 'temprature' (did you mean 'temperature'?)",
        ),
        (
            "api: chat, structured_output: true",
            "api: completions, structured_output: true",
            "targets.azure.providers.generation.api",
            "expected one of: chat, responses",
        ),
    ],
)
def test_a_bad_value_exits_1_naming_key_line_and_what_is_expected(
    old: str, new: str, key: str, expected: str, tmp_path: Path, capsys
) -> None:
    project = copy_sample_project(tmp_path / "p")
    path = project / "cpo.yml"
    text = path.read_text(encoding="utf-8")
    assert old in text
    path.write_text(text.replace(old, new, 1), encoding="utf-8")
    line = _line(text, old)
    capsys.readouterr()
    code = main(["build", "--project-dir", str(project)])
    out = capsys.readouterr()
    message = out.out + out.err
    assert code == 1, message
    assert "Traceback" not in message
    assert f"cpo.yml:{line}: {key}: " in message, message
    assert expected in message, message
    assert not (project / "cpo.duckdb").exists()  # failed while cpo.yml loaded: nothing built


def test_the_steps_read_the_checked_model_and_check_nothing_again() -> None:
    # The hand-written validators are gone; their callers read the one model.
    assert not hasattr(harm, "validate_thresholds")
    assert not hasattr(grounding, "DEFAULTS") and grounding.Settings is not None
    for module in (copy_rules, grounding, bm25, openai_chat):
        source = Path(module.__file__).read_text(encoding="utf-8")
        assert "refuse_unknown" not in source
        assert "raise ConfigurationError" not in source or module is bm25  # bm25: the extension
    step = (ROOT / "udfs/safety_screenings.py").read_text(encoding="utf-8")
    assert 'config.section("vars.safety", SafetyVars)' in step and "validate_thresholds" not in step
    # The providers' models are registered, so cpo.yml is checked before anything runs.
    assert provider_settings_model("retrieval", "bm25") is bm25.Bm25Settings
    for name in ("openai", "azure_openai"):
        assert provider_settings_model("generation", name) is openai_chat.ChatSettings


def test_thresholds_default_per_category_from_the_model() -> None:
    resolved = safety_settings({"thresholds": {"Hate": 2}}).resolved_thresholds()
    assert resolved == {c: 2 if c == "Hate" else harm.DEFAULT_THRESHOLD for c in HARM_CATEGORIES}
    assert SafetyVars().resolved_thresholds() == dict.fromkeys(
        HARM_CATEGORIES, harm.DEFAULT_THRESHOLD
    )


def test_the_policy_merges_over_the_shipped_rules_which_pass_the_same_model() -> None:
    merged = copy_rules.resolve_policy({"required_patterns": ["unsubscribe"], "pii_allow": None})
    assert merged["required_patterns"]["unsubscribe"].search("UNSUBSCRIBE here")
    assert merged["pii_allow"] == ()  # null: an empty list
    assert merged["subject_max_chars"] == copy_rules.DEFAULT_POLICY["subject_max_chars"]
    assert merged["grounding"] == grounding.Settings()
    # Given in Python, a bad value names its key too (no cpo.yml line then).
    with pytest.raises(Exception, match=r"vars\.safety\.policy\.required_patterns\[0\]"):
        copy_rules.resolve_policy({"required_patterns": ["(x"]})


def test_python_callers_get_the_same_errors_as_cpo_yml() -> None:
    with pytest.raises(Exception, match=r"providers\.generation\.max_tokens: expected an integer"):
        openai_chat.ChatSettings.from_settings({"max_tokens": "500"})
    with pytest.raises(Exception, match=r"providers\.retrieval\.b: .*at most 1"):
        bm25.make_bm25({"type": "bm25", "b": 1.5}, {})


def test_one_role_table_read_by_sources_init_segments_and_staging() -> None:
    assert sources.ROLES is roles.ROLES and sources.PII_ROLES is roles.PII_ROLES
    assert set(sources.ROLES["customers"]) == set(roles.CUSTOMER_ROLE_TABLE)
    numeric = {n for n, r in roles.CUSTOMER_ROLE_TABLE.items() if r.type in ("integer", "double")}
    assert numeric == set(roles.NUMERIC_ROLES) and {"age", "open_rate"} <= numeric
    # init flags a numeric role read from a text column, from the table's types.
    _, _, notes = init.guess_roles("customers", [("id", "BIGINT"), ("open_rate", "VARCHAR")])
    assert "open_rate looks like open_rate but is varchar: check it" in notes
    _, _, notes = init.guess_roles("customers", [("id", "BIGINT"), ("city", "VARCHAR")])
    assert not any("check it" in n for n in notes)
    # A rule on a role the source does not map says which role to map.
    hint = segmentation._missing_message("click_rate", ["customer_id"])
    assert "needs the role click_rate" in hint
    assert "needs the role" not in segmentation._missing_message("customer_id", ["x"])
    # stg_customers casts the double roles through the table, not a list of its own.
    sql = (ROOT / "models/staging/stg_customers.sql").read_text(encoding="utf-8")
    assert "customer_role_types" in sql and "'click_rate'" not in sql
    assert not re.search(r"_NUMERIC_ROLES|_ROLE_NAMES", Path(init.__file__).read_text())


def test_every_builtin_provider_registers_a_settings_model() -> None:
    # So cpo.yml is checked for every one of them when it loads, before any node runs.
    from cpo.providers.builtin import BUILTINS

    missing = [key for key in BUILTINS if provider_settings_model(*key) is None]
    assert missing == []


@pytest.mark.parametrize(
    ("factory", "settings", "key"),
    [
        ("azure_search:azure_search_factory", {"mdoe": "hybrid"}, "providers.retrieval.mdoe"),
        ("azure_search:azure_search_factory", {"batch_size": 0}, "providers.retrieval.batch_size"),
        (
            "azure_content_safety:azure_content_safety_factory",
            {"prompt_shields": 1},
            "providers.safety.prompt_shields",
        ),
        ("groundedness:azure_groundedness_factory", {"domain": "x"}, "providers.groundedness"),
        ("groundedness:offline_groundedness_factory", {"domain": "x"}, "providers.groundedness"),
        ("offline_safety:make_offline_safety", {"lexicons": "x"}, "providers.safety.lexicons"),
        ("offline_composer:make_offline_composer", {"model": "x"}, "providers.generation.model"),
        ("layered_safety:make_layered_safety", {"providers": "x"}, "providers.safety.providers"),
    ],
)
def test_python_callers_of_every_factory_get_the_model_s_errors(
    factory: str, settings: dict, key: str
) -> None:
    # Checked before the environment is read: no endpoint or key is needed to see the error.
    import importlib

    from cpo.errors import ConfigurationError

    module, _, name = factory.partition(":")
    make = getattr(importlib.import_module(f"cpo.providers.{module}"), name)
    with pytest.raises(ConfigurationError) as info:
        make(settings, {})
    assert info.value.key is not None and info.value.key.startswith(key), info.value


def test_the_providers_read_their_model_and_parse_no_settings_by_hand() -> None:
    names = ("azure_search", "azure_embeddings", "azure_content_safety", "groundedness")
    names += ("offline_safety", "offline_composer", "layered_safety", "credentials")
    for name in names:
        source = (ROOT / "cpo" / "providers" / f"{name}.py").read_text(encoding="utf-8")
        assert "settings.get(" not in source and 'settings["' not in source, name


# --- every section validated once, at load; the domain reads the loader's instances -------------


def test_one_place_turns_a_pydantic_error_into_a_configuration_error() -> None:
    # The domain's own formatters (segmentation's _validated, sources' _settings, experiments'
    # parse_vars) are gone: every settings model is checked through settings_errors.checked.
    found = [
        f"{path.relative_to(ROOT)}:{number}"
        for folder in ("cpo", "udfs")
        for path in sorted((ROOT / folder).rglob("*.py"))
        for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1)
        if re.search(r"except\s*\(?[\w., ]*ValidationError", line)
    ]
    assert len(found) == 1 and found[0].startswith("cpo/engine/settings_errors.py:"), found
    for name in ("_validated", "_fields", "_error", "raw_sources", "_settings"):
        assert not hasattr(segmentation, name) and not hasattr(sources, name), name
    from cpo.experiments import settings as experiment_settings

    for name in ("parse_vars", "_format", "_default_error"):
        assert not hasattr(experiment_settings, name), name
    kmeans = (ROOT / "udfs/segments_kmeans.py").read_text(encoding="utf-8")
    assert (
        "read_settings" not in kmeans
        and 'raise ConfigurationError(\n            f"segm' not in kmeans
    )


def test_the_domain_reads_the_instances_the_loader_made(tmp_path: Path) -> None:
    from cpo.engine.project import Project
    from cpo.experiments.settings import ExperimentVars
    from cpo.reporting.data import experiment_settings

    config = Project.load(copy_sample_project(tmp_path / "p")).config
    loaded = config.sections
    assert isinstance(loaded["sources"], sources.SourcesSettings)
    assert loaded["sources"].customers is not None
    assert sources.sources_settings(config) is loaded["sources"]
    assert segmentation.segmentation_settings(config) is loaded["vars.segmentation"]
    assert segmentation.messages_settings(config) is loaded["vars.messages"]
    assert config.section("vars.safety", SafetyVars) is loaded["vars.safety"]
    assert experiment_settings(config) is loaded["vars.experiment"]
    assert isinstance(loaded["vars.experiment"], ExperimentVars)
    # A section the project does not set reads as its model's defaults.
    assert config.section("vars.nothing_set", segmentation.ContentSettings).rules == []


@pytest.mark.parametrize(
    ("old", "new", "key", "expected"),
    [
        (
            "    path: seeds/customers.csv\n",
            "    path: seeds/customers.csv\n    tabel: customers\n",
            "sources.customers.tabel",
            "unknown key 'tabel' (did you mean 'table'?)",
        ),
        (
            "sources:\n",
            "sources:\n  memory_limit: 2GB\n",
            "sources.memory_limit",
            "move it to 'targets.<name>.memory_limit: 2GB'",
        ),
        (
            "    path: seeds/customers.csv\n",
            "    path: seeds/customers.csv\n    format: xlsx\n",
            "sources.customers.format",
            "expected one of: csv, parquet, json, duckdb; got the string 'xlsx'",
        ),
        (
            "    k_min: 3 ",
            "    k_min: 1 ",
            "vars.segmentation.k_min",
            "expected an integer of at least 2, got int 1",
        ),
        (
            "    k_min: 3 ",
            "    k_min: 9 ",
            "vars.segmentation.k_min",
            "must be at most k_max (8), got 9",
        ),
        (
            "      first_name: {sql: c.first_name",
            "      FirstName: {sql: c.first_name",
            "vars.messages.merge_tags.FirstName",
            "a merge tag name is lower-case letters, digits and _",
        ),
        (
            "    correction: holm ",
            "    corection: holm ",
            "vars.experiment.corection",
            "unknown key 'corection' (did you mean 'correction'?)",
        ),
    ],
)
def test_bad_sources_segmentation_and_experiment_fail_at_load_with_key_and_line(
    old: str, new: str, key: str, expected: str, tmp_path: Path
) -> None:
    from cpo.engine.project import Project
    from cpo.errors import ConfigurationError

    project = copy_sample_project(tmp_path / "p")
    text = replace_in(project / "cpo.yml", old, new, 1)
    line = _line(text, old) + new[: new.index(key.rsplit(".", 1)[-1])].count("\n")
    with pytest.raises(ConfigurationError) as raised:
        Project.load(project)
    assert (raised.value.key, raised.value.line) == (key, line), str(raised.value)
    assert expected in raised.value.message, raised.value.message
