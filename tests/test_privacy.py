"""No PII (sample emails, first names) in logs, artifacts, reports, docs, cache or exports."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from cpo.engine.cli import main
from cpo.engine.logs import hash_id
from tests.conftest import copy_fixture
from tests.sample import copy_sample_project
from tests.test_export import find_pii as pii_hits

TEXT_SUFFIXES = {".json", ".html", ".sql", ".log", ".csv", ".txt", ".yaml", ".yml", ".svg", ""}


def text_files(folder: Path) -> list[Path]:
    return [
        p
        for p in folder.rglob("*")
        if p.is_file() and (p.suffix in TEXT_SUFFIXES or p.name == "meta.yaml")
    ]


@pytest.fixture(scope="module")
def used_project(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The sample after every analyst command: build (tracked), test, report, docs, export."""
    project = copy_sample_project(tmp_path_factory.mktemp("privacy") / "p")
    args = ["--project-dir", str(project)]
    assert main(["build", *args, "--track"]) == 0
    assert main(["test", *args]) == 0
    assert main(["report", *args]) == 0
    assert main(["docs", *args]) == 0
    assert main(["export", *args, "--format", "csv"]) == 0
    return project


@pytest.mark.parametrize("folder", ["logs", "target", ".cpo"])
def test_no_sample_pii_in_logs_artifacts_or_cache(used_project: Path, folder: str) -> None:
    files = text_files(used_project / folder)
    assert files, f"nothing was written under {folder}/"
    found = {
        str(p.relative_to(used_project)): hits
        for p in files
        if (hits := pii_hits(p.read_text(encoding="utf-8", errors="replace")))
    }
    assert not found


def test_logs_are_json_lines_with_run_ids(used_project: Path) -> None:
    lines = (used_project / "logs" / "cpo.log").read_text().splitlines()
    records = [json.loads(line) for line in lines]
    assert {"timestamp", "level", "event", "run_id"} <= set(records[0])
    assert any(r["event"] == "node finished" and r.get("rows") for r in records)


def test_failing_test_on_a_pii_column_hides_its_values(tmp_path: Path) -> None:
    project = copy_fixture("mini", tmp_path / "mini")
    schema = project / "seeds" / "schema.yml"
    schema.write_text(
        schema.read_text().replace(
            "      - name: name\n", "      - name: name\n        tests: [unique]\n", 1
        )
    )
    seed = project / "seeds" / "people.csv"
    seed.write_text(seed.read_text() + "9,Ann,40,Oslo\n")
    assert main(["build", "--project-dir", str(project)]) == 1
    results = (project / "target" / "run_results.json").read_text()
    assert "unique_people_name" in results
    assert "Ann" not in results
    # shown hashed with the project's salt: the same digest as hash_id and the exports give
    assert f"#{hash_id('Ann', 'CPO_LOG_SALT', project)}" in results
