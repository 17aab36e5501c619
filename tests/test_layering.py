"""The house layering (STYLE.md, habits 1 and 3), checked by import-linter's contracts in
``pyproject.toml`` (``[tool.importlinter]``), the same check CI runs (``lint-imports``)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
LINT_IMPORTS = shutil.which("lint-imports") or str(Path(sys.executable).with_name("lint-imports"))


def lint_imports(cwd: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "COLUMNS": "200"}  # contract names on one line each
    return subprocess.run(
        [LINT_IMPORTS, "--no-cache", "--no-logo"],
        capture_output=True,
        text=True,
        cwd=cwd,
        env=env,
        check=False,
    )


def test_every_import_contract_is_kept():
    result = lint_imports(ROOT)
    assert result.returncode == 0, result.stdout + result.stderr
    for contract in (
        "The engine and the adapters know no domain package and no concrete provider KEPT",
        "Only the DuckDB adapter imports duckdb KEPT",
        "Only providers import vendor SDKs (openai, azure) KEPT",
        "Only the Spark adapter imports pyspark KEPT",
        "Only the CLI knows the terminal, and nothing imports the CLI KEPT",
    ):
        assert contract in result.stdout


@pytest.mark.parametrize(
    ("module", "line", "broken"),
    [
        (
            "cpo/engine/execute.py",
            "from cpo.reporting.summary import lines\n",
            "The engine and the adapters know no domain package",
        ),
        (
            "cpo/adapters/transpile.py",
            "from cpo.providers.openai_chat import openai_factory\n",
            "The engine and the adapters know no domain package",
        ),
        ("cpo/engine/telemetry.py", "import azure.monitor.opentelemetry\n", "vendor SDKs"),
        ("cpo/reporting/summary.py", "import duckdb\n", "Only the DuckDB adapter"),
        ("cpo/engine/graph.py", "import pyspark.sql\n", "Only the Spark adapter"),
        ("cpo/engine/logs.py", "from rich.console import Console\n", "the terminal"),
    ],
)
def test_a_forbidden_import_breaks_a_contract(tmp_path, module, line, broken):
    # The contracts would catch a regression: the same check on a copy with one bad import.
    shutil.copytree(ROOT / "cpo", tmp_path / "cpo", ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(ROOT / "pyproject.toml", tmp_path / "pyproject.toml")
    path = tmp_path / module
    path.write_text(line + path.read_text(encoding="utf-8"), encoding="utf-8")
    result = lint_imports(tmp_path)
    assert result.returncode == 1
    assert broken in result.stdout and "BROKEN" in result.stdout


def test_importing_the_engine_loads_no_vendor_sdk():
    code = (
        "import sys, cpo.engine.project, cpo.providers.builtin, cpo.providers.azure_search, "
        "cpo.providers.openai_chat, cpo.providers.azure_content_safety\n"
        "from cpo.engine.plugins import plugin_manager\n"
        "from cpo.providers.base import get_provider_factory\n"
        "plugin_manager()\n"  # every built-in plugin loaded
        "get_provider_factory('generation', 'azure_openai')\n"
        "print(sorted(m for m in sys.modules if m.split('.')[0] in ('openai', 'azure')))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=ROOT
    ).stdout
    assert out.strip() == "[]"
