{{ config(materialized='table', tags=['experiment']) }}
{#
  One message per customer: the assigned variant with its merge tags rendered per customer.
  Tags and their SQL expressions (with defaults for missing values) are in
  vars.messages.merge_tags; the data test no_unrendered_merge_tags checks none is left.
  Regular expressions run once per variant (a handful of rows); per customer there are only
  plain string replacements, which keeps a million messages fast.
#}
{%- set tags = var('messages.merge_tags') -%}
{%- set strip = var('messages.strip_citations', true) -%}
{%- set lbrace, rbrace = '{' ~ '{ ', ' }' ~ '}' -%}
{%- macro normalise(column) -%}
{#- Citations ([DOC001]) are for reviewers; customers get the copy without them. -#}
{%- set ns = namespace(sql=column) -%}
{%- if strip -%}
{%- set ns.sql = "regexp_replace(" ~ ns.sql ~ ", ' ?\\[[A-Za-z0-9_.-]+\\]', '', 'g')" -%}
{%- endif -%}
{%- for tag in tags -%}
{%- set ns.sql = "regexp_replace(" ~ ns.sql ~ ", '\\{\\{\\s*" ~ tag ~ "\\s*\\}\\}', '" ~ lbrace ~ tag ~ rbrace ~ "', 'g')" -%}
{%- endfor -%}
{{ ns.sql }}
{%- endmacro -%}
{%- macro render(column) -%}
{%- set ns = namespace(sql=column) -%}
{%- for tag, expression in tags.items() -%}
{%- set ns.sql = "replace(" ~ ns.sql ~ ", '" ~ lbrace ~ tag ~ rbrace ~ "', cast(" ~ expression ~ " as varchar))" -%}
{%- endfor -%}
{{ ns.sql }}
{%- endmacro %}
with variant_copy as (
    select variant_id, {{ normalise('subject') }} as subject, {{ normalise('body') }} as body
    from {{ ref('variants') }}
)

select
    a.customer_id,
    a.experiment_id,
    a.arm,
    a.variant_id,
    a.segment_id,
    {{ render('v.subject') }} as subject,
    {{ render('v.body') }} as body
from {{ ref('assignments') }} as a
join variant_copy as v using (variant_id)
join {{ ref('stg_customers') }} as c using (customer_id)
