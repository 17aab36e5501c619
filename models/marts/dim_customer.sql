{{ config(materialized='view', tags=['marts']) }}
{%- set src = sources.customers %}
{%- set features = feature_columns() %}
-- One row per customer for BI: the mapped profile roles, the features the roles allow, and the
-- segment. first_name and email are PII (meta: {pii: true} in schema.yml): exports leave them
-- out or hash them.
select
    c.customer_id,
{%- for role in ['first_name', 'email', 'email_is_valid', 'city', 'tier', 'age', 'signup_date']
    if role in src.roles or (role == 'email_is_valid' and src.has('email')) %}
    c.{{ role }},
{%- endfor %}
{%- for column in features if column not in ['customer_id', 'tier', 'age', 'signup_date'] %}
    f."{{ column }}",
{%- endfor %}
    s.segment_id,
    s.segment_name
from {{ ref('stg_customers') }} as c
left join {{ ref('customer_features') }} as f on f.customer_id = c.customer_id
left join {{ ref('segments') }} as s on s.customer_id = c.customer_id
-- stg_customers keeps duplicated source ids (its unique test reports them): keep one row each.
qualify row_number() over (
    partition by c.customer_id
    order by {{ 'c.email, ' if src.has('email') }}{{ 'c.first_name, ' if src.has('first_name') }}c.customer_id
) = 1
order by c.customer_id
