{{ config(materialized='view', tags=['marts']) }}
-- One row per assigned customer: arm, variant, segment, and the customer's outcomes in the
-- attribution window (flags, counts and revenue from stg_events). Customers without events have
-- zeros, so averages over this table are the experiment's per-customer metrics.
with outcomes as (
    select
        experiment_id,
        customer_id,
        count(*) filter (where event = 'delivered') as delivered_events,
        count(*) filter (where event = 'open') as opens,
        count(*) filter (where event = 'click') as clicks,
        count(*) filter (where event = 'conversion') as conversions,
        count(*) filter (where event = 'unsubscribe') as unsubscribes,
        coalesce(sum(revenue), 0) as revenue,
        min(event_at) as first_event_at,
        max(event_at) as last_event_at
    from {{ ref('stg_events') }}
    group by experiment_id, customer_id
)

select
    a.experiment_id,
    a.customer_id,
    a.arm,
    a.variant_id,
    a.segment_id,
    a.is_fallback,
    a.is_holdout,
    a.fallback_reason,
    a.assigned_at,
    coalesce(o.delivered_events, 0) > 0 as is_delivered,
    coalesce(o.opens, 0) > 0 as is_opened,
    coalesce(o.clicks, 0) > 0 as is_clicked,
    coalesce(o.conversions, 0) > 0 as is_converted,
    coalesce(o.unsubscribes, 0) > 0 as is_unsubscribed,
    coalesce(o.opens, 0) as opens,
    coalesce(o.clicks, 0) as clicks,
    coalesce(o.conversions, 0) as conversions,
    coalesce(o.revenue, 0)::double as revenue,
    o.first_event_at,
    o.last_event_at
from {{ ref('assignments') }} as a
left join outcomes as o
    on o.experiment_id = cast(a.experiment_id as varchar)
    and o.customer_id = cast(a.customer_id as varchar)
-- No ORDER BY: a sort of every assignment inside the view made each query of it (and its
-- unique test) run out of DuckDB's memory_limit at 10,000,000 customers; sort when reading.
