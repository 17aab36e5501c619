{{ config(materialized='table', tags=['experiment']) }}
-- Every raw event row (observed files and the simulation), typed, with the reason it is rejected
-- (NULL = accepted). stg_events keeps the accepted rows; event_rejections and event_summary count
-- the others, so nothing is dropped silently.
with raw as (
    select customer_id, experiment_id, event, event_at, revenue, 'observed' as source
    from {{ ref('observed_events') }}
    union all
    select
        customer_id, experiment_id, event,
        strftime(event_at, '%Y-%m-%d %H:%M:%S.%f'), cast(revenue as varchar), 'simulated'
    from {{ ref('simulated_events') }}
),

typed as (
    select
        nullif(trim(customer_id), '') as customer_id,
        nullif(trim(experiment_id), '') as experiment_id,
        lower(trim(event)) as event,
        -- An explicit offset (Z, +02:00) is converted to UTC; naive timestamps are taken as UTC.
        case
            when regexp_matches(trim(event_at), '(Z|[+-]\d{2}(:?\d{2})?)$')
                then {{ utc_timestamp('trim(event_at)') }}
            else try_cast(trim(event_at) as timestamp)
        end as event_at,
        nullif(trim(revenue), '') as raw_revenue,
        try_cast(nullif(trim(revenue), '') as double) as revenue,
        source
    from raw
),

experiments as (
    select distinct cast(experiment_id as varchar) as experiment_id from {{ ref('assignments') }}
),

assigned as (
    select
        cast(experiment_id as varchar) as experiment_id,
        cast(customer_id as varchar) as customer_id,
        cast(assigned_at as timestamp) as assigned_at
    from {{ ref('assignments') }}
)

select
    t.customer_id,
    t.experiment_id,
    t.event,
    t.event_at,
    t.revenue,
    t.source,
    case
        when t.event is null
            or t.event not in (
                {%- for e in experiment_events() %}{{ literal(e) }}{{ ", " if not loop.last }}{% endfor -%}
            )  -- the event types: cpo/experiments/settings.py (Event)
            then 'unknown_event_type'
        when t.event_at is null then 'unparseable_timestamp'
        when t.raw_revenue is not null and t.revenue is null then 'unparseable_revenue'
        when t.revenue < 0 then 'negative_revenue'
        when t.experiment_id is null
            or t.experiment_id not in (select experiment_id from experiments)
            then 'unknown_experiment'
        when a.customer_id is null then 'unknown_customer'
        when a.assigned_at is null
            or t.event_at < a.assigned_at
            or t.event_at >= a.assigned_at + interval {{ var('experiment.attribution_days', 7) }} day
            then 'outside_attribution_window'
    end as reason
from typed as t
left join assigned as a
    on a.experiment_id = t.experiment_id and a.customer_id = t.customer_id
