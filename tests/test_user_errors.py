"""Mistakes a first-time user makes: each exits 1 with a message naming what to fix, no traceback,
and leaves ``cpo.duckdb`` as it was."""

from __future__ import annotations

import hashlib
import shutil
from pathlib import Path

import pytest

from cpo.engine.cli import main
from cpo.engine.config import parse_cli_vars
from tests.helpers import replace_in
from tests.sample import copy_sample_project


@pytest.fixture(scope="module")
def built(sample_build: Path) -> Path:
    """The sample project built once per session; tests work on copies of it."""
    return sample_build


@pytest.fixture
def project(built: Path, tmp_path: Path) -> Path:
    """A private copy of the built sample project (database and cache included)."""
    return Path(shutil.copytree(built, tmp_path / "p"))


def digest(project: Path) -> str:
    return hashlib.sha256((project / "cpo.duckdb").read_bytes()).hexdigest()


def run(capsys, project: Path, *args: str) -> tuple[int, str]:
    """Run the CLI on `project`; return the exit code and stdout + stderr."""
    code = main([*args, "--project-dir", str(project)])
    out = capsys.readouterr()
    text = out.out + out.err
    assert "Traceback" not in text
    return code, text


def fails_cleanly(capsys, project: Path, *args: str) -> str:
    """Assert the command exits 1 and leaves the database byte-identical; return its output."""
    before = digest(project)
    code, text = run(capsys, project, *args)
    assert code == 1, text
    assert digest(project) == before
    return text


ARM = "{name: friendly, weight: 0.25}"


@pytest.mark.parametrize(
    ("old", "new", "message"),
    [
        # All weights 0 used to crash with ZeroDivisionError in assignments.sql (exit 2).
        (
            "weight: 0.25}",
            "weight: 0}",
            "cpo.yml:202: vars.experiment.arms: the weights add up to 0",
        ),
        # A quoted weight used to crash with TypeError (exit 2); the settings schema names it.
        (
            "weight: 0.25}",
            'weight: "0.25"}',
            "cpo.yml:203: vars.experiment.arms[0].weight: expected a number",
        ),
        # An arm that is not a tone used to build, sending every one of its customers the
        # fallback message.
        (ARM, "{name: funny, weight: 0.25}", "arm funny is neither the control nor a tone"),
        (
            ARM,
            "{name: urgent, weight: 0.25}",
            "cpo.yml:202: vars.experiment.arms: each arm name must appear once",
        ),
        ("    salt: ", "    #salt: ", "vars.experiment.salt is not set"),
    ],
)
def test_bad_experiment_arms_are_named_not_crashes(capsys, project, old, new, message):
    replace_in(project / "cpo.yml", old, new)
    text = fails_cleanly(capsys, project, "build")
    assert message in text
    assert "models/pipeline/assignments.sql" in text or message.startswith("cpo.yml:")


def test_tone_removed_while_its_arm_remains_is_named(capsys, project):
    replace_in(project / "cpo.yml", "tones: [urgent, informational, friendly]", "tones: [urgent]")
    text = fails_cleanly(capsys, project, "build")
    assert "arm informational is neither the control nor a tone of vars.generation.tones" in text


def test_tone_without_prompt_folder_names_the_cpo_yml_key(capsys, project):
    shutil.rmtree(project / "prompts" / "tones" / "urgent")
    text = fails_cleanly(capsys, project, "build")
    assert "cpo.yml:" in text and "vars.generation.tones: tone 'urgent' has no folder" in text
    assert "prompts/tones/urgent/" in text


def test_duplicate_tone_is_named(capsys, project):
    replace_in(project / "cpo.yml", "tones: [urgent,", "tones: [urgent, urgent,")
    text = fails_cleanly(capsys, project, "build")
    assert "vars.generation.tones: 'urgent' is listed twice" in text


def test_python_error_in_model_jinja_names_file_and_line(capsys, project):
    (project / "models" / "ratio.sql").write_text(
        "select 1 as x\n, {{ 10 / var('divisor') }} as y\n", encoding="utf-8"
    )
    text = fails_cleanly(capsys, project, "build", "--vars", "divisor: 0")
    assert "models/ratio.sql:2: ZeroDivisionError" in text


def test_missing_var_names_the_line(capsys, project):
    (project / "models" / "extra.sql").write_text(
        "select 1 as x\n, {{ var('nope.x') }} as y\n", encoding="utf-8"
    )
    text = fails_cleanly(capsys, project, "ls")
    assert "models/extra.sql:2: var 'nope.x' is not set" in text


def test_vars_accepts_dbt_style_yaml_flow_mapping():
    # dbt documents --vars '{key: value}'; it used to be rejected as invalid JSON.
    assert parse_cli_vars("{segmentation: {method: kmeans}}") == {
        "segmentation": {"method": "kmeans"}
    }
    with pytest.raises(Exception, match="--vars is not valid JSON or YAML"):
        parse_cli_vars("{bad")


def test_negative_max_cost_names_the_flag(capsys, project):
    text = fails_cleanly(capsys, project, "build", "--max-cost", "-1")
    assert "--max-cost must be a non-negative amount" in text
    assert "budget.max_cost_usd" not in text


def test_unknown_target_says_it_came_from_the_flag(capsys, project):
    text = fails_cleanly(capsys, project, "build", "--target", "prod")
    assert (
        "unknown target 'prod'; defined targets: offline, azure, openai, spark; fix --target"
        in text
    )


@pytest.mark.parametrize("query", ["select 42 as x;", "select 42 as x -- the answer"])
def test_show_inline_tolerates_semicolon_and_comment(capsys, project, query):
    code, text = run(capsys, project, "show", "--inline", query)
    assert code == 0, text
    assert "42" in text


def test_show_on_a_model_never_built_says_how_to_build_it(capsys, project):
    (project / "models" / "extra.sql").write_text("select 1 as x\n", encoding="utf-8")
    text = fails_cleanly(capsys, project, "show", "--select", "extra")
    assert "extra has not been built into cpo.duckdb yet; run 'build --select +extra'" in text
    assert "Catalog Error" not in text


def test_show_negative_limit(capsys, project):
    text = fails_cleanly(capsys, project, "show", "--select", "segments", "--limit", "-1")
    assert "--limit must be 0 or more rows" in text


def test_schema_entry_for_unknown_model_is_an_error(capsys, project):
    # Its tests used to be dropped without a word.
    schema = project / "models" / "segments" / "schema.yml"
    replace_in(schema, "  - name: segments\n", "  - name: segmentz\n")
    text = fails_cleanly(capsys, project, "ls")
    assert "models/segments/schema.yml:" in text
    assert "no model, seed or step is named 'segmentz'" in text and "'segments'" in text


def test_node_described_twice_is_an_error(capsys, project):
    schema = project / "models" / "staging" / "schema.yml"
    schema.write_text(
        schema.read_text(encoding="utf-8") + "  - name: segments\n    description: again\n",
        encoding="utf-8",
    )
    text = fails_cleanly(capsys, project, "ls")
    assert "'segments' is already described in models/segments/schema.yml" in text


def test_parent_not_built_gets_a_selection_hint(capsys, project):
    models = project / "models"
    (models / "extra.sql").write_text("select 1 as x\n", encoding="utf-8")
    (models / "extra_child.sql").write_text("select x from {{ ref('extra') }}\n", "utf-8")
    text = fails_cleanly(capsys, project, "build", "--select", "extra_child")
    assert "extra is not built yet: select it too, e.g. --select +extra_child" in text


def test_export_format_is_case_insensitive(capsys, project):
    code, text = run(capsys, project, "export", "--format", "CSV", "--select", "segments")
    assert code == 0, text
    assert (project / "target" / "export" / "segments.csv").is_file()


def test_clean_with_nothing_to_clean_says_so(capsys, tmp_path):
    project = copy_sample_project(tmp_path / "fresh")
    code, text = run(capsys, project, "clean")
    assert code == 0 and "Nothing to clean" in text
