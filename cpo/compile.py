"""Jinja rendering of SQL models and tests: ``ref``, ``var``, ``config``, dependencies.

Each model is rendered once; ``ref()`` leaves a placeholder that `resolve_refs` later replaces
with the relation name, or with the inlined SQL of an ephemeral model.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import jinja2
from jinja2.sandbox import ImmutableSandboxedEnvironment

from cpo.config import ProjectConfig, lookup
from cpo.errors import ModelError
from cpo.macros import dialect_of, macros
from cpo.nodes import MATERIALIZATIONS, MODEL, TEST, Node

_PLACEHOLDER = re.compile(r"__cpo_ref__\(([^)]+)\)__")
_MISSING = object()
_LEADING_WITH = re.compile(
    r"\A(?:\s|--[^\n]*\n|/\*.*?\*/)*with(?:\s+recursive)?\s+", re.IGNORECASE | re.DOTALL
)


def quote(name: str) -> str:
    """Quote an identifier for DuckDB."""
    return '"' + name.replace('"', '""') + '"'


@dataclass(frozen=True)
class RenderResult:
    """A rendered model: its SQL with ref placeholders, its refs and its config() values."""

    sql: str
    refs: tuple[str, ...]
    config: Mapping[str, Any]


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
        self.env = ImmutableSandboxedEnvironment(
            undefined=jinja2.StrictUndefined, keep_trailing_newline=True
        )

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
            return f"__cpo_ref__({name})__"

        def source(_source_name: str, table: str) -> str:
            return ref(table)

        def set_config(**values: Any) -> str:
            config.update(values)
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
            **macros(dialect_of(self.config)),  # hash_bucket, regex_match, ... (cpo/macros.py)
        }
        try:
            template = self.env.from_string(node.raw)
            sql = template.render(**functions, this=quote(node.name))
        except ModelError as e:
            # Raised by var(), env_var() or raise_compiler_error(): add the template line.
            if e.line is None:
                e.line = _error_line(e)
            raise
        except jinja2.TemplateSyntaxError as e:
            raise ModelError(
                f"Jinja syntax error: {e.message}", path=where, line=e.lineno, node=node.name
            ) from e
        except jinja2.UndefinedError as e:
            raise ModelError(
                f"{e.message}; define it, or pass it with var('name', default)",
                path=where,
                line=_error_line(e),
                node=node.name,
            ) from e
        except jinja2.exceptions.SecurityError as e:
            raise ModelError(f"unsafe template: {e}", path=where, node=node.name) from e
        except Exception as e:  # e.g. arithmetic on a var of the wrong type: the user's to fix
            raise ModelError(
                f"{type(e).__name__}: {e}; check the values this line uses (var() settings in "
                "cpo.yml or --vars)",
                path=where,
                line=_error_line(e),
                node=node.name,
            ) from e
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
                return lookup(self.config.vars, name)
            except KeyError:
                if default is not _MISSING:
                    return default
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
        raise ModelError(str(message), path=self._where)


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


def generic_test_sql(test: Node) -> str:
    """The SQL of a generic test: it returns the failing rows."""
    spec = test.test
    assert spec is not None
    model = f"__cpo_ref__({spec.model})__"
    column = quote(spec.column) if spec.column else ""
    if spec.kind == "unique":
        return (
            f"select {column} as value, count(*) as occurrences from {model}\n"
            f"where {column} is not null group by 1 having count(*) > 1"
        )
    if spec.kind == "not_null":
        return f"select * from {model} where {column} is null"
    if spec.kind == "accepted_values":
        values = ", ".join(_literal(v) for v in spec.args["values"])
        return (
            f"select {column} as value, count(*) as occurrences from {model}\n"
            f"where {column} is not null and {column}::varchar not in ({values}) group by 1"
        )
    if spec.kind == "relationships":
        parent = f"__cpo_ref__({spec.args['to']})__"
        field = quote(spec.args["field"])
        return (
            f"select child.{column} as value from {model} as child\n"
            f"left join {parent} as parent on child.{column} = parent.{field}\n"
            f"where child.{column} is not null and parent.{field} is null"
        )
    raise AssertionError(f"unknown generic test {spec.kind}")


def _literal(value: Any) -> str:
    return "'" + str(value).replace("'", "''") + "'"


def is_test(node: Node) -> bool:
    """Whether the node is a data test."""
    return node.resource_type == TEST
