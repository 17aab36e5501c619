{{ config(materialized='table', tags=['experiment']) }}
-- Raw event rows that are not in stg_events, counted by reason, customer, experiment and event.
select reason, customer_id, experiment_id, event, count(*) as n
from {{ ref('events_classified') }}
where reason is not null
group by all
order by reason, experiment_id, customer_id, event
