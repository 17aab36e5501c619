{{ config(materialized='table', tags=['marts']) }}
-- One row per segment: its profile and how many approved variants it has.
select
    p.segment_id,
    p.segment_name,
    p.description,
    p.customers,
    p.share_of_customers,
    p.avg_recency_days,
    p.avg_frequency,
    p.avg_monetary,
    p.avg_order_value,
    p.avg_engagement_score,
    p.avg_age,
    p.dominant_tier,
    coalesce(a.approved_variants, 0) as approved_variants
from {{ ref('segment_profiles') }} as p
left join (
    select segment_id, count(*) as approved_variants
    from {{ ref('approved_variants') }}
    where segment_id is not null
    group by segment_id
) as a on a.segment_id = p.segment_id
order by p.segment_id
