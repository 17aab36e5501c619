"""The process's Spark sessions, Spark's error text, and SQL functions as Spark UDFs."""

from __future__ import annotations

import contextlib
import inspect
import logging
import os
import re
import sys
import threading
from pathlib import Path
from typing import Any

from cpo.adapters import SparkSettings
from cpo.errors import ModelError

_LOCK = threading.Lock()
_SESSIONS: dict[str, Any] = {}  # "local" (one SparkContext per process) or a Connect URL


def quote_name(name: str) -> str:
    """A Spark identifier in backticks."""
    return "`" + name.replace("`", "``") + "`"


def literal(text: str) -> str:
    """A Spark string literal."""
    return "'" + text.replace("\\", "\\\\").replace("'", "\\'") + "'"


def is_connect(spark: Any) -> bool:
    """Whether a session is a Spark Connect client (no SparkContext, no JVM in this process)."""
    return type(spark).__module__.startswith("pyspark.sql.connect")


def _builder(settings: SparkSettings) -> Any:
    """The session builder of a target, with its settings (local master or Connect URL)."""
    from pyspark.sql import SparkSession

    if settings.remote:
        # Connect's own builder: a Connect client may live next to a local SparkContext.
        from pyspark.sql.connect.session import SparkSession as ConnectSession

        return ConnectSession.builder.remote(settings.remote)
    catalog_dir = settings.warehouse_path / ".catalog"
    builder = SparkSession.builder.appName("cpo").master(settings.master or "local[2]")
    builder = (
        builder.config("spark.sql.warehouse.dir", str(catalog_dir))
        .config("spark.ui.enabled", "false")
        .config("spark.ui.showConsoleProgress", "false")
        .config("spark.driver.extraJavaOptions", "-Dderby.system.home=" + str(catalog_dir))
    )
    for key, value in _conf(settings).items():
        builder = builder.config(key, value)
    return builder


def _conf(settings: SparkSettings) -> dict[str, str]:
    conf = {
        "spark.sql.session.timeZone": "UTC",
        "spark.sql.shuffle.partitions": str(settings.shuffle_partitions),
        "spark.sql.execution.arrow.pyspark.enabled": "true",
        "spark.sql.parquet.outputTimestampType": "TIMESTAMP_MICROS",
        **settings.conf,
    }
    if settings.remote:
        # A Connect client sets session settings only (the server owns memory, cores...).
        conf.pop("spark.sql.execution.arrow.pyspark.enabled")
    return conf


def session(settings: SparkSettings) -> Any:
    """The process's Spark session for the target (started once per endpoint, then reused).

    ``master`` targets share this process's one SparkContext; each ``remote`` URL gets its own
    Spark Connect client (a token comes from the URL or ``SPARK_CONNECT_AUTHENTICATE_TOKEN``).

    Raises:
        ModelError: pyspark is missing, or Spark does not start (Java, the Connect server).
    """
    key = settings.remote or "local"
    with _LOCK:
        if key in _SESSIONS:
            return _SESSIONS[key]
        try:
            import pyspark  # noqa: F401
        except ImportError as e:  # pragma: no cover - depends on the environment
            raise ModelError(
                "the spark target needs pyspark: pip install -e '.[spark]' (and Java 17)"
            ) from e
        import cpo

        # Python workers import cpo and the project's udfs/ (SQL functions run there).
        paths = [str(Path(cpo.__file__).resolve().parent.parent), str(settings.root / "udfs")]
        old = os.environ.get("PYTHONPATH")
        os.environ["PYTHONPATH"] = os.pathsep.join([*paths, *([old] if old else [])])
        try:
            spark = _builder(settings).getOrCreate()
            if settings.remote:
                for name, value in _conf(settings).items():
                    with contextlib.suppress(Exception):  # static settings stay the server's
                        spark.conf.set(name, value)
        except Exception as e:
            raise ModelError(
                f"cannot start Spark ({settings.remote or settings.master}): "
                f"{first_line(e)}"
                + (
                    "; is the Spark Connect server running and reachable?"
                    if settings.remote
                    else "; is Java 17 installed (java -version)?"
                )
            ) from e
        if not settings.remote:
            with contextlib.suppress(Exception):
                spark.sparkContext.setLogLevel("ERROR")
        # pyspark logs every failed query with its JVM stack; the adapter reports it instead.
        logging.getLogger("SQLQueryContextLogger").setLevel(logging.CRITICAL)
        _SESSIONS[key] = spark
        return spark


def stop_session(remote: str | None = None) -> None:
    """Stop the process's Spark sessions (tests and benchmarks; builds keep them).

    Args:
        remote: Stop only the Spark Connect client of this URL (the local session stays).
    """
    with _LOCK:
        for key in [k for k in _SESSIONS if remote is None or k == remote]:
            with contextlib.suppress(Exception):
                _SESSIONS.pop(key).stop()


_GRPC = re.compile(r"status = StatusCode\.(\w+).*?details = \"([^\"]*)\"", re.DOTALL)
_GRPC_HINTS = {
    "UNAUTHENTICATED": "check the token (SPARK_CONNECT_AUTHENTICATE_TOKEN, or ;token= in the "
    "remote URL)",
    "UNAVAILABLE": "is the Spark Connect server running and reachable?",
}


def first_line(error: BaseException) -> str:
    """Spark's message of an error, without the logical plan and JVM stack that follow it.

    A Spark Connect call refused by the server (gRPC status and details, not a Spark error) is
    said as such, with what to check.
    """
    text = str(error).strip()
    grpc = _GRPC.search(text)
    if grpc:
        status, details = grpc.groups()
        hint = f"; {_GRPC_HINTS[status]}" if status in _GRPC_HINTS else ""
        return f"Spark Connect refused the call ({status}): {details}{hint}"
    sqlstate = re.search(r"SQLSTATE: \w+", text)
    if sqlstate:
        text = text[: sqlstate.end()]
    lines = [line for line in text.splitlines() if line.strip() and "JVM stacktrace" not in line]
    kept = []
    for line in lines:
        if line.startswith(("\tat ", "at ", "    at ")) or line.strip().startswith("at "):
            break
        kept.append(line.strip())
    return " ".join(kept)[:600] or type(error).__name__


def spark_type(duckdb_type: str) -> str:
    """A DuckDB type name as Spark DDL (``VARCHAR`` -> ``STRING``)."""
    from sqlglot import exp

    return exp.DataType.build(duckdb_type, dialect="duckdb").sql("spark")


def register_function(spark: Any, fn: Any) -> None:
    """Register an ``@sql_function`` as a (vectorised pandas) Spark UDF of the session."""
    import pandas as pd
    import pyarrow as pa
    from pyspark import cloudpickle
    from pyspark.sql.functions import pandas_udf

    module = sys.modules.get(getattr(fn.function, "__module__", ""), None)
    if module is not None and module.__name__.startswith("cpo_project_udfs"):
        # Project modules are not importable on the workers: ship them by value.
        with contextlib.suppress(ValueError):
            cloudpickle.register_pickle_by_value(module)
    function = fn.function
    vectorized = fn.vectorized

    def run(*series: pd.Series) -> pd.Series:
        if vectorized:
            out = function(*(pa.Array.from_pandas(s) for s in series))
            return pd.Series(out.to_pandas() if hasattr(out, "to_pandas") else out)
        # DuckDB's default: NULL in any argument gives NULL without calling the function.
        return pd.Series(
            [
                None
                if any(v is None or v is pd.NA or v != v for v in values)
                else function(*values)
                for values in zip(*series, strict=True)
            ],
            dtype=object,
        )

    # pandas_udf reads the arity and Series types from the signature.
    names = [f"a{i}" for i in range(len(fn.parameters))]
    run.__signature__ = inspect.Signature(  # type: ignore[attr-defined]
        [
            inspect.Parameter(n, inspect.Parameter.POSITIONAL_ONLY, annotation=pd.Series)
            for n in names
        ],
        return_annotation=pd.Series,
    )
    run.__annotations__ = {**dict.fromkeys(names, pd.Series), "return": pd.Series}
    udf = pandas_udf(run, returnType=spark_type(fn.return_type))  # type: ignore[call-overload]
    if fn.side_effects:
        udf = udf.asNondeterministic()
    spark.udf.register(fn.name, udf)
