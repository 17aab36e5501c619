{{ config(materialized='table', tags=['features']) }}
{%- set as_of = var('as_of_date', '') -%}
{%- set as_of_sql = "DATE '" ~ as_of ~ "'" if as_of else "current_date" %}
{%- set src = sources.customers %}
{%- set has_monetary = src.has('monetary') or src.has('frequency', 'avg_order_value') %}

-- One row per customer: what the mapped roles allow (cpo.sources.feature_columns lists the
-- columns). Recency, frequency and monetary value get 1-5 scores from quantile bins of
-- percent_rank: equal values always get equal scores, so segments never depend on row order.
-- No PII: names and emails stay in stg_customers; the source's attributes are carried through.
with customers as (
    select * from {{ ref('stg_customers') }}
    where customer_id is not null
),

base as (
    select
        customer_id,
        {%- for role in ['tier', 'age', 'signup_date'] if src.has(role) %}
        {{ role }},
        {%- endfor %}
        {%- if src.has('signup_date') %}
        {{ as_of_sql }} - signup_date as tenure_days,
        {%- endif %}
        {%- if src.has('recency_days') %}
        -- Unknown recency counts as "long ago" and unknown spend as none, so a missing value
        -- can only lower a score, never raise it.
        coalesce(recency_days, 3650) as recency_days,
        {%- endif %}
        {%- if src.has('frequency') %}
        coalesce(frequency, 0.0) as frequency,
        {%- endif %}
        {%- if src.has('avg_order_value') %}
        coalesce(avg_order_value, 0.0) as avg_order_value,
        {%- endif %}
        {%- if src.has('monetary') %}
        round(coalesce(monetary, 0.0), 2) as monetary,
        {%- elif has_monetary %}
        round(coalesce(frequency, 0.0) * coalesce(avg_order_value, 0.0), 2) as monetary,
        {%- endif %}
        {%- for role in ['open_rate', 'click_rate'] if src.has(role) %}
        coalesce({{ role }}, 0.0) as {{ role }},
        {%- endfor %}
        {%- if src.has('last_engagement_days') %}
        last_engagement_days,
        {%- endif %}
        {%- for attribute in src.attributes %}
        "{{ attribute }}",
        {%- endfor %}
    from customers
),

scored as (
    select
        *,
        {#- percent_rank is (rank - 1) / (n - 1): ties share a rank, so they share a score. #}
        {%- if src.has('recency_days') %}
        least(5, 1 + floor(5 * percent_rank() over (order by recency_days desc)))::integer
            as r_score,
        {%- endif %}
        {%- if src.has('frequency') %}
        least(5, 1 + floor(5 * percent_rank() over (order by frequency)))::integer as f_score,
        {%- endif %}
        {%- if has_monetary %}
        least(5, 1 + floor(5 * percent_rank() over (order by monetary)))::integer as m_score,
        {%- endif %}
    from base
)
{%- set score_columns = [('r_score', src.has('recency_days')), ('f_score', src.has('frequency')),
                         ('m_score', has_monetary)] | selectattr(1) | map(attribute=0) | list %}
{%- set engagement = [('0.5', 'open_rate', src.has('open_rate')),
                      ('0.3', 'least(click_rate / 0.20, 1.0)', src.has('click_rate')),
                      ('0.2', 'greatest(0.0, 1.0 - coalesce(last_engagement_days, 365) / 180.0)',
                       src.has('last_engagement_days'))] | selectattr(2) | list %}

select
    *,
    {%- if score_columns %}
    {{ score_columns | join(' + ') }} as rfm_score,
    {{ score_columns | join('::varchar || ') }}::varchar as rfm_code,
    {%- endif %}
    {%- if engagement %}
    -- 0-100: open rate 50%, click rate 30% (0.20 and above counts as full marks), how recently
    -- the customer engaged 20% (zero at 180 days); weights of unmapped inputs are spread over
    -- the others.
    round(100 * ({% for weight, term, _ in engagement %}{{ weight }} * {{ term }}{{ ' + ' if not loop.last }}{% endfor %})
        / ({% for weight, _, _ in engagement %}{{ weight }}{{ ' + ' if not loop.last }}{% endfor %}), 1)
        as engagement_score,
    {%- endif %}
from scored
