{# Variants that could not be screened. Severity from vars.safety.on_unscreened: fail | warn. #}
{{ config(severity='error' if var('safety.on_unscreened', 'fail') == 'fail' else 'warn') }}
select variant_id, reason
from {{ ref('safety_screenings') }}
where "check" = 'harm:unscreened'
