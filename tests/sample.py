"""Fixtures that build the repository's own sample project once per test session."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from tests.helpers import query

if TYPE_CHECKING:
    from cpo.engine.project import RunResult

__all__ = ["copy_sample_project", "query", "sample_build", "sample_run"]

ROOT = Path(__file__).resolve().parent.parent
PROJECT_PARTS = ("cpo.yml", "models", "udfs", "prompts", "seeds", "data_tests")


def copy_sample_project(destination: Path) -> Path:
    """Copy the sample project's own files (not its database, cache or target) to a folder."""
    destination.mkdir(parents=True, exist_ok=True)
    for part in PROJECT_PARTS:
        source = ROOT / part
        if source.is_dir():
            shutil.copytree(
                source, destination / part, ignore=shutil.ignore_patterns("__pycache__")
            )
        elif source.exists():
            shutil.copy2(source, destination / part)
    return destination


@pytest.fixture(scope="session")
def sample_run(tmp_path_factory: pytest.TempPathFactory) -> RunResult:
    """The first, fresh offline build of the sample project (its folder: `sample_build`)."""
    from cpo.engine.project import Project

    project_dir = copy_sample_project(tmp_path_factory.mktemp("sample"))
    run = Project.load(project_dir).build()
    failures = [(r.name, r.message) for r in run.results if r.failed]
    assert run.success, f"sample build failed: {failures}"
    return run


@pytest.fixture(scope="session")
def sample_build(sample_run: RunResult) -> Path:
    """The sample project, built offline once; tests must only read it (or copy it:
    `built_sample` in tests/conftest.py)."""
    return sample_run.database.parent
