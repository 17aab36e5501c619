{{ config(materialized='table', tags=['staging', 'content']) }}
{%- set as_of = var('as_of_date', '') -%}
{%- set as_of_sql = "DATE '" ~ as_of ~ "'" if as_of else "current_date" %}
{%- set src = sources.content %}
{%- macro role(name, otherwise='null') -%}
    {%- if src.has(name) -%}cast({{ src.expression(name) }} as varchar){%- else -%}{{ otherwise }}{%- endif -%}
{%- endmacro %}

-- Every content document (sources.content in cpo.yml), typed, with two flags the retrieval step
-- filters on: is_active (approved and not expired as of vars.as_of_date) and injection_flag
-- (text that addresses a language model rather than a customer, e.g. "ignore previous
-- instructions"). audience may list several values ("gold, platinum"); it is normalised to a
-- comma-separated, lower-case list ('all' when empty). Without approved_at every document
-- counts as approved; without category, every document is 'product'.
with source as (
    select
        {{ role('document_id') }} as document_id,
        {{ role('title') }} as title,
        {{ role('body') }} as body,
        {{ role('category', "'product'") }} as category,
        {{ role('audience') }} as audience,
        {{ role('keywords') }} as keywords,
        {{ role('approved_at', "'1900-01-01'") }} as approved_at,
        {{ role('expires_at') }} as expires_at
    from {{ src.relation }}
),

typed as (
    select
        trim(document_id) as document_id,
        regexp_replace(trim(title), '\s+', ' ', 'g') as title,
        regexp_replace(trim(body), '\s+', ' ', 'g') as body,
        lower(trim(category)) as category,
        coalesce(nullif(array_to_string(list_sort(list_distinct(list_filter(
            list_transform(string_split(lower(audience), ','), lambda a: trim(a)),
            lambda a: a <> ''))), ', '), ''), 'all') as audience,
        coalesce(lower(regexp_replace(trim(keywords), '\s+', ' ', 'g')), '') as keywords,
        try_cast(nullif(trim(approved_at), '') as date) as approved_at,
        try_cast(nullif(trim(expires_at), '') as date) as expires_at
    from source
)

select
    *,
    approved_at is not null and approved_at <= {{ as_of_sql }} as is_approved,
    coalesce(expires_at < {{ as_of_sql }}, false) as is_expired,
    approved_at is not null
        and approved_at <= {{ as_of_sql }}
        and (expires_at is null or expires_at >= {{ as_of_sql }}) as is_active,
    -- The same patterns the safety screen applies to generated copy (udfs/text_checks.py).
    coalesce(looks_like_injection(title || ' ' || body), false) as injection_flag,
    -- Markup (<script>, <img onerror>, any tag) and spreadsheet formulas (=, +, -, @ leading a
    -- line; =HYPERLINK(...)): flagged documents never reach retrieval (udfs/text_checks.py).
    coalesce(looks_like_markup(title) or looks_like_markup(body), false) as markup_flag,
    coalesce(looks_like_formula(title) or looks_like_formula(body), false) as formula_flag
from typed
