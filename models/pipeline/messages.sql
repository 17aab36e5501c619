{{ config(materialized='table', tags=['experiment']) }}
{#
  One message per customer: the assigned variant, then the footer, with merge tags rendered.
  Tags and their SQL expressions (with defaults for missing values) are in
  vars.messages.merge_tags; the data test no_unrendered_merge_tags checks none is left.

  Speed: regular expressions run once per variant (a handful of rows). Per customer there are
  only plain replacements, and only for the tags a variant actually uses. Tags are first turned
  into private-use markers, so a customer value that itself looks like a tag is never expanded.
#}
{%- set tags = merge_tag_sql() -%}{#- vars.messages.merge_tags, checked (cpo/segmentation.py) -#}
{%- set strip = var('messages.strip_citations', true) -%}
{%- set mark = "chr(57344)" -%}{#- U+E000, a private-use character no customer value contains -#}
{%- macro marker(tag) -%}{{ mark }} || '{{ tag }}' || {{ mark }}{%- endmacro -%}
{%- macro normalise(column) -%}
{#- Citations ([DOC001]) are for reviewers; customers get the copy without them. -#}
{%- set ns = namespace(sql=column) -%}
{%- if strip -%}
{%- set ns.sql = "regexp_replace(" ~ ns.sql ~ ", ' ?\\[[A-Za-z0-9_.-]+\\]', '', 'g')" -%}
{%- endif -%}
{%- for tag in tags -%}
{%- set ns.sql = "regexp_replace(" ~ ns.sql ~ ", '\\{\\{\\s*" ~ tag ~ "\\s*\\}\\}', " ~ marker(tag) ~ ", 'g')" -%}
{%- endfor -%}
{{ ns.sql }}
{%- endmacro %}
with variant_copy as (
    {#- The compliance footer (prompts/footer.txt: unsubscribe line, postal address) is the
        system's, never the model's: it ends every message, its merge tags rendered like any. #}
    select
        v.variant_id,
        {{ normalise('v.subject') }} as subject,
        {{ normalise("v.body || chr(10) || chr(10) || f.footer") }} as body
    from {{ ref('variants') }} as v
    cross join {{ ref('message_footer') }} as f
),

variant_tags as (
    select
        *,
        {%- for tag in tags %}
        contains(subject || body, {{ marker(tag) }}) as "uses_{{ tag }}",
        {%- endfor %}
    from variant_copy
),

{#- stg_customers is joined only when a tag reads more than customer_id: at 10,000,000 customers
    that join is the largest part of this model's memory. #}
{%- set customer_columns = merge_tag_columns() | reject('equalto', 'customer_id') | list %}
rendered_0 as (
    select a.customer_id, a.experiment_id, a.arm, a.variant_id, a.segment_id,
           v.*  exclude (variant_id){{ ', c.* exclude (customer_id)' if customer_columns }}
    from {{ ref('assignments') }} as a
    join variant_tags as v using (variant_id)
    {%- if customer_columns %}
    join {{ ref('stg_customers') }} as c using (customer_id)
    {%- endif %}
),
{%- for tag, expression in tags.items() %}

{#- Values are data, never markup: template-like braces in them are broken apart. #}
rendered_{{ loop.index }} as (
    select * replace (
        {%- for column in ['subject', 'body'] %}
        case when "uses_{{ tag }}" then replace({{ column }}, {{ marker(tag) }},
            replace(replace(replace(cast({{ expression }} as varchar),
                {{ mark }}, ''), '{{ '{{' }}', '{ {'), '{{ '{%' }}', '{ %'))
        else {{ column }} end as {{ column }}{{ ',' if not loop.last }}
        {%- endfor %}
    )
    from rendered_{{ loop.index0 }} as c  {#- tag expressions name customer columns c.* #}
){{ ',' if not loop.last }}
{%- endfor %}

select customer_id, experiment_id, arm, variant_id, segment_id, subject, body
from rendered_{{ tags | length }}
