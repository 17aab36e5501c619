-- A message may only claim urgency ("ends soon") when its source says when the offer ends, so
-- every usable promotion must state "Offer ends YYYY-MM-DD" in its body.
select document_id, title
from {{ ref('stg_content') }}
where category = 'promotion'
    and is_active
    and not injection_flag
    and not regexp_matches(body, 'Offer ends \d{4}-\d{2}-\d{2}')
