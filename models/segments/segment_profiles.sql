{{ config(materialized='table', tags=['segments']) }}
{%- set src = sources.customers %}
{%- set features = feature_columns() %}
{%- macro average(column, digits, alias) -%}
    {%- if column in features -%}
    round(avg({{ column }}), {{ digits }})::double as {{ alias }}
    {%- else -%}
    null::double as {{ alias }}
    {%- endif -%}
{%- endmacro %}

-- One row per segment: size, share and average behaviour, for the report and for the prompts
-- that write one message per segment. Averages of features the customers file does not have
-- (roles not mapped in sources.customers) are NULL; dominant_tier is NULL without a tier.
with joined as (
    select s.segment_id, s.segment_name, s.segment_description, f.*
    from {{ ref('segments') }} as s
    join {{ ref('customer_features') }} as f using (customer_id)
),
{%- if src.has('tier') %}

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
{%- endif %}

profiles as (
    select
        segment_id,
        min(segment_name) as segment_name,
        min(segment_description) as description,
        count(*) as customers,
        {{ average('recency_days', 1, 'avg_recency_days') }},
        {{ average('frequency', 2, 'avg_frequency') }},
        {{ average('monetary', 2, 'avg_monetary') }},
        {{ average('avg_order_value', 2, 'avg_order_value') }},
        {{ average('engagement_score', 1, 'avg_engagement_score') }},
        {{ average('age', 1, 'avg_age') }}
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
    {{ 't.tier' if src.has('tier') else 'null::varchar' }} as dominant_tier
from profiles as p
{%- if src.has('tier') %}
left join tiers as t on t.segment_id = p.segment_id and t.tier_rank = 1
{%- endif %}
order by p.customers desc, p.segment_id
