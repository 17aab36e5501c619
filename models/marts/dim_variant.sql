{{ config(materialized='table', tags=['marts']) }}
-- One row per generated variant (segment x tone, plus the control): the message template (merge
-- tags unrendered, so no customer data), its citations with their document titles, and the
-- safety outcome (approved, or the checks that blocked it and why).
with screening as (
    select
        variant_id,
        count(*) as checks,
        count(*) filter (where not passed) as failed_checks,
        string_agg("check", ', ' order by "check") filter (where not passed) as blocked_by,
        string_agg(reason, '; ' order by "check") filter (where not passed) as block_reasons,
        max(severity) as max_severity
    from {{ ref('safety_screenings') }}
    group by variant_id
),

cited as (
    select v.variant_id, u.document_id, u.pos
    from {{ ref('variants') }} as v,
        unnest(v.citations) with ordinality as u(document_id, pos)
),

titles as (
    select
        c.variant_id,
        list(d.title order by c.pos) as citation_titles
    from cited as c
    left join {{ ref('stg_content') }} as d on d.document_id = c.document_id
    group by c.variant_id
)

select
    v.variant_id,
    v.segment_id,
    v.tone,
    v.tone = 'control' as is_control,
    v.subject,
    v.body,
    v.citations,
    coalesce(t.citation_titles, []::varchar[]) as citation_titles,
    v.provider,
    v.model,
    v.status as generation_status,
    a.variant_id is not null as is_approved,
    coalesce(s.checks, 0) as checks,
    coalesce(s.failed_checks, 0) as failed_checks,
    s.max_severity,
    s.blocked_by,
    s.block_reasons
from {{ ref('variants') }} as v
left join {{ ref('approved_variants') }} as a on a.variant_id = v.variant_id
left join screening as s on s.variant_id = v.variant_id
left join titles as t on t.variant_id = v.variant_id
order by v.variant_id
