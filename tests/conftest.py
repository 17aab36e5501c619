"""Shared fixtures: throwaway copies of the example projects under ``tests/fixtures/``."""

from __future__ import annotations

import hashlib
import shutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest

# The sample-project fixtures (sample_build, ...) live in tests/sample.py.
pytest_plugins = ["tests.sample"]

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
