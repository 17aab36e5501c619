"""Jinja rendering, ref resolution (ephemeral CTEs), and ``cpo compile``."""

from __future__ import annotations

import json
import re
from pathlib import Path

import duckdb
import pytest
from conftest import file_hash

from cpo.engine.compile import Compiler, resolve_refs
from cpo.engine.config import load_config
from cpo.engine.nodes import MODEL, SEED, Node
from cpo.engine.project import Project
from cpo.errors import ModelError


def _model(name: str, raw: str, **config) -> Node:
    return Node(
        name=name, resource_type=MODEL, path=Path(f"models/{name}.sql"), raw=raw, config=config
    )


@pytest.fixture
def compiler(mini_project: Path) -> Compiler:
    return Compiler(load_config(mini_project), existing={"inc"}, full_refresh=False)


def test_render_collects_refs_config_and_vars(compiler):
    node = _model(
        "m",
        "{{ config(materialized='view', tags=['x']) }}"
        "select {{ var('min_age') }} as a, '{{ var('greeting') }}' as g "
        "from {{ ref('people') }} join {{ source('raw', 'visits') }} using (id)",
    )
    result = compiler.render(node)
    assert result.refs == ("people", "visits")
    assert result.config["materialized"] == "view"
    assert result.config["tags"] == ["x"]
    assert "select 18 as a, 'Hello' as g" in result.sql


def test_var_default_and_env_var(compiler, monkeypatch):
    monkeypatch.setenv("CPO_TEST_SCHEMA", "abc")
    node = _model(
        "m",
        "{{ var('nope', 7) }} {{ env_var('CPO_TEST_SCHEMA') }} "
        "{{ env_var('CPO_TEST_UNSET', 'dflt') }}",
    )
    assert compiler.render(node).sql == "7 abc dflt"


def test_missing_var_names_file(compiler):
    with pytest.raises(ModelError, match=r"var 'nope' is not set; add it under 'vars:'") as e:
        compiler.render(_model("m", "select {{ var('nope') }}"))
    assert e.value.path == str(Path("models/m.sql"))


def test_missing_env_var(compiler, monkeypatch):
    monkeypatch.delenv("CPO_TEST_UNSET", raising=False)
    with pytest.raises(ModelError, match="environment variable 'CPO_TEST_UNSET' is not set"):
        compiler.render(_model("m", "{{ env_var('CPO_TEST_UNSET') }}"))


def test_jinja_syntax_error_has_file_and_line(compiler):
    with pytest.raises(ModelError) as e:
        compiler.render(_model("m", "select 1\nfrom x\n{% if %}\n"))
    assert str(e.value).startswith(f"{Path('models/m.sql')}:3: Jinja syntax error:")


def test_undefined_name_has_line(compiler):
    with pytest.raises(ModelError) as e:
        compiler.render(_model("m", "select 1\n{{ nothing_here }}\n"))
    assert e.value.line == 2
    assert "'nothing_here' is undefined" in e.value.message


def test_sandbox_blocks_internals(compiler):
    with pytest.raises(ModelError, match="unsafe template"):
        compiler.render(_model("m", "{{ ''.__class__.__mro__[1].__subclasses__() }}"))


@pytest.mark.parametrize(
    ("name", "config", "full_refresh", "expected"),
    [
        ("inc", {"materialized": "incremental"}, False, "True"),
        ("inc", {"materialized": "incremental"}, True, "False"),
        ("new", {"materialized": "incremental"}, False, "False"),  # no table yet
        ("inc", {"materialized": "table"}, False, "False"),
    ],
)
def test_is_incremental(mini_project, name, config, full_refresh, expected):
    compiler = Compiler(load_config(mini_project), {"inc"}, full_refresh)
    assert compiler.render(_model(name, "{{ is_incremental() }}", **config)).sql == expected


def test_this_is_the_quoted_relation(compiler):
    assert compiler.render(_model("my model", "{{ this }}")).sql == '"my model"'


def _resolved(compiler, nodes_raw: dict[str, tuple[str, str]], name: str) -> str:
    nodes = {"people": Node(name="people", resource_type=SEED, path=Path("seeds/people.csv"))}
    for node_name, (raw, materialized) in nodes_raw.items():
        rendered = compiler.render(_model(node_name, raw, materialized=materialized))
        nodes[node_name] = _model(node_name, raw, materialized=materialized).with_(
            sql=rendered.sql, depends_on=rendered.refs
        )
    return resolve_refs(nodes[name].sql, nodes)


def test_ephemeral_models_become_ctes_that_accept_aliases(compiler):
    sql = _resolved(
        compiler,
        {
            "e1": ("select 1 as id", "ephemeral"),
            "e2": ("select id from {{ ref('e1') }}", "ephemeral"),
            "m": (
                "select x.id, e2.id as id2 from {{ ref('e2') }} as x join {{ ref('e2') }} on true",
                "table",
            ),
        },
        "m",
    )
    assert sql.startswith('with "e1" as (')
    assert sql.index('"e1" as') < sql.index('"e2" as')  # dependencies first
    assert duckdb.sql(sql).fetchall() == [(1, 1)]


def test_ephemeral_merges_into_a_leading_with(compiler):
    sql = _resolved(
        compiler,
        {
            "e": ("select 2 as v", "ephemeral"),
            "m": (
                "-- a comment\nWITH base AS (select v from {{ ref('e') }})\n"
                "select v * 10 as w from base",
                "table",
            ),
        },
        "m",
    )
    assert duckdb.sql(sql).fetchall() == [(20,)]


def test_compile_command_writes_sql_and_manifest(cli, mini_project):
    result = cli("compile", "--project-dir", mini_project)
    assert result.code == 0, result.err
    assert "Compiled" in result.out
    compiled = mini_project / "target" / "compiled"
    adults = next(compiled.rglob("adults.sql")).read_text()
    assert '"stg_people"' in adults and "{{" not in adults and "__cpo_ref__" not in adults
    assert "where age >= 18" in adults
    person_totals = next(compiled.rglob("person_totals.sql")).read_text()
    assert 'with "stg_visits" as (' in person_totals  # the ephemeral model, inlined
    manifest = json.loads((mini_project / "target" / "manifest.json").read_text())
    nodes = manifest["nodes"]
    assert manifest["metadata"]["schema_version"].endswith("manifest/v1.json")
    assert sorted(nodes["person_totals"]["depends_on"]) == ["stg_people", "stg_visits"]
    assert nodes["person_totals"]["config"]["unique_key"] == "id"
    assert nodes["person_totals"]["config"]["materialized"] == "incremental"
    assert (mini_project / nodes["adults"]["compiled_path"]).read_text() == adults
    assert nodes["unique_people_id"]["test"]["kind"] == "unique"
    assert nodes["people"]["config"]["column_types"] == {"id": "INTEGER"}
    assert not (mini_project / "mini.duckdb").exists()  # compiling builds nothing


def test_compile_does_not_touch_the_database(cli, built_mini):
    before = file_hash(built_mini / "mini.duckdb")
    assert cli("compile", "--project-dir", built_mini, "-s", "adults").code == 0
    assert file_hash(built_mini / "mini.duckdb") == before


def test_unknown_materialization(mini_project):
    (mini_project / "models" / "marts" / "adults.sql").write_text(
        "{{ config(materialized='tabel') }} select 1"
    )
    with pytest.raises(ModelError, match="unknown materialized='tabel'; expected one of"):
        Project.load(mini_project).ls()


@pytest.mark.parametrize(
    ("model_setting", "flag", "expected"),
    [(None, True, True), (None, False, False), (False, True, False), (True, False, True)],
)
def test_full_refresh_config(mini_project, model_setting, flag, expected):
    config = {"materialized": "incremental"}
    if model_setting is not None:
        config["full_refresh"] = model_setting  # a model's own setting beats --full-refresh
    compiler = Compiler(load_config(mini_project), {"inc"}, flag)
    result = compiler.render(_model("inc", "{{ is_incremental() }}", **config))
    assert result.config["full_refresh"] is expected
    assert result.sql == str(not expected)


def test_bad_unique_key(mini_project):
    (mini_project / "models" / "marts" / "adults.sql").write_text(
        "{{ config(materialized='incremental', unique_key=3) }} select 1 as id"
    )
    with pytest.raises(ModelError, match="unique_key must be a column name or a list"):
        Project.load(mini_project).ls()


def test_one_sandboxed_environment_factory_and_compiled_models_are_reused() -> None:
    """Every Jinja environment comes from cpo.engine.templates (sandboxed, StrictUndefined);
    a model text is compiled once per process however many projects render it."""
    from pathlib import Path

    from cpo.engine import compile as compile_module

    root = Path(compile_module.__file__).resolve().parent.parent
    makers = sorted(
        str(p.relative_to(root))
        for p in root.rglob("*.py")
        if re.search(r"SandboxedEnvironment\(|jinja2\.Environment\(", p.read_text("utf-8"))
    )
    assert makers == ["engine/templates.py"]
    first = compile_module._template("select {{ 1 + 1 }} as x\n")
    assert compile_module._template("select {{ 1 + 1 }} as x\n") is first
    assert first.render() == "select 2 as x\n"  # keep_trailing_newline, as before
