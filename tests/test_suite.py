"""The test suite's own set-up: markers, the slow list, the shared helpers, the README's loop."""

from __future__ import annotations

import tomllib
from pathlib import Path

import pytest

from cpo.errors import ModelError
from tests.conftest import SLOW_MODULES, clear_emulator
from tests.helpers import database_path, query, query_rows

ROOT = Path(__file__).resolve().parent.parent


def pytest_settings() -> dict:
    return tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["tool"]["pytest"][
        "ini_options"
    ]


def test_every_slow_module_exists_and_the_marker_is_registered() -> None:
    names = {p.stem for p in (ROOT / "tests").glob("test_*.py")}
    # A renamed file must not drop out of the list unnoticed.
    assert names >= set(SLOW_MODULES), sorted(set(SLOW_MODULES) - names)
    assert any(m.startswith("slow:") for m in pytest_settings()["markers"])


def test_the_suite_runs_on_every_core_with_spark_on_one_worker() -> None:
    addopts = pytest_settings()["addopts"].split()
    assert addopts[addopts.index("-n") + 1] == "auto"
    assert addopts[addopts.index("--dist") + 1] == "loadgroup"
    pyproject = (ROOT / "pyproject.toml").read_text(encoding="utf-8")
    assert '"pytest-xdist>=' in pyproject


def test_the_readme_shows_the_quick_loop() -> None:
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    assert 'python -m pytest -m "not slow"' in text


def test_slow_tests_are_marked(request: pytest.FixtureRequest) -> None:
    session = request.session
    marked = {
        item.module.__name__.rsplit(".", 1)[-1]
        for item in session.items
        if item.get_closest_marker("slow")
    }
    collected = {item.module.__name__.rsplit(".", 1)[-1] for item in session.items}
    assert set(SLOW_MODULES) & collected <= marked
    assert request.node.get_closest_marker("slow") is None  # this module is quick


def test_the_query_helpers_read_a_built_project(built_mini: Path) -> None:
    assert database_path(built_mini) == built_mini / "mini.duckdb"
    assert database_path(built_mini / "mini.duckdb") == built_mini / "mini.duckdb"
    assert query_rows(built_mini, "select age from people where name = ?", ["Ann"]) == [("34",)]
    frame = query(built_mini, "select name from adults order by name")
    assert list(frame["name"]) == ["Ann", "Cid", "Eve"]
    with pytest.raises(ModelError, match="read-only"):
        query_rows(built_mini, "create table t as select 1")


def test_a_cleared_emulator_forgets_everything(emulators) -> None:
    emu = emulators()
    emu.state.secrets["k"] = "v"
    emu.state.indexes["i"] = {}
    emu.set_faults(status=503)
    assert emulators() is emu  # one per session
    assert emu.state.secrets == {} and emu.state.indexes == {}
    assert emu.faults.status is None
    assert clear_emulator(emu) is emu
