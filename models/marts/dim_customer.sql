{{ config(materialized='view', tags=['marts']) }}
-- One row per customer for BI: profile, RFM scores, engagement and segment. first_name and
-- email are PII (meta: {pii: true} in schema.yml): exports leave them out or hash them.
select
    c.customer_id,
    c.first_name,
    c.email,
    c.email_is_valid,
    c.city,
    c.tier,
    c.age,
    c.signup_date,
    f.tenure_days,
    f.recency_days,
    f.frequency,
    f.monetary,
    f.avg_order_value,
    f.r_score,
    f.f_score,
    f.m_score,
    f.rfm_score,
    f.rfm_code,
    f.open_rate,
    f.click_rate,
    f.engagement_score,
    s.segment_id,
    s.segment_name
from {{ ref('stg_customers') }} as c
left join {{ ref('customer_features') }} as f on f.customer_id = c.customer_id
left join {{ ref('segments') }} as s on s.customer_id = c.customer_id
-- stg_customers keeps duplicated source ids (its unique test reports them): keep one row each.
qualify row_number() over (partition by c.customer_id order by c.email, c.first_name) = 1
order by c.customer_id
