"""Seed files (CSV, JSON, JSON lines) as both adapters read them, with no database at hand.

The SQL that reads a seed (`seed_reader`), the header and column checks, and load errors that
name the file, line and column but never quote the file's content (it may hold personal data).
Shared by `cpo.adapters.duckdb` and `cpo.adapters.spark`.
"""

from __future__ import annotations

import csv
import re
from collections.abc import Mapping, Sequence
from pathlib import Path

from cpo.engine.compile import sql_literal
from cpo.errors import ModelError


def seed_reader(path: Path, display_path: str, name: str) -> str:
    """DuckDB's table function that reads the seed file (every CSV column as VARCHAR)."""
    literal = sql_literal(str(path))
    if path.suffix == ".csv":
        # Columns come from the header, so DuckDB does not sniff the dialect: sniffing fails on
        # a malformed row without saying which, while a fixed dialect reports the line.
        columns = ", ".join(
            f"{sql_literal(c)}: 'VARCHAR'" for c in csv_header(path, display_path, name)
        )
        return (
            f"read_csv({literal}, header = true, auto_detect = false, delim = ',', "
            f"quote = '\"', escape = '\"', strict_mode = true, columns = {{{columns}}})"
        )
    if path.suffix == ".json":
        return f"read_json_auto({literal})"
    return f"read_json_auto({literal}, format = 'newline_delimited')"


def check_seed_columns(
    name: str,
    display_path: str,
    columns: Sequence[str],
    required_columns: Sequence[str],
    column_types: Mapping[str, str],
) -> None:
    """Raise when a seed lacks a required column or ``column_types`` names an unknown one."""
    missing = [c for c in required_columns if c not in columns]
    if missing:
        raise ModelError(
            f"seed {name!r} is missing required column(s) {', '.join(missing)}; "
            f"it has: {', '.join(columns)}",
            path=display_path,
            line=1,
            node=name,
        )
    unknown = [c for c in column_types if c not in columns]
    if unknown:
        raise ModelError(
            f"column_types names unknown column(s) {', '.join(unknown)}",
            path=display_path,
            node=name,
        )


def csv_header(path: Path, display_path: str, name: str) -> list[str]:
    """The column names of a CSV seed's header row.

    Raises:
        ModelError: the file cannot be read, or its header is empty, blank or repeats a name.
    """
    try:
        with path.open(encoding="utf-8-sig", newline="") as f:
            header = next(csv.reader(f), [])
    except UnicodeDecodeError:
        from cpo.engine.yamlfile import decode_utf8

        decode_utf8(path.read_bytes(), display_path)  # raises, naming the byte's real line
        raise
    except (OSError, csv.Error) as e:
        raise ModelError(
            f"cannot read seed {name!r}: {e}", path=display_path, line=1, node=name
        ) from e
    if not header or any(not c.strip() for c in header) or len(set(header)) != len(header):
        raise ModelError(
            f"seed {name!r} needs a header row of distinct, non-empty column names; found {header}",
            path=display_path,
            line=1,
            node=name,
        )
    return header


def seed_error(
    error: Exception, display_path: str, name: str, path: Path | None = None
) -> ModelError:
    """A seed's load error with file, line and column, and never the file's content.

    DuckDB echoes the offending row ("Original Line: ...") and quotes bad values; both can hold
    personal data, so only the parts of its message known to be free of values are kept.
    """
    text = str(error).strip()
    match = re.search(r"(?:CSV Error on Line|in line):?\s*(\d+)", text)
    reason = seed_reason(text)
    if match and path is not None and "unterminated quote" in text:
        column = open_quote_column(path, int(match.group(1)))
        if column:
            reason = f"the value in column {column} has an unterminated quote"
    return ModelError(
        f"cannot load seed {name!r}: {reason}. Fix the file and rebuild.",
        path=display_path,
        line=int(match.group(1)) if match else None,
        node=name,
    )


def open_quote_column(path: Path, line: int) -> int | None:
    """The 1-based column on file line `line` whose opening quote is never closed."""
    try:
        with path.open(encoding="utf-8-sig", newline="") as f:
            text = next((t for n, t in enumerate(f, 1) if n == line), None)
    except (OSError, UnicodeDecodeError):
        return None
    if text is None:
        return None
    column, quoted, opened = 1, False, None
    for char in text.rstrip("\r\n"):
        if char == '"':
            quoted = not quoted
            opened = column if quoted else opened
        elif char == "," and not quoted:
            column += 1
    return opened if quoted else None


def seed_reason(text: str) -> str:
    """What is wrong with a seed, from DuckDB's message, without any value from the file."""
    counts = re.search(r"Expected Number of Columns: (\d+) Found: (\d+)", text)
    if counts:
        expected, found = int(counts.group(1)), int(counts.group(2))
        return (
            f"Expected Number of Columns: {expected} Found: {found} "
            f"(column {min(expected, found) + 1})"
        )
    if "unterminated quote" in text:
        return "a value has an unterminated quote"
    cast = re.search(r"to (\w+) when casting from source column (\S+)", text)
    if cast:
        return f"a value in column {cast.group(2)} is not a valid {cast.group(1)}"
    json_error = re.search(r"Malformed JSON.*?at byte (\d+) in line \d+: ([^.\n]*)", text)
    if json_error:
        return f"malformed JSON at byte {json_error.group(1)} ({json_error.group(2).strip()})"
    first = text.split("Possible fixes")[0].splitlines()[0] if text else ""
    # Unknown shapes: keep DuckDB's first line with anything quoted blanked out.
    first = re.sub(r"'[^']*'|\"[^\"]*\"", "'…'", first).strip().rstrip(".")
    return first[:300] or "the file could not be read"
