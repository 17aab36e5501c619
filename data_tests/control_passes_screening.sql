{#
  The control (prompts/control/, written by a person) is the message every customer falls back
  to, so it must pass every screening check. Each failing row names a failed check: fix the copy
  in prompts/control/ (or the policy in cpo.yml) and rebuild. Failing here stops the build
  before assignments, so no customer is assigned a message that cannot be sent.
#}
select "check", reason
from {{ ref('safety_screenings') }}
where variant_id = 'v_control' and not passed
