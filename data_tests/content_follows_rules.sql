{#-
  Usable documents (active, not flagged) follow vars.content.rules in cpo.yml: every document of
  a rule's category must match its regular expression (e.g. a promotion states "Offer ends
  YYYY-MM-DD", so a message may only claim urgency when its source says when the offer ends).
  Returns the documents that break a rule, with the rule and why it exists.
-#}
{%- set rules = content_rules() %}
{%- macro text(value) -%}'{{ value | replace("'", "''") }}'{%- endmacro %}
{%- if rules %}
{%- for rule in rules %}
select document_id, title, {{ text(rule.name) }} as rule, {{ text(rule.why) }} as why
from {{ ref('stg_content') }}
where category = {{ text(rule.category) }}
    and is_active
    and not injection_flag
    and not regexp_matches(body, {{ text(rule.must_match) }})
{{ 'union all' if not loop.last }}
{%- endfor %}
{%- else %}
select document_id, title, '' as rule, '' as why from {{ ref('stg_content') }} where false
{%- endif %}
