{{ config(materialized='table', tags=['segments']) }}
{%- set segmentation = segment_rules() %}
{%- macro text(value) -%}'{{ value | replace("'", "''") }}'{%- endmacro %}

-- Rule segments from vars.segmentation.rules: each rule's `when` is a SQL condition over
-- customer_features, checked when the project compiles (one boolean expression over known
-- columns). The CASE is ordered: a customer gets the first segment whose rule matches, and
-- vars.segmentation.default takes everyone else, so the cover is complete.
with features as (
    select * from {{ ref('customer_features') }}
),

assigned as (
    select
        customer_id,
        case
        {%- for rule in segmentation.rules %}
            when coalesce(({{ rule.condition }}), false) then {{ text(rule.id) }}
        {%- endfor %}
            else {{ text(segmentation.default.id) }}
        end as segment_id
    from features
),

catalogue (segment_id, segment_name, segment_description) as (
    values
    {%- for rule in segmentation.rules + [segmentation.default] %}
        ({{ text(rule.id) }}, {{ text(rule.title) }}, {{ text(rule.description) }})
        {{- ',' if not loop.last }}
    {%- endfor %}
)

select
    a.customer_id,
    a.segment_id,
    c.segment_name,
    c.segment_description
from assigned as a
join catalogue as c using (segment_id)
