"""Jinja rendering of SQL models and tests: ``ref``, ``var``, ``config``, dependencies.

Each model is rendered once; ``ref()`` leaves a placeholder that `resolve_refs` later replaces
with the relation name, or with the inlined SQL of an ephemeral model.

Values never become SQL text except through one quoting helper, `sql_literal`. ``var()`` returns
settings whose strings are `SqlValue`: rendered, they leave a marker that `bind_values` replaces
once the model is rendered, by where it landed: a quoted literal in plain SQL (``'it''s'``), the
escaped text inside a string literal (``'{{ var("x") }}'`` keeps working) or inside a quoted
identifier. Values the schema types as SQL (`cpo.engine.settings.SqlExpression`: merge tags, rule
conditions) are pasted verbatim; they were parsed as one expression when ``cpo.yml`` was read.
A rendered model must be exactly one SQL statement.
"""

from __future__ import annotations

import datetime as dt
import functools
import math
import os
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

import jinja2

from cpo.engine.config import ProjectConfig, lookup
from cpo.engine.macros import dialect_of, macros
from cpo.engine.nodes import MATERIALIZATIONS, MODEL, Node
from cpo.engine.settings import IDENTIFIER, SqlExpression
from cpo.engine.templates import sandboxed_environment
from cpo.errors import ModelError

_PLACEHOLDER = re.compile(r"__cpo_ref__\(([^)]+)\)__")
_MISSING = object()
_LEADING_WITH = re.compile(
    r"\A(?:\s|--[^\n]*\n|/\*.*?\*/)*with(?:\s+recursive)?\s+", re.IGNORECASE | re.DOTALL
)


def quote(name: str) -> str:
    """Quote an identifier for DuckDB."""
    return '"' + str(name).replace('"', '""') + '"'


def ref_placeholder(name: str) -> str:
    """What ``ref(name)`` renders to, until `resolve_refs` puts the relation in its place."""
    return f"__cpo_ref__({name})__"


# --- the one quoting helper ---------------------------------------------------------------------


def sql_literal(value: Any) -> str:
    """A Python value as a typed SQL literal: the only way a value becomes SQL text.

    Strings are quoted (``'`` doubled), numbers checked as finite numbers, booleans, ``None``,
    dates and timestamps typed, lists and tuples become DuckDB lists.

    Raises:
        ModelError: the value has no SQL literal (a non-finite number, a mapping, an object).
    """
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(int(value))
    if isinstance(value, float | Decimal):
        if not math.isfinite(value):
            raise ModelError(f"{value!r} is not a finite number and cannot be used in SQL")
        return repr(float(value)) if isinstance(value, float) else str(value)
    if isinstance(value, str):
        return "'" + str.__str__(value).replace("'", "''") + "'"
    if isinstance(value, dt.datetime):
        return f"timestamp '{value.isoformat(sep=' ')}'"
    if isinstance(value, dt.date):
        return f"date '{value.isoformat()}'"
    if isinstance(value, list | tuple):
        return "[" + ", ".join(sql_literal(v) for v in value) + "]"
    raise ModelError(f"a {type(value).__name__} cannot be used as a SQL value: {value!r}"[:200])


def sql_identifier(name: Any) -> str:
    """A quoted SQL identifier, after checking `name` is letters, digits and underscores.

    Raises:
        ModelError: `name` is not a plain identifier.
    """
    text = str.__str__(name) if isinstance(name, str) else name
    if not isinstance(text, str) or not IDENTIFIER.match(text):
        raise ModelError(
            f"{text!r} is not a valid name (letters, digits and underscores, not starting with "
            "a digit)"
        )
    return quote(text)


_MARK_OPEN, _MARK_CLOSE = "\ue0f0", "\ue0f1"
_MARKER = re.compile(f"{_MARK_OPEN}([0-9a-f]*){_MARK_CLOSE}")


def _text(value: Any) -> str:
    return str.__str__(value) if isinstance(value, str) else str(value)


class SqlValue(str):
    """A string setting in model Jinja: it renders as a marker that `bind_values` quotes.

    It compares, hashes and tests (``is string``) like the plain string; string methods and
    ``~`` keep the marking, so a value can never reach SQL unquoted.
    """

    __slots__ = ()

    def __str__(self) -> str:
        return _MARK_OPEN + str.__str__(self).encode("utf-8").hex() + _MARK_CLOSE

    def __format__(self, spec: str) -> str:
        return str(self)

    def __add__(self, other: Any) -> SqlValue:
        return SqlValue(str.__str__(self) + _text(other))

    def __radd__(self, other: Any) -> SqlValue:
        return SqlValue(_text(other) + str.__str__(self))

    def __mod__(self, args: Any) -> SqlValue:
        return SqlValue(str.__mod__(str.__str__(self), args))

    def __mul__(self, n: Any) -> SqlValue:
        return SqlValue(str.__mul__(self, n))

    def __getitem__(self, key: Any) -> SqlValue:
        return SqlValue(str.__getitem__(self, key))

    def split(self, *args: Any, **kwargs: Any) -> list[SqlValue]:  # type: ignore[override]
        return [SqlValue(p) for p in str.split(self, *args, **kwargs)]

    def rsplit(self, *args: Any, **kwargs: Any) -> list[SqlValue]:  # type: ignore[override]
        return [SqlValue(p) for p in str.rsplit(self, *args, **kwargs)]


def _keep_marking(name: str) -> Callable[..., SqlValue]:
    method = getattr(str, name)

    def wrapper(self: SqlValue, *args: Any, **kwargs: Any) -> SqlValue:
        return SqlValue(method(self, *args, **kwargs))

    wrapper.__name__ = name
    return wrapper


_MARKED_METHODS = (
    "upper lower title capitalize casefold swapcase strip lstrip rstrip replace center ljust "
    "rjust zfill removeprefix removesuffix expandtabs format translate join"
)
for _name in _MARKED_METHODS.split():
    setattr(SqlValue, _name, _keep_marking(_name))


def mark_values(value: Any) -> Any:
    """Settings for model Jinja: strings (keys too) become `SqlValue`, SQL stays as typed."""
    if isinstance(value, SqlExpression | SqlValue):
        return value
    if isinstance(value, str):
        return SqlValue(value)
    if isinstance(value, Mapping):
        return {mark_values(k): mark_values(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [mark_values(v) for v in value]
    return value


def unmark(value: Any) -> Any:
    """`value` with markers turned back into plain text (for messages and config values)."""
    if isinstance(value, SqlValue):
        return str.__str__(value)
    if isinstance(value, str):
        return _MARKER.sub(lambda m: bytes.fromhex(m.group(1)).decode("utf-8"), value)
    if isinstance(value, Mapping):
        return {unmark(k): unmark(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return type(value)(unmark(v) for v in value)
    return value


_TOKEN = re.compile(
    r"(?P<quote>[Ee]?')|(?P<ident>\")|(?P<line>--)|(?P<block>/\*)|(?P<dollar>\$[A-Za-z_]*\$)"
    f"|{_MARK_OPEN}(?P<hex>[0-9a-f]*){_MARK_CLOSE}"
)


def bind_values(sql: str) -> str:
    """Replace value markers by SQL text fit for where each one landed.

    Plain SQL gets a quoted literal (`sql_literal`); inside a string literal the text is escaped
    (quotes doubled, and backslashes in an ``E'...'`` string); inside a quoted identifier double
    quotes are doubled; in a comment, line breaks and comment ends are neutralised.

    Raises:
        ModelError: a value inside a dollar-quoted string (which cannot be escaped).
    """
    if _MARK_OPEN not in sql:
        return sql
    out: list[str] = []
    i = 0
    n = len(sql)
    while i < n:
        m = _TOKEN.search(sql, i)
        if m is None:
            out.append(sql[i:])
            break
        out.append(sql[i : m.start()])
        kind = m.lastgroup
        if kind == "hex":  # a marker in plain SQL
            out.append(sql_literal(_decode(m.group("hex"))))
            i = m.end()
            continue
        if kind == "quote":
            backslash = m.group(0)[0] in "Ee"
            end, body = _until(sql, m.end(), "'", doubled=True, backslash=backslash)

            def escape(text: str, backslash: bool = backslash) -> str:
                text = text.replace("'", "''")
                return text.replace("\\", "\\\\") if backslash else text

            out.append(m.group(0) + _bind_inside(body, escape) + sql[end - 1 : end])
        elif kind == "ident":
            end, body = _until(sql, m.end(), '"', doubled=True)
            out.append(
                '"' + _bind_inside(body, lambda t: t.replace('"', '""')) + sql[end - 1 : end]
            )
        elif kind == "line":
            end, body = _until(sql, m.end(), "\n")
            out.append("--" + _bind_inside(body, lambda t: re.sub(r"[\r\n]", " ", t)))
            out.append(sql[end - 1 : end] if end <= n and sql[end - 1 : end] == "\n" else "")
        elif kind == "block":
            end, body = _until(sql, m.end(), "*/")
            out.append("/*" + _bind_inside(body, lambda t: t.replace("*/", "* /")) + "*/")
        else:  # dollar-quoted string: nothing can be escaped inside it
            tag = m.group(0)
            end, body = _until(sql, m.end(), tag)
            if _MARKER.search(body):
                raise ModelError(
                    "a var() value is inside a dollar-quoted string ($$...$$), where it cannot be "
                    "escaped; use a '...' string"
                )
            out.append(tag + body + (tag if end <= n else ""))
        i = end
    return "".join(out)


def _decode(hex_text: str) -> str:
    return bytes.fromhex(hex_text).decode("utf-8")


def _until(
    sql: str, start: int, closing: str, *, doubled: bool = False, backslash: bool = False
) -> tuple[int, str]:
    """Find the end of a quoted or commented span; return (index after it, its body)."""
    i = start
    while True:
        j = sql.find(closing, i)
        if backslash:
            k = sql.find("\\", i)
            if k != -1 and (j == -1 or k < j):
                i = k + 2
                continue
        if j == -1:
            return len(sql) + 1, sql[start:]
        if doubled and sql.startswith(closing * 2, j):
            i = j + 2
            continue
        return j + len(closing), sql[start:j]


def _bind_inside(body: str, escape: Callable[[str], str]) -> str:
    return _MARKER.sub(lambda m: escape(_decode(m.group(1))), body)


def check_single_statement(sql: str, where: str, node: str) -> None:
    """Refuse SQL that holds more than one statement (a ``;`` followed by more SQL).

    Raises:
        ModelError: naming the line of the second statement.
    """
    if ";" not in sql:
        return
    from sqlglot.dialects.duckdb import DuckDB
    from sqlglot.errors import TokenError
    from sqlglot.tokens import TokenType

    try:
        tokens = DuckDB().tokenize(sql)
    except TokenError as e:
        raise ModelError(f"cannot read the SQL: {e}", path=where, node=node) from None
    for index, token in enumerate(tokens):
        if token.token_type == TokenType.SEMICOLON:
            rest = [t for t in tokens[index + 1 :] if t.token_type != TokenType.SEMICOLON]
            if rest:
                raise ModelError(
                    "a model or test must be exactly one SQL statement; a second one starts "
                    f"after the ';' on line {token.line} of the rendered SQL (remove the ';', "
                    "or check the var() values this model uses)",
                    path=where,
                    node=node,
                )


@dataclass(frozen=True)
class RenderResult:
    """A rendered model: its SQL with ref placeholders, its refs and its config() values."""

    sql: str
    refs: tuple[str, ...]
    config: Mapping[str, Any]


_MODEL_ENV = sandboxed_environment(
    keep_trailing_newline=True,
    filters={"literal": sql_literal, "identifier": sql_identifier},
)
"""Models and singular tests render here: nothing project-specific lives in it (``ref``,
``var``... are passed to each render), so one environment serves every project."""


@functools.lru_cache(maxsize=1024)
def _template(source: str) -> jinja2.Template:
    # Compiling is most of a render's cost; a process that builds many times (tests, a
    # long-lived API user) compiles each distinct model text once.
    return _MODEL_ENV.from_string(source)


class Compiler:
    """Renders the Jinja of one project's models and tests.

    Args:
        config: The project configuration (for ``var()``).
        existing: Relations that exist in the current database (for ``is_incremental()``).
        full_refresh: Whether incremental models are rebuilt from scratch.
    """

    def __init__(self, config: ProjectConfig, existing: set[str], full_refresh: bool) -> None:
        self.config = config
        self.existing = existing
        self.full_refresh = full_refresh
        self.globals: dict[str, Any] = {}
        """Names every template of this project sees (plugins' ``cpo_jinja_globals``)."""

    def render(self, node: Node) -> RenderResult:
        """Render a model or singular test, collecting its refs and config.

        Raises:
            ModelError: a Jinja syntax error, an undefined name, or a bad var/env_var/config.
        """
        refs: list[str] = []
        config: dict[str, Any] = dict(node.config)
        where = str(node.path)

        def ref(name: str, *_: Any) -> str:
            refs.append(name)
            return ref_placeholder(name)

        def source(_source_name: str, table: str) -> str:
            return ref(table)

        def set_config(**values: Any) -> str:
            config.update(unmark(values))
            return ""

        def is_incremental() -> bool:
            return (
                config.get("materialized") == "incremental"
                and node.name in self.existing
                and not self._full_refresh(config)
            )

        functions: dict[str, Any] = {
            "ref": ref,
            "source": source,
            "config": set_config,
            "var": self._var_function(where),
            "env_var": self._env_var_function(where),
            "is_incremental": is_incremental,
            "exceptions": _Exceptions(where),
            "literal": sql_literal,
            "identifier": sql_identifier,
            **macros(
                dialect_of(self.config)
            ),  # hash_bucket, regex_match, ... (cpo/engine/macros.py)
        }
        try:
            template = _template(node.raw)
            sql = template.render(**self.globals, **functions, this=quote(node.name))
        except ModelError as e:
            # Raised by var(), env_var() or raise_compiler_error(): add the template line.
            if e.line is None:
                e.line = _error_line(e)
            e.message = unmark(e.message)
            e.args = (e.message,)
            e.path = e.path or where
            e.node = e.node or node.name
            raise
        except jinja2.TemplateSyntaxError as e:
            raise ModelError(
                f"Jinja syntax error: {e.message}", path=where, line=e.lineno, node=node.name
            ) from e
        except jinja2.UndefinedError as e:
            raise ModelError(
                f"{unmark(e.message)}; define it, or pass it with var('name', default)",
                path=where,
                line=_error_line(e),
                node=node.name,
            ) from e
        except jinja2.exceptions.SecurityError as e:
            raise ModelError(f"unsafe template: {e}", path=where, node=node.name) from e
        except Exception as e:  # e.g. arithmetic on a var of the wrong type: the user's to fix
            raise ModelError(
                f"{type(e).__name__}: {unmark(str(e))}; check the values this line uses (var() "
                "settings in "
                "cpo.yml or --vars)",
                path=where,
                line=_error_line(e),
                node=node.name,
            ) from e
        try:
            sql = bind_values(sql)
        except ModelError as e:
            raise ModelError(e.message, path=where, node=node.name) from None
        check_single_statement(sql, where, node.name)
        if config.get("materialized") == "incremental":
            # The runner rebuilds instead of merging when this is set (dbt's full_refresh config;
            # a model's own ``full_refresh: false`` wins over --full-refresh).
            config["full_refresh"] = self._full_refresh(config)
        return RenderResult(sql=sql, refs=tuple(dict.fromkeys(refs)), config=config)

    def _full_refresh(self, config: Mapping[str, Any]) -> bool:
        value = config.get("full_refresh")
        return value if isinstance(value, bool) else self.full_refresh

    def _var_function(self, where: str) -> Callable[..., Any]:
        def var(name: str, default: Any = _MISSING) -> Any:
            try:
                return mark_values(lookup(self.config.vars, name))
            except KeyError:
                if default is not _MISSING:
                    return mark_values(default)
                raise ModelError(
                    f"var {name!r} is not set; add it under 'vars:' in cpo.yml, pass --vars, "
                    f"or give a default: var({name!r}, ...)",
                    path=where,
                ) from None

        return var

    @staticmethod
    def _env_var_function(where: str) -> Callable[..., str]:
        def env_var(name: str, default: Any = _MISSING) -> str:
            value = os.environ.get(name)
            if value is not None:
                return value
            if default is not _MISSING:
                return str(default)
            raise ModelError(
                f"environment variable {name!r} is not set; set it or give a default: "
                f"env_var({name!r}, 'default')",
                path=where,
            )

        return env_var


class _Exceptions:
    """dbt's ``exceptions`` namespace in model Jinja: ``exceptions.raise_compiler_error(msg)``."""

    def __init__(self, where: str) -> None:
        self._where = where

    def raise_compiler_error(self, message: str) -> None:
        """Stop compiling with `message` (the model's file and line are added)."""
        raise ModelError(unmark(str(message)), path=self._where)


def _error_line(error: Exception) -> int | None:
    """The template line of a Jinja runtime error, from its traceback."""
    tb = error.__traceback__
    line = None
    while tb is not None:
        if tb.tb_frame.f_code.co_filename == "<template>":
            line = tb.tb_lineno
        tb = tb.tb_next
    return line


def check_config(node: Node) -> None:
    """Validate a node's materialization and unique_key settings."""
    materialized = node.config.get("materialized", "table")
    if materialized not in MATERIALIZATIONS:
        raise ModelError(
            f"unknown materialized={materialized!r}; "
            f"expected one of: {', '.join(MATERIALIZATIONS)}",
            path=str(node.path),
            node=node.name,
        )
    key = node.config.get("unique_key")
    if key is not None and not (
        isinstance(key, str) or (isinstance(key, list) and all(isinstance(k, str) for k in key))
    ):
        raise ModelError(
            f"unique_key must be a column name or a list of column names, not {key!r}",
            path=str(node.path),
            node=node.name,
        )


def resolve_refs(sql: str, nodes: Mapping[str, Node]) -> str:
    """Replace ref placeholders with relation names; ephemeral models become leading CTEs.

    A CTE (rather than an inline subquery) keeps ``from {{ ref('e') }} as alias`` and
    ``e.column`` valid, exactly as for a table or view.
    """
    ctes: dict[str, str] = {}
    body = _substitute(sql, nodes, ctes)
    if not ctes:
        return body
    defs = ",\n".join(f"{quote(name)} as (\n{text}\n)" for name, text in ctes.items())
    match = _LEADING_WITH.match(body)
    if match:  # merge into the model's own WITH clause
        return f"{match.group(0)}{defs},\n{body[match.end() :]}"
    return f"with {defs}\n{body}"


def _substitute(sql: str, nodes: Mapping[str, Node], ctes: dict[str, str]) -> str:
    """Quote ref'd names, collecting ephemeral models' SQL into `ctes` (dependencies first)."""

    def replace(match: re.Match[str]) -> str:
        name = match.group(1)
        target = nodes[name]
        if (
            target.resource_type == MODEL
            and target.materialized == "ephemeral"
            and name not in ctes
        ):
            ctes[name] = _substitute(target.sql, nodes, ctes).strip()
        return quote(name)

    return _PLACEHOLDER.sub(replace, sql)
