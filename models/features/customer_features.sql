{{ config(materialized='table', tags=['features']) }}
{%- set as_of = var('as_of_date', '') -%}
{%- set as_of_sql = "DATE '" ~ as_of ~ "'" if as_of else "current_date" %}

-- One row per customer: recency, frequency, monetary value, their 1-5 quintile scores and an
-- engagement score. No PII: names, emails and cities stay in stg_customers (messages take their
-- merge tags from there); tier and age are kept for segment profiles.
with customers as (
    select * from {{ ref('stg_customers') }}
    where customer_id is not null
),

base as (
    select
        customer_id,
        tier,
        age,
        signup_date,
        {{ as_of_sql }} - signup_date as tenure_days,
        -- Unknown recency counts as "long ago" and unknown spend as none, so a missing value
        -- can only lower a score, never raise it.
        coalesce(days_since_last_purchase, 3650) as recency_days,
        coalesce(purchase_frequency, 0.0) as frequency,
        coalesce(avg_order_value, 0.0) as avg_order_value,
        round(coalesce(purchase_frequency, 0.0) * coalesce(avg_order_value, 0.0), 2) as monetary,
        coalesce(open_rate, 0.0) as open_rate,
        coalesce(click_rate, 0.0) as click_rate,
        days_since_last_engagement
    from customers
),

scored as (
    select
        *,
        -- Quintiles; customer_id breaks ties so the scores are deterministic.
        6 - ntile(5) over (order by recency_days, customer_id) as r_score,
        ntile(5) over (order by frequency, customer_id) as f_score,
        ntile(5) over (order by monetary, customer_id) as m_score
    from base
)

select
    customer_id,
    tier,
    age,
    signup_date,
    tenure_days,
    recency_days,
    frequency,
    avg_order_value,
    monetary,
    r_score,
    f_score,
    m_score,
    r_score + f_score + m_score as rfm_score,
    cast(r_score as varchar) || cast(f_score as varchar) || cast(m_score as varchar) as rfm_code,
    open_rate,
    click_rate,
    days_since_last_engagement,
    -- 0-100: half open rate, 30% click rate (0.20 and above counts as full marks), 20% how
    -- recently the customer engaged (linear decay to zero at 180 days).
    round(100 * (
        0.5 * open_rate
        + 0.3 * least(click_rate / 0.20, 1.0)
        + 0.2 * greatest(0.0, 1.0 - coalesce(days_since_last_engagement, 365) / 180.0)
    ), 1) as engagement_score
from scored
