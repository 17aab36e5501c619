{{ config(materialized='table', tags=['staging', 'content']) }}
{%- set as_of = var('as_of_date', '') -%}
{%- set as_of_sql = "DATE '" ~ as_of ~ "'" if as_of else "current_date" %}

-- Every content document, typed, with two flags the retrieval step filters on:
-- is_active (approved and not expired as of vars.as_of_date) and injection_flag (text that
-- addresses a language model rather than a customer, e.g. "ignore previous instructions").
with source as (
    select * from {{ ref('content') }}
),

typed as (
    select
        trim(document_id) as document_id,
        regexp_replace(trim(title), '\s+', ' ', 'g') as title,
        regexp_replace(trim(body), '\s+', ' ', 'g') as body,
        lower(trim(category)) as category,
        coalesce(nullif(lower(trim(audience)), ''), 'all') as audience,
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
