"""DuckDB SQL to Spark SQL with sqlglot, failing loudly on what would not run or would differ.

sqlglot translates most of DuckDB's dialect. What it cannot express raises here, at compile
time, naming the construct (and the cross-engine macro of `cpo.engine.macros` to use instead):

* sqlglot's own "unsupported" errors (``ErrorLevel.RAISE``);
* functions Spark does not have (checked against Spark's function list, shipped with CPO);
* expressions sqlglot translates but whose meaning would change (a hexadecimal cast).

Two rewrites keep DuckDB's semantics: ``a / b`` divides in double precision (Spark would keep
DECIMAL and round to 6 places), and ``list(x order by k)`` keeps its order.
"""

from __future__ import annotations

import functools
import hashlib
import re
from collections.abc import Iterable, Sequence
from importlib import resources
from typing import TYPE_CHECKING

import sqlglot
from sqlglot import exp
from sqlglot.errors import ErrorLevel, SqlglotError

from cpo.errors import ModelError

if TYPE_CHECKING:
    from cpo.engine.nodes import Node

# What to write instead of a DuckDB-only function.
HINTS = {
    "REGEXP_FULL_MATCH": "use {{ regex_match(text, 'pattern') }}",
    "TIMEZONE": "use {{ utc_timestamp(text) }} for text with an offset",
    "TO_DAYS": "use interval N day",
    "LIST_TRANSFORM": "use a lambda with transform(list, x -> ...)",
}
# Words sqlglot renders like calls that are syntax, not functions.
SYNTAX = {"CAST", "TRY_CAST", "EXTRACT", "INTERVAL", "FILTER", "ARRAY", "MAP", "STRUCT", "IF"}


class UnsupportedSqlError(ValueError):
    """A construct the Spark target cannot run; ``construct`` names it."""

    def __init__(self, construct: str, hint: str = "") -> None:
        self.construct = construct
        self.hint = hint
        super().__init__(f"{construct} cannot run on Spark" + (f": {hint}" if hint else ""))


@functools.cache
def spark_functions() -> frozenset[str]:
    """Names of Spark's built-in functions (from ``SHOW FUNCTIONS`` of Spark 4)."""
    text = resources.files("cpo.adapters").joinpath("spark_functions.txt").read_text("utf-8")
    return frozenset(line.strip().upper() for line in text.splitlines() if line.strip())


FILE_READERS = {exp.ReadCSV: "csv", exp.ReadParquet: "parquet"}
"""DuckDB's file-reading table functions, read on Spark through temporary views (`file_views`)."""


def file_view_name(fmt: str, path: str) -> str:
    """The temporary view the Spark adapter registers for a file (or glob) read by a model."""
    return f"__cpo_{fmt}_{hashlib.md5(path.encode()).hexdigest()[:12]}"  # noqa: S324 (a name)


def file_views(sql: str) -> list[tuple[str, str, str]]:
    """(view name, format, path) of every file a DuckDB statement reads with a table function."""
    found = []
    for tree in sqlglot.parse(sql, read="duckdb"):
        for kind, fmt in FILE_READERS.items():
            for node in tree.find_all(kind) if tree is not None else ():
                if isinstance(node.this, exp.Literal):
                    path = str(node.this.this)
                    found.append((file_view_name(fmt, path), fmt, path))
        for node in tree.find_all(exp.Anonymous) if tree is not None else ():
            if str(node.name).lower() in ("read_json_auto", "read_json") and node.expressions:
                first = node.expressions[0]
                if isinstance(first, exp.Literal):
                    path = str(first.this)
                    found.append((file_view_name("json", path), "json", path))
    return found


def _rewrite(node: exp.Expr) -> exp.Expr:
    for kind, fmt in FILE_READERS.items():
        if isinstance(node, kind) and isinstance(node.this, exp.Literal):
            return exp.to_identifier(file_view_name(fmt, str(node.this.this)))
    if (
        isinstance(node, exp.Anonymous)
        and str(node.name).lower() in ("read_json_auto", "read_json")
        and node.expressions
        and isinstance(node.expressions[0], exp.Literal)
    ):
        return exp.to_identifier(file_view_name("json", str(node.expressions[0].this)))
    if isinstance(node, exp.Div) and not node.args.get("typed"):
        # DuckDB's `/` is floating-point division; Spark's keeps DECIMAL (scale 6).
        left = node.this
        if not (isinstance(left, exp.Cast) and left.to.is_type("double")):
            node.set("this", exp.cast(left.copy(), exp.DataType.build("double")))
        return node
    if isinstance(node, exp.Anonymous) and str(node.name).lower() == "epoch_us":
        # Microseconds since the epoch (the timestamp read as UTC: the session's time zone).
        value = node.expressions[0].transform(_rewrite).sql("spark")
        return sqlglot.parse_one(f"unix_micros(cast({value} as timestamp))", read="spark")
    if isinstance(node, exp.Select) and any(
        isinstance(e, exp.Star) and e.args.get("replace") for e in node.expressions
    ):
        # SELECT * REPLACE (e AS c): Spark has EXCEPT but no REPLACE; the replaced columns
        # move to the end (name the output columns where their order matters).
        expressions = []
        for e in node.expressions:
            if isinstance(e, exp.Star) and e.args.get("replace"):
                replaced = [r.transform(_rewrite) for r in e.args["replace"]]
                star = e.copy()
                star.set("replace", None)
                star.set(
                    "except_",
                    [*(star.args.get("except_") or []), *(exp.column(r.alias) for r in replaced)],
                )
                expressions += [star, *replaced]
            else:
                expressions.append(e)
        node.set("expressions", expressions)
        return node
    if isinstance(node, exp.Sub) and (_is_date(node.this) or _is_date(node.expression)):
        # DuckDB: date - date is a number of days; Spark's is an INTERVAL.
        parts = [node.this.transform(_rewrite), node.expression.transform(_rewrite)]
        return exp.Anonymous(this="datediff", expressions=parts)
    if isinstance(node, exp.Round) and isinstance(node.args.get("decimals"), exp.Literal):
        places = node.args["decimals"]
        if places.is_int and 0 < int(places.this) <= 15:
            # DuckDB rounds a double as round(x * 10^n) / 10^n; Spark rounds its decimal text,
            # which differs for 24.044999999999998 (DuckDB 24.05, Spark 24.04).
            scale = f"cast(1e{int(places.this)} as double)"
            inner = node.this.transform(_rewrite)
            return sqlglot.parse_one(
                f"(round(cast(({inner.sql('spark')}) as double) * {scale}, 0) / {scale})",
                read="spark",
            )
    if isinstance(node, exp.ArrayAgg) and isinstance(node.this, exp.Order):
        # list(x ORDER BY k): Spark's collect_list has no order; sort (k, x) structs instead.
        order = node.this.transform(_rewrite)
        value = order.this
        keys = order.expressions
        if len(keys) != 1 or keys[0].args.get("desc"):
            raise UnsupportedSqlError("list(... order by ...) with several or descending keys")
        struct = f"struct({keys[0].this.sql('spark')} as k, {value.sql('spark')} as v)"
        return sqlglot.parse_one(
            f"transform(array_sort(collect_list({struct})), e -> e.v)", read="spark"
        )
    if isinstance(node, exp.Cast) and node.to.is_type(*exp.DataType.INTEGER_TYPES):
        inner = node.this.unnest() if isinstance(node.this, exp.Paren) else node.this
        first = inner
        while isinstance(first, exp.DPipe | exp.Concat):
            first = first.this if isinstance(first, exp.DPipe) else first.expressions[0]
        if isinstance(first, exp.Literal) and first.is_string and first.this.lower() == "0x":
            raise UnsupportedSqlError(
                "a hexadecimal cast ('0x' || ...)::bigint",
                "use {{ hash_bucket(expr) }} for a hash bucket in [0, 1)",
            )
    return node


def _is_date(node: exp.Expr) -> bool:
    """A date literal (``DATE '...'``, ``cast('...' as date)``) or ``current_date``."""
    if isinstance(node, exp.CurrentDate):
        return True
    return (
        isinstance(node, exp.Cast | exp.TsOrDsToDate | exp.StrToDate | exp.DateStrToDate)
        and (not isinstance(node, exp.Cast) or node.to.is_type("date"))
        and isinstance(node.this, exp.Literal)
    )


def _called(tree: exp.Expr) -> Iterable[str]:
    """Upper-case names of the functions a Spark SQL tree calls."""
    for node in tree.find_all(exp.Func):
        if isinstance(node, exp.Anonymous):
            yield str(node.name).upper()
            continue
        text = node.sql("spark")
        match = re.match(r"([A-Za-z_][A-Za-z0-9_]*)\(", text)
        if match:
            yield match.group(1).upper()


def _lambda_names(tree: exp.Expr) -> set[str]:
    return {str(i.name).upper() for lam in tree.find_all(exp.Lambda) for i in lam.expressions}


@functools.lru_cache(maxsize=512)
def _to_spark(sql: str, functions: frozenset[str]) -> str:
    try:
        trees = sqlglot.parse(sql, read="duckdb")
    except SqlglotError as e:
        raise UnsupportedSqlError("SQL that sqlglot cannot parse", str(e).splitlines()[0]) from e
    out = []
    for tree in trees:
        if tree is None:
            continue
        tree = tree.transform(_rewrite)
        try:
            text = tree.sql("spark", unsupported_level=ErrorLevel.RAISE)
        except SqlglotError as e:
            raise UnsupportedSqlError(str(e).strip().splitlines()[0]) from e
        reparsed = sqlglot.parse_one(text, read="spark")
        known = spark_functions() | functions | _lambda_names(reparsed) | SYNTAX
        for name in _called(reparsed):
            if name not in known:
                raise UnsupportedSqlError(f"function {name.lower()}()", HINTS.get(name, ""))
        out.append(text)
    return ";\n".join(out)


def to_spark(sql: str, functions: Sequence[str] = ()) -> str:
    """Translate DuckDB SQL to Spark SQL.

    Args:
        sql: One or more statements in DuckDB's dialect.
        functions: Names of registered SQL functions (``@sql_function``), callable on Spark too.

    Raises:
        UnsupportedSqlError: naming a construct Spark cannot run (and the macro to use).
    """
    return _to_spark(sql, frozenset(f.upper() for f in functions))


def check_nodes(nodes: Sequence[Node], functions: Sequence[str] = ()) -> None:
    """Translate every model and singular test, raising for the first that cannot run on Spark.

    Raises:
        ModelError: naming the model, its file and the construct.
    """
    from cpo.engine.compile import resolve_refs

    by_name = {n.name: n for n in nodes}
    for node in nodes:
        if node.resource_type not in ("model", "test") or not node.sql:
            continue
        if node.materialized == "ephemeral":
            continue
        try:
            to_spark(resolve_refs(node.sql, by_name), functions)
        except UnsupportedSqlError as e:
            raise ModelError(
                f"model {node.name} uses {e}",
                path=str(node.path),
                node=node.name,
            ) from None
