"""Issue 3 end to end on the sample project: tables, grounding, one message per customer, no
sample-ratio mismatch, deterministic and stable assignment, and the provider-call cache."""

from __future__ import annotations

import csv
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
import yaml
from scipy.stats import chisquare

from cpo.engine.project import Project
from tests.sample import copy_sample_project, query

ISSUE_TABLES = (
    "stg_content", "segments", "segment_profiles", "retrieved_content", "variants",
    "safety_screenings", "approved_variants", "assignments", "messages", "llm_calls",
    "run_errors",
)  # fmt: skip
HARM = ("harm:Hate", "harm:SelfHarm", "harm:Sexual", "harm:Violence")
SRM_ALPHA = 0.001


def arms_config(project: Path) -> dict[str, float]:
    config = yaml.safe_load((project / "cpo.yml").read_text(encoding="utf-8"))
    arms = config["vars"]["experiment"]["arms"]
    total = sum(a["weight"] for a in arms)
    return {a["name"]: a["weight"] / total for a in arms}


def build(project: Path) -> str:
    """Build the content pipeline (everything `messages` needs, and their tests)."""
    run = Project.load(project).build(["+messages"])
    assert run.success, [(r.name, r.message) for r in run.results if r.failed]
    return run.invocation_id


# --- the sample build ------------------------------------------------------------------------


def test_every_table_of_the_issue_exists(sample_build: Path) -> None:
    tables = set(
        query(sample_build, "select table_name from information_schema.tables")["table_name"]
    )
    assert set(ISSUE_TABLES) <= tables
    counts = query(
        sample_build,
        """
        select (select count(*) from retrieved_content) as retrieved,
               (select count(*) from variants where status = 'generated') as generated,
               (select count(*) from approved_variants) as approved,
               (select count(*) from approved_variants where segment_id is null
                   and tone = 'control') as control
    """,
    ).iloc[0]
    assert counts["retrieved"] > 0 and counts["generated"] > 0
    assert counts["approved"] > 1 and counts["control"] == 1


def test_content_steps_declare_what_they_read(sample_build: Path) -> None:
    # retrieved_content reads stg_content through a helper; the DAG must still order it first.
    nodes = {n.name: n for n in Project.load(sample_build).ls(["+messages"])}
    assert {"stg_content", "segment_profiles"} <= set(nodes["retrieved_content"].depends_on)
    assert {"retrieved_content", "stg_content"} <= set(nodes["variants"].depends_on)
    assert {"variants", "retrieved_content"} <= set(nodes["safety_screenings"].depends_on)


def test_every_variant_is_screened_on_every_harm_category(sample_build: Path) -> None:
    missing = query(
        sample_build,
        f"""
        select v.variant_id, count(s."check") as harm_rows
        from variants v
        left join safety_screenings s
            on s.variant_id = v.variant_id and s."check" in {HARM}
        where v.status = 'generated'
        group by v.variant_id
        having count(s."check") <> 4
    """,
    )
    assert missing.empty, missing


def test_approved_variants_cite_only_documents_retrieved_for_their_segment(
    sample_build: Path,
) -> None:
    foreign = query(
        sample_build,
        """
        with cited as (
            select a.variant_id, a.segment_id, unnest(v.citations) as document_id
            from approved_variants a join variants v using (variant_id)
            where a.segment_id is not null
        )
        select c.* from cited c
        left join retrieved_content r
            on r.segment_id = c.segment_id and r.document_id = c.document_id
        where r.document_id is null
    """,
    )
    assert foreign.empty, foreign
    # Every approved personalised variant cites something, and every [DOC] in its body is in
    # its citations list.
    uncited = query(
        sample_build,
        """
        select a.variant_id from approved_variants a join variants v using (variant_id)
        where a.segment_id is not null and len(v.citations) = 0  -- the control is written
           or exists (
               select 1 from unnest(regexp_extract_all(v.body, '\\[([A-Za-z0-9_.-]+)\\]', 1))
                   as t(doc)
               where not list_contains(v.citations, t.doc))
    """,
    )
    assert uncited.empty, uncited
    personalised = query(
        sample_build, "select count(*) as n from approved_variants where segment_id is not null"
    )
    assert personalised["n"][0] > 0


def test_messages_one_per_customer_with_no_merge_tag_left(sample_build: Path) -> None:
    per_customer = query(
        sample_build,
        """
        select c.customer_id, count(m.customer_id) as n
        from stg_customers c left join messages m using (customer_id)
        group by c.customer_id having count(m.customer_id) <> 1
    """,
    )
    assert per_customer.empty, per_customer
    totals = query(
        sample_build,
        """
        select (select count(*) from messages) as messages,
               (select count(*) from stg_customers) as customers,
               (select count(*) from messages
                where subject like '%{{%' or body like '%{{%' or subject like '%}}%'
                   or body like '%}}%' or body like '%{\\%%' escape '\\') as tagged,
               (select count(*) from messages where body not like '%https://%unsubscribe%')
                   as no_unsubscribe,
               (select count(*) from messages where regexp_matches(body, '\\[DOC\\d+\\]'))
                   as with_citations
    """,
    ).iloc[0]
    assert totals["messages"] == totals["customers"] > 0
    assert totals["tagged"] == 0 and totals["no_unsubscribe"] == 0
    assert totals["with_citations"] == 0


def test_first_name_merge_tag_is_rendered_per_customer(sample_build: Path) -> None:
    # The friendly subject is "Something for you{{ name_suffix }}: ...": ", Ana" or nothing.
    rows = query(
        sample_build,
        """
        select m.subject, coalesce('Something for you, ' || c.first_name || ':',
                                   'Something for you:') as expected
        from messages m join stg_customers c using (customer_id)
        join variants v using (variant_id)
        where v.subject like 'Something for you{{ name_suffix }}%'
        limit 200
    """,
    )
    assert not rows.empty
    assert all(s.startswith(e) for s, e in zip(rows["subject"], rows["expected"], strict=True))


def test_every_customer_assigned_exactly_once(sample_build: Path) -> None:
    counts = query(
        sample_build,
        """
        select (select count(*) from assignments) as rows,
               (select count(distinct customer_id) from assignments) as distinct_ids,
               (select count(*) from stg_customers) as customers,
               (select count(*) from assignments where variant_id is null or arm is null) as bad
    """,
    ).iloc[0]
    assert counts["rows"] == counts["distinct_ids"] == counts["customers"]
    assert counts["bad"] == 0


def test_no_sample_ratio_mismatch_per_arm_and_per_arm_by_segment(sample_build: Path) -> None:
    weights = arms_config(sample_build)
    shares = query(
        sample_build, "select segment_id, arm, count(*) as n from assignments group by all"
    )
    assert set(shares["arm"]) == set(weights)

    def srm_p(frame: pd.DataFrame) -> float:
        observed = [int(frame.loc[frame["arm"] == arm, "n"].sum()) for arm in weights]
        total = sum(observed)
        return chisquare(observed, [total * w for w in weights.values()]).pvalue

    assert srm_p(shares) > SRM_ALPHA
    for segment, frame in shares.groupby("segment_id"):
        assert srm_p(frame) > SRM_ALPHA, f"sample-ratio mismatch in segment {segment}"


def test_fallbacks_are_recorded_and_only_when_needed(sample_build: Path) -> None:
    wrong = query(
        sample_build,
        """
        select a.* from assignments a
        left join approved_variants own
            on own.tone = a.arm
            and (own.segment_id = a.segment_id or (a.arm = 'control' and own.segment_id is null))
        where (own.variant_id is null) <> a.is_fallback
           or (a.is_fallback and (a.variant_id <> 'v_control' or a.fallback_reason is null))
           or (not a.is_fallback and a.variant_id <> own.variant_id)
    """,
    )
    assert wrong.empty, wrong


def test_injected_documents_are_flagged_excluded_and_never_sent(sample_build: Path) -> None:
    flagged = query(
        sample_build, "select document_id, body from stg_content where injection_flag and is_active"
    )
    assert not flagged.empty  # the sample carries injection attempts (DOC027, DOC041)
    leaks = query(
        sample_build,
        """
        select f.document_id from stg_content f
        where f.injection_flag
          and (f.document_id in (select document_id from retrieved_content)
               or exists (select 1 from variants v where list_contains(v.citations,
                                                                     f.document_id)))
    """,
    )
    assert leaks.empty, leaks
    clean = " ".join(
        query(sample_build, "select body from stg_content where not injection_flag")["body"]
    )
    for body in flagged["body"]:
        # The flagged document's own sentences (not boilerplate that clean documents share).
        sentences = [s.strip() for s in body.split(".") if len(s.strip()) > 15]
        for sentence in [s for s in sentences if s not in clean]:
            hits = query(
                sample_build,
                "select count(*) as n from messages "
                "where contains(body, ?) or contains(subject, ?)",
                [sentence, sentence],
            )
            assert hits["n"][0] == 0, sentence


# --- rebuilds: determinism, stability, cache -------------------------------------------------


@pytest.fixture(scope="module")
def rebuilt(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    """One copy built four times: fresh, unchanged, after a tone prompt edit, after adding
    500 customers. Yields what each build left (read-only for the tests)."""
    project = copy_sample_project(tmp_path_factory.mktemp("rebuilt"))
    snapshot = "select customer_id, arm, segment_id, bucket from assignments order by 1"
    runs: dict[str, Any] = {"project": project}
    runs["first"] = build(project)
    runs["assign_first"] = query(project, snapshot)
    runs["second"] = build(project)
    runs["assign_second"] = query(project, snapshot)
    compose = project / "prompts" / "tones" / "friendly" / "compose.txt"
    compose.write_text(
        compose.read_text(encoding="utf-8").replace(
            "We thought you'd like to hear about this.",
            "We thought you might enjoy hearing about this.",
        ),
        encoding="utf-8",
    )
    runs["edited"] = build(project)
    runs["variants_edited"] = query(project, "select variant_id, body from variants")
    _append_customers(project / "seeds" / "customers.csv", 500)
    runs["grown"] = build(project)
    runs["assign_grown"] = query(project, snapshot)
    runs["calls"] = query(project, "select * from llm_calls")
    yield runs


def _append_customers(path: Path, count: int) -> None:
    text = path.read_text(encoding="utf-8")
    rows = list(csv.reader(text.splitlines()))
    assert rows[0][0] == "customer_id"
    body = rows[1:]
    with path.open("a", encoding="utf-8", newline="") as f:
        if not text.endswith("\n"):
            f.write("\n")
        writer = csv.writer(f, quoting=csv.QUOTE_ALL, lineterminator="\n")
        for i in range(count):
            row = list(body[i % len(body)])
            row[0] = f"N{i:06d}"
            writer.writerow(row)


def test_assignment_is_deterministic_across_rebuilds(rebuilt: dict[str, Any]) -> None:
    pd.testing.assert_frame_equal(rebuilt["assign_first"], rebuilt["assign_second"])


def test_assignment_is_stable_when_customers_are_added(rebuilt: dict[str, Any]) -> None:
    before, after = rebuilt["assign_first"], rebuilt["assign_grown"]
    assert len(after) == len(before) + 500
    assert after["customer_id"].is_unique
    merged = before.merge(after, on="customer_id", suffixes=("_before", "_after"))
    assert len(merged) == len(before)
    assert (merged["arm_before"] == merged["arm_after"]).all()
    assert after.loc[after["customer_id"].str.startswith("N"), "arm"].nunique() > 1


def test_unchanged_rebuild_makes_no_uncached_call(rebuilt: dict[str, Any]) -> None:
    calls = rebuilt["calls"]
    second = calls[calls["run_id"] == rebuilt["second"]]
    assert len(second) > 0 and second["cache_hit"].all()
    assert set(second["step"]) == {"retrieved_content", "variants", "safety_screenings"}
    first = calls[calls["run_id"] == rebuilt["first"]]
    assert len(first) == len(second) and not first["cache_hit"].any()


def test_ledger_keeps_the_history_of_every_build(rebuilt: dict[str, Any]) -> None:
    run_ids = set(rebuilt["calls"]["run_id"])
    assert {rebuilt[k] for k in ("first", "second", "edited", "grown")} <= run_ids


def test_editing_one_tone_prompt_regenerates_only_that_tone(rebuilt: dict[str, Any]) -> None:
    calls = rebuilt["calls"]
    generation = calls[(calls["run_id"] == rebuilt["edited"]) & (calls["step"] == "variants")]
    misses = generation.loc[~generation["cache_hit"], "item_key"]
    assert len(misses) > 0
    assert misses.str.endswith("_friendly").all(), sorted(misses)
    friendly = generation["item_key"].str.endswith("_friendly")
    assert (~generation.loc[friendly, "cache_hit"]).all()  # every friendly variant redone
    bodies = rebuilt["variants_edited"]
    edited = bodies.loc[bodies["variant_id"].str.endswith("_friendly"), "body"]
    assert edited.str.contains("might enjoy hearing").all()
