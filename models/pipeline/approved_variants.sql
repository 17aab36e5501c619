{{ config(materialized='table', tags=['content']) }}
-- Fail-closed approval: a variant is approved only when it was generated, screened on every
-- harm category, and passed every check. A missing screening row means "not approved".
with screened as (
    select
        variant_id,
        bool_and(passed) as all_passed,
        count(*) filter (where "check" like 'harm:%' and "check" <> 'harm:unscreened')
            as harm_checks
    from {{ ref('safety_screenings') }}
    group by variant_id
)

select v.variant_id, v.segment_id, v.tone
from {{ ref('variants') }} as v
join screened as s using (variant_id)
where v.status = 'generated'
  and s.all_passed
  and s.harm_checks >= {{ var('safety.required_harm_checks', 4) }}
order by v.variant_id
