"""The test suite's own set-up: markers, the slow list, the shared helpers, the README's loop."""

from __future__ import annotations

import tomllib
from pathlib import Path

import pytest

from cpo.errors import ModelError
from tests.conftest import SLOW_MODULES, clear_emulator, quick_only
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


def test_the_readme_shows_both_tiers() -> None:
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    assert "python -m pytest --all" in text and "python -m pytest -m slow" in text
    ci = (ROOT / ".ci" / "run").read_text(encoding="utf-8")
    # CI runs the README's command (the quick suite), then the end-to-end tier.
    assert "\npython -m pytest\n" in ci and "\npython -m pytest -m slow --cov-append\n" in ci
    # with coverage of cpo/ over both runs (not in addopts: a developer's run skips the tracing)
    assert 'export PYTEST_ADDOPTS="--cov=cpo ' in ci.split("\npython -m pytest\n")[0]
    assert "--cov" not in pytest_settings()["addopts"]


def test_slow_tests_are_marked(request: pytest.FixtureRequest) -> None:
    items = request.session.items
    marked = {
        item.module.__name__.rsplit(".", 1)[-1] for item in items if item.get_closest_marker("slow")
    }
    collected = {item.module.__name__.rsplit(".", 1)[-1] for item in items}
    assert set(SLOW_MODULES) & collected <= marked  # every slow module's tests carry the mark
    assert not marked or not quick_only(request.config)  # and a bare run has none of them
    assert request.node.get_closest_marker("slow") is None  # this module is quick


TIER_CONFTEST = """
from tests.conftest import (
    pytest_addoption, pytest_collection_modifyitems, pytest_sessionfinish,
    pytest_terminal_summary, pytest_testnodedown,
)
"""


@pytest.fixture
def tiers(pytester: pytest.Pytester) -> pytest.Pytester:
    """A tiny suite with our tiering hooks: one slow module (by name), one slow mark, one quick."""
    pytester.makeconftest(TIER_CONFTEST)
    pytester.makeini("[pytest]\nmarkers =\n    slow: end to end\n")
    # In a package, so the modules' names cannot clash with this suite's own test_privacy.
    package = pytester.mkpydir("tier")
    (package / "test_privacy.py").write_text("def test_end_to_end():\n    pass\n")  # SLOW_MODULES
    (package / "test_quick.py").write_text(
        "import pytest\n\ndef test_quick():\n    pass\n\n"
        "@pytest.mark.slow\ndef test_marked():\n    pass\n"
    )
    return pytester


QUIET = ("-p", "no:cacheprovider", "-p", "no:benchmark")  # benchmark: a plugin some envs have


def outcomes(pytester: pytest.Pytester, *args: str) -> dict[str, int]:
    return pytester.runpytest_inprocess(*QUIET, "-n", "0", *args).parseoutcomes()


def outcomes_text(pytester: pytest.Pytester, *args: str) -> str:
    return "\n".join(pytester.runpytest_inprocess(*QUIET, "-n", "0", *args).outlines)


SAID = "quick suite: 2 end-to-end tests (marked slow) left out; `python -m pytest -m slow` runs*"


def test_a_bare_run_leaves_the_end_to_end_tier_out_and_says_so(tiers: pytest.Pytester) -> None:
    result = tiers.runpytest_inprocess(*QUIET, "-n", "0", "-q")
    assert result.parseoutcomes() == {"passed": 1, "deselected": 2}
    result.stdout.fnmatch_lines([SAID])


def test_under_xdist_the_controller_says_what_the_workers_left_out(
    tiers: pytest.Pytester, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PYTHONPATH", str(ROOT))  # the workers import tests.conftest
    result = tiers.runpytest_subprocess(*QUIET, "-n", "2", "-q")
    assert result.parseoutcomes() == {"passed": 1}  # xdist does not count deselected items
    result.stdout.fnmatch_lines([SAID])
    assert "left out" not in outcomes_text(tiers, "--all")


def test_rerunning_the_last_failures_reruns_a_failed_slow_test(tiers: pytest.Pytester) -> None:
    (tiers.path / "tier" / "test_privacy.py").write_text("def test_end_to_end():\n    assert 0\n")
    run = ("-p", "no:benchmark", "-n", "0")
    assert tiers.runpytest_inprocess(*run, "--all").parseoutcomes() == {"passed": 2, "failed": 1}
    assert tiers.runpytest_inprocess(*run, "--lf").parseoutcomes() == {"failed": 1}


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (("--all",), {"passed": 3}),
        (("-m", "slow"), {"passed": 2, "deselected": 1}),
        (("-m", "not slow"), {"passed": 1, "deselected": 2}),
        (("tier/test_privacy.py",), {"passed": 1}),  # a named file runs whole
        (("tier/test_quick.py::test_marked",), {"passed": 1}),
    ],
)
def test_asking_for_slow_tests_runs_them(tiers: pytest.Pytester, args, expected) -> None:
    assert outcomes(tiers, *args) == expected


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
