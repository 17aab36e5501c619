{{ config(materialized='table', tags=['experiment']) }}
-- Accepted outcome events, one row per distinct event: loading the same file twice (or
-- overlapping exports) changes nothing. Rejected rows are in event_rejections.
select distinct customer_id, experiment_id, event, event_at, revenue, source
from {{ ref('events_classified') }}
where reason is null
order by experiment_id, customer_id, event_at, event
