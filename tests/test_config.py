"""``cpo.yml`` validation: every error names the key path, its line and what was expected."""

from __future__ import annotations

from pathlib import Path

import pytest
from conftest import file_hash

from cpo.engine.config import CallSettings, load_config, parse_cli_vars
from cpo.errors import ConfigurationError

BASE = "name: mini\ntarget: dev\ntargets:\n  dev:\n    database: mini.duckdb\n"


def _load(root: Path, text: str, **kwargs):
    (root / "cpo.yml").write_text(text, encoding="utf-8")
    return load_config(root, **kwargs)


def test_valid_config(tmp_path):
    config = _load(
        tmp_path,
        BASE
        + "calls: {concurrency: 3}\nbudget: {max_cost_usd: 2.5}\n"
        + "vars: {retrieval: {top_k: 3}, c: 2}\n",
        cli_vars={"retrieval": {"keywords": "x"}},
    )
    assert config.database_path == tmp_path / "mini.duckdb"
    assert config.calls == CallSettings(concurrency=3)
    assert config.max_cost_usd == 2.5
    assert config.vars == {"retrieval": {"top_k": 3, "keywords": "x"}, "c": 2}  # merged deeply
    assert config.path("models") == tmp_path / "models"


@pytest.mark.parametrize(
    ("extra", "expected"),
    [
        (
            "calls: {concurrency: -1}\n",
            "cpo.yml:6: calls.concurrency: expected an integer of at least 1, got int -1",
        ),
        (
            "calls:\n  concurrency: 0\n",
            "cpo.yml:7: calls.concurrency: expected an integer of at least 1",
        ),
        (
            "calls:\n  concurrency: 2.5\n",
            "cpo.yml:7: calls.concurrency: expected an integer, got float 2.5",
        ),
        (
            "calls:\n  retries: 3\n",
            "cpo.yml:7: calls.retries: unknown key 'retries'; expected one of: backoff_initial_s,",
        ),
        ("bogus: 1\n", "cpo.yml:6: bogus: unknown key 'bogus'; expected one of: budget,"),
        ("vars: [\n", "cpo.yml:7: invalid YAML: did not find expected node content"),
        (
            "budget: {max_cost_usd: lots}\n",
            "cpo.yml:6: budget.max_cost_usd: expected a number, got the string 'lots'",
        ),
        ("paths: [models]\n", "cpo.yml:6: paths: expected a mapping, got list"),
    ],
)
def test_invalid_config_names_key_and_line(tmp_path, extra, expected):
    with pytest.raises(ConfigurationError) as error:
        _load(tmp_path, BASE + extra)
    assert str(error.value).startswith(expected)


def test_unknown_target(tmp_path):
    with pytest.raises(ConfigurationError, match="unknown target 'prod'; defined targets: dev"):
        _load(tmp_path, BASE, target="prod")


def test_provider_settings_are_checked(tmp_path):
    text = BASE + "    providers:\n      generation: {type: azure_openai, api_key: sk-1}\n"
    with pytest.raises(ConfigurationError) as error:
        _load(tmp_path, text)
    assert error.value.key == "targets.dev.providers.generation.api_key"
    assert error.value.line == 7
    assert "secrets never go in cpo.yml" in str(error.value)
    with pytest.raises(ConfigurationError, match="unknown key 'painting'; expected one of"):
        _load(tmp_path, BASE + "    providers:\n      painting: {type: x}\n")
    with pytest.raises(ConfigurationError, match="missing 'type'"):
        _load(tmp_path, BASE + "    providers:\n      safety: {endpoint: x}\n")


def test_missing_config_file(tmp_path):
    with pytest.raises(ConfigurationError, match=r"no cpo.yml in .*pass --project-dir"):
        load_config(tmp_path)


def test_parse_cli_vars():
    assert parse_cli_vars('{"min_age": 30}') == {"min_age": 30}
    assert parse_cli_vars("min_age: 30") == {"min_age": 30}
    assert parse_cli_vars(None) == {}
    with pytest.raises(ConfigurationError, match="--vars must be a mapping"):
        parse_cli_vars("[1, 2]")


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (
            "calls: {concurrency: -1}\n",
            "Error: cpo.yml:9: calls.concurrency: expected an integer of at least 1, got int -1",
        ),
        ("bogus: 1\n", "Error: cpo.yml:9: bogus: unknown key 'bogus'; expected one of:"),
        ("vars: [\n", "Error: cpo.yml:10: invalid YAML: did not find expected node content"),
    ],
)
def test_cli_invalid_config_exits_1_and_keeps_database(cli, built_mini, extra, message):
    database = built_mini / "mini.duckdb"
    before = file_hash(database)
    with (built_mini / "cpo.yml").open("a", encoding="utf-8") as f:
        f.write(extra)
    result = cli("build", "--project-dir", built_mini)
    assert result.code == 1
    assert result.err.startswith(message)
    assert "Traceback" not in result.err
    assert file_hash(database) == before


def test_cli_debug_shows_traceback(cli, built_mini):
    (built_mini / "cpo.yml").write_text("bogus: 1\n", encoding="utf-8")
    result = cli("build", "--project-dir", built_mini, "--debug")
    assert result.code == 1
    assert "Traceback (most recent call last)" in result.err
    assert "cpo.errors.ConfigurationError" in result.err
    assert "Error: cpo.yml:1: bogus: unknown key 'bogus'" in result.err
