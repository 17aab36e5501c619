{{ config(materialized='table', tags=['experiment']) }}
-- Where every raw event row went, per source: accepted, duplicate (collapsed), or a rejection
-- reason. Its n adds up to the raw row count.
with accepted as (
    select source, count(*) as rows_in, count(distinct (customer_id, experiment_id, event,
        event_at, revenue)) as kept
    from {{ ref('events_classified') }}
    where reason is null
    group by source
)

select source, 'accepted' as status, kept as n from accepted
union all
select source, 'duplicate', rows_in - kept from accepted where rows_in > kept
union all
select source, reason, count(*) from {{ ref('events_classified') }}
where reason is not null
group by all
order by source, status
