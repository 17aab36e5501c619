"""Plugins (`cpo.engine.plugins`): built-in ones by module name, outside ones by entry point, and
every hook the engine calls instead of importing the domain or grepping the project."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import duckdb
import pytest

from cpo.engine.cli import main
from cpo.engine.plugins import DEFAULT_PLUGINS, hookimpl, plugin_manager, plugins
from cpo.engine.project import Project
from cpo.errors import ConfigurationError, UsageError

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture
def register() -> Iterator[Callable[[object, str], None]]:
    """Register plugin objects for one test (unregistered afterwards)."""
    manager = plugin_manager()
    names: list[str] = []

    def add(plugin: object, name: str) -> None:
        manager.register(plugin, name=name)
        names.append(name)

    yield add
    for name in names:
        manager.unregister(name=name)


def write(root: Path, relative: str, text: str) -> None:
    path = root / relative
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(textwrap.dedent(text), encoding="utf-8")


def table(root: Path, sql: str) -> list[tuple]:
    with duckdb.connect(str(root / "mini.duckdb"), read_only=True) as con:
        return con.execute(sql).fetchall()


def test_built_in_plugins_are_registered_by_module_name():
    assert plugins()[: len(DEFAULT_PLUGINS)] == list(DEFAULT_PLUGINS)
    for name in DEFAULT_PLUGINS:
        assert plugin_manager().get_plugin(name) is sys.modules[name]


def test_an_installed_plugin_is_found_through_the_cpo_entry_point_group(tmp_path):
    site = tmp_path / "site"
    write(
        site,
        "my_cpo_plugin.py",
        """
        from cpo.engine.plugins import CliCommand, hookimpl
        from cpo.engine.settings import Section


        class Loyalty(Section):
            points: int = 0


        class Echo:
            def describe(self):
                return {"provider": "echo", "model": "none"}


        @hookimpl
        def cpo_providers():
            return {("generation", "echo"): lambda settings, env: Echo()}


        @hookimpl
        def cpo_vars_sections():
            return {"loyalty": Loyalty}


        @hookimpl
        def cpo_cli_commands():
            def run(args, console):
                print(f"hello {args.name}")
                return 0

            return [
                CliCommand(
                    "hello",
                    "say hello",
                    lambda parser: parser.add_argument("--name", default="world"),
                    run,
                )
            ]
        """,
    )
    write(site, "my_cpo_plugin-0.1.dist-info/METADATA", "Name: my-cpo-plugin\nVersion: 0.1\n")
    write(
        site,
        "my_cpo_plugin-0.1.dist-info/entry_points.txt",
        "[cpo]\nmine = my_cpo_plugin\n",
    )
    code = textwrap.dedent(
        """
        from cpo.engine.cli import main
        from cpo.engine.plugins import plugins
        from cpo.engine.config_schema import validate_vars
        from cpo.engine.settings_errors import Origin
        from cpo.errors import ConfigurationError
        from cpo.providers.base import get_provider_factory

        print("plugins", plugins()[-1])
        print("provider", get_provider_factory("generation", "echo")({}, {}).describe())
        print("section", validate_vars({"loyalty": {"points": 3}}, Origin(lambda k: None))[0])
        try:
            validate_vars({"loyalty": {"point": 3}}, Origin(lambda k: 7))
        except ConfigurationError as e:
            print("error", e)
        print("exit", main(["hello", "--name", "plugins"]))
        """
    )
    out = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        cwd=ROOT,
        env={"PYTHONPATH": f"{site}:{ROOT}", "PATH": "/usr/bin:/bin"},
        check=True,
    ).stdout
    assert "plugins mine" in out
    assert "provider {'provider': 'echo', 'model': 'none'}" in out
    assert "section {'loyalty': {'points': 3}}" in out
    assert (
        "error cpo.yml:7: vars.loyalty.point: unknown key 'point' (did you mean 'points'?)" in out
    )
    assert "hello plugins\nexit 0" in out


@pytest.mark.parametrize(
    ("source", "says"),
    [
        ("raise RuntimeError('boom')\n", "RuntimeError: boom"),
        (
            "from cpo.engine.plugins import hookimpl\n\n@hookimpl\ndef cpo_provider():\n    pass\n",
            "unknown hook 'cpo_provider'",
        ),
    ],
)
def test_a_broken_installed_plugin_is_a_clear_error(tmp_path, source, says):
    site = tmp_path / "site"
    write(site, "broken_cpo_plugin.py", source)
    write(site, "broken-0.1.dist-info/METADATA", "Name: broken\nVersion: 0.1\n")
    write(site, "broken-0.1.dist-info/entry_points.txt", "[cpo]\nbroken = broken_cpo_plugin\n")
    code = "import sys\nfrom cpo.engine.cli import main\nsys.exit(main(['ls']))"
    result = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        env={"PYTHONPATH": f"{site}:{ROOT}", "PATH": "/usr/bin:/bin", "COLUMNS": "300"},
        check=False,
    )
    assert result.returncode == 1, result.stderr
    assert "Error: an installed CPO plugin (entry point group 'cpo') could not be loaded" in (
        result.stderr
    )
    assert says in result.stderr
    assert "Traceback" not in result.stderr


def test_sql_functions_and_jinja_globals_come_from_plugins(mini_project, register):
    class Plugin:
        @hookimpl
        def cpo_sql_functions(self, config: Any) -> list[Any]:
            from cpo.adapters.duckdb import SqlFunction

            return [
                SqlFunction(
                    name="twice",
                    function=lambda x: x * 2,
                    parameters=("INTEGER",),
                    return_type="INTEGER",
                )
            ]

        @hookimpl
        def cpo_jinja_globals(self, config: Any) -> dict[str, Any]:
            return {"brand_name": "Acme"}

    register(Plugin(), "test-functions")
    write(mini_project, "models/plugged.sql", "select twice(21) as n, '{{ brand_name }}' as b\n")
    assert Project.load(mini_project).build().success
    assert table(mini_project, "select * from plugged") == [(42, "Acme")]


def test_plan_tables_come_from_a_udfs_plan_function_and_from_plugins(mini_project, register):
    class Plugin:
        @hookimpl
        def cpo_plan_tables(self, config: Any, db: Any, log: Any) -> list[Any]:
            return [("From a plugin", [{"people": db.count("stg_people")}])]

    register(Plugin(), "test-plan")
    # A helper module (no model(), not imported by any step) offers a plan table; a step that
    # imports that function from it does not offer it twice.
    write(
        mini_project,
        "udfs/_design.py",
        """
        def plan(ctx):
            n = ctx.sql("select count(*) from adults").fetchone()[0]
            return "Mini design", [{"adults": n, "min_age": ctx.var("min_age")}]
        """,
    )
    write(
        mini_project,
        "udfs/uses_design.py",
        """
        import pandas as pd
        from _design import plan  # noqa: F401


        def model(ctx):
            return pd.DataFrame({"x": [1]})
        """,
    )
    plan = Project.load(mini_project).plan()
    assert plan.run.success
    assert [title for title, _ in plan.tables] == ["Mini design", "From a plugin"]
    assert plan.tables[0][1] == [{"adults": 3, "min_age": 18}]
    assert plan.tables[1][1][0]["people"] >= 3


def _project_with_helper(root: Path, factor: int) -> Path:
    write(root, "udfs/_helpers.py", f"FACTOR = {factor}\n")
    write(
        root,
        "udfs/scaled.py",
        """
        import pandas as pd
        from _helpers import FACTOR


        def model(ctx):
            from _helpers import FACTOR as again  # imported while the step runs

            return pd.DataFrame({"factor": [FACTOR], "again": [again]})
        """,
    )
    return root


def test_udfs_sibling_imports_work_and_leave_nothing_behind(tmp_path, mini_project):
    from tests.conftest import copy_fixture

    first = _project_with_helper(mini_project, 3)
    second = _project_with_helper(copy_fixture("mini", tmp_path / "second"), 5)
    for root in (first, second):
        assert Project.load(root).build().success
    assert table(first, "select * from scaled") == [(3, 3)]
    assert table(second, "select * from scaled") == [(5, 5)]  # not the first project's helper
    assert not any(str(first) in p or str(second) in p for p in sys.path)
    assert "_helpers" not in sys.modules and "scaled" not in sys.modules


def test_memory_limit_is_a_target_setting(mini_project):
    config = (mini_project / "cpo.yml").read_text(encoding="utf-8")
    config = config.replace(
        "    database: mini.duckdb\n", "    database: mini.duckdb\n    memory_limit: 300MB\n"
    )
    (mini_project / "cpo.yml").write_text(config, encoding="utf-8")
    write(
        mini_project, "models/memory_setting.sql", "select current_setting('memory_limit') as m\n"
    )
    assert Project.load(mini_project).build().success
    with duckdb.connect() as con:
        con.execute("set memory_limit = '300MB'")
        expected = con.execute("select current_setting('memory_limit')").fetchone()[0]
    assert table(mini_project, "select m from memory_setting") == [(expected,)]


def test_sources_memory_limit_its_older_place_is_an_error_that_says_where_it_went(mini_project):
    config = (mini_project / "cpo.yml").read_text(encoding="utf-8")
    (mini_project / "cpo.yml").write_text(config + "sources:\n  memory_limit: 300MB\n")
    with pytest.raises(ConfigurationError) as caught:
        Project.load(mini_project)
    message = str(caught.value)
    assert message.startswith(f"cpo.yml:{len(config.splitlines()) + 2}: sources.memory_limit: ")
    assert "'targets.<name>.memory_limit: 300MB'" in message


def test_a_bad_memory_limit_names_the_key_and_line(mini_project):
    config = (mini_project / "cpo.yml").read_text(encoding="utf-8")
    config = config.replace(
        "    database: mini.duckdb\n", "    database: mini.duckdb\n    memory_limit: lots\n"
    )
    (mini_project / "cpo.yml").write_text(config, encoding="utf-8")
    with pytest.raises(ConfigurationError) as caught:
        Project.load(mini_project)
    assert str(caught.value) == (
        "cpo.yml:6: targets.dev.memory_limit: expected a size such as '2GB' or '512MB', got 'lots'"
    )


def test_report_and_track_say_which_hook_is_missing_without_the_reporting_plugin(built_mini):
    manager = plugin_manager()
    reporting = manager.unregister(name="cpo.reporting.plugin")
    try:
        project = Project.load(built_mini)
        with pytest.raises(UsageError, match="'report' needs a plugin that implements"):
            project.report()
        assert main(["report", "--project-dir", str(built_mini)]) == 1
    finally:
        manager.register(reporting, name="cpo.reporting.plugin")
    assert Project.load(built_mini).report().is_file()
