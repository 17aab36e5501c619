{#
  Messages are plain text: no markup (<script>, <img onerror=...>, any tag) and no spreadsheet
  formula (=, +, -, @ leading a line; =HYPERLINK(...)) in what a message is made of, whether it
  came from generated copy (blocked by policy:markup) or from a merge-tag value.
  Rules: udfs/text_checks.py (the same as the policy's).

  Checked on the parts of a message, so the Python rules run once per variant and once per
  distinct merge-tag value that holds a character markup or a formula needs, never once per
  customer (a 1,000,000-customer build would spend minutes here). A value is checked on its own,
  so it is flagged even where a message would put it mid-line: fail-closed.
#}
{%- set tags = merge_tag_sql() -%}
{%- set needs_a_look -%}
regexp_matches(regexp_replace(value, 'https?://', '', 'gi'), '[<>=@+|:(){}&;`\\]|[^\x00-\x7F]|^\s*-')
{%- endset -%}
with copy as (
    select v.variant_id, v.subject, v.body || chr(10) || chr(10) || f.footer as body
    from {{ ref('variants') }} as v
    cross join {{ ref('message_footer') }} as f
    where v.variant_id in (select variant_id from {{ ref('messages') }})
),

tag_values as (
    {%- for tag, expression in tags.items() %}
    select distinct {{ literal(tag) }} as tag, cast({{ expression }} as varchar) as value
    from {{ ref('stg_customers') }} as c
    {{- '\n    union all' if not loop.last }}
    {%- endfor %}
),

flagged_values as (
    -- Only characters that markup or a formula needs (after removing URL schemes), or any
    -- non-ASCII character (look-alikes the normaliser folds), can make a value fail. The plain
    -- condition lets Spark filter before its Python UDFs run (it evaluates a UDF inside CASE on
    -- every row); CASE keeps DuckDB from calling them on other rows whatever order it picks.
    select tag from tag_values
    where {{ needs_a_look }}
      and case when {{ needs_a_look }}
          then looks_like_markup(value) or looks_like_formula(value) else false end
)

select 'variant ' || variant_id as part, 1 as items
from copy
where looks_like_markup(subject) or looks_like_markup(body)
   or looks_like_formula(subject) or looks_like_formula(body)
union all
select 'merge tag ' || tag as part, count(*) as items
from flagged_values
group by tag
