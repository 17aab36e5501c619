{{ config(materialized='table', tags=['experiment']) }}
{#- Per segment, the arm to send next and the evidence: the significant winner on the (first)
    primary metric in that segment (evidence_decision = 'ship': significantly better after the
    segment-level correction, no guardrail harmed), the best estimate in the metric's direction
    first; otherwise the control. Simulated or invalid results never pick a winner. -#}
{%- set control = var('experiment.control', 'control') %}
with primary_metric as (
    select experiment_id, min(metric) as metric
    from {{ ref('experiment_results') }}
    where metric_role = 'primary' and segment_id is not null
    group by experiment_id
),

rows as (
    select r.*
    from {{ ref('experiment_results') }} as r
    join primary_metric as p using (experiment_id, metric)
    where r.segment_id is not null
),

segments as (
    select
        experiment_id,
        segment_id,
        any_value(metric) as metric,
        case
            when bool_or(decision = 'invalid') then 'invalid'
            when bool_or(decision = 'simulated') then 'simulated'
            else 'observed'
        end as basis,
        string_agg(arm || ': ' || evidence_decision || coalesce(' (adjusted p = '
            || case when p_value_adjusted >= 0.001 then printf('%.3f', p_value_adjusted)
                    else printf('%.1e', p_value_adjusted) end  -- same text on DuckDB and Spark
            || ')', ''), '; ' order by arm) as arms_summary
    from rows
    group by experiment_id, segment_id
),

winners as (
    select *
    from rows
    where evidence_decision = 'ship' and decision not in ('invalid', 'simulated')
    qualify row_number() over (
        partition by experiment_id, segment_id
        order by case when metric_direction = 'decrease' then -estimate else estimate end desc
            nulls last, arm
    ) = 1
)

select
    s.experiment_id,
    s.segment_id,
    s.metric,
    coalesce(w.arm, '{{ control | replace("'", "''") }}') as send_arm,
    s.basis,
    w.effect_scale,
    w.estimate,
    w.ci_low,
    w.ci_high,
    w.p_value_adjusted,
    w.n_treatment,
    case
        when w.arm is not null then w.arm || ' significantly better than control on '
            || s.metric || ': ' || w.decision_reason
        when s.basis = 'invalid' then 'results invalid; keep the control'
        when s.basis = 'simulated' then 'outcomes simulated: no winner chosen; keep the control ('
            || s.arms_summary || ')'
        else 'no significant winner; keep the control (' || s.arms_summary || ')'
    end as evidence
from segments as s
left join winners as w using (experiment_id, segment_id)
order by s.experiment_id, s.segment_id
