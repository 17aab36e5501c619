{{ config(materialized='table', tags=['experiment']) }}
{#
  One message per customer: the assigned variant with its merge tags rendered per customer.
  Tags and their SQL expressions (with defaults for missing values) are in
  vars.messages.merge_tags; the data test no_unrendered_merge_tags checks none is left.
#}
{%- set tags = var('messages.merge_tags') -%}
{#- Citations ([DOC001]) are for reviewers; customers get the copy without them. -#}
{%- set strip = var('messages.strip_citations', true) -%}
{%- macro render(column) -%}
{%- set start = "regexp_replace(" ~ column ~ ", ' ?\\[[A-Za-z0-9_.-]+\\]', '', 'g')" if strip else column -%}
{%- set ns = namespace(sql=start) -%}
{%- for tag, expression in tags.items() -%}
{%- set ns.sql = "regexp_replace(" ~ ns.sql ~ ", '\\{\\{\\s*" ~ tag ~ "\\s*\\}\\}', "
    ~ "replace(cast(" ~ expression ~ " as varchar), '\\', '\\\\'), 'g')" -%}
{%- endfor -%}
{{ ns.sql }}
{%- endmacro %}
select
    a.customer_id,
    a.experiment_id,
    a.arm,
    a.variant_id,
    a.segment_id,
    {{ render('v.subject') }} as subject,
    {{ render('v.body') }} as body
from {{ ref('assignments') }} as a
join {{ ref('variants') }} as v using (variant_id)
join {{ ref('stg_customers') }} as c using (customer_id)
