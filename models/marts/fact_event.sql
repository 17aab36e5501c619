{{ config(materialized='view', tags=['marts']) }}
-- One row per accepted outcome event, with the arm, variant and segment of the customer's
-- assignment (every accepted event has one: stg_events rejects events of unknown customers).
select
    e.experiment_id,
    e.customer_id,
    a.arm,
    a.variant_id,
    a.segment_id,
    e.event,
    e.event_at,
    cast(e.event_at as date) as event_date,
    e.revenue,
    e.source
from {{ ref('stg_events') }} as e
join {{ ref('assignments') }} as a
    on cast(a.experiment_id as varchar) = e.experiment_id
    and cast(a.customer_id as varchar) = e.customer_id
order by e.experiment_id, e.customer_id, e.event_at, e.event
