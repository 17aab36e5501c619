{{ config(materialized='table', tags=['segments']) }}

-- One row per segment: size, share and average behaviour, for the report and for the prompts
-- that write one message per segment.
with joined as (
    select s.segment_id, s.segment_name, s.segment_description, f.*
    from {{ ref('segments') }} as s
    join {{ ref('customer_features') }} as f using (customer_id)
),

tiers as (
    select
        segment_id,
        tier,
        row_number() over (
            partition by segment_id order by count(*) desc, tier
        ) as tier_rank
    from joined
    where tier is not null
    group by segment_id, tier
),

profiles as (
    select
        segment_id,
        min(segment_name) as segment_name,
        min(segment_description) as description,
        count(*) as customers,
        round(avg(recency_days), 1) as avg_recency_days,
        round(avg(frequency), 2) as avg_frequency,
        round(avg(monetary), 2) as avg_monetary,
        round(avg(avg_order_value), 2) as avg_order_value,
        round(avg(engagement_score), 1) as avg_engagement_score,
        round(avg(age), 1) as avg_age
    from joined
    group by segment_id
)

select
    p.segment_id,
    p.segment_name,
    p.description,
    p.customers,
    round(p.customers / sum(p.customers) over (), 4) as share_of_customers,
    p.avg_recency_days,
    p.avg_frequency,
    p.avg_monetary,
    p.avg_order_value,
    p.avg_engagement_score,
    p.avg_age,
    t.tier as dominant_tier
from profiles as p
left join tiers as t on t.segment_id = p.segment_id and t.tier_rank = 1
order by p.customers desc, p.segment_id
