"""Per-customer outcomes (``vars.experiment.outcomes``): one row per customer, no timestamps.

::

    outcomes:
      path: data/outcomes.csv          # CSV or Parquet; path, glob or list
      columns: {customer_id: id}       # the file column holding the customer id

A metric reads a column with ``column:`` (``proportion``: share of customers with a value > 0;
``mean``: the per-customer value), and a CUPED ``covariate`` is read from this table too.
Customers assigned but absent from the table count as 0 (no visit, no conversion, no spend), as
do empty cells; customers in the table but not assigned are counted as rejected rows in
``experiment_results``. Empty (just ``customer_id``) when the setting is absent.

Errors name the setting: no file, an empty file (an empty outcome source is an error, never
"no effect"), a missing column, a customer listed twice, or a value that is not a number.
"""

from __future__ import annotations

from typing import Any

import pyarrow as pa
from _experiment_design import ExperimentVars, experiment_settings
from _experiment_files import columns as columns_of
from _experiment_files import fail, ident, paths, read_text, require_columns

KEY = "vars.experiment.outcomes"


def needed_columns(settings: ExperimentVars) -> list[str]:
    """Outcome-table columns the metrics read (``column:`` and covariates), in order."""
    names: list[str] = []
    for m in settings.metrics or []:
        for name in (m.column, m.covariate):
            if name and name not in names:
                names.append(name)
    return names


def model(ctx: Any) -> pa.Table:
    """The outcome table with the columns the metrics read, as numbers."""
    settings = experiment_settings(ctx)
    setting = settings.outcomes
    if setting is None:
        return pa.table({"customer_id": pa.array([], pa.string())})
    id_column = setting.columns.customer_id
    query = read_text(ctx, paths(ctx, setting.path, f"{KEY}.path"))
    present = columns_of(ctx, query)
    require_columns(ctx, present, {"customer_id": id_column}, f"{KEY}.columns")
    columns = needed_columns(settings)
    missing = [c for c in columns if c not in present]
    if missing:
        raise fail(
            ctx,
            "vars.experiment.metrics",
            f"metric columns {missing} are not in the outcome table (columns: "
            f"{present}); fix column:/covariate: or the file",
        )
    values = ", ".join(
        f"try_cast(nullif(trim({ident(c)}), '') as double) as {ident(c)}" for c in columns
    )
    bad = " + ".join(
        f"count(*) filter (where nullif(trim({ident(c)}), '') is not null "
        f"and try_cast(trim({ident(c)}) as double) is null)"
        for c in columns
    )
    source = f"from ({query})"
    total, no_id, duplicates, not_numbers = ctx.sql(f"""
        select count(*), count(*) filter (where nullif(trim({ident(id_column)}), '') is null),
               count(*) - count(distinct nullif(trim({ident(id_column)}), '')) - count(*) filter
                   (where nullif(trim({ident(id_column)}), '') is null),
               {bad or "0"}
        {source}
    """).fetchone()
    if total == 0:
        raise fail(
            ctx,
            f"{KEY}.path",
            "the outcome table has no rows: an empty outcome source is an "
            "error (point path: at the file with one row per customer)",
        )
    if no_id or duplicates:
        raise fail(
            ctx,
            f"{KEY}.path",
            f"{no_id} row(s) without a customer id and {duplicates} repeated customer(s); the "
            "outcome table needs exactly one row per customer",
        )
    if not_numbers:
        raise fail(
            ctx,
            f"{KEY}.path",
            f"{not_numbers} value(s) in the metric columns {columns} are not numbers",
        )
    sep = ", " if values else ""
    out = ctx.sql(f"""
        select cast(trim({ident(id_column)}) as varchar) as customer_id{sep}{values}
        {source}
        order by customer_id
    """)
    ctx.log.info("outcome table", extra={"customers": total, "columns": len(columns)})
    return out.to_arrow_table()
