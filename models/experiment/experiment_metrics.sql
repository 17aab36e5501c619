{{ config(materialized='table', tags=['experiment']) }}
{#- Sufficient statistics per experiment x arm x segment (and overall: level = 'overall',
    segment_id NULL) for every metric in vars.experiment.metrics. The unit is the assigned
    customer: customers without any event count, with metric value 0.
    Per-customer values (recompute by hand from stg_events and assignments):
      proportion: y = 1 if the customer has at least one `event`, else 0
      mean:       y = number of `event`s (value: count) or their summed revenue (value: revenue)
      ratio:      num = number of `numerator` events, den = number of `denominator` events
      column:     with vars.experiment.outcomes, a metric may read an outcome-table column
                  instead of an event: proportion y = 1 if the value > 0, mean y = the value;
                  customers absent from the outcome table (or with an empty cell) count as 0
      covariate:  x = the outcome-table column when vars.experiment.outcomes is set, else the
                  stg_customers column (averaged over duplicated ids); NULL counts as 0
    Columns: n, sum = Σy, sum_squares = Σy², sum_num/sum_num_sq/sum_den/sum_den_sq/sum_num_den
    for ratios, sum_x/sum_x2/sum_xy for CUPED. -#}
{%- set metrics = var('experiment.metrics', []) %}
{%- set events = experiment_events() %}{#- cpo/experiments/settings.py: Event #}
{%- set outcomes = var('experiment.outcomes', none) %}
{%- set ns = namespace(covariates=[]) %}
{%- for m in metrics %}{% if m.get('covariate') and m.get('type') != 'ratio' %}
{%- set ns.covariates = ns.covariates + [m['covariate']] %}{% endif %}{% endfor %}
{%- macro ev(name) %}'{{ name | replace("'", "''") }}'{% endmacro %}
{%- macro count_of(name) %}coalesce(e."n_{{ name }}", 0){% endmacro %}
{%- macro col(name) %}coalesce(o."{{ name | replace('"', '""') }}", 0)::double{% endmacro %}
with per_customer_events as (
    select
        experiment_id,
        customer_id,
        {%- for e in events %}
        count(*) filter (where event = {{ ev(e) }}) as "n_{{ e }}",
        sum(coalesce(revenue, 0)) filter (where event = {{ ev(e) }}) as "revenue_{{ e }}"{{ "," if not loop.last }}
        {%- endfor %}
    from {{ ref('stg_events') }}
    group by all
),
{%- if ns.covariates and not outcomes %}

covariates as (
    select
        customer_id
        {%- for c in ns.covariates | unique %},
        avg(cast("{{ c | replace('"', '""') }}" as double)) as "x_{{ c }}"
        {%- endfor %}
    from {{ ref('stg_customers') }}
    group by customer_id
),
{%- endif %}

units as (
    select
        cast(a.experiment_id as varchar) as experiment_id,
        cast(a.arm as varchar) as arm,
        coalesce(cast(a.segment_id as varchar), 'unsegmented') as segment_id,
        {%- for m in metrics %}
        {%- set i = loop.index0 %}
        {%- if m.get('column') and m['type'] == 'proportion' %}
        cast({{ col(m['column']) }} > 0 as double) as y_{{ i }},
        {%- elif m.get('column') %}
        {{ col(m['column']) }} as y_{{ i }},
        {%- elif m['type'] == 'proportion' %}
        cast({{ count_of(m['event']) }} > 0 as double) as y_{{ i }},
        {%- elif m['type'] == 'mean' and m.get('value', 'count') == 'revenue' %}
        coalesce(e."revenue_{{ m['event'] }}", 0)::double as y_{{ i }},
        {%- elif m['type'] == 'mean' %}
        {{ count_of(m['event']) }}::double as y_{{ i }},
        {%- else %}
        {{ count_of(m['numerator']) }}::double as num_{{ i }},
        {{ count_of(m['denominator']) }}::double as den_{{ i }},
        {%- endif %}
        {%- if m.get('covariate') and m['type'] != 'ratio' and outcomes %}
        {{ col(m['covariate']) }} as x_{{ i }},
        {%- elif m.get('covariate') and m['type'] != 'ratio' %}
        coalesce(c."x_{{ m['covariate'] }}", 0) as x_{{ i }},
        {%- endif %}
        {%- endfor %}
        1 as unit
    from {{ ref('assignments') }} as a
    left join per_customer_events as e
        on e.experiment_id = cast(a.experiment_id as varchar)
        and e.customer_id = cast(a.customer_id as varchar)
    {%- if ns.covariates and not outcomes %}
    left join covariates as c on c.customer_id = cast(a.customer_id as varchar)
    {%- endif %}
    {%- if outcomes %}
    left join {{ ref('observed_outcomes') }} as o on o.customer_id = cast(a.customer_id as varchar)
    {%- endif %}
),

sums as (
    select
        experiment_id,
        arm,
        case when grouping(segment_id) = 0 then segment_id end as segment_id,
        case when grouping(segment_id) = 0 then 'segment' else 'overall' end as level,
        count(*) as n,
        {%- for m in metrics %}
        {%- set i = loop.index0 %}
        {%- if m['type'] == 'ratio' %}
        sum(num_{{ i }}) as sn_{{ i }}, sum(num_{{ i }} * num_{{ i }}) as snn_{{ i }},
        sum(den_{{ i }}) as sd_{{ i }}, sum(den_{{ i }} * den_{{ i }}) as sdd_{{ i }},
        sum(num_{{ i }} * den_{{ i }}) as snd_{{ i }},
        {%- else %}
        sum(y_{{ i }}) as sy_{{ i }}, sum(y_{{ i }} * y_{{ i }}) as syy_{{ i }},
        {%- endif %}
        {%- if m.get('covariate') and m['type'] != 'ratio' %}
        sum(x_{{ i }}) as sx_{{ i }}, sum(x_{{ i }} * x_{{ i }}) as sxx_{{ i }},
        sum(x_{{ i }} * y_{{ i }}) as sxy_{{ i }},
        {%- endif %}
        {%- endfor %}
    from units
    group by grouping sets ((experiment_id, arm, segment_id), (experiment_id, arm))
)

{%- if not metrics %}
-- No metrics declared (vars.experiment.metrics): an empty table with the usual columns.
select
    null::varchar as experiment_id, null::varchar as arm, null::varchar as segment_id,
    null::varchar as level, null::varchar as metric, null::varchar as metric_type,
    null::varchar as metric_role, null::bigint as n, null::double as sum,
    null::double as sum_squares, null::double as sum_num, null::double as sum_num_sq,
    null::double as sum_den, null::double as sum_den_sq, null::double as sum_num_den,
    null::varchar as covariate, null::double as sum_x, null::double as sum_x2,
    null::double as sum_xy
from sums
where false
{%- endif %}
{% for m in metrics %}
{%- set i = loop.index0 %}
{%- set ratio = m['type'] == 'ratio' %}
{%- set cov = m.get('covariate') and not ratio %}
select
    experiment_id,
    arm,
    segment_id,
    level,
    {{ ev(m['name']) }} as metric,
    {{ ev(m['type']) }} as metric_type,
    {{ ev(m.get('role', 'secondary')) }} as metric_role,
    n,
    {{ 'null::double' if ratio else 'sy_' ~ i }} as sum,
    {{ 'null::double' if ratio else 'syy_' ~ i }} as sum_squares,
    {{ 'sn_' ~ i if ratio else 'null::double' }} as sum_num,
    {{ 'snn_' ~ i if ratio else 'null::double' }} as sum_num_sq,
    {{ 'sd_' ~ i if ratio else 'null::double' }} as sum_den,
    {{ 'sdd_' ~ i if ratio else 'null::double' }} as sum_den_sq,
    {{ 'snd_' ~ i if ratio else 'null::double' }} as sum_num_den,
    {{ ev(m['covariate']) if cov else 'null::varchar' }} as covariate,
    {{ 'sx_' ~ i if cov else 'null::double' }} as sum_x,
    {{ 'sxx_' ~ i if cov else 'null::double' }} as sum_x2,
    {{ 'sxy_' ~ i if cov else 'null::double' }} as sum_xy
from sums
{{ 'union all' if not loop.last }}
{%- endfor %}
order by experiment_id, metric, level, segment_id, arm
