{#- Every score customer_features has is 1-5 and never NULL; monetary is finite. -#}
{%- set columns = feature_columns() %}
{%- set scores = ['r_score', 'f_score', 'm_score'] | select('in', columns) | list %}
select customer_id
from {{ ref('customer_features') }}
where false
{%- for score in scores %}
    or {{ score }} is null or {{ score }} not between 1 and 5
{%- endfor %}
{%- if 'monetary' in columns %}
    or not {{ is_finite('monetary') }}
{%- endif %}
