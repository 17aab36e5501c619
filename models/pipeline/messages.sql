{{ config(materialized='table', tags=['experiment']) }}
{#
  One message per customer: the assigned variant with its merge tags rendered per customer.
  Tags and their SQL expressions (with defaults for missing values) are in
  vars.messages.merge_tags; the data test no_unrendered_merge_tags checks none is left.
  Regular expressions run once per variant (a handful of rows); per customer there are only
  plain string replacements, which keeps a million messages fast. Tags are first turned into
  private-use markers, so a customer value that itself looks like a tag is never expanded.
#}
{%- set tags = var('messages.merge_tags') -%}
{%- set strip = var('messages.strip_citations', true) -%}
{%- set mark = "chr(57344)" -%}{#- U+E000, a private-use character no customer value contains -#}
{%- macro normalise(column) -%}
{#- Citations ([DOC001]) are for reviewers; customers get the copy without them. -#}
{%- set ns = namespace(sql=column) -%}
{%- if strip -%}
{%- set ns.sql = "regexp_replace(" ~ ns.sql ~ ", ' ?\\[[A-Za-z0-9_.-]+\\]', '', 'g')" -%}
{%- endif -%}
{%- for tag in tags -%}
{%- set ns.sql = "regexp_replace(" ~ ns.sql ~ ", '\\{\\{\\s*" ~ tag ~ "\\s*\\}\\}', " ~ mark ~ " || '" ~ tag ~ "' || " ~ mark ~ ", 'g')" -%}
{%- endfor -%}
{{ ns.sql }}
{%- endmacro -%}
{%- macro render(column) -%}
{%- set ns = namespace(sql=column) -%}
{%- for tag, expression in tags.items() -%}
{#- Values are data, never markup: template-like braces in them are broken apart. -#}
{%- set value = "replace(replace(replace(cast(" ~ expression ~ " as varchar), " ~ mark ~ ", ''), '{{', '{ {'), '{%', '{ %')" -%}
{%- set ns.sql = "replace(" ~ ns.sql ~ ", " ~ mark ~ " || '" ~ tag ~ "' || " ~ mark ~ ", " ~ value ~ ")" -%}
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
