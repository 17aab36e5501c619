"""Shared fixtures: copies of the example projects, built projects, the emulator, markers.

- Projects: `mini_project` (fresh copy of ``tests/fixtures/mini``), `built_mini` (a copy of a
  build made once per session), `built_sample` (a private copy of the sample project's session
  build, database, cache and target included: cheaper than building it again).
- Databases: one query helper, `tests.helpers.query` / `tests.helpers.query_rows`.
- Services: `emulators` gives one loopback emulator per (tls, keys), started once per session
  and cleared of every fault, request and stored object for each test module.
- Markers: `slow` is applied here (see `SLOW_MODULES`) to end-to-end builds, Spark, the browser
  and real models. A bare ``python -m pytest`` is the quick suite: it leaves them out
  (`quick_only`); ``-m slow`` runs them, ``--all`` runs both tiers. Each slow module, the
  Spark tests (one Spark session) and each of `ONE_WORKER_MODULES` run on one xdist worker.
"""

from __future__ import annotations

import hashlib
import shutil
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

if TYPE_CHECKING:
    from tests.emulator import Emulator

# The sample-project fixtures (sample_build, ...) live in tests/sample.py.
pytest_plugins = ["tests.sample", "pytester"]

# Modules whose tests build whole projects end to end (or run a browser or a real model),
# roughly the costliest first: each runs on one xdist worker, in this order after Spark.
SLOW_MODULES = (
    "test_azure_build",
    "test_privacy",
    "test_external_experiment",
    "test_pipeline",
    "test_sources",
    "test_stats_simulation",
    "test_real_output",
    "test_pipeline_faults",
    "test_plan",
    "test_prompt_shields",
    "test_markup",
    "test_tracking",
    "test_summary",
    "test_own_customers",
    "test_grounding",
    "test_browser",
    "test_layered_safety",
    "test_real_llm",
    "test_real_llm_judge",
)
SLOW_MARKERS = ("spark", "real_llm")
# Quick modules whose module-scoped fixture is costly (a rendered report, an export of every
# table, a docs site): each runs on one worker, so the fixture is made once, not once per worker.
ONE_WORKER_MODULES = ("test_spark", "test_report", "test_export", "test_docs")

FIXTURES = Path(__file__).resolve().parent / "fixtures"
# What a build leaves in a project folder; never part of a fixture's sources.
BUILD_OUTPUTS = ("target", "logs", ".cpo", "*.duckdb", "*.duckdb.wal", ".*.building-*")


def copy_fixture(name: str, destination: Path) -> Path:
    """Copy ``tests/fixtures/<name>`` (sources only) to `destination` and return it."""
    shutil.copytree(FIXTURES / name, destination, ignore=shutil.ignore_patterns(*BUILD_OUTPUTS))
    return destination


def file_hash(path: Path) -> str:
    """SHA-256 of a file's bytes (to prove a database was left byte-identical)."""
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.fixture(scope="session")
def built_mini_template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The mini project after one successful build (built once per session; do not modify)."""
    from cpo.engine.project import Project

    root = copy_fixture("mini", tmp_path_factory.mktemp("template") / "mini")
    run = Project.load(root).build()
    assert run.success, [r for r in run.results if r.failed]
    return root


@pytest.fixture
def mini_project(tmp_path: Path) -> Path:
    """A fresh, never-built copy of ``tests/fixtures/mini``."""
    return copy_fixture("mini", tmp_path / "mini")


@pytest.fixture
def built_mini(tmp_path: Path, built_mini_template: Path) -> Path:
    """A copy of the mini project with ``mini.duckdb`` from a successful build."""
    destination = tmp_path / "mini"
    shutil.copytree(
        built_mini_template, destination, ignore=shutil.ignore_patterns("target", "logs")
    )
    return destination


@dataclass(frozen=True)
class CliResult:
    """Exit code and captured output of one `cpo.engine.cli.main` call."""

    code: int
    out: str
    err: str


@pytest.fixture
def cli(capsys: pytest.CaptureFixture[str]) -> Callable[..., CliResult]:
    """Run ``cpo.engine.cli.main(args)`` in-process and capture its exit code, stdout and stderr."""
    from cpo.engine.cli import main

    def run(*args: str | Path) -> CliResult:
        capsys.readouterr()  # drop anything printed before
        code = main([str(a) for a in args])
        captured = capsys.readouterr()
        return CliResult(code, captured.out, captured.err)

    return run


@pytest.fixture
def built_sample(sample_build: Path, tmp_path: Path) -> Path:
    """A private copy of the built sample project (database, cache and target included)."""
    return copy_built(sample_build, tmp_path / "p")


def copy_built(built: Path, destination: Path) -> Path:
    """Copy a built project folder (database, ``.cpo`` cache, target; not its logs)."""
    return Path(shutil.copytree(built, destination, ignore=shutil.ignore_patterns("logs")))


@pytest.fixture(scope="session")
def emulators() -> Iterator[Callable[..., Emulator]]:
    """``emulators(tls=False, keys=None)``: the session's loopback emulator for that pair.

    Each is started once per session; a module's own ``emu`` fixture calls `clear_emulator`.
    """
    from tests.emulator import Emulator, EmulatorKeys

    started: dict[tuple[bool, EmulatorKeys], Emulator] = {}

    def get(tls: bool = False, keys: EmulatorKeys | None = None) -> Emulator:
        key = (tls, keys or EmulatorKeys())
        if key not in started:
            started[key] = Emulator(tls=tls, keys=key[1]).start()
        return clear_emulator(started[key])

    yield get
    for emulator in started.values():
        emulator.close()


def clear_emulator(emulator: Emulator) -> Emulator:
    """Forget every fault, recorded request, index, document, blocklist and secret."""
    from tests.emulator import DEFAULT_SAFETY_TERMS

    state = emulator.state
    with state.lock:
        for held in (
            state.indexes,
            state.documents,
            state.blocklists,
            state.blocklist_items,
            state.secrets,
        ):
            held.clear()
        state.safety_terms = dict(DEFAULT_SAFETY_TERMS)
    emulator.reset()
    return emulator


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption(
        "--all",
        action="store_true",
        dest="run_all",
        help="also run the end-to-end tier (tests marked slow), as CI does",
    )


def quick_only(config: pytest.Config) -> bool:
    """Whether this run leaves the end-to-end tier out: a bare ``python -m pytest``.

    Naming test files or node ids, choosing with ``-m``, re-running the last failures
    (``--lf``) or passing ``--all`` runs what was asked, slow tests included.
    """
    return not (
        config.getoption("run_all")
        or config.option.markexpr
        or config.getoption("lf", False)
        or config.args_source is pytest.Config.ArgsSource.ARGS
    )


LEFT_OUT = pytest.StashKey[int]()


def pytest_testnodedown(node: Any, error: object) -> None:  # xdist hook, in the controller
    """Keep the workers' count of what they left out (each collects every test, so they agree;
    the controller collects nothing)."""
    left_out = getattr(node, "workeroutput", {}).get("cpo_left_out", 0)
    node.config.stash[LEFT_OUT] = max(node.config.stash.get(LEFT_OUT, 0), left_out)


def pytest_sessionfinish(session: pytest.Session) -> None:
    """In an xdist worker, send the count to the controller (`pytest_testnodedown`)."""
    workeroutput = getattr(session.config, "workeroutput", None)
    if workeroutput is not None:  # an xdist worker: tell the controller
        workeroutput["cpo_left_out"] = session.config.stash.get(LEFT_OUT, 0)


@pytest.hookimpl(trylast=True)  # after the coverage table, just above the counts
def pytest_terminal_summary(
    terminalreporter: pytest.TerminalReporter, config: pytest.Config
) -> None:
    """Say what a bare run left out, and how to run it (under -q too, and under xdist)."""
    left_out = config.stash.get(LEFT_OUT, 0)
    if quick_only(config) and left_out and not hasattr(config, "workeroutput"):
        terminalreporter.write_line(
            f"quick suite: {left_out} end-to-end tests (marked slow) left out; "
            "`python -m pytest -m slow` runs them, `--all` runs everything"
        )


@pytest.hookimpl(tryfirst=True)  # before xdist reads the xdist_group marks
def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Mark end-to-end tests `slow`; keep each slow module (and each of `ONE_WORKER_MODULES`)
    on one xdist worker, Spark first.

    A bare ``python -m pytest`` then leaves the slow tests out (`quick_only`).

    With ``--dist loadgroup`` the tests of one group run on one worker, so a module-scoped
    build or render (and the Spark tests' one Spark session) is made once, not once per
    worker. The groups, the longest chains of the suite, start first; the other tests are
    spread one by one over the workers.
    """
    grouped: dict[str, list[pytest.Item]] = {m: [] for m in (*ONE_WORKER_MODULES, *SLOW_MODULES)}
    quick: list[pytest.Item] = []
    for item in items:
        module = item.module.__name__.rsplit(".", 1)[-1] if item.module else ""
        slow = module in SLOW_MODULES or any(
            item.get_closest_marker(m) for m in ("slow", *SLOW_MARKERS)
        )
        if slow:
            item.add_marker(pytest.mark.slow)
        if slow or module in ONE_WORKER_MODULES:
            item.add_marker(pytest.mark.xdist_group(module))
            grouped.setdefault(module, []).append(item)
        else:
            quick.append(item)
    in_groups = [item for group in grouped.values() for item in group]
    if quick_only(config):
        end_to_end = [item for item in in_groups if item.get_closest_marker("slow")]
        config.hook.pytest_deselected(items=end_to_end)
        config.stash[LEFT_OUT] = len(end_to_end)
        in_groups = [item for item in in_groups if not item.get_closest_marker("slow")]
    items[:] = in_groups + quick
