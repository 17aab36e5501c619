-- Messages are plain text: no markup (<script>, <img onerror=...>, any tag) and no spreadsheet
-- formula (=, +, -, @ leading a line; =HYPERLINK(...)) in a rendered subject or body, whether
-- it came from generated copy (blocked by policy:markup) or from a merge-tag value.
-- Rules: udfs/text_checks.py (the same as the policy's).
select customer_id, variant_id
from {{ ref('messages') }}
where looks_like_markup(subject) or looks_like_markup(body)
   or looks_like_formula(subject) or looks_like_formula(body)
