{{ config(materialized='table', tags=['experiment']) }}
{#
  Salted-hash assignment: a customer's arm depends only on (experiment id, salt, customer id),
  so it is deterministic and stable when customers are added. Every customer gets exactly one
  arm (no rounding: the hash is a number in [0, 1) cut at the cumulative weights). Analysis is
  intention-to-treat: when the arm's variant for the customer's segment was not approved, the
  customer gets the fallback arm's message, and is_fallback / fallback_reason say so.
  Holdout arms (message: none) get no variant (variant_id NULL, is_holdout true), hence no
  message row. With vars.experiment.assignments set, the assignment made elsewhere
  (external_assignments) is used as is, and nothing here depends on generated variants.
#}
{%- set exp = var('experiment') -%}
{%- set fail = exceptions.raise_compiler_error -%}
{%- if exp is not mapping -%}
    {{ fail("cpo.yml: vars.experiment must be a mapping with id, salt and arms") }}
{%- endif -%}
{%- for key in (['id'] if exp.get('assignments') else ['id', 'salt'])
    if exp.get(key) is none or exp.get(key) == '' -%}
    {{ fail("cpo.yml: vars.experiment." ~ key ~ " is not set; add it (see the sample cpo.yml)") }}
{%- endfor -%}
{%- set arms = exp.get('arms') -%}
{%- if arms is string or arms is not sequence or arms | length == 0 -%}
    {{ fail("cpo.yml: vars.experiment.arms must be a list like "
            ~ "[{name: control, weight: 0.5}, {name: urgent, weight: 0.5}], got " ~ arms) }}
{%- endif -%}
{#- Arms are validated here, before any customer is assigned: each needs a name and a weight. -#}
{%- set tones = var('generation.tones', ['urgent', 'informational', 'friendly']) -%}
{%- set known = (tones if tones is sequence and tones is not string else [])
    + ['control', exp.get('control', 'control')] -%}
{%- set ns = namespace(cumulative=0, names=[]) -%}
{%- for arm in arms -%}
    {%- set where = "cpo.yml: vars.experiment.arms[" ~ loop.index0 ~ "]: " -%}
    {%- if arm is not mapping or not arm.get('name') or arm.get('weight') is not number
        or arm.get('weight') is boolean or arm.get('weight') < 0 -%}
        {{ fail(where ~ "each arm needs a name and a number weight >= 0, e.g. "
                ~ "{name: urgent, weight: 0.25}; got " ~ arm) }}
    {%- endif -%}
    {%- if arm.name in ns.names -%}
        {{ fail(where ~ "arm " ~ arm.name ~ " is listed twice") }}
    {%- endif -%}
    {%- if arm.name not in known and arm.get('message') != 'none' and not exp.get('assignments') -%}
        {{ fail(where ~ "arm " ~ arm.name ~ " is neither the control nor a tone of "
                ~ "vars.generation.tones (" ~ known[:-2] | join(', ') ~ "), so it would never "
                ~ "get its own message; add the tone, rename the arm, or make it a holdout with "
                ~ "message: none") }}
    {%- endif -%}
    {%- set ns.names = ns.names + [arm.name] -%}
{%- endfor -%}
{%- set total = arms | sum(attribute='weight') -%}
{%- if total <= 0 -%}
    {{ fail("cpo.yml: vars.experiment.arms: the weights add up to 0; give at least one arm "
            ~ "a weight > 0") }}
{%- endif -%}
{%- set fallback = exp.get('fallback', 'control') -%}
{%- set holdouts = arms | selectattr('message', 'defined') | selectattr('message', 'equalto', 'none')
    | map(attribute='name') | list -%}
{%- if exp.get('assignments') %}
select
    cast(x.experiment_id as varchar) as experiment_id,
    x.customer_id,
    x.arm,
    null::varchar as variant_id,
    coalesce(x.segment_id, cast(s.segment_id as varchar)) as segment_id,
    false as is_fallback,
    null::varchar as fallback_reason,
    x.arm in ({% for h in holdouts or [''] %}{{ literal(h) }}{{ ', ' if not loop.last }}{% endfor %}) as is_holdout,
    null::double as bucket,
    x.assigned_at
from {{ ref('external_assignments') }} as x
left join {{ ref('segments') }} as s on cast(s.customer_id as varchar) = x.customer_id
{%- else %}
with bucketed as (
    select
        s.customer_id,
        s.segment_id,
        {{ hash_bucket(literal(exp.id ~ ':' ~ exp.salt ~ ':') ~ ' || s.customer_id') }} as bucket
    from {{ ref('segments') }} as s
),

armed as (
    select
        *,
        {%- if arms | length == 1 %}
        {{ literal(arms[0].name) }} as arm
    {%- else %}
        case
        {%- for arm in arms[:-1] %}
            {%- set ns.cumulative = ns.cumulative + arm.weight %}
            when bucket < {{ ns.cumulative / total }} then {{ literal(arm.name) }}
        {%- endfor %}
            else {{ literal(arms[-1].name) }}
        end as arm
    {%- endif %}
    from bucketed
),

approved as (
    select variant_id, segment_id, tone from {{ ref('approved_variants') }}
)

select
    {{ literal(exp.id) }} as experiment_id,
    a.customer_id,
    a.arm,
    case when not a.is_holdout then coalesce(own.variant_id, fb.variant_id) end as variant_id,
    a.segment_id,
    own.variant_id is null and not a.is_holdout as is_fallback,
    case
        when a.is_holdout then null
        when own.variant_id is not null then null
        when fb.variant_id is not null then 'no approved ' || a.arm || ' variant for segment; '
            || '{{ fallback }} message sent'
        else 'no approved variant for this arm nor for the fallback arm {{ fallback }}'
    end as fallback_reason,
    a.is_holdout,
    round(a.bucket, 6) as bucket,
    cast({{ literal(exp.get("start_at", "2026-11-24 09:00:00")) }} as timestamp) as assigned_at
from (
    select
        *,
        arm in ({% for h in holdouts or [''] %}{{ literal(h) }}{{ ', ' if not loop.last }}{% endfor %}) as is_holdout
    from armed
) as a
left join approved as own
    on own.tone = a.arm
    and (own.segment_id = a.segment_id or (a.arm = 'control' and own.segment_id is null))
left join approved as fb
    on fb.tone = '{{ fallback }}'
    and (fb.segment_id = a.segment_id or ('{{ fallback }}' = 'control' and fb.segment_id is null))
{%- endif %}
