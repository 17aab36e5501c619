"""An assignment made outside CPO (``vars.experiment.assignments``), one row per customer.

Empty (with the same columns) when the setting is absent: CPO then assigns arms itself in
``assignments``. When set, ``assignments`` is this table, and CPO analyses exactly this
assignment::

    assignments:
      path: data/assignments.csv            # CSV or Parquet; path, glob or list
      columns: {customer_id: id, arm: group, assigned_at: sent_at, segment_id: segment}

``assigned_at`` and ``segment_id`` are optional (without a segment column, CPO's own segment of
the customer is used when it has one). Every arm in the file must be one of
``vars.experiment.arms`` (their ``weight`` is the planned allocation SRM is checked against).
Bad files fail the build naming the setting: missing file or column, empty file, missing
customer id or arm, a customer listed twice, unknown arms, unparseable ``assigned_at``.
"""

from __future__ import annotations

from typing import Any

import pyarrow as pa
from _experiment_design import experiment_config, experiment_settings
from _experiment_files import columns as columns_of
from _experiment_files import fail, ident, literal, paths, read_text, require_columns

KEY = "vars.experiment.assignments"
SCHEMA = pa.schema(
    [
        ("experiment_id", pa.string()),
        ("customer_id", pa.string()),
        ("arm", pa.string()),
        ("segment_id", pa.string()),
        ("assigned_at", pa.timestamp("us")),
    ]
)


def model(ctx: Any) -> pa.Table:
    """The external assignment, checked, or an empty table when none is configured."""
    settings = experiment_settings(ctx)
    config = experiment_config(settings, error=ctx.config.document.error)
    setting = settings.assignments
    if setting is None:
        return SCHEMA.empty_table()
    # The model requires columns.arm, so every role is named (optional ones may be None).
    wanted = {role: col for role, col in setting.columns.model_dump().items() if col}
    source = read_text(ctx, paths(ctx, setting.path, f"{KEY}.path"))
    require_columns(ctx, columns_of(ctx, source), wanted, f"{KEY}.columns")
    at = wanted.get("assigned_at")
    seg = wanted.get("segment_id")
    table = f"""
        select
            nullif(trim({ident(wanted["customer_id"])}), '') as customer_id,
            nullif(trim({ident(wanted["arm"])}), '') as arm,
            {f"nullif(trim({ident(seg)}), '')" if seg else "null::varchar"} as segment_id,
            {f"nullif(trim({ident(at)}), '')" if at else "null::varchar"} as raw_at,
            {f"try_cast(trim({ident(at)}) as timestamp)" if at else "null::timestamp"} as parsed_at
        from ({source})
    """
    counts = ctx.sql(f"""
        select count(*), count(*) filter (where customer_id is null),
               count(*) filter (where arm is null), count(*) - count(distinct customer_id)
                   - count(*) filter (where customer_id is null),
               count(*) filter (where raw_at is not null and parsed_at is null)
        from ({table})
    """).fetchone()
    total, no_id, no_arm, duplicates, bad_at = counts
    if total == 0:
        raise fail(ctx, f"{KEY}.path", "the assignment file has no rows; nothing to analyse")
    if no_id or no_arm:
        raise fail(
            ctx,
            f"{KEY}.columns",
            f"{no_id} row(s) without a customer id and {no_arm} without an arm; every row "
            "needs both",
        )
    if duplicates:
        raise fail(
            ctx,
            f"{KEY}.path",
            f"{duplicates} customer(s) appear more than once; an assignment gives each customer "
            "exactly one arm (remove the repeats)",
        )
    if bad_at:
        raise fail(
            ctx,
            f"{KEY}.columns.assigned_at",
            f"{bad_at} value(s) of {at!r} are not timestamps (use e.g. 2026-11-24 09:00:00)",
        )
    found = [r[0] for r in ctx.sql(f"select distinct arm from ({table}) order by 1").fetchall()]
    known = [a.name for a in config.arms]
    unknown = [a for a in found if a not in known]
    if unknown:
        raise fail(
            ctx,
            "vars.experiment.arms",
            f"the assignment file has arms {unknown} that are not in vars.experiment.arms "
            f"({', '.join(known)}); list every arm with its planned weight",
        )
    start = settings.start_at
    at_sql = "parsed_at" if at or not start else f"try_cast({literal(str(start))} as timestamp)"
    out = ctx.sql(f"""
        select {literal(config.id)} as experiment_id, customer_id, arm, segment_id,
               {at_sql} as assigned_at
        from ({table})
        order by customer_id
    """)
    ctx.log.info("external assignment", extra={"customers": total, "arms": len(found)})
    return out.to_arrow_table().cast(SCHEMA)
