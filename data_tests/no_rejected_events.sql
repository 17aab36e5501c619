-- Warns with the count of observed outcome rows rejected per reason (event_summary), so a
-- rejected event is never silent; more than vars.experiment.max_rejected_share of them makes
-- experiment_results invalid.
{{ config(severity='warn') }}
select status || ': ' || n || ' row(s)' as rejected
from {{ ref('event_summary') }}
where source = 'observed' and status not in ('accepted', 'duplicate')
