"""Cross-engine macros for model Jinja: what sqlglot cannot translate between DuckDB and Spark.

Models are written in DuckDB's SQL and transpiled for Spark (`cpo.adapters.transpile`). A few
expressions mean different things on the two engines, or do not exist on one of them; a model
writes them as macros instead, and each macro renders the right SQL for the active target::

    {{ hash_bucket("'exp:salt:' || s.customer_id") }}    -- a number in [0, 1), same on both
    {{ regex_match("coalesce(email, '')", '[^@\\s]+@[^@\\s]+') }}  -- the whole text matches
    {{ utc_timestamp('trim(event_at)') }}                 -- text with an offset, as UTC

Arguments named ``expr``/``text`` are SQL expressions (DuckDB syntax); ``pattern`` is a Python
string (the regular expression itself), quoted here.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

DIALECTS = ("duckdb", "spark")
# 2^52: the first 13 hex digits of an md5 are a 52-bit integer, exact in a double.
_SCALE = "cast(4503599627370496 as double)"


def _literal(text: str) -> str:
    from cpo.engine.compile import (
        sql_literal,  # the one quoting helper (compile imports this module)
    )

    return sql_literal(str(text))


def hash_bucket(expr: str, *, dialect: str = "duckdb") -> str:
    """A uniform number in [0, 1) from the md5 of `expr`, identical on DuckDB and Spark.

    The first 13 hex digits of ``md5(expr)`` read as an integer, divided by 2^52. Both engines
    compute the integer exactly and divide in double precision, so the same text gives the same
    double, bit for bit: the same customer lands in the same arm on either engine.
    """
    text = f"cast(({expr}) as varchar)"
    integer = _hex_integer(f"substr(md5({text}), 1, 13)", dialect)
    return f"(cast({integer} as double) / {_SCALE})"


def hex_fraction(hex_text: str, part: str, *, dialect: str = "duckdb") -> str:
    """Hex digits ``8·part+1 .. 8·part+8`` of `hex_text` (e.g. an ``md5``) as a number in [0, 1).

    One md5 gives four independent 32-bit draws (parts 0-3), identical on DuckDB and Spark:
    cheaper than one `hash_bucket` per draw when a row needs several.
    """
    start = 8 * int(part) + 1
    integer = _hex_integer(f"substr(({hex_text}), {start}, 8)", dialect)
    return f"(cast({integer} as double) / cast(4294967296 as double))"


def _hex_integer(hex_digits: str, dialect: str) -> str:
    """SQL reading the text `hex_digits` (at most 15 hex digits) as a bigint, on either engine."""
    if dialect == "spark":
        return f"cast(conv({hex_digits}, 16, 10) as bigint)"  # Spark needs conv(.., 16, 10)
    return f"cast(('0x' || {hex_digits}) as bigint)"  # DuckDB reads '0x...' as hexadecimal


def regex_match(text: str, pattern: str, *, dialect: str = "duckdb") -> str:
    """True when the whole of `text` matches the regular expression `pattern` (NULL for NULL).

    DuckDB's ``regexp_full_match``; on Spark an anchored ``rlike``. Keep patterns to the syntax
    RE2 and Java share (classes, quantifiers, groups, ``\\s``, ``\\d``, ``\\w``).
    """
    if dialect == "spark":
        # \z (not $): Java's $ also matches before a final newline.
        return f"regexp_matches(({text}), {_literal('^(?:' + pattern + ')' + chr(92) + 'z')})"
    return f"regexp_full_match(({text}), {_literal(pattern)})"


def regex_search(text: str, pattern: str, *, dialect: str = "duckdb") -> str:
    """True when `pattern` matches somewhere in `text` (DuckDB ``regexp_matches``, Spark rlike)."""
    return f"regexp_matches(({text}), {_literal(pattern)})"


def utc_timestamp(text: str, *, dialect: str = "duckdb") -> str:
    """A text timestamp with an explicit offset (``Z``, ``+02:00``) as a naive UTC timestamp.

    NULL when the text does not parse. DuckDB's ``timezone('UTC', try_cast(.. as timestamptz))``;
    Spark parses the offset and, in the adapter's UTC session, keeps the UTC wall-clock time.
    """
    if dialect == "spark":
        return f"cast(try_cast(({text}) as timestamptz) as timestamp)"
    return f"timezone('UTC', try_cast(({text}) as timestamptz))"


def is_finite(expr: str, *, dialect: str = "duckdb") -> str:
    """True for a finite number (not NaN, not ±infinity); DuckDB's ``isfinite``."""
    if dialect == "spark":
        return f"(({expr}) = ({expr}) and abs({expr}) < double('Infinity'))"
    return f"isfinite({expr})"


_MACROS: dict[str, Callable[..., str]] = {
    "is_finite": is_finite,
    "hash_bucket": hash_bucket,
    "hex_fraction": hex_fraction,
    "regex_match": regex_match,
    "regex_search": regex_search,
    "utc_timestamp": utc_timestamp,
}


def register_macro(name: str, function: Callable[..., Any]) -> None:
    """Add a macro for model Jinja, as a domain package does for its own rules.

    `function` takes the macro's arguments (as text) and ``dialect=``; it returns SQL text, or a
    value for the template to use (a list the template loops over). The domain's modules
    register when the plugins load them (`cpo.engine.settings.vars_sections` loads the plugins).
    Registering a name again replaces it.
    """
    _MACROS[name] = function


def macros(dialect: str = "duckdb") -> dict[str, Callable[..., str]]:
    """The macro functions for model Jinja, rendering SQL for `dialect` (duckdb or spark).

    Raises:
        ValueError: an unknown dialect.
    """
    if dialect not in DIALECTS:
        raise ValueError(f"unknown SQL dialect {dialect!r}; expected one of {DIALECTS}")
    from cpo.engine.settings import vars_sections

    vars_sections()  # loads the domain's modules, which register their macros

    def bind(function: Callable[..., str]) -> Callable[..., str]:
        def macro(*args: Any) -> str:
            return function(*(str(a) for a in args), dialect=dialect)

        macro.__doc__ = function.__doc__
        return macro

    return {name: bind(function) for name, function in _MACROS.items()}


def dialect_of(config: Any) -> str:
    """The SQL dialect of a project's active target (``type:`` in its target, default duckdb)."""
    from cpo.adapters import target_type

    return "spark" if target_type(config) == "spark" else "duckdb"
