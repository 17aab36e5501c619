{{ config(materialized='table', tags=['content']) }}
-- Fail-closed approval: a variant is approved only when it was generated, screened on every
-- harm category (vars.safety.required_harm_checks harm rows), and passed every check. A missing
-- screening row means "not approved". The rule: cpo/personalization/harm.py (`approved`, the
-- same rule in Python; this macro renders its SQL).
with approved as (
    {{ approved_variant_ids(ref('safety_screenings'), var('safety.required_harm_checks', none)) }}
)

select v.variant_id, v.segment_id, v.tone
from {{ ref('variants') }} as v
join approved as s using (variant_id)
where v.status = 'generated'
order by v.variant_id
