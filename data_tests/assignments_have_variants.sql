-- CPO's own assignment: every customer outside a holdout arm (message: none) gets a variant,
-- its arm's or the fallback's. External assignments (vars.experiment.assignments) send nothing.
select customer_id, arm
from {{ ref('assignments') }}
where variant_id is null and not is_holdout
{%- if var('experiment.assignments', none) %} and false{% endif %}
