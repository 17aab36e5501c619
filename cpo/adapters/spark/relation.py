"""What Python steps get on Spark (`SparkRelation`) and what ``execute`` returns (`Cursor`)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from cpo.adapters.transpile import to_spark


class Cursor:
    """What `SparkDatabase.execute` returns: rows already collected (results are small)."""

    def __init__(self, columns: list[str], rows: list[tuple]) -> None:
        self.description = [(c,) for c in columns]
        self._rows = rows
        self._at = 0

    def fetchone(self) -> tuple | None:
        """The next row, or None."""
        if self._at >= len(self._rows):
            return None
        self._at += 1
        return self._rows[self._at - 1]

    def fetchall(self) -> list[tuple]:
        """Every remaining row."""
        rows, self._at = self._rows[self._at :], len(self._rows)
        return rows


class SparkRelation:
    """A Spark DataFrame with the DuckDB relation methods Python steps use.

    Everything else is the DataFrame's own (``relation.groupBy(...)``, ``relation.spark``).
    ``df()``/``fetchall()`` collect to the driver: use them for small results (segments x
    tones); keep per-customer work in Spark (``relation.spark`` and the DataFrame API).

    Args:
        frame: The Spark DataFrame.
        functions: Names of the registered SQL functions (expressions may call them).
    """

    def __init__(self, frame: Any, functions: Sequence[str] = ()) -> None:
        self.spark = frame
        self._functions = list(functions)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.spark, name)

    @property
    def columns(self) -> list[str]:
        """Column names."""
        return list(self.spark.columns)

    def df(self) -> Any:
        """Collect to a pandas DataFrame."""
        return self.spark.toPandas()

    def to_arrow_table(self) -> Any:
        """Collect to an Arrow table."""
        return self.spark.toArrow()

    def arrow(self) -> Any:
        """Collect to an Arrow table."""
        return self.to_arrow_table()

    def fetchall(self) -> list[tuple]:
        """Collect every row as a tuple."""
        return [tuple(row) for row in self.spark.collect()]

    def fetchone(self) -> tuple | None:
        """The first row."""
        rows = self.spark.limit(1).collect()
        return tuple(rows[0]) if rows else None

    def _expressions(self, text: str) -> list[str]:
        import sqlglot

        tree = sqlglot.parse_one(f"select {text}", read="duckdb")
        return [
            to_spark(f"select {e.sql('duckdb')}", self._functions)[len("SELECT ") :]
            for e in tree.expressions
        ]

    def _new(self, frame: Any) -> SparkRelation:
        return SparkRelation(frame, self._functions)

    def project(self, expressions: str) -> SparkRelation:
        """Select expressions (DuckDB syntax), like DuckDB's ``relation.project``."""
        return self._new(self.spark.selectExpr(*self._expressions(expressions)))

    def order(self, expressions: str) -> SparkRelation:
        """Sort by expressions (DuckDB syntax)."""
        return self._new(self.spark.orderBy(*_exprs(self._expressions(expressions))))

    def filter(self, condition: Any) -> SparkRelation:
        """Rows where `condition` (DuckDB syntax text, or a Spark column) holds."""
        if isinstance(condition, str):
            condition = self._expressions(condition)[0]
        return self._new(self.spark.filter(condition))

    def aggregate(self, expressions: str, groups: str = "") -> SparkRelation:
        """Aggregate (DuckDB syntax), like DuckDB's ``relation.aggregate``."""
        exprs = self._expressions(expressions)
        if groups:
            keys = self._expressions(groups)
            return self._new(self.spark.groupBy(*keys).agg(*_exprs(exprs)))
        return self._new(self.spark.selectExpr(*exprs))

    def limit(self, n: int) -> SparkRelation:
        """The first `n` rows."""
        return self._new(self.spark.limit(n))

    def count(self) -> int:
        """Row count (an int, like Spark's; DuckDB's relation.count() is an aggregate)."""
        return int(self.spark.count())


def _exprs(texts: Sequence[str]) -> list[Any]:
    from pyspark.sql.functions import expr

    return [expr(t) for t in texts]


def from_arrow(spark: Any, table: Any) -> Any:
    """A Spark DataFrame from an Arrow table, with its schema given (Spark Connect cannot
    infer one from an empty table)."""
    from pyspark.sql.pandas.types import from_arrow_schema

    table = _arrow_for_spark(table)
    return spark.createDataFrame(table, schema=from_arrow_schema(table.schema))


def _arrow_for_spark(table: Any) -> Any:
    """Arrow types Spark reads: large strings and dictionary columns made plain."""
    import pyarrow as pa

    fields = []
    for f in table.schema:
        kind = f.type
        if pa.types.is_dictionary(kind):
            kind = kind.value_type
        if pa.types.is_large_string(kind) or pa.types.is_null(kind):
            kind = pa.string()  # an all-NULL column (pandas object) becomes text
        fields.append(pa.field(f.name, kind, f.nullable))
    return table.cast(pa.schema(fields))
