"""The SQL of the generic data tests declared in ``schema.yml``: each query returns the rows
that fail (``unique``, ``not_null``, ``accepted_values``, ``relationships``)."""

from __future__ import annotations

from typing import Any

from cpo.engine.compile import quote, ref_placeholder, sql_literal
from cpo.engine.nodes import Node


def generic_test_sql(test: Node) -> str:
    """The SQL of a generic test: it returns the failing rows."""
    spec = test.test
    assert spec is not None
    model = ref_placeholder(spec.model)
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
        parent = ref_placeholder(spec.args["to"])
        field = quote(spec.args["field"])
        return (
            f"select child.{column} as value from {model} as child\n"
            f"left join {parent} as parent on child.{column} = parent.{field}\n"
            f"where child.{column} is not null and parent.{field} is null"
        )
    raise AssertionError(f"unknown generic test {spec.kind}")


def _literal(value: Any) -> str:
    """A value of ``accepted_values`` as a quoted string (the column is compared as text)."""
    return sql_literal(str(value))
