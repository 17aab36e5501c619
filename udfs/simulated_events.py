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

``m_i = 1 + s·(2u_i − 1)`` where ``u_i`` is the customer's mid-rank (0-1; equal values, equal
rank) of the ``covariate`` column of ``stg_customers`` and ``s`` the ``covariate_strength``: the
mean of m is exactly 1, so the true open rate of an arm is ``delivered · open`` (times the
segment mix) and the true relative lift between arms is the ratio of their rates, while CUPED
has a correlated covariate to use.

``enabled``: true, false, or ``auto`` (default: simulate only while no observed events exist,
and never with an outcome table or an external assignment).
Deterministic: the same assignments, settings and ``seed`` give the same events. Runs as one SQL
query in the engine (DuckDB or Spark, identical results): every draw comes from the md5 of
seed, experiment and customer, so no customer's data passes through Python and a customer's
events never depend on row order or on the other customers.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np
import pyarrow as pa

from cpo.engine.compile import quote, sql_literal
from cpo.experiments.settings import EVENTS

RATE_KEYS = (*EVENTS, "revenue_mean")
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


def _multipliers(
    ctx: Any, settings: Mapping[str, Any], segments: Sequence[str | None]
) -> np.ndarray:
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


def _values(name: str, keys: list[Any], matrix: np.ndarray) -> str:
    """A VALUES table ``name(k, <RATE_KEYS>)``: one row per key, every value a literal."""
    rows = ", ".join(
        "(" + ", ".join(sql_literal(v) for v in (key, *map(float, row))) + ")"
        for key, row in zip(keys, matrix, strict=True)
    )
    return f"(values {rows}) as {name}(k, {', '.join(RATE_KEYS)})"


def simulate_sql(
    rates: np.ndarray,
    arms: list[str],
    multipliers: np.ndarray,
    segments: list[str],
    *,
    seed: int,
    strength: float,
    window_us: int,
    covariate_sql: str,
    hex_fraction: Callable[[str, int], str],
) -> str:
    """The query that simulates every assigned customer's events, entirely in the engine.

    Every draw is a 32-bit slice of ``md5(seed:experiment:customer:n)`` (`hex_fraction`), so a
    customer's events depend only on the settings and its own ids, never on row order or on the
    other customers, and are the same on DuckDB and Spark. One md5 serves every customer's
    first four draws; customers who open (about a fifth) need a second, those who convert or
    unsubscribe a third.

    Args:
        rates: Arm × RATE_KEYS true rates (rows in the order of `arms`).
        multipliers: Segment × RATE_KEYS multipliers (rows in the order of `segments`).
        seed: Mixed into every draw; strength: covariate strength s in [0, 1].
        window_us: The attribution window: every event falls strictly inside it.
        covariate_sql: The covariate over ``stg_customers`` as c (``cast(null as double)``).
        hex_fraction: The target's `cpo.engine.macros.hex_fraction` macro.
    """

    def u(hash_column: str, part: int) -> str:
        return hex_fraction(hash_column, part)

    def exponential(hash_column: str, part: int, mean: float) -> str:
        return f"(-{sql_literal(float(mean))} * ln(1.0 - {u(hash_column, part)}))"

    def md5(n: int) -> str:
        return f"md5(key || {sql_literal(f':{n}')})"

    seg = {k: f"coalesce(s.{k}, 1.0)" if segments else "1.0" for k in RATE_KEYS}
    segment_join = (
        f"left join {_values('s', segments, multipliers)} on a.segment_id = s.k" if segments else ""
    )
    customers = 'left join "stg_customers" as c on a.customer_id = c.customer_id'
    assigned = 'from "assignments" as a'
    sent = "where a.assigned_at is not null"
    if strength:
        # u: the mid-rank of x in (0, 1), equal for equal x, from the distinct values of x (a
        # sort of those, not of every customer); the mean of u, and so of m, stays exactly 1/2.
        ranks = f"""left join (
            select x, (sum(n_x) over (order by x) - n_x / 2.0) / sum(n_x) over () as u_x,
                   sum(n_x) over () as n_valid
            from (select {covariate_sql} as x, count(*) as n_x {assigned} {customers}
                  {sent} and {covariate_sql} is not null group by 1) as counted
        ) as ranks on assigned.x = ranks.x"""
        effect = f"""case when u_x is null or n_valid <= 1 then 1.0
            else 1.0 + {sql_literal(float(strength))} * (2.0 * u_x - 1.0) end"""
    else:
        ranks, effect = "", "1.0"
    hour = sql_literal(float(HOUR_US))
    cap = sql_literal(float(window_us - 1_000_000))
    gamma = f"({exponential('h2', 1, 1.0)} + {exponential('h2', 2, 1.0)})"
    times = {
        "delivered": "t_delivered",
        "open": "t_open",
        "click": "t_click",
        "conversion": "t_conversion",
        "unsubscribe": "t_unsubscribe",
    }
    flags = {
        "delivered": "true",
        "open": "is_open",
        "click": "is_click",
        "conversion": "is_conversion",
        "unsubscribe": "is_unsubscribe",
    }
    pick = "\n".join(f"when {i} then {flags[e]}" for i, e in enumerate(EVENTS))
    at = "\n".join(f"when {i} then {times[e]}" for i, e in enumerate(EVENTS))
    names = "\n".join(f"when {i} then {sql_literal(e)}" for i, e in enumerate(EVENTS))
    codes = ", ".join(f"({i})" for i in range(len(EVENTS)))
    return f"""
    with assigned as (
        select cast(a.experiment_id as varchar) as experiment_id,
               cast(a.customer_id as varchar) as customer_id,
               epoch_us(cast(a.assigned_at as timestamp)) as t0,
               {covariate_sql} as x,
               {", ".join(f"r.{k} * {seg[k]} as p_{k}" for k in RATE_KEYS)}
        {assigned}
        join {_values("r", arms, rates)} on cast(a.arm as varchar) = r.k
        {segment_join}
        {customers}
        {sent}
    ),
    effects as (
        select assigned.*, {effect} as m,
               {sql_literal(f"{seed}:")} || experiment_id || ':' || customer_id as key
        from assigned {ranks}
    ),
    first_draws as (
        select *, {md5(0)} as h0 from effects
    ),
    funnel as (
        select *, {u("h0", 1)} < least(p_open * m, 1.0) as is_open,
               {u("h0", 2)} < p_unsubscribe as is_unsubscribe,
               {u("h0", 3)} * {hour} as t_delivered
        from first_draws
        where {u("h0", 0)} < p_delivered
    ),
    opened as (
        select *, case when is_open then {md5(1)} end as h1 from funnel
    ),
    clicked as (
        select *, is_open and {u("h1", 0)} < p_click as is_click,
               case when is_open then t_delivered
                   + {exponential("h1", 1, DELAYS["open"])} end as t_open
        from opened
    ),
    converted as (
        select *, is_click and {u("h1", 2)} < p_conversion as is_conversion,
               case when is_click then t_open
                   + {exponential("h1", 3, DELAYS["click"])} end as t_click
        from clicked
    ),
    last_draws as (
        select *, case when is_conversion or is_unsubscribe then {md5(2)} end as h2
        from converted
    ),
    drawn as (
        select *,
               case when is_conversion then t_click
                   + {exponential("h2", 0, DELAYS["conversion"])} end as t_conversion,
               case when is_unsubscribe then t_delivered
                   + {exponential("h2", 3, DELAYS["unsubscribe"])} end as t_unsubscribe,
               case when is_conversion
                   then round({gamma} * p_revenue_mean / 2.0, 2) end as revenue
        from last_draws
    )
    select customer_id, experiment_id,
           case e.code {names} end as event,
           -- Whole milliseconds: both engines agree even where their ln differs in the last bit.
           make_timestamp(t0 + 1000 * cast(floor(least(case e.code {at} end, {cap}) / 1000.0)
               as bigint)) as event_at,
           case when e.code = {EVENTS.index("conversion")} then revenue end as revenue,
           'simulated' as source
    from drawn
    cross join (values {codes}) as e(code)
    where case e.code {pick} end
    """


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


def model(ctx: Any) -> Any:
    """Simulate events for every assigned customer (or none when disabled), as a relation."""
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
    x_sql = f"cast(c.{quote(covariate)} as double)" if covariate else "cast(null as double)"
    arms = [
        str(r[0])
        for r in ctx.sql(
            'select distinct cast(arm as varchar) from "assignments" '
            "where assigned_at is not null and arm is not null order by 1"
        ).fetchall()
    ]
    if not arms:
        return SCHEMA.empty_table()
    configured = sorted(str(k) for k in (settings.get("segment_multipliers") or {}))
    days = ctx.var("experiment.attribution_days", 7, expect=(int, float))
    strength = float(settings.get("covariate_strength", 0.0))
    if not 0 <= strength <= 1:
        raise _error(ctx, "covariate_strength", f"must be between 0 and 1, got {strength}")
    from cpo.engine.macros import dialect_of, macros

    query = simulate_sql(
        _rates(ctx, settings, arms),
        arms,
        _multipliers(ctx, settings, configured),
        configured,
        seed=int(settings.get("seed", 0)),
        strength=strength,
        window_us=int(days * 24 * HOUR_US),
        covariate_sql=x_sql,
        hex_fraction=macros(dialect_of(ctx.config))["hex_fraction"],
    )
    ctx.log.info("simulating events in SQL", extra={"arms": len(arms)})
    return ctx.sql(query)
