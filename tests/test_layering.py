"""The house layering, checked from the imports (STYLE.md, habits 1 and 3)."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

PACKAGE = Path(__file__).resolve().parent.parent / "cpo"


def imports(path: Path) -> set[str]:
    """Top-level names of every module `path` imports, at any depth of the code."""
    names = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            names |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
    return names


def modules_importing(prefix: str) -> set[str]:
    return {
        str(path.relative_to(PACKAGE.parent))
        for path in PACKAGE.rglob("*.py")
        if any(name == prefix or name.startswith(prefix + ".") for name in imports(path))
    }


def test_only_the_duckdb_adapter_imports_duckdb():
    # bm25 gets its private connection from cpo.adapters.duckdb.private_connection.
    assert modules_importing("duckdb") == {"cpo/adapters/duckdb.py"}


def test_only_the_cli_knows_the_terminal():
    assert modules_importing("rich") == {"cpo/engine/cli.py"}
    assert modules_importing("cpo.engine.cli") == set()


def test_vendor_sdks_are_imported_only_by_providers_and_the_telemetry_exporter():
    users = modules_importing("openai") | modules_importing("azure")
    assert users
    assert all(u.startswith("cpo/providers/") or u == "cpo/engine/telemetry.py" for u in users), (
        users
    )


def test_importing_the_engine_loads_no_vendor_sdk():
    code = (
        "import sys, cpo.engine.project, cpo.providers.builtin, cpo.providers.azure_search, "
        "cpo.providers.openai_chat, cpo.providers.azure_content_safety\n"
        "print(sorted(m for m in sys.modules if m.split('.')[0] in ('openai', 'azure')))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=PACKAGE.parent
    ).stdout
    assert out.strip() == "[]"


def test_the_engine_does_not_import_the_project_api_back():
    # Layering runs one way: cli -> project -> the rest (tracking only names RunResult in types).
    assert modules_importing("cpo.engine.project") <= {
        "cpo/engine/cli.py",
        "cpo/reporting/tracking.py",
    }
