"""The Apache Spark adapter: the only package that imports pyspark.

* `cpo.adapters.spark.session`: the process's Spark sessions (local master or Spark Connect),
  Spark's error text, ``@sql_function`` functions as pandas UDFs;
* `cpo.adapters.spark.database`: `SparkDatabase`, the adapter (DuckDB SQL transpiled by
  `cpo.adapters.transpile`; tables are Parquet folders of a warehouse version);
* `cpo.adapters.spark.relation`: `SparkRelation`, what Python steps get from ``ctx.ref``: a Spark
  DataFrame with the few DuckDB relation methods the steps use, so per-customer work stays in
  Spark;
* `cpo.adapters.spark.publish`: publishing a build into an existing ``catalog.schema``.

pyspark itself is imported only inside functions: importing this package needs no Spark.
"""

from cpo.adapters.spark.database import SparkDatabase
from cpo.adapters.spark.relation import SparkRelation
from cpo.adapters.spark.session import is_connect, session, spark_type, stop_session

__all__ = ["SparkDatabase", "SparkRelation", "is_connect", "session", "spark_type", "stop_session"]
