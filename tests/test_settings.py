"""One settings schema (``cpo.engine.settings``), its registry, and values reaching SQL as
literals."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
from conftest import file_hash
from pydantic import Field

from cpo.engine.compile import bind_values, mark_values, sql_identifier, sql_literal
from cpo.engine.config import load_config
from cpo.engine.project import Project
from cpo.engine.settings import Section, SqlExpression, register_vars_section, vars_sections
from cpo.engine.yamlfile import read_yaml
from cpo.errors import ConfigurationError, ModelError

BASE = "name: p\ntargets:\n  dev: {database: p.duckdb}\n"


def load(tmp_path: Path, text: str, **kwargs):
    (tmp_path / "cpo.yml").write_text(BASE + text, encoding="utf-8")
    return load_config(tmp_path, **kwargs)


def error_of(tmp_path: Path, text: str, **kwargs) -> ConfigurationError:
    with pytest.raises(ConfigurationError) as caught:
        load(tmp_path, text, **kwargs)
    return caught.value


def test_the_domain_sections_are_registered():
    assert set(vars_sections()) >= {
        "as_of_date",
        "segmentation",
        "retrieval",
        "generation",
        "safety",
        "messages",
        "experiment",
    }


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (
            "vars:\n  safety:\n    on_unscreened: ignore\n",
            "cpo.yml:6: vars.safety.on_unscreened: expected one of: fail, warn; got the string",
        ),
        (
            "vars:\n  safety:\n    threshold: {Hate: 2}\n",
            "cpo.yml:6: vars.safety.threshold: unknown key 'threshold' (did you mean "
            "'thresholds'?); expected one of: blocklists,",
        ),
        (
            "vars:\n  retrieval:\n    top_k: -4\n",
            "cpo.yml:6: vars.retrieval.top_k: expected an integer of at least 1, got int -4",
        ),
        (
            "vars:\n  as_of_date: not-a-date\n",
            "cpo.yml:5: vars.as_of_date: expected a date like 2026-11-24",
        ),
        (
            "vars:\n  experiment:\n    metrics:\n      - {name: m, type: proportio, event: open}\n",
            "cpo.yml:7: vars.experiment.metrics[0].type: expected one of: proportion, mean, ratio",
        ),
        (
            "vars:\n  segmentation:\n    rules:\n      new_customer_max_tenure_days: 90\n"
            "      champions: {min_r: high, min_f: 4, min_m: 4}\n",
            "cpo.yml:6: vars.segmentation.rules: expected a list, got a mapping",
        ),
        ("telemetry: {exporter: jaeger}\n", "cpo.yml:4: telemetry.exporter: expected one of:"),
        ("sources: [a]\n", "cpo.yml:4: sources: expected a mapping, got list"),
    ],
)
def test_bad_values_name_key_line_and_what_is_expected(tmp_path, text, expected):
    assert str(error_of(tmp_path, text)).startswith(expected)


def test_vars_from_the_command_line_go_through_the_same_schema(tmp_path):
    error = error_of(tmp_path, "", cli_vars={"safety": {"on_unscreened": "ignore"}})
    assert str(error).startswith("--vars: vars.safety.on_unscreened: expected one of: fail, warn")
    # A --vars value merged into a section of the file: the bad value is the --vars one.
    error = error_of(
        tmp_path, "vars:\n  retrieval: {top_k: 3}\n", cli_vars={"retrieval": {"top_k": "x"}}
    )
    assert str(error).startswith("--vars: vars.retrieval.top_k: expected an integer")
    # ... and a bad value of the file is still the file's, with its line.
    error = error_of(tmp_path, "vars:\n  retrieval: {top_k: x}\n", cli_vars={"retrieval": {}})
    assert str(error).startswith("cpo.yml:5: vars.retrieval.top_k")


def test_a_mapping_section_must_be_registered_and_plain_vars_may_be_the_projects(tmp_path):
    error = error_of(tmp_path, "vars:\n  mine: {a: 1}\n")
    assert "vars.mine: unknown key 'mine'" in str(error)
    assert "register_vars_section" in str(error)
    assert load(tmp_path, "vars:\n  min_age: 18\n").vars == {"min_age": 18}
    # ... unless the plain value's name is a near-miss of a section's.
    assert "did you mean 'as_of_date'" in str(error_of(tmp_path, "vars:\n  as_of_dat: ''\n"))


def test_a_project_registers_its_own_section(tmp_path):
    class Mine(Section):
        size: int = Field(default=1, ge=1)

    register_vars_section("mine_for_test", Mine)
    try:
        assert load(tmp_path, "vars:\n  mine_for_test: {size: 3}\n").vars["mine_for_test"] == {
            "size": 3
        }
        error = error_of(tmp_path, "vars:\n  mine_for_test: {sise: 3}\n")
        assert "vars.mine_for_test.sise: unknown key 'sise' (did you mean 'size'?)" in str(error)
    finally:
        from cpo.engine import settings

        settings._VARS_SECTIONS.pop("mine_for_test")


def test_each_domain_plugin_declares_its_own_sections():
    from cpo.engine.plugins import plugin_manager
    from cpo.experiments.settings import ExperimentVars
    from cpo.personalization.segmentation import SegmentationSettings

    manager = plugin_manager()
    personalization = manager.get_plugin("cpo.personalization.plugin").cpo_vars_sections()
    experiments = manager.get_plugin("cpo.experiments.plugin").cpo_vars_sections()
    assert experiments == {"experiment": ExperimentVars}
    assert personalization["segmentation"] is SegmentationSettings
    assert set(personalization) == {
        "as_of_date",
        "retrieval",
        "generation",
        "safety",
        "segmentation",
        "messages",
        "content",
    }
    assert vars_sections()["experiment"] is ExperimentVars


def test_a_plugin_registered_later_adds_its_section_and_a_project_may_replace_one(tmp_path):
    from cpo.engine import settings
    from cpo.engine.plugins import hookimpl, plugin_manager

    class Loyalty(Section):
        points: int = 0

    class Plugin:
        @hookimpl
        def cpo_vars_sections(self):
            return {"loyalty": Loyalty}

    manager = plugin_manager()
    manager.register(Plugin(), name="test-loyalty")
    try:
        assert load(tmp_path, "vars:\n  loyalty: {points: 2}\n").vars["loyalty"] == {"points": 2}
        error = error_of(tmp_path, "vars:\n  loyalty: {points: two}\n")
        assert (
            str(error)
            == "cpo.yml:5: vars.loyalty.points: expected an integer, got the string 'two'"
        )
        # A section registered in Python replaces the plugin's of the same name ...
        register_vars_section("loyalty", dict[str, str])
        assert load(tmp_path, "vars:\n  loyalty: {points: two}\n").vars["loyalty"] == {
            "points": "two"
        }
    finally:
        settings._VARS_SECTIONS.pop("loyalty", None)
        manager.unregister(name="test-loyalty")
    # ... and without the plugin the section is unknown again.
    assert "unknown key 'loyalty'" in str(error_of(tmp_path, "vars:\n  loyalty: {points: 2}\n"))


def test_sql_typed_settings_are_parsed_as_one_expression(tmp_path):
    tags = "merge_tags: {city: \"coalesce(c.city, '')\"}\n"
    config = load(tmp_path, "vars:\n  messages:\n    " + tags)
    assert isinstance(config.vars["messages"]["merge_tags"]["city"], SqlExpression)
    # The new {sql, fallback} shape is accepted too.
    config = load(tmp_path, "vars:\n  messages:\n    merge_tags: {city: {sql: c.city}}\n")
    assert isinstance(config.vars["messages"]["merge_tags"]["city"]["sql"], SqlExpression)
    for bad in ["c.city; drop table x", "(select 1)", "c.city from", ""]:
        error = error_of(
            tmp_path,
            "vars:\n  messages:\n    merge_tags:\n      city: " + repr(bad) + "\n",
        )
        assert error.key == "vars.messages.merge_tags.city"
        assert error.line == 7


def test_segment_rules_as_a_list_with_when_conditions(tmp_path):
    rules = "rules:\n      - {name: vip, when: 'r_score >= 4 and f_score >= 4'}\n"
    config = load(tmp_path, "vars:\n  segmentation:\n    " + rules)
    assert isinstance(config.vars["segmentation"]["rules"][0]["when"], SqlExpression)
    bad = "rules:\n      - {name: vip, when: \"1=1; copy x to 'y'\"}\n"
    error = error_of(tmp_path, "vars:\n  segmentation:\n    " + bad)
    assert error.key == "vars.segmentation.rules[0].when"


def test_sample_cpo_yml_is_valid():
    root = Path(__file__).resolve().parent.parent
    config = load_config(root)
    assert config.vars["safety"]["on_unscreened"] == "fail"


# --- YAML files ---------------------------------------------------------------------------------


def test_latin1_byte_is_reported_on_its_real_line(tmp_path):
    (tmp_path / "cpo.yml").write_bytes(b"name: p\nvars:\n  brand: caf\xe9\n")
    with pytest.raises(ConfigurationError) as caught:
        load_config(tmp_path)
    assert str(caught.value).startswith("cpo.yml:3: column 13: byte 0xe9 is not UTF-8")


def test_alias_bomb_and_recursive_aliases_are_refused(tmp_path):
    lines = ["a: &a [" + ",".join(["lol"] * 9) + "]"]
    for i in range(1, 9):
        name, prev = chr(97 + i), chr(96 + i)
        lines.append(f"{name}: &{name} [" + ",".join([f"*{prev}"] * 9) + "]")
    path = tmp_path / "bomb.yml"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    assert len(path.read_bytes()) < 800
    with pytest.raises(ConfigurationError, match="aliases expand to more than"):
        read_yaml(path)
    path.write_text("a: &x [1, *x]\n", encoding="utf-8")
    with pytest.raises(ConfigurationError, match="refers to its own anchor"):
        read_yaml(path)
    # A few aliases are fine.
    path.write_text("base: &b {x: 1}\none: *b\ntwo: *b\n", encoding="utf-8")
    assert read_yaml(path).data["two"] == {"x": 1}


def test_duplicate_keys_are_errors(tmp_path):
    path = tmp_path / "x.yml"
    path.write_text("a: 1\nb:\n  c: 1\n  c: 2\n", encoding="utf-8")
    with pytest.raises(ConfigurationError) as caught:
        read_yaml(path)
    assert caught.value.line == 4
    assert caught.value.key == "b.c"


# --- values into SQL ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "sql"),
    [
        (None, "null"),
        (True, "true"),
        (4, "4"),
        (0.25, "0.25"),
        ("it's", "'it''s'"),
        (["a", 1], "['a', 1]"),
    ],
)
def test_sql_literal(value, sql):
    assert sql_literal(value) == sql


def test_sql_literal_refuses_what_has_no_literal():
    with pytest.raises(ModelError, match="not a finite number"):
        sql_literal(math.inf)
    with pytest.raises(ModelError, match="cannot be used as a SQL value"):
        sql_literal({"a": 1})
    assert sql_identifier("open_rate") == '"open_rate"'
    with pytest.raises(ModelError, match="not a valid name"):
        sql_identifier('x" from y; --')


def test_values_are_bound_by_where_they_land():
    v = mark_values({"s": "it's", "e": "a\\b", "n": 3})
    sql = (
        f"select {v['s']}, '{v['s']}:{v['s']}', \"c_{v['s']}\", E'{v['e']}', {v['n']}, "
        f"{v['s'].upper()} -- {v['s']}\n/* {v['s']} */"
    )
    assert bind_values(sql) == (
        "select 'it''s', 'it''s:it''s', \"c_it's\", E'a\\\\b', 3, 'IT''S' -- it's\n/* it's */"
    )
    assert v["s"] == "it's" and v["s"] in ["it's"]  # compares like the plain string
    with pytest.raises(ModelError, match="dollar-quoted"):
        bind_values(f"select $${v['s']}$$")


@pytest.fixture
def mini(mini_project: Path) -> Path:
    (mini_project / "models" / "t.sql").write_text(
        "select {{ var('threshold') }} as t, '{{ var('threshold') }}' as inside, "
        "{{ var('threshold') | literal }} as filtered\n",
        encoding="utf-8",
    )
    return mini_project


def test_an_injected_var_becomes_a_string_never_sql(mini: Path):
    attack = "4 as t; COPY (select 1 as x) TO 'x.csv'; select 1"
    run = Project.load(mini, vars={"threshold": attack}).build(["t"])
    assert run.success, [r.message for r in run.results if r.failed]
    assert not (mini / "x.csv").exists() and not Path("x.csv").exists()
    import duckdb

    con = duckdb.connect(str(mini / "mini.duckdb"), read_only=True)
    try:
        assert con.execute("select * from t").fetchone() == (attack, attack, attack)
    finally:
        con.close()


def test_a_model_with_two_statements_is_an_error(mini_project: Path, cli):
    (mini_project / "models" / "two.sql").write_text(
        "select 1 as x;\n-- comment\ncopy (select 1) to 'x.csv'\n", encoding="utf-8"
    )
    result = cli("build", "--project-dir", mini_project)
    assert result.code == 1
    assert "models/two.sql" in result.err and "exactly one SQL statement" in result.err
    assert not (mini_project / "x.csv").exists()
    # A trailing semicolon, or one inside a string or comment, is fine.
    (mini_project / "models" / "two.sql").write_text(
        "select 'a;b' as x -- c;d\n;\n", encoding="utf-8"
    )
    assert cli("build", "--project-dir", mini_project, "-s", "two").code == 0


def test_failed_vars_validation_keeps_the_database(built_mini: Path, cli):
    database = built_mini / "mini.duckdb"
    before = file_hash(database)
    result = cli("build", "--project-dir", built_mini, "--vars", "{safety: {topk: 1}}")
    assert result.code == 1
    assert "--vars: vars.safety.topk: unknown key 'topk'" in result.err
    assert file_hash(database) == before


# -- every built-in provider's settings are one model, checked when cpo.yml loads --------------


def provider_error(tmp_path: Path, kind: str, settings: str) -> str:
    """The error of a cpo.yml whose only target gives `settings` (flow YAML) for `kind`."""
    text = f"name: p\ntargets:\n  dev:\n    providers:\n      {kind}: {settings}\n"
    (tmp_path / "cpo.yml").write_text(text, encoding="utf-8")
    with pytest.raises(ConfigurationError) as caught:
        load_config(tmp_path)
    return str(caught.value)


@pytest.mark.parametrize(
    ("kind", "settings", "expected"),
    [
        (
            "retrieval",
            "{type: azure_search, mdoe: hybrid}",
            "retrieval.mdoe: unknown key 'mdoe' (did you mean 'mode'?)",
        ),
        (
            "retrieval",
            "{type: azure_search, mode: hybrid, embeding_batch_size: 16}",
            "retrieval.embeding_batch_size: unknown key 'embeding_batch_size' (did you mean "
            "'embedding_batch_size'?)",
        ),
        (
            "safety",
            "{type: azure_content_safety, prompt_shield: false}",
            "safety.prompt_shield: unknown key 'prompt_shield' (did you mean 'prompt_shields'?)",
        ),
        (
            "groundedness",
            "{type: azure_content_safety, domian: Medical}",
            "groundedness.domian: unknown key 'domian' (did you mean 'domain'?)",
        ),
        (
            "groundedness",
            "{type: offline, tpye: lexical}",
            "groundedness.tpye: unknown key 'tpye' (did you mean 'type'?); expected one of: type",
        ),
        (
            "safety",
            "{type: offline, profanity: false}",
            "safety.profanity: unknown key 'profanity' (did you mean 'profanity_model'?)",
        ),
        (
            "generation",
            "{type: offline, tempreature: 0.2}",
            "generation.tempreature: unknown key 'tempreature'; expected one of: type",
        ),
        (
            "safety",
            "{type: layered, provider: [{type: offline}], providers: [{type: offline}]}",
            "safety.provider: unknown key 'provider' (did you mean 'providers'?)",
        ),
        (
            "safety",
            "{type: layered, providers: [{type: offline, lexicon_path: x.yml}]}",
            "safety.providers[0].lexicon_path: unknown key 'lexicon_path' (did you mean "
            "'lexicon'?)",
        ),
        (
            "safety",
            "[{type: offline}, {type: azure_content_safety, halt_on_blocklist: true}]",
            "safety[1].halt_on_blocklist: unknown key 'halt_on_blocklist' (did you mean "
            "'halt_on_blocklist_hit'?)",
        ),
        # The shared connection keys (TLS) are one model, reused by the chat providers.
        (
            "generation",
            "{type: openai, verfy: false}",
            "generation.verfy: unknown key 'verfy' (did you mean 'verify'?)",
        ),
    ],
)
def test_an_unknown_provider_key_names_its_path_line_and_the_key_meant(
    tmp_path, kind, settings, expected
):
    message = provider_error(tmp_path, kind, settings)
    assert message.startswith("cpo.yml:5: targets.dev.providers."), message
    assert expected in message, message
    assert "_credential" not in message  # a test-only key is accepted but never offered


@pytest.mark.parametrize(
    ("kind", "settings", "expected"),
    [
        (
            "retrieval",
            "{type: azure_search, mode: vector}",
            "retrieval.mode: expected one of: fulltext, semantic, hybrid; got the string 'vector'",
        ),
        (
            "retrieval",
            "{type: azure_search, batch_size: 0}",
            "retrieval.batch_size: expected an integer of at least 1, got int 0",
        ),
        (
            "retrieval",
            "{type: azure_search, batch_size: 1001}",
            "retrieval.batch_size: expected an integer of at most 1000, got int 1001",
        ),
        (
            "retrieval",
            "{type: azure_search, mode: hybrid, dimensions: 5000}",
            "retrieval.dimensions: expected an integer of at most 4096, got int 5000",
        ),
        (
            "retrieval",
            "{type: azure_search, mode: hybrid, embedding_batch_size: 4096}",
            "retrieval.embedding_batch_size: expected an integer of at most 2048, got int 4096",
        ),
        (
            "retrieval",
            "{type: azure_search, timeout_s: '30'}",
            "retrieval.timeout_s: expected a number, got the string '30'",
        ),
        (
            "retrieval",
            "{type: azure_search, audience_mode: boost}",
            "retrieval.audience_mode: azure_search filters by audience",
        ),
        (
            "retrieval",
            "{type: azure_search, ca_bundle: 3}",
            "retrieval.ca_bundle: expected a string, got int 3",
        ),
        (
            "safety",
            "{type: azure_content_safety, prompt_shields: 'yes'}",
            "safety.prompt_shields: expected true or false, got the string 'yes'",
        ),
        (
            "safety",
            "{type: azure_content_safety, timeout_s: 0}",
            "safety.timeout_s: expected an integer greater than 0, got int 0",
        ),
        (
            "safety",
            "{type: azure_content_safety, output_type: EightSeverityLevels}",
            "safety.output_type: not a provider setting; set vars.safety.output_type",
        ),
        (
            "groundedness",
            "{type: azure_content_safety, domain: Legal}",
            "groundedness.domain: expected one of: Generic, Medical; got the string 'Legal'",
        ),
        (
            "safety",
            "{type: offline, profanity_model: 'no'}",
            "safety.profanity_model: expected true or false, got the string 'no'",
        ),
        (
            "safety",
            "{type: layered, providers: [{type: offline}, {type: layered, providers: []}]}",
            "safety.providers[1]: a layered safety screen cannot contain another layered screen",
        ),
        (
            "safety",
            "{type: layered, providers: []}",
            "safety.providers: expected at least 1 item(s)",
        ),
    ],
)
def test_a_wrong_provider_value_names_its_key_and_what_is_expected(
    tmp_path, kind, settings, expected
):
    message = provider_error(tmp_path, kind, settings)
    assert message.startswith("cpo.yml:5: targets.dev.providers."), message
    assert expected in message, message


def test_every_documented_provider_setting_loads(tmp_path):
    (tmp_path / "cpo.yml").write_text(
        "name: p\ntargets:\n  dev:\n    providers:\n"
        "      retrieval: {type: azure_search, mode: full-text, semantic_configuration: sc,\n"
        "                  batch_size: 1000, timeout_s: 5, audience_any: [all, ''],\n"
        "                  audience_mode: filter, as_of: 2025-06-01, index_name: i,\n"
        "                  api_version: '2024-07-01', vector_field: v, dimensions: 4096,\n"
        "                  semantic: true, embedding_deployment: e, embedding_api_version: v1,\n"
        "                  embedding_batch_size: 2048, ca_bundle: ca.pem, verify: true}\n"
        "      generation: {type: offline}\n"
        "      safety: {type: layered, providers: [{type: offline, profanity_model: false},\n"
        "               {type: azure_content_safety, timeout_s: 9.5,\n"
        "                halt_on_blocklist_hit: true, prompt_shields: false}]}\n"
        "      groundedness: {type: azure_content_safety, domain: Medical, verify: false}\n"
        "  lexical:\n    providers: {groundedness: {type: offline}}\n",
        encoding="utf-8",
    )
    config = load_config(tmp_path, target="dev")
    from cpo.providers.azure_search import SearchSettings

    search = SearchSettings.from_settings(config.target.providers["retrieval"])
    assert (search.mode, search.as_of, search.vector, search.vector_dimensions) == (
        "fulltext",
        "2025-06-01",
        "v",
        4096,
    )
