"""The domain tables the report reads and the funnel it draws: the one place they are named.

The report depends on the contract tables of the sample pipeline (DESIGN.md): a project that
renames one changes it here. Every query is DuckDB SQL with ``?`` parameters, read through the
adapter protocol (`cpo.adapters.base.Adapter.fetch`), so a Spark target runs it translated.
Identifiers and values become SQL text only through `cpo.engine.compile.quote` and
`cpo.engine.compile.sql_literal`.
"""

from __future__ import annotations

from cpo.engine.compile import quote, sql_literal
from cpo.experiments.settings import EVENTS

EXPERIMENT_RESULTS = "experiment_results"
SEGMENT_POLICY = "segment_policy"
SEGMENT_PROFILES = "segment_profiles"
ASSIGNMENTS = "assignments"
OUTCOME_EVENTS = "stg_events"
SCREENINGS = "safety_screenings"
VARIANTS = "variants"
APPROVED_VARIANTS = "approved_variants"
CONTENT = "stg_content"
PROVIDER_CALLS = "provider_calls"

NOT_FUNNEL_STAGES = ("unsubscribe",)
"""Events that are no step towards a conversion (an opt-out): left out of the funnel."""
FUNNEL_EVENTS = tuple(e for e in EVENTS if e not in NOT_FUNNEL_STAGES)
"""The funnel's stages, in order: the experiment's events (`cpo.experiments.settings.EVENTS`)."""
_LABELS = {
    "delivered": "Delivered",
    "open": "Opened",
    "click": "Clicked",
    "conversion": "Converted",
}
FUNNEL_LABELS = {e: _LABELS.get(e, e.replace("_", " ").capitalize()) for e in FUNNEL_EVENTS}
"""Each stage's title in the funnel plot."""

_A, _E, _P = quote(ASSIGNMENTS), quote(OUTCOME_EVENTS), quote(SEGMENT_POLICY)
_S, _V, _AV = quote(SCREENINGS), quote(VARIANTS), quote(APPROVED_VARIANTS)

# The experiment id is a parameter: None keeps every experiment's rows.
_THIS_EXPERIMENT = "cast(experiment_id as varchar) = coalesce(?, cast(experiment_id as varchar))"

RESULTS_SQL = f"select * from {quote(EXPERIMENT_RESULTS)}"
POLICY_SQL = f"select * from {_P} where experiment_id = ? order by segment_id"
SEGMENTS_SQL = f"select segment_id, segment_name from {quote(SEGMENT_PROFILES)}"
ASSIGNED_SQL = (
    "select arm, count(*) as customers, max(assigned_at) as last_assigned_at "
    f"from {_A} where {_THIS_EXPERIMENT} group by arm order by arm"
)
EVENT_STATS_SQL = (
    f"select count(*), min(event_at), max(event_at), string_agg(distinct source, ', ') from {_E}"
)

_STAGES = ",\n    ".join(
    f"count(distinct r.customer_id) filter (where r.event = {sql_literal(e)}) as {quote(e)}"
    for e in FUNNEL_EVENTS
)
FUNNEL_SQL = f"""
with assigned as (
    select cast(experiment_id as varchar) as experiment_id, cast(customer_id as varchar)
        as customer_id, arm
    from {_A}
    where {_THIS_EXPERIMENT}
),
reached as (
    select distinct cast(experiment_id as varchar) as experiment_id,
        cast(customer_id as varchar) as customer_id, event
    from {_E}
)
select a.arm, count(distinct a.customer_id) as assigned,
    {_STAGES}
from assigned a
left join reached r on r.experiment_id = a.experiment_id and r.customer_id = a.customer_id
group by a.arm
order by a.arm
"""
"""Customers reaching each stage per arm (a customer counts once per stage)."""

SCREENINGS_SQL = (
    'select "check", count(*) filter (where passed) as passed, '
    f'count(*) filter (where not passed) as blocked from {_S} group by "check" order by "check"'
)


def blocked_sql(have_variants: bool) -> str:
    """Blocked screenings, with the variant's segment and tone when `variants` exists."""
    variants = (
        _V
        if have_variants
        else "(select cast(null as varchar) as variant_id, cast(null as varchar) as segment_id, "
        "cast(null as varchar) as tone)"
    )
    return f"""
select s.variant_id, v.segment_id, v.tone, s."check", s.severity, s.reason
from {_S} s
left join {variants} v on v.variant_id = s.variant_id
where not s.passed
order by s.variant_id, s."check"
"""


VARIANTS_SQL = f"""
select v.variant_id, v.segment_id, v.tone, v.subject, v.body, v.provider, v.model, v.citations
from {_V} v
join {_AV} a on a.variant_id = v.variant_id
order by v.segment_id nulls first, v.tone
"""
"""The approved variants (templates, merge tags unrendered) with the documents they cite."""

TITLES_SQL = f"select document_id, title from {quote(CONTENT)}"

CALLS_SQL = f"""
select run_id, step, provider, model, count(*) as calls,
    count(*) filter (where cache_hit) as cache_hits,
    coalesce(sum(input_tokens), 0) as input_tokens,
    coalesce(sum(output_tokens), 0) as output_tokens,
    coalesce(sum(cost_usd), 0) as cost_usd,
    avg(latency_ms) filter (where not cache_hit) as avg_latency_ms,
    count(*) filter (where status <> 'success') as failed,
    max(called_at) as last_called_at
from {quote(PROVIDER_CALLS)}
group by run_id, step, provider, model
order by max(called_at), step, provider, model
"""
