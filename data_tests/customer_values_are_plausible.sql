{#-
  Numbers a file can carry but no customer can have: non-finite values (1e308 * 150 = inf),
  negative counts, days or money, rates outside 0-1, a click rate above the open rate. Only
  the mapped roles are checked. Returns the offending customers (ids only) and what is wrong.
-#}
{%- set src = sources.customers %}
{%- set checks = [] %}
{%- set checks = checks + ([("not " ~ is_finite("recency_days") ~ " or recency_days < 0", "recency_days is negative or not finite")] if src.has('recency_days') else []) %}
{%- set checks = checks + ([("not " ~ is_finite("frequency") ~ " or frequency < 0", "frequency is negative or not finite")] if src.has('frequency') else []) %}
{%- set checks = checks + ([("not " ~ is_finite("monetary") ~ " or monetary < 0", "monetary is negative or not finite")] if src.has('monetary') else []) %}
{%- set checks = checks + ([("not " ~ is_finite("avg_order_value") ~ " or avg_order_value < 0", "avg_order_value is negative or not finite")] if src.has('avg_order_value') else []) %}
{%- set checks = checks + ([("not " ~ is_finite("frequency * avg_order_value") ~ "", "frequency x avg_order_value (yearly spend) is not finite")] if src.has('frequency', 'avg_order_value') else []) %}
{%- set checks = checks + ([("not (open_rate between 0 and 1)", "open_rate is outside 0-1")] if src.has('open_rate') else []) %}
{%- set checks = checks + ([("not (click_rate between 0 and 1)", "click_rate is outside 0-1")] if src.has('click_rate') else []) %}
{%- set checks = checks + ([("click_rate > open_rate", "click_rate is above open_rate")] if src.has('open_rate', 'click_rate') else []) %}
{%- set checks = checks + ([("not " ~ is_finite("last_engagement_days") ~ " or last_engagement_days < 0", "last_engagement_days is negative or not finite")] if src.has('last_engagement_days') else []) %}
{%- if checks %}
{%- for condition, problem in checks %}
select customer_id, '{{ problem }}' as problem
from {{ ref('stg_customers') }}
where coalesce({{ condition }}, false)
{{ 'union all' if not loop.last }}
{%- endfor %}
{%- else %}
select customer_id, '' as problem from {{ ref('stg_customers') }} where false
{%- endif %}
