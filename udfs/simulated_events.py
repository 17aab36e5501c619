"""Simulated outcome events for demos and tests, labelled ``source = 'simulated'``.

Every assigned customer walks a funnel with configured true rates per arm
(``vars.experiment.simulation.rates``: ``default`` plus overrides per arm) and optional
per-segment multipliers::

    delivered ~ Bernoulli(delivered)
    open      ~ delivered  and Bernoulli(open · m_i · seg)        (m_i: covariate effect)
    click     ~ open       and Bernoulli(click · seg)             (click given open)
    conversion~ click      and Bernoulli(conversion · seg)        (conversion given click)
    unsubscribe ~ delivered and Bernoulli(unsubscribe · seg)
    revenue   ~ Gamma(shape 2, mean revenue_mean · seg) per conversion

``m_i = 1 + s·(2u_i − 1)`` where ``u_i`` is the customer's rank (0-1) of the ``covariate`` column
of ``stg_customers`` and ``s`` the ``covariate_strength``: the mean of m is exactly 1, so the
true open rate of an arm is ``delivered · open`` (times the segment mix) and the true relative
lift between arms is the ratio of their rates, while CUPED has a correlated covariate to use.

``enabled``: true, false, or ``auto`` (default: simulate only while no observed events exist,
and never with an outcome table or an external assignment).
Deterministic: the same assignments, settings and ``seed`` give the same events.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from cpo.engine.compile import quote

EVENTS = ("delivered", "open", "click", "conversion", "unsubscribe")
RATE_KEYS = ("delivered", "open", "click", "conversion", "unsubscribe", "revenue_mean")
DEFAULT_RATES = {
    "delivered": 0.98,
    "open": 0.22,
    "click": 0.25,
    "conversion": 0.12,
    "unsubscribe": 0.004,
    "revenue_mean": 65.0,
}
SCHEMA = pa.schema(
    [
        ("customer_id", pa.string()),
        ("experiment_id", pa.string()),
        ("event", pa.string()),
        ("event_at", pa.timestamp("us")),
        ("revenue", pa.float64()),
        ("source", pa.string()),
    ]
)
HOUR_US = 3_600_000_000
# Mean delays after the previous funnel step (microseconds).
DELAYS = {
    "open": 8 * HOUR_US,
    "click": HOUR_US // 6,
    "conversion": 2 * HOUR_US,
    "unsubscribe": 12 * HOUR_US,
}


def _error(ctx: Any, key: str, message: str) -> Exception:
    return ctx.config.document.error(f"vars.experiment.simulation.{key}", message)


def _rates(ctx: Any, settings: Mapping[str, Any], arms: list[str]) -> np.ndarray:
    """A (arm × RATE_KEYS) matrix: ``rates.default`` updated by ``rates.<arm>``."""
    rates = settings.get("rates") or {}
    base = {**DEFAULT_RATES, **(rates.get("default") or {})}
    matrix = np.empty((len(arms), len(RATE_KEYS)))
    for i, arm in enumerate(arms):
        merged = {**base, **(rates.get(arm) or {})}
        for j, key in enumerate(RATE_KEYS):
            value = merged[key]
            limit_ok = value >= 0 if key == "revenue_mean" else 0 <= value <= 1
            if isinstance(value, bool) or not isinstance(value, int | float) or not limit_ok:
                raise _error(
                    ctx,
                    f"rates.{arm}.{key}",
                    f"must be a probability in [0, 1] (revenue_mean: >= 0), got {value!r}",
                )
            matrix[i, j] = value
    return matrix


def _multipliers(ctx: Any, settings: Mapping[str, Any], segments: list[str | None]) -> np.ndarray:
    """A (segment × RATE_KEYS) matrix of multipliers (1 unless configured)."""
    configured = settings.get("segment_multipliers") or {}
    matrix = np.ones((len(segments), len(RATE_KEYS)))
    for i, segment in enumerate(segments):
        for key, value in (configured.get(segment) or {}).items():
            if key not in RATE_KEYS or not isinstance(value, int | float) or value < 0:
                raise _error(
                    ctx,
                    f"segment_multipliers.{segment}.{key}",
                    f"must be a non-negative multiplier of one of {RATE_KEYS}",
                )
            matrix[i, RATE_KEYS.index(key)] = value
    return matrix


def _codes(column: pa.ChunkedArray) -> tuple[np.ndarray, list[Any]]:
    encoded = column.combine_chunks().dictionary_encode()
    indices = encoded.indices.fill_null(-1).to_numpy(zero_copy_only=False)
    values = [*encoded.dictionary.to_pylist(), None]  # index -1 → the last entry, None
    return indices.astype(np.int64), values


def _covariate_effect(x: np.ndarray, strength: float) -> np.ndarray:
    """``1 + s·(2u − 1)`` with u the mid-rank of x in (0, 1); 1 where x is missing."""
    m = np.ones(x.size)
    valid = ~np.isnan(x)
    if valid.sum() > 1 and strength:
        order = np.argsort(x[valid], kind="stable")
        u = np.empty(order.size)
        u[order] = (np.arange(order.size) + 0.5) / order.size
        m[valid] = 1.0 + strength * (2.0 * u - 1.0)
    return m


def _constant(value: str, n: int) -> pa.Array:
    return pa.DictionaryArray.from_arrays(
        pa.array(np.zeros(n, dtype=np.int8)), pa.array([value])
    ).cast(pa.string())


def simulate(
    table: pa.Table,
    rates: np.ndarray,
    multipliers: np.ndarray,
    *,
    seed: int,
    strength: float,
    window_us: int,
) -> pa.Table:
    """Events for customers (experiment_id, customer_id, t0 µs, x) with arm/segment codes.

    Args:
        table: Columns experiment_id, customer_id, arm_code, segment_code, t0, x.
        rates: Arm × RATE_KEYS true rates; multipliers: segment × RATE_KEYS.
        seed: numpy seed; strength: covariate strength s in [0, 1];
        window_us: attribution window: every event falls strictly inside it.
    """
    n = table.num_rows
    arm = table["arm_code"].to_numpy()
    seg = table["segment_code"].to_numpy()
    t0 = table["t0"].to_numpy()
    p = rates[arm] * multipliers[seg]  # n × RATE_KEYS
    col = {k: p[:, j] for j, k in enumerate(RATE_KEYS)}
    m = _covariate_effect(table["x"].to_numpy(zero_copy_only=False).astype(float), strength)
    rng = np.random.default_rng(seed)
    u = rng.random((5, n))
    delivered = u[0] < col["delivered"]
    opened = delivered & (u[1] < np.minimum(col["open"] * m, 1.0))
    clicked = opened & (u[2] < col["click"])
    converted = clicked & (u[3] < col["conversion"])
    unsubscribed = delivered & (u[4] < col["unsubscribe"])
    t_delivered = rng.random(n) * HOUR_US
    t_open = t_delivered + rng.exponential(DELAYS["open"], n)
    t_click = t_open + rng.exponential(DELAYS["click"], n)
    t_conversion = t_click + rng.exponential(DELAYS["conversion"], n)
    t_unsubscribe = t_delivered + rng.exponential(DELAYS["unsubscribe"], n)
    revenue = np.round(rng.gamma(2.0, col["revenue_mean"] / 2.0), 2)
    masks = (delivered, opened, clicked, converted, unsubscribed)
    offsets = (t_delivered, t_open, t_click, t_conversion, t_unsubscribe)
    rows = [np.flatnonzero(mask) for mask in masks]
    index = np.concatenate(rows)
    code = np.concatenate([np.full(r.size, k, dtype=np.int8) for k, r in enumerate(rows)])
    offset = np.concatenate([o[r] for o, r in zip(offsets, rows, strict=True)])
    offset = np.minimum(offset, window_us - 1_000_000).astype(np.int64)
    is_conversion = code == EVENTS.index("conversion")
    take = pa.array(index)
    return pa.table(
        {
            "customer_id": pc.take(table["customer_id"], take),
            "experiment_id": pc.take(table["experiment_id"], take),
            "event": pa.DictionaryArray.from_arrays(pa.array(code), pa.array(EVENTS)).cast(
                pa.string()
            ),
            "event_at": pa.array(t0[index] + offset, type=pa.int64()).cast(pa.timestamp("us")),
            "revenue": pa.array(np.where(is_conversion, revenue[index], 0.0), mask=~is_conversion),
            "source": _constant("simulated", index.size),
        },
        schema=SCHEMA,
    )


def _enabled(ctx: Any, setting: Any) -> bool:
    if setting == "auto":
        # An outcome table or an assignment made elsewhere means real outcomes: never simulate.
        if ctx.var("experiment.outcomes", None) or ctx.var("experiment.assignments", None):
            return False
        observed = ctx.ref("observed_events").aggregate("count(*)").fetchone()[0]
        return observed == 0
    if not isinstance(setting, bool):
        raise _error(ctx, "enabled", f"must be true, false or auto, got {setting!r}")
    return setting


def model(ctx: Any) -> pa.Table:
    """Simulate events for every assigned customer (or none when disabled)."""
    settings = ctx.var("experiment.simulation", {}, expect=dict)
    if not _enabled(ctx, settings.get("enabled", "auto")):
        return SCHEMA.empty_table()
    customers = ctx.ref("stg_customers")
    ctx.ref("assignments")
    covariate = settings.get("covariate")
    if covariate and covariate not in customers.columns:
        raise _error(
            ctx,
            "covariate",
            f"{covariate!r} is not a column of stg_customers ({', '.join(customers.columns)})",
        )
    x_sql = f"cast({quote(covariate)} as double)" if covariate else "null::double"
    # Ordered, so the seeded draws always meet the same customers.
    table = ctx.sql(f"""
        select cast(a.experiment_id as varchar) as experiment_id,
               cast(a.customer_id as varchar) as customer_id,
               cast(a.arm as varchar) as arm,
               cast(a.segment_id as varchar) as segment_id,
               epoch_us(cast(a.assigned_at as timestamp)) as t0,
               c.x
        from "assignments" as a
        left join (select customer_id, avg({x_sql}) as x from "stg_customers" group by 1) as c
            using (customer_id)
        where a.assigned_at is not null
        order by 1, 2
    """).to_arrow_table()
    arm_code, arms = _codes(table["arm"])
    seg_code, segments = _codes(table["segment_id"])
    table = table.append_column("arm_code", pa.array(arm_code)).append_column(
        "segment_code", pa.array(seg_code)
    )
    days = ctx.var("experiment.attribution_days", 7, expect=(int, float))
    strength = float(settings.get("covariate_strength", 0.0))
    if not 0 <= strength <= 1:
        raise _error(ctx, "covariate_strength", f"must be between 0 and 1, got {strength}")
    events = simulate(
        table,
        _rates(ctx, settings, [str(a) for a in arms]),
        _multipliers(ctx, settings, segments),
        seed=int(settings.get("seed", 0)),
        strength=strength,
        window_us=int(days * 24 * HOUR_US),
    )
    ctx.log.info("simulated events", extra={"customers": table.num_rows, "events": len(events)})
    return events
