"""Reading the experiment's own input files (assignments and outcomes made outside CPO).

Files are CSV or Parquet (by extension), paths relative to the project, read as text and checked
here so a bad file fails with a message naming the setting, never with a SQL error. Messages
give counts and column names only: customer ids never appear in an error.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from cpo.errors import ConfigurationError


def paths(ctx: Any, setting: str | list[str], key: str) -> list[Path]:
    """The files a path, glob or list of them names; an error when none exists."""
    patterns = [setting] if isinstance(setting, str) else list(setting)
    found: set[Path] = set()
    for pattern in patterns:
        path = Path(pattern)
        if path.is_absolute():
            found.update(Path(path.anchor).glob(str(path.relative_to(path.anchor))))
        else:
            found.update(ctx.project_dir.glob(pattern))
    files = sorted(p for p in found if p.is_file())
    if not files:
        raise ctx.config.document.error(
            key, f"no file matches {setting!r} (paths are relative to the project directory)"
        )
    return files


def literal(value: str) -> str:
    """A SQL string literal, by the project's one quoting helper
    (`cpo.engine.compile.sql_literal`)."""
    from cpo.engine.compile import sql_literal

    return sql_literal(str(value))


def ident(name: str) -> str:
    """A quoted SQL identifier."""
    return '"' + name.replace('"', '""') + '"'


def read_text(ctx: Any, files: list[Path]) -> str:
    """A SELECT over the files with every column as text."""
    csv = [p for p in files if p.suffix.lower() != ".parquet"]
    parquet = [p for p in files if p.suffix.lower() == ".parquet"]
    parts = []
    if csv:
        listed = ", ".join(literal(str(p)) for p in csv)
        parts.append(
            f"select * from read_csv([{listed}], all_varchar = true, union_by_name = true, "
            "header = true)"
        )
    if parquet:
        listed = ", ".join(literal(str(p)) for p in parquet)
        parts.append(f"select * from read_parquet([{listed}], union_by_name = true)")
    return "\nunion all by name\n".join(parts)


def columns(ctx: Any, query: str) -> list[str]:
    """The column names of a query."""
    return list(ctx.sql(f"select * from ({query}) limit 0").columns)


def require_columns(ctx: Any, present: list[str], wanted: dict[str, str], key: str) -> None:
    """Error naming the roles whose mapped column is missing from the file."""
    missing = {role: col for role, col in wanted.items() if col not in present}
    if missing:
        shown = ", ".join(f"{role} -> {col!r}" for role, col in missing.items())
        raise ctx.config.document.error(
            key,
            f"the file has no column for {shown}; its columns are {present}. Map each role to "
            "one of them under columns:",
        )


def fail(ctx: Any, key: str, message: str) -> ConfigurationError:
    """A ConfigurationError for a key of cpo.yml."""
    return ctx.config.document.error(key, message)
